// scripts/random_checkpoint.py writes files the loader accepts: a Hugging Face folder and GGUF
// files whose matrices are in the GGUF block types (the benchmark inputs of issue #4).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "engine/model/model_loader.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

bool HaveNumpy() {
  return access("/usr/bin/python3", X_OK) == 0 &&
         std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

std::string Write(const std::string& args, const std::string& out) {
  const std::string cmd = "/usr/bin/python3 " + testing::SourceDir() +
                          "/scripts/random_checkpoint.py --shape tiny " + args + " --out " + out +
                          " 2>/dev/null";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return out;
}

TEST(RandomCheckpoint, GgufBlockTypesLoadInTheirOwnFormats) {
  if (!HaveNumpy()) GTEST_SKIP() << "needs Debian's /usr/bin/python3 with numpy";
  for (const std::string type : {"q4_0", "q8_0", "f16"}) {
    LoadOptions lo;
    lo.model = Write("--gguf " + type, ::testing::TempDir() + "/rc-tiny-" + type + ".gguf");
    auto m = LoadModel(lo);
    ASSERT_TRUE(m.ok()) << type << ": " << m.status();
    const ModelConfig& c = (*m)->config;
    EXPECT_EQ(c.hidden_size, 64);
    EXPECT_EQ(c.num_hidden_layers, 2);
    EXPECT_EQ(c.num_key_value_heads, 2);
    EXPECT_EQ(c.vocab_size, 512);
    // q/k/v/o and gate/up have 64-value rows: kept in the file's block type; down_proj's rows
    // (172 values) are not whole 32-value blocks and were written as F16.
    const std::string want = type == "f16" ? "f16" : "gguf-" + type;
    EXPECT_EQ((*m)->weights.layers[0].q.format_name, want);
    EXPECT_EQ((*m)->weights.layers[1].up.format_name, want);
    EXPECT_EQ((*m)->weights.layers[0].down.format_name, "f16");
    EXPECT_EQ((*m)->tokenizer->Decode((*m)->tokenizer->Encode("then in", false)), "then in");
  }
}

TEST(RandomCheckpoint, HuggingFaceFolderLoads) {
  if (!HaveNumpy()) GTEST_SKIP() << "needs Debian's /usr/bin/python3 with numpy";
  LoadOptions lo;
  lo.model = Write("--dtype f16", ::testing::TempDir() + "/rc-tiny-hf");
  auto m = LoadModel(lo);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->config.intermediate_size, 172);
  EXPECT_EQ((*m)->weights.layers[0].down.format_name, "f16");
}

}  // namespace
}  // namespace compressd

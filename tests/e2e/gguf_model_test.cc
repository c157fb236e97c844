// A real model (kdocs-7m) converted to GGUF here — F32 and Q8_0/Q4_0 tensors, vocabulary
// in metadata, Q/K rows permuted as llama.cpp's converter does — loads and generates:
// the F32 GGUF gives exactly the safetensors model's greedy tokens.
#include <cstdio>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/model/gguf_source.h"
#include "engine/model/gguf_writer.h"
#include "engine/model/safetensors.h"
#include "engine/model/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/util/kdocs_gguf.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

std::vector<int32_t> Greedy(const std::string& model, const std::string& prompt, int n,
                            std::vector<int32_t>* prompt_ids = nullptr) {
  EngineOptions o;
  o.model = model;
  o.threads = 2;
  auto e = Engine::Create(o);
  EXPECT_TRUE(e.ok()) << e.status();
  if (!e.ok()) return {};
  GenerationRequest r;
  r.prompt_tokens = (*e)->Tokenize(prompt, true);
  if (prompt_ids != nullptr) *prompt_ids = r.prompt_tokens;
  r.max_tokens = n;
  r.sampling.temperature = 0;
  r.ignore_eos = true;
  std::vector<int32_t> out;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  EXPECT_TRUE((*e)->Submit(r, [&](GenerationEvent&& ev) {
                     std::lock_guard<std::mutex> lock(mu);
                     out.insert(out.end(), ev.token_ids.begin(), ev.token_ids.end());
                     if (ev.finished) {
                       done = true;
                       cv.notify_all();
                     }
                   }).ok());
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  return out;
}

TEST(GgufModel, F32GgufMatchesSafetensorsAndQuantizedGgufGenerates) {
  REQUIRE_SHARED(dir, "models/kdocs-7m");
  const std::string prompt = "The kernel provides";
  std::vector<int32_t> ref_ids, gguf_ids;
  const std::vector<int32_t> ref = Greedy(dir, prompt, 24, &ref_ids);
  ASSERT_EQ(ref.size(), 24u);
  const std::string f32 = testing::WriteKdocsGguf(dir, GgmlType::kF32);
  EXPECT_EQ(Greedy(f32, prompt, 24, &gguf_ids), ref);
  EXPECT_EQ(gguf_ids, ref_ids) << "the GGUF vocabulary tokenizes the prompt differently";
  for (GgmlType q : {GgmlType::kQ8_0, GgmlType::kQ4_0}) {
    const std::string path = testing::WriteKdocsGguf(dir, q);
    const std::vector<int32_t> got = Greedy(path, prompt, 24);
    ASSERT_EQ(got.size(), 24u) << GgmlTypeName(q);
    // Quantized weights: the first greedy token of a confident model is unchanged.
    EXPECT_EQ(got[0], ref[0]) << GgmlTypeName(q);
    std::remove(path.c_str());
  }
  std::remove(f32.c_str());
}

}  // namespace
}  // namespace compressd

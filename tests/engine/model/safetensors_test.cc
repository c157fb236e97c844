#include "engine/model/safetensors.h"

#include <stdlib.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "engine/model/checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

std::string Image(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

std::string Image(const json& header, size_t data_bytes) {
  return Image(header.dump(), std::string(data_bytes, '\x01'));
}

void ExpectError(const std::string& bytes, absl::StatusCode code,
                 const std::vector<std::string>& words) {
  auto s = SafetensorsSource::OpenFromBytes(bytes, "bad.safetensors");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), code) << s.status();
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("bad.safetensors"));
  for (const std::string& w : words) {
    EXPECT_THAT(std::string(s.status().message()), HasSubstr(w));
  }
}

std::string TempDir() {
  std::string t = ::testing::TempDir() + "/st_XXXXXX";
  EXPECT_NE(mkdtemp(t.data()), nullptr);
  return t;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST(SafetensorsTest, Stories260K) {
  REQUIRE_SHARED(dir, "models/stories260K");
  auto s = SafetensorsSource::Open(dir);
  ASSERT_TRUE(s.ok()) << s.status();
  const auto names = (*s)->Names();
  EXPECT_EQ(names.size(), 47u);  // embed + norm + 5 layers x 9 (tied: no lm_head)
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_FALSE((*s)->Has("lm_head.weight"));
  struct Want {
    const char* name;
    std::vector<int64_t> shape;
  };
  for (const Want& w : std::vector<Want>{{"model.embed_tokens.weight", {512, 64}},
                                         {"model.norm.weight", {64}},
                                         {"model.layers.0.self_attn.q_proj.weight", {64, 64}},
                                         {"model.layers.4.self_attn.k_proj.weight", {32, 64}},
                                         {"model.layers.2.self_attn.v_proj.weight", {32, 64}},
                                         {"model.layers.3.mlp.gate_proj.weight", {172, 64}},
                                         {"model.layers.3.mlp.down_proj.weight", {64, 172}},
                                         {"model.layers.1.input_layernorm.weight", {64}}}) {
    auto v = (*s)->Get(w.name);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(v->name, w.name);
    EXPECT_EQ(v->shape, w.shape) << w.name;
    EXPECT_EQ(v->dtype, DType::kF32);
    EXPECT_EQ(v->storage, StorageType::kPlain);
    EXPECT_EQ(v->bytes, static_cast<size_t>(v->numel()) * 4);
    EXPECT_NE(v->owner, nullptr);
  }
  // RMSNorm weights of a trained model are finite and mostly positive.
  auto norm = (*s)->Get("model.norm.weight");
  const float* f = static_cast<const float*>(norm->data);
  for (int i = 0; i < 64; ++i) EXPECT_TRUE(std::isfinite(f[i]));
  auto missing = (*s)->Get("lm_head.weight");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("lm_head.weight"));
  ASSERT_EQ((*s)->metadata().size(), 1u);
  EXPECT_EQ((*s)->metadata()[0].second, "pt");
}

TEST(SafetensorsTest, ViewOutlivesSource) {
  REQUIRE_SHARED(path, "models/stories260K/model.safetensors");
  TensorView v;
  {
    auto s = SafetensorsSource::Open(path);
    ASSERT_TRUE(s.ok()) << s.status();
    v = *(*s)->Get("model.norm.weight");
  }
  float sum = 0;
  for (int i = 0; i < 64; ++i) sum += static_cast<const float*>(v.data)[i];
  EXPECT_TRUE(std::isfinite(sum));
}

TEST(SafetensorsTest, InMemoryValuesAndDtypes) {
  json h;
  h["a"] = {{"dtype", "F32"}, {"shape", {2, 2}}, {"data_offsets", {0, 16}}};
  h["b"] = {{"dtype", "BF16"}, {"shape", {3}}, {"data_offsets", {16, 22}}};
  h["c"] = {{"dtype", "BOOL"}, {"shape", json::array()}, {"data_offsets", {22, 23}}};
  h["d"] = {{"dtype", "I64"}, {"shape", {0, 5}}, {"data_offsets", {23, 23}}};
  h["__metadata__"] = {{"format", "pt"}};
  std::string data(23, '\0');
  const float a[4] = {1, 2, 3, 4};
  std::memcpy(data.data(), a, 16);
  auto s = SafetensorsSource::OpenFromBytes(Image(h.dump(), data));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT((*s)->Names(), ::testing::ElementsAre("a", "b", "c", "d"));
  auto va = (*s)->Get("a");
  EXPECT_EQ(static_cast<const float*>(va->data)[3], 4.0f);
  EXPECT_EQ((*s)->Get("b")->dtype, DType::kBF16);
  EXPECT_EQ((*s)->Get("c")->numel(), 1);
  EXPECT_EQ((*s)->Get("d")->bytes, 0u);
  for (const char* dt : {"F16", "I8", "U8", "I32", "F64", "I16"}) {
    json one;
    one["t"] = {{"dtype", dt}, {"shape", {1}}, {"data_offsets", {0, 8}}};
    // Size must match exactly; 8 bytes is right only for F64.
    auto r = SafetensorsSource::OpenFromBytes(Image(one, 8));
    EXPECT_EQ(r.ok(), std::string(dt) == "F64") << dt;
  }
}

TEST(SafetensorsTest, MalformedHeaders) {
  using C = absl::StatusCode;
  const C kBad = C::kInvalidArgument;
  ExpectError("", kBad, {"8-byte"});
  ExpectError("abc", kBad, {"8-byte"});
  {
    std::string b(8, '\0');
    const uint64_t n = 1000;
    std::memcpy(b.data(), &n, 8);
    ExpectError(b + "{}", kBad, {"header length"});
    const uint64_t huge = ~0ull;
    std::memcpy(b.data(), &huge, 8);
    ExpectError(b + "{}", kBad, {"header length"});
  }
  ExpectError(Image("{not json", ""), kBad, {"JSON"});
  ExpectError(Image("[1,2]", ""), kBad, {"JSON"});
  ExpectError(Image(std::string(3000, '[') + std::string(3000, ']'), ""), kBad, {"JSON"});

  auto one = [](json entry) {
    json h;
    h["w"] = std::move(entry);
    return h;
  };
  ExpectError(Image(one(json{{"dtype", "F8_E4M3"}, {"shape", {2}}, {"data_offsets", {0, 2}}}), 2),
              kBad, {"tensor w", "dtype F8_E4M3"});
  ExpectError(Image(one(json{{"shape", {2}}, {"data_offsets", {0, 8}}}), 8), kBad,
              {"tensor w", "dtype"});
  ExpectError(Image(one(json{{"dtype", "F32"}, {"shape", {-2}}, {"data_offsets", {0, 8}}}), 8),
              kBad, {"tensor w", "shape"});
  ExpectError(Image(one(json{{"dtype", "F32"}, {"shape", {2.5}}, {"data_offsets", {0, 8}}}), 8),
              kBad, {"tensor w", "shape"});
  ExpectError(Image(one(json{{"dtype", "F32"}, {"shape", 2}, {"data_offsets", {0, 8}}}), 8), kBad,
              {"tensor w", "shape"});
  ExpectError(Image(one(json{{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 16}}}), 8),
              kBad, {"tensor w", "data_offsets"});
  ExpectError(Image(one(json{{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {8, 0}}}), 8), kBad,
              {"tensor w", "data_offsets"});
  ExpectError(Image(one(json{{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0}}}), 8), kBad,
              {"tensor w", "data_offsets"});
  ExpectError(Image(one(json{{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, -8}}}), 8),
              kBad, {"tensor w", "data_offsets"});
  ExpectError(Image(one(json{{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {0, 8}}}), 8), kBad,
              {"tensor w", "need 12"});
  // numel * size overflows 2^64: must not wrap around to a small number.
  ExpectError(
      Image(one(json{
                {"dtype", "F32"}, {"shape", {1ull << 32, 1ull << 30}}, {"data_offsets", {0, 0}}}),
            8),
      kBad, {"tensor w", "2^64"});
  ExpectError(Image(one(json{{"dtype", "I8"},
                             {"shape", {1ull << 62, 1ull << 62, 16}},
                             {"data_offsets", {0, 0}}}),
                    8),
              kBad, {"tensor w"});
  ExpectError(Image(one(json(5)), 8), kBad, {"tensor w", "object"});

  json overlap;
  overlap["x"] = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}};
  overlap["y"] = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {4, 12}}};
  ExpectError(Image(overlap, 12), kBad, {"overlap", "x", "y"});

  ExpectError(Image(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                    R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                    "ab"),
              kBad, {"duplicate", "w"});
  ExpectError(Image(R"({"__metadata__":[1]})", ""), kBad, {"__metadata__"});
  ExpectError(Image(R"({"__metadata__":{"a":1}})", ""), kBad, {"__metadata__"});
  EXPECT_TRUE(SafetensorsSource::OpenFromBytes(Image(R"({"__metadata__":{"a":"b"}})", "")).ok());
  EXPECT_TRUE(SafetensorsSource::OpenFromBytes(Image("{}  ", "")).ok());
}

TEST(SafetensorsTest, RandomMutationsNeverCrash) {
  json h;
  h["a"] = {{"dtype", "F32"}, {"shape", {2, 2}}, {"data_offsets", {0, 16}}};
  h["b"] = {{"dtype", "F16"}, {"shape", {4}}, {"data_offsets", {16, 24}}};
  const std::string good = Image(h, 24);
  uint32_t seed = 12345;
  auto rnd = [&seed] { return seed = seed * 1664525u + 1013904223u; };
  for (int iter = 0; iter < 5000; ++iter) {
    std::string b = good;
    const int flips = 1 + rnd() % 4;
    for (int k = 0; k < flips; ++k) b[rnd() % b.size()] = static_cast<char>(rnd() >> 24);
    if (rnd() % 4 == 0) b.resize(rnd() % b.size());
    auto s = SafetensorsSource::OpenFromBytes(b);
    if (s.ok()) {
      for (const std::string& n : (*s)->Names()) {
        auto v = (*s)->Get(n);
        ASSERT_TRUE(v.ok());
        // Touch every byte: must lie inside the image.
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < v->bytes; ++i) sink ^= static_cast<const uint8_t*>(v->data)[i];
      }
    }
  }
}

TEST(SafetensorsTest, MissingPaths) {
  auto s = SafetensorsSource::Open("/nonexistent/model.safetensors");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  const std::string dir = TempDir();
  s = SafetensorsSource::Open(dir);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr(dir));
}

TEST(SafetensorsTest, Sharded) {
  const std::string dir = TempDir();
  json h1, h2;
  h1["a"] = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}};
  h2["b"] = {{"dtype", "I32"}, {"shape", {1}}, {"data_offsets", {0, 4}}};
  WriteFile(dir + "/s1.safetensors", Image(h1, 8));
  WriteFile(dir + "/s2.safetensors", Image(h2, 4));
  json index;
  index["metadata"] = {{"total_size", 12}};
  index["weight_map"] = {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}};
  WriteFile(dir + "/model.safetensors.index.json", index.dump());
  auto s = SafetensorsSource::Open(dir);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT((*s)->Names(), ::testing::ElementsAre("a", "b"));
  EXPECT_EQ((*s)->Get("b")->dtype, DType::kI32);

  // A tensor the index places in the wrong shard.
  index["weight_map"] = {{"a", "s2.safetensors"}, {"b", "s2.safetensors"}};
  WriteFile(dir + "/model.safetensors.index.json", index.dump());
  s = SafetensorsSource::Open(dir);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("tensor a"));

  // A tensor in no shard.
  index["weight_map"] = {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}, {"c", "s2.safetensors"}};
  WriteFile(dir + "/model.safetensors.index.json", index.dump());
  s = SafetensorsSource::Open(dir);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("tensor c"));

  // A missing shard.
  index["weight_map"] = {{"a", "s1.safetensors"}, {"b", "s3.safetensors"}};
  WriteFile(dir + "/model.safetensors.index.json", index.dump());
  s = SafetensorsSource::Open(dir);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("s3.safetensors"));

  // Path escapes and bad types.
  index["weight_map"] = {{"a", "../s1.safetensors"}};
  WriteFile(dir + "/model.safetensors.index.json", index.dump());
  EXPECT_EQ(SafetensorsSource::Open(dir).status().code(), absl::StatusCode::kInvalidArgument);
  index["weight_map"] = {{"a", 3}};
  WriteFile(dir + "/model.safetensors.index.json", index.dump());
  EXPECT_EQ(SafetensorsSource::Open(dir).status().code(), absl::StatusCode::kInvalidArgument);
  WriteFile(dir + "/model.safetensors.index.json", "{");
  EXPECT_EQ(SafetensorsSource::Open(dir).status().code(), absl::StatusCode::kInvalidArgument);

  // The same tensor in two shards.
  WriteFile(dir + "/s3.safetensors", Image(h1, 8));
  index["weight_map"] = {{"a", "s1.safetensors"}, {"b", "s3.safetensors"}};
  WriteFile(dir + "/model.safetensors.index.json", index.dump());
  s = SafetensorsSource::Open(dir);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("tensor a"));
}

TEST(CheckpointTest, HuggingFaceFolder) {
  REQUIRE_SHARED(dir, "models/stories260K");
  auto c = OpenCheckpoint(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->config.hidden_size, 64);
  EXPECT_EQ(c->gguf, nullptr);
  EXPECT_EQ(c->dir, dir);
  EXPECT_TRUE(c->tensors->Has("model.layers.4.mlp.up_proj.weight"));
  auto f = OpenCheckpoint(dir + "/model.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->config.vocab_size, 512);
}

TEST(CheckpointTest, Errors) {
  auto c = OpenCheckpoint("/nonexistent/ckpt");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("/nonexistent/ckpt"));
  const std::string dir = TempDir();
  c = OpenCheckpoint(dir);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("config.json"));
  WriteFile(dir + "/config.json", R"({"model_type":"llama"})");
  c = OpenCheckpoint(dir);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("hidden_size"));
  WriteFile(dir + "/config.json",
            R"({"model_type":"llama","hidden_size":64,"intermediate_size":8,)"
            R"("num_hidden_layers":1,"num_attention_heads":8,"vocab_size":16})");
  c = OpenCheckpoint(dir);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("model.safetensors"));
  WriteFile(dir + "/notes.txt", "hello");
  c = OpenCheckpoint(dir + "/notes.txt");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace compressd

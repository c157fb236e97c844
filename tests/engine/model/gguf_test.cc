#include "engine/model/gguf.h"

#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/model/checkpoint.h"
#include "engine/model/ggml_blocks.h"
#include "engine/model/gguf_source.h"
#include "engine/model/gguf_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// ---- block formats ------------------------------------------------------------------

TEST(GgmlBlocksTest, Q8_0ErrorBound) {
  const int64_t n = 32 * 64;
  std::vector<float> x = Random(n, 1, 3.0f);
  x[5] = 0.0f;
  std::fill(x.begin() + 64, x.begin() + 96, 0.0f);  // an all-zero block
  std::vector<BlockQ8_0> q(n / 32);
  QuantizeRowQ8_0(x.data(), n, q.data());
  std::vector<float> y(n);
  DequantizeRowQ8_0(q.data(), n, y.data());
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = amax / 127.0f;
    for (int j = 0; j < 32; ++j) {
      // Half a step, plus the fp16 rounding of d times |q| <= 127.
      EXPECT_LE(std::fabs(x[b * 32 + j] - y[b * 32 + j]), 0.5f * d + 127.0f * d / 2048.0f + 1e-7f);
    }
  }
  for (int j = 64; j < 96; ++j) EXPECT_EQ(y[j], 0.0f);
}

TEST(GgmlBlocksTest, Q4_0ErrorBoundAndLayout) {
  const int64_t n = 32 * 64;
  std::vector<float> x = Random(n, 2, 0.5f);
  std::vector<BlockQ4_0> q(n / 32);
  QuantizeRowQ4_0(x.data(), n, q.data());
  std::vector<float> y(n);
  DequantizeRowQ4_0(q.data(), n, y.data());
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = amax / 8.0f;
    for (int j = 0; j < 32; ++j) {
      // The extreme maps exactly to code 0; the opposite side can clamp at 15 (one full step).
      EXPECT_LE(std::fabs(x[b * 32 + j] - y[b * 32 + j]), d * (1.0f + 1.0f / 1024) + 1e-7f);
    }
  }
  // Layout: element j in the low nibble, j + 16 in the high nibble; max maps to code 0.
  float v[32];
  for (int j = 0; j < 32; ++j) v[j] = 0.0f;
  v[0] = -8.0f;  // d = 1
  v[16] = 7.0f;
  v[1] = 3.0f;
  v[17] = -2.0f;
  BlockQ4_0 blk;
  QuantizeRowQ4_0(v, 32, &blk);
  EXPECT_EQ(kernels::F16ToF32(blk.d), 1.0f);
  EXPECT_EQ(blk.qs[0], 0x0 | (15 << 4));
  EXPECT_EQ(blk.qs[1], 11 | (6 << 4));
  EXPECT_EQ(blk.qs[2], 8 | (8 << 4));
  float back[32];
  DequantizeRowQ4_0(&blk, 32, back);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(back[j], v[j]) << j;
}

// ---- metadata and tensor round trip -----------------------------------------------------

TEST(GgufTest, WriterRoundTripMetadata) {
  GgufWriter w;
  w.AddUint8("u8", 200);
  w.AddInt8("i8", -100);
  w.AddUint16("u16", 60000);
  w.AddInt16("i16", -30000);
  w.AddUint32("u32", 4000000000u);
  w.AddInt32("i32", -2000000000);
  w.AddUint64("u64", 1ull << 40);
  w.AddInt64("i64", -(1ll << 40));
  w.AddFloat32("f32", 1.5f);
  w.AddFloat64("f64", -2.25);
  w.AddBool("t", true);
  w.AddBool("f", false);
  w.AddString("s", "hello \xe2\x96\x81 world");
  w.AddString("empty", "");
  w.AddStringArray("strs", {"a", "", "ccc"});
  w.AddInt32Array("ints", {1, -2, 3});
  w.AddFloat32Array("floats", {0.5f, -1.0f});
  const uint16_t u16s[] = {1, 65535};
  w.AddArray("u16s", GgufType::kUint16, u16s, 2);
  w.AddArray("empty_arr", GgufType::kInt64, nullptr, 0);
  auto g = GgufFile::OpenFromBytes(w.Serialize(), "meta.gguf");
  ASSERT_TRUE(g.ok()) << g.status();
  const GgufFile& f = **g;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.keys().size(), 19u);
  EXPECT_EQ(f.keys()[0], "u8");
  EXPECT_EQ(*f.GetInt("u8"), 200);
  EXPECT_EQ(*f.GetInt("i8"), -100);
  EXPECT_EQ(*f.GetInt("u16"), 60000);
  EXPECT_EQ(*f.GetInt("i16"), -30000);
  EXPECT_EQ(*f.GetUint("u32"), 4000000000u);
  EXPECT_EQ(*f.GetInt("i32"), -2000000000);
  EXPECT_EQ(*f.GetUint("u64"), 1ull << 40);
  EXPECT_EQ(*f.GetInt("i64"), -(1ll << 40));
  EXPECT_EQ(*f.GetFloat("f32"), 1.5);
  EXPECT_EQ(*f.GetFloat("f64"), -2.25);
  EXPECT_EQ(*f.GetFloat("i32"), -2000000000.0);
  EXPECT_TRUE(*f.GetBool("t"));
  EXPECT_FALSE(*f.GetBool("f"));
  EXPECT_EQ(*f.GetString("s"), "hello \xe2\x96\x81 world");
  EXPECT_EQ(*f.GetString("empty"), "");
  EXPECT_THAT(*f.GetStringArray("strs"), ElementsAre("a", "", "ccc"));
  EXPECT_THAT(*f.GetIntArray("ints"), ElementsAre(1, -2, 3));
  EXPECT_THAT(*f.GetFloatArray("floats"), ElementsAre(0.5f, -1.0f));
  EXPECT_THAT(*f.GetIntArray("u16s"), ElementsAre(1, 65535));
  EXPECT_TRUE(f.GetIntArray("empty_arr")->empty());
  EXPECT_EQ(f.Find("strs")->elem_type, GgufType::kString);

  // Type errors name the key; absent keys are NOT_FOUND; fallbacks apply only when absent.
  EXPECT_EQ(f.GetString("u8").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(f.GetString("u8").status()), HasSubstr("u8"));
  EXPECT_EQ(f.GetInt("f32").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetBool("u8").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetUint("i8").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetStringArray("ints").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetIntArray("strs").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.GetInt("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*f.GetIntOr("nope", 7), 7);
  EXPECT_EQ(f.GetIntOr("s", 7).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*f.GetStringOr("nope", "x"), "x");
}

TEST(GgufTest, WriterRoundTripTensors) {
  for (uint32_t alignment : {32u, 64u, 1u}) {
    GgufWriter w;
    if (alignment != 32) w.SetAlignment(alignment);
    w.AddString("general.architecture", "test");
    const std::vector<float> x = Random(4 * 64, 3);
    const std::vector<float> odd = Random(3 * 5, 4);
    ASSERT_TRUE(w.AddTensor("f32", GgmlType::kF32, {3, 5}, odd.data()).ok());
    ASSERT_TRUE(w.AddTensor("f16", GgmlType::kF16, {4, 64}, x.data()).ok());
    ASSERT_TRUE(w.AddTensor("bf16", GgmlType::kBF16, {2, 2, 64}, x.data()).ok());
    ASSERT_TRUE(w.AddTensor("q8", GgmlType::kQ8_0, {4, 64}, x.data()).ok());
    ASSERT_TRUE(w.AddTensor("q4", GgmlType::kQ4_0, {4, 64}, x.data()).ok());
    ASSERT_TRUE(w.AddTensor("vec", GgmlType::kF32, {7}, odd.data()).ok());
    EXPECT_FALSE(w.AddTensor("bad", GgmlType::kQ8_0, {2, 20}, x.data()).ok());
    EXPECT_FALSE(w.AddTensorBytes("bad", GgmlType::kF32, {2}, "abc").ok());
    auto g = GgufFile::OpenFromBytes(w.Serialize());
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_EQ((*g)->alignment(), alignment);
    ASSERT_EQ((*g)->tensors().size(), 6u);
    EXPECT_THAT((*g)->tensors()[2].dims, ElementsAre(64, 2, 2));  // innermost first

    auto f32 = (*g)->View("f32");
    ASSERT_TRUE(f32.ok());
    EXPECT_THAT(f32->shape, ElementsAre(3, 5));
    EXPECT_EQ(std::memcmp(f32->data, odd.data(), 15 * 4), 0);
    const auto at = static_cast<const uint8_t*>(f32->data) - (*g)->file()->data();
    EXPECT_EQ(at % alignment, 0u);

    auto f16 = (*g)->View("f16");
    EXPECT_EQ(f16->dtype, DType::kF16);
    EXPECT_EQ(f16->bytes, 4u * 64 * 2);
    auto bf16 = (*g)->View("bf16");
    EXPECT_EQ(bf16->dtype, DType::kBF16);
    EXPECT_THAT(bf16->shape, ElementsAre(2, 2, 64));
    for (int i = 0; i < 256; ++i) {
      uint16_t h, b;
      std::memcpy(&h, static_cast<const uint8_t*>(f16->data) + 2 * i, 2);
      std::memcpy(&b, static_cast<const uint8_t*>(bf16->data) + 2 * i, 2);
      EXPECT_EQ(h, kernels::F32ToF16(x[i]));
      EXPECT_EQ(b, kernels::F32ToBF16(x[i]));
    }
    auto q8 = (*g)->View("q8");
    EXPECT_EQ(q8->storage, StorageType::kQ8_0);
    EXPECT_EQ(q8->dtype, DType::kF32);
    EXPECT_THAT(q8->shape, ElementsAre(4, 64));
    EXPECT_EQ(q8->bytes, 8u * 34);
    auto q4 = (*g)->View("q4");
    EXPECT_EQ(q4->storage, StorageType::kQ4_0);
    EXPECT_EQ(q4->bytes, 8u * 18);
    std::vector<float> y8(256), y4(256);
    DequantizeRowQ8_0(static_cast<const BlockQ8_0*>(q8->data), 256, y8.data());
    DequantizeRowQ4_0(static_cast<const BlockQ4_0*>(q4->data), 256, y4.data());
    double e8 = 0, e4 = 0, s = 0;
    for (int i = 0; i < 256; ++i) {
      e8 += (x[i] - y8[i]) * (x[i] - y8[i]);
      e4 += (x[i] - y4[i]) * (x[i] - y4[i]);
      s += x[i] * x[i];
    }
    EXPECT_LT(e8 / s, 1e-4);
    EXPECT_LT(e4 / s, 3e-2);
    EXPECT_EQ((*g)->View("missing").status().code(), absl::StatusCode::kNotFound);
  }
}

TEST(GgufTest, UnsupportedTypesListButDoNotView) {
  GgufWriter w;
  ASSERT_TRUE(w.AddTensorBytes("blk.0.ffn_down.weight", GgmlType::kQ4_K, {2, 256},
                               std::string(2 * 144, '\0'))
                  .ok());
  ASSERT_TRUE(w.AddTensorBytes("i32", GgmlType::kI32, {3}, std::string(12, '\0')).ok());
  auto g = GgufFile::OpenFromBytes(w.Serialize(), "k.gguf");
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ((*g)->tensors().size(), 2u);
  EXPECT_EQ((*g)->tensors()[0].bytes, 288u);
  auto v = (*g)->View("blk.0.ffn_down.weight");
  EXPECT_EQ(v.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Msg(v.status()), HasSubstr("blk.0.ffn_down.weight"));
  EXPECT_THAT(Msg(v.status()), HasSubstr("Q4_K"));
}

// ---- malformed files ------------------------------------------------------------------

std::string Le32(uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
std::string Le64(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }
std::string Str(const std::string& s) { return Le64(s.size()) + s; }
std::string Head(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
  return "GGUF" + Le32(version) + Le64(n_tensors) + Le64(n_kv);
}
std::string TensorInfo(const std::string& name, std::vector<uint64_t> dims, uint32_t type,
                       uint64_t offset) {
  std::string s = Str(name) + Le32(static_cast<uint32_t>(dims.size()));
  for (uint64_t d : dims) s += Le64(d);
  return s + Le32(type) + Le64(offset);
}
std::string Pad(std::string s, size_t align = 32) {
  s.resize((s.size() + align - 1) / align * align, '\0');
  return s;
}

void ExpectBad(const std::string& bytes, const std::string& word) {
  auto g = GgufFile::OpenFromBytes(bytes, "bad.gguf");
  ASSERT_FALSE(g.ok()) << word;
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << g.status();
  EXPECT_THAT(Msg(g.status()), HasSubstr("bad.gguf"));
  EXPECT_THAT(Msg(g.status()), HasSubstr(word));
}

TEST(GgufTest, MalformedHeaders) {
  ExpectBad("", "magic");
  ExpectBad("GGML" + Le32(3) + Le64(0) + Le64(0), "magic");
  ExpectBad(Head(0, 0, 1), "version");
  ExpectBad(Head(0, 0, 4), "version");
  ExpectBad(Head(0, 0, 0x03000000), "version");  // big-endian file
  ExpectBad("GGUF" + Le32(3) + Le64(0), "metadata count");
  ExpectBad(Head(0, 1ull << 60), "metadata count");
  ExpectBad(Head(~0ull, 0), "tensor count");
  ExpectBad(Head(1000, 0) + std::string(100, '\0'), "tensor count");
  // Key and string lengths past the end.
  ExpectBad(Head(0, 1) + Le64(~0ull) + std::string(20, 'x'), "exceeds");
  ExpectBad(Head(0, 1) + Str("k") + Le32(8) + Le64(1ull << 40) + "abc", "k");
  // Unknown value types, nested arrays, huge arrays.
  ExpectBad(Head(0, 1) + Str("k") + Le32(13) + std::string(16, '\0'), "unknown value type");
  ExpectBad(Head(0, 1) + Str("k") + Le32(9) + Le32(77) + Le64(1) + std::string(8, '\0'),
            "element type");
  ExpectBad(Head(0, 1) + Str("k") + Le32(9) + Le32(9) + Le64(1) + std::string(16, '\0'), "nested");
  ExpectBad(Head(0, 1) + Str("k") + Le32(9) + Le32(8) + Le64(1ull << 61) + std::string(16, '\0'),
            "array count");
  ExpectBad(Head(0, 1) + Str("k") + Le32(9) + Le32(12) + Le64(1ull << 61) + std::string(16, '\0'),
            "array count");
  ExpectBad(Head(0, 1) + Str("k") + Le32(10) + "abc", "k");  // truncated scalar
  ExpectBad(Head(0, 2) + Str("k") + Le32(0) + "a" + Str("k") + Le32(0) + "b", "duplicate");
  ExpectBad(Head(0, 1) + Str("general.alignment") + Le32(4) + Le32(24), "alignment");
  ExpectBad(Head(0, 1) + Str("general.alignment") + Le32(4) + Le32(0), "alignment");
  ExpectBad(Head(0, 1) + Str("general.alignment") + Le32(8) + Str("32"), "alignment");

  // Tensor infos.
  ExpectBad(Pad(Head(1, 0) + TensorInfo("t", {4, 1, 1, 1, 1}, 0, 0)) + std::string(64, '\0'),
            "dims");
  ExpectBad(Pad(Head(1, 0) + TensorInfo("t", {4}, 99, 0)) + std::string(64, '\0'),
            "unknown ggml type");
  ExpectBad(Pad(Head(1, 0) + TensorInfo("t", {40}, 8, 0)) + std::string(64, '\0'), "block");
  ExpectBad(Pad(Head(1, 0) + TensorInfo("t", {4}, 0, 8)) + std::string(64, '\0'), "alignment");
  ExpectBad(Pad(Head(1, 0) + TensorInfo("t", {64}, 0, 0)) + std::string(64, '\0'), "past the end");
  ExpectBad(Pad(Head(1, 0) + TensorInfo("t", {4}, 0, ~0ull - 31)) + std::string(64, '\0'),
            "past the end");
  ExpectBad(Pad(Head(1, 0) + TensorInfo("t", {1ull << 32, 1ull << 32, 1ull << 32}, 0, 0)) +
                std::string(64, '\0'),
            "overflow");
  ExpectBad(Pad(Head(1, 0) + TensorInfo("t", {1ull << 62, 4}, 0, 0)) + std::string(64, '\0'), "t");
  ExpectBad(Pad(Head(1, 0) + TensorInfo("t", {1ull << 63}, 0, 0)) + std::string(64, '\0'), "t");
  ExpectBad(Pad(Head(2, 0) + TensorInfo("a", {8}, 0, 0) + TensorInfo("b", {8}, 0, 0)) +
                std::string(64, '\0'),
            "overlap");
  ExpectBad(Pad(Head(2, 0) + TensorInfo("a", {8}, 0, 0) + TensorInfo("a", {8}, 0, 32)) +
                std::string(64, '\0'),
            "duplicate tensor");
  // A valid hand-built file, to show the builders above are right.
  auto ok = GgufFile::OpenFromBytes(
      Pad(Head(2, 0) + TensorInfo("a", {8}, 0, 0) + TensorInfo("b", {8}, 0, 32)) +
      std::string(64, '\0'));
  EXPECT_TRUE(ok.ok()) << ok.status();
  // Version 2 files read the same way.
  EXPECT_TRUE(GgufFile::OpenFromBytes(Head(0, 1, 2) + Str("k") + Le32(0) + "a").ok());
}

std::string SmallValidFile() {
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddStringArray("tokenizer.ggml.tokens", {"a", "b", "c"});
  w.AddFloat32Array("tokenizer.ggml.scores", {0, 1, 2});
  w.AddUint32("llama.block_count", 1);
  const std::vector<float> x = Random(64, 5);
  (void)w.AddTensor("q8", GgmlType::kQ8_0, {2, 32}, x.data());
  (void)w.AddTensor("f", GgmlType::kF32, {3}, x.data());
  (void)w.AddTensor("q4", GgmlType::kQ4_0, {1, 32}, x.data());
  return w.Serialize();
}

TEST(GgufTest, TruncationAtEveryLengthNeverCrashes) {
  const std::string good = SmallValidFile();
  ASSERT_TRUE(GgufFile::OpenFromBytes(good).ok());
  auto g = GgufFile::OpenFromBytes(good);
  uint64_t data_end = 0;
  for (const auto& t : (*g)->tensors()) data_end = std::max(data_end, t.offset + t.bytes);
  const uint64_t trailing = (data_end + 31) / 32 * 32 - data_end;
  const size_t needed = good.size() - trailing;
  for (size_t len = 0; len < good.size(); ++len) {
    auto r = GgufFile::OpenFromBytes(good.substr(0, len));
    if (len < needed) {
      EXPECT_FALSE(r.ok()) << len;
    }
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(GgufTest, RandomMutationsNeverCrash) {
  const std::string good = SmallValidFile();
  std::mt19937 rng(7);
  for (int iter = 0; iter < 20000; ++iter) {
    std::string b = good;
    const int flips = 1 + rng() % 4;
    for (int k = 0; k < flips; ++k) {
      const size_t at = rng() % std::min<size_t>(b.size(), 200);  // mostly the header
      b[at] = static_cast<char>(rng() % 3 == 0 ? 0xff : rng());
    }
    auto g = GgufFile::OpenFromBytes(b);
    if (!g.ok()) continue;
    for (const std::string& k : (*g)->keys()) {
      (void)(*g)->GetIntArray(k);
      (void)(*g)->GetFloatArray(k);
      (void)(*g)->GetStringArray(k);
    }
    (void)ReadGgufVocab(**g);
    for (const auto& t : (*g)->tensors()) {
      auto v = (*g)->View(t);
      if (!v.ok()) continue;
      volatile uint8_t sink = 0;
      for (size_t i = 0; i < v->bytes; ++i) sink ^= static_cast<const uint8_t*>(v->data)[i];
    }
    ModelConfig c;
    (void)OpenGgufModel(*g, &c);
  }
}

// ---- vocabularies ---------------------------------------------------------------------

TEST(GgufVocabTest, LlamaSpm) {
  REQUIRE_SHARED(path, "testdata/tokenizers/ggml-vocab-llama-spm.gguf");
  auto g = GgufFile::Open(path);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE((*g)->tensors().empty());
  auto v = ReadGgufVocab(**g);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->type, VocabType::kSpm);
  EXPECT_EQ(v->tokens.size(), 32000u);
  EXPECT_EQ(v->scores.size(), 32000u);
  EXPECT_EQ(v->token_types.size(), 32000u);
  EXPECT_EQ(v->tokens[1], "<s>");
  EXPECT_EQ(v->tokens[2], "</s>");
  EXPECT_EQ(v->token_types[0], TokenType::kUnknown);
  EXPECT_EQ(v->token_types[1], TokenType::kControl);
  EXPECT_EQ(v->tokens[3], "<0x00>");
  EXPECT_EQ(v->token_types[3], TokenType::kByte);
  EXPECT_EQ(v->bos_id, 1);
  EXPECT_EQ(v->eos_id, 2);
  EXPECT_EQ(v->unk_id, 0);
  EXPECT_EQ(v->pad_id, -1);
  EXPECT_TRUE(v->add_bos);
  EXPECT_FALSE(v->add_eos);
  EXPECT_TRUE(v->add_space_prefix);
  EXPECT_EQ(v->pre, "default");
  EXPECT_TRUE(v->merges.empty());
}

TEST(GgufVocabTest, Gpt2) {
  REQUIRE_SHARED(path, "testdata/tokenizers/ggml-vocab-gpt-2.gguf");
  auto g = GgufFile::Open(path);
  ASSERT_TRUE(g.ok()) << g.status();
  auto v = ReadGgufVocab(**g);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->type, VocabType::kByteLevel);
  EXPECT_EQ(v->tokens.size(), 50257u);
  EXPECT_EQ(v->merges.size(), 50000u);
  EXPECT_TRUE(v->scores.empty());
  EXPECT_EQ(v->tokens[50256], "<|endoftext|>");
  EXPECT_EQ(v->bos_id, 50256);
  EXPECT_EQ(v->eos_id, 50256);
  EXPECT_EQ(v->pre, "gpt-2");
  EXPECT_FALSE(v->add_bos);
  EXPECT_FALSE(v->add_space_prefix);
  EXPECT_EQ(v->merges[0].find(' ') != std::string::npos, true);
}

TEST(GgufVocabTest, Phi3) {
  REQUIRE_SHARED(path, "testdata/tokenizers/ggml-vocab-phi-3.gguf");
  auto g = GgufFile::Open(path);
  ASSERT_TRUE(g.ok()) << g.status();
  auto v = ReadGgufVocab(**g);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->type, VocabType::kSpm);
  EXPECT_EQ(v->tokens.size(), 32064u);
  EXPECT_EQ(v->eos_id, 32000);
  EXPECT_EQ(v->pad_id, 32000);
  EXPECT_THAT(v->chat_template, HasSubstr("messages"));
  EXPECT_EQ(*(*g)->GetString("general.architecture"), "phi3");
  ModelConfig c;
  EXPECT_EQ(OpenGgufModel(*g, &c).status().code(), absl::StatusCode::kUnimplemented);
}

TEST(GgufVocabTest, Errors) {
  auto read = [](GgufWriter& w) {
    auto g = GgufFile::OpenFromBytes(w.Serialize(), "v.gguf");
    EXPECT_TRUE(g.ok());
    return ReadGgufVocab(**g).status();
  };
  GgufWriter w0;
  EXPECT_THAT(Msg(read(w0)), HasSubstr("tokenizer.ggml.model"));
  GgufWriter w1;
  w1.AddString("tokenizer.ggml.model", "bert");
  EXPECT_EQ(read(w1).code(), absl::StatusCode::kUnimplemented);
  GgufWriter w2;
  w2.AddString("tokenizer.ggml.model", "llama");
  w2.AddStringArray("tokenizer.ggml.tokens", {"a", "b"});
  w2.AddFloat32Array("tokenizer.ggml.scores", {1});
  EXPECT_THAT(Msg(read(w2)), HasSubstr("tokenizer.ggml.scores"));
  GgufWriter w3;
  w3.AddString("tokenizer.ggml.model", "llama");
  w3.AddStringArray("tokenizer.ggml.tokens", {"a", "b"});
  w3.AddInt32Array("tokenizer.ggml.token_type", {1, 9});
  EXPECT_THAT(Msg(read(w3)), HasSubstr("token_type"));
  GgufWriter w4;
  w4.AddString("tokenizer.ggml.model", "gpt2");
  w4.AddStringArray("tokenizer.ggml.tokens", {"a", "b"});
  EXPECT_THAT(Msg(read(w4)), HasSubstr("merges"));
  GgufWriter w5;
  w5.AddString("tokenizer.ggml.model", "llama");
  w5.AddStringArray("tokenizer.ggml.tokens", {"a", "b"});
  w5.AddUint32("tokenizer.ggml.eos_token_id", 2);
  EXPECT_THAT(Msg(read(w5)), HasSubstr("eos_token_id"));
  GgufWriter w6;
  w6.AddString("tokenizer.ggml.model", "llama");
  w6.AddInt32Array("tokenizer.ggml.tokens", {1});
  EXPECT_THAT(Msg(read(w6)), HasSubstr("tokenizer.ggml.tokens"));
}

// ---- llama model: names, config, RoPE permutation --------------------------------------

// llama.cpp's converter, written as the numpy it performs:
// w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2).reshape(rows, cols).
std::vector<float> ConverterPermute(const std::vector<float>& w, int64_t rows, int64_t cols,
                                    int64_t n_head) {
  const int64_t half = rows / n_head / 2;
  std::vector<float> out(w.size());
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t i = 0; i < half; ++i) {  // axis 1 after swap
      for (int64_t s = 0; s < 2; ++s) {   // axis 2 after swap
        const int64_t dst = (h * half + i) * 2 + s;
        const int64_t src = (h * 2 + s) * half + i;
        std::memcpy(&out[dst * cols], &w[src * cols], cols * sizeof(float));
      }
    }
  }
  return out;
}

struct TinyModel {
  static constexpr int64_t kHidden = 64, kHeads = 4, kKvHeads = 2, kHeadDim = 16, kFfn = 96,
                           kVocab = 40, kLayers = 2;
  std::map<std::string, std::vector<float>> hf;  // HF name -> weights (HF layout)
  std::map<std::string, std::vector<int64_t>> shape;
  std::string bytes;
};

TinyModel BuildTinyModel(GgmlType type, const std::string& arch, bool tied) {
  TinyModel m;
  GgufWriter w;
  w.AddString("general.architecture", arch);
  const std::string p = arch + ".";
  w.AddUint32(p + "embedding_length", TinyModel::kHidden);
  w.AddUint32(p + "feed_forward_length", TinyModel::kFfn);
  w.AddUint32(p + "block_count", TinyModel::kLayers);
  w.AddUint32(p + "attention.head_count", TinyModel::kHeads);
  w.AddUint32(p + "attention.head_count_kv", TinyModel::kKvHeads);
  w.AddFloat32(p + "attention.layer_norm_rms_epsilon", 1e-6f);
  w.AddFloat32(p + "rope.freq_base", 500000.0f);
  w.AddUint32(p + "context_length", 256);
  w.AddUint32(p + "rope.dimension_count", TinyModel::kHeadDim);
  std::vector<std::string> tokens;
  for (int i = 0; i < TinyModel::kVocab; ++i) tokens.push_back(absl::StrCat("t", i));
  w.AddString("tokenizer.ggml.model", "llama");
  w.AddStringArray("tokenizer.ggml.tokens", tokens);
  w.AddUint32("tokenizer.ggml.bos_token_id", 1);
  w.AddUint32("tokenizer.ggml.eos_token_id", 2);
  uint32_t seed = 100;
  const bool permute = arch != "qwen2";
  auto add = [&](const std::string& gg, const std::string& hf, std::vector<int64_t> shape,
                 GgmlType t, int64_t heads) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v = Random(n, seed++, 0.1f);
    m.hf[hf] = v;
    m.shape[hf] = shape;
    if (heads > 0 && permute) {
      v = ConverterPermute(v, shape[0], shape.size() > 1 ? shape[1] : 1, heads);
    }
    ASSERT_TRUE(w.AddTensor(gg, t, shape, v.data()).ok()) << gg;
  };
  const int64_t h = TinyModel::kHidden, kv = TinyModel::kKvHeads * TinyModel::kHeadDim;
  add("token_embd.weight", "model.embed_tokens.weight", {TinyModel::kVocab, h}, type, 0);
  add("output_norm.weight", "model.norm.weight", {h}, GgmlType::kF32, 0);
  if (!tied) add("output.weight", "lm_head.weight", {TinyModel::kVocab, h}, type, 0);
  for (int l = 0; l < TinyModel::kLayers; ++l) {
    const std::string b = absl::StrCat("blk.", l, ".");
    const std::string H = absl::StrCat("model.layers.", l, ".");
    add(b + "attn_norm.weight", H + "input_layernorm.weight", {h}, GgmlType::kF32, 0);
    add(b + "attn_q.weight", H + "self_attn.q_proj.weight", {h, h}, type, TinyModel::kHeads);
    add(b + "attn_k.weight", H + "self_attn.k_proj.weight", {kv, h}, type, TinyModel::kKvHeads);
    add(b + "attn_v.weight", H + "self_attn.v_proj.weight", {kv, h}, type, 0);
    add(b + "attn_output.weight", H + "self_attn.o_proj.weight", {h, h}, type, 0);
    if (arch == "qwen2") {
      add(b + "attn_q.bias", H + "self_attn.q_proj.bias", {h}, GgmlType::kF32, 0);
      add(b + "attn_k.bias", H + "self_attn.k_proj.bias", {kv}, GgmlType::kF32, 0);
      add(b + "attn_v.bias", H + "self_attn.v_proj.bias", {kv}, GgmlType::kF32, 0);
    }
    add(b + "ffn_norm.weight", H + "post_attention_layernorm.weight", {h}, GgmlType::kF32, 0);
    add(b + "ffn_gate.weight", H + "mlp.gate_proj.weight", {TinyModel::kFfn, h}, type, 0);
    add(b + "ffn_up.weight", H + "mlp.up_proj.weight", {TinyModel::kFfn, h}, type, 0);
    add(b + "ffn_down.weight", H + "mlp.down_proj.weight", {h, TinyModel::kFfn}, type, 0);
  }
  m.bytes = w.Serialize();
  return m;
}

// The bytes `type` stores for HF-layout values (what an unpermuted source must return).
std::string Encode(GgmlType type, const std::vector<float>& v) {
  GgufWriter w;
  EXPECT_TRUE(w.AddTensor("x", type, {static_cast<int64_t>(v.size())}, v.data()).ok());
  auto g = GgufFile::OpenFromBytes(w.Serialize());
  auto t = (*g)->View("x");
  return std::string(static_cast<const char*>(t->data), t->bytes);
}

TEST(GgufModelTest, LlamaRoundTripUndoesRopePermutation) {
  for (GgmlType type :
       {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0, GgmlType::kQ4_0}) {
    SCOPED_TRACE(GgmlTypeName(type));
    TinyModel m = BuildTinyModel(type, "llama", /*tied=*/false);
    auto g = GgufFile::OpenFromBytes(m.bytes, "tiny.gguf");
    ASSERT_TRUE(g.ok()) << g.status();
    ModelConfig c;
    auto src = OpenGgufModel(*g, &c);
    ASSERT_TRUE(src.ok()) << src.status();
    EXPECT_EQ(c.architecture, "LlamaForCausalLM");
    EXPECT_EQ(c.hidden_size, 64);
    EXPECT_EQ(c.intermediate_size, 96);
    EXPECT_EQ(c.num_hidden_layers, 2);
    EXPECT_EQ(c.num_attention_heads, 4);
    EXPECT_EQ(c.num_key_value_heads, 2);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_EQ(c.vocab_size, 40);
    EXPECT_EQ(c.max_position_embeddings, 256);
    EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-6f);
    EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_FALSE(c.attention_bias);
    EXPECT_EQ(c.bos_token_id, 1);
    EXPECT_EQ(c.eos_token_id, 2);
    EXPECT_EQ((*src)->Names().size(), m.hf.size());
    for (const auto& [name, values] : m.hf) {
      auto v = (*src)->Get(name);
      ASSERT_TRUE(v.ok()) << name << ": " << v.status();
      EXPECT_EQ(v->name, name);
      EXPECT_EQ(v->shape, m.shape[name]) << name;
      const GgmlType t = v->shape.size() == 1 ? GgmlType::kF32 : type;
      // Row permutation commutes with per-row conversion and block quantization, so the
      // un-permuted bytes equal those of the HF-layout values encoded directly.
      const std::string want = Encode(t, values);
      ASSERT_EQ(v->bytes, want.size()) << name;
      EXPECT_EQ(std::memcmp(v->data, want.data(), want.size()), 0) << name;
    }
  }
}

// Semantic check of the direction: llama.cpp applies RoPE to adjacent pairs (2i, 2i+1) of the
// GGUF rows; the engine applies rotate-half RoPE to pairs (i, i + D/2) of the rows we return.
// Both must rotate the same values by the same angles.
TEST(GgufModelTest, InterleavedRopeOnGgufEqualsRotateHalfOnSource) {
  TinyModel m = BuildTinyModel(GgmlType::kF32, "llama", /*tied=*/true);
  auto g = GgufFile::OpenFromBytes(m.bytes);
  ASSERT_TRUE(g.ok());
  ModelConfig c;
  auto src = OpenGgufModel(*g, &c);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_TRUE(c.tie_word_embeddings);
  const int64_t d = TinyModel::kHeadDim, h = TinyModel::kHidden;
  const std::vector<float> x = Random(h, 999);
  const int pos = 5;
  for (const char* which : {"attn_q", "attn_k"}) {
    auto gg = (*g)->View(absl::StrCat("blk.1.", which, ".weight"));
    auto hf = (*src)->Get(std::string("model.layers.1.self_attn.") +
                          (which[5] == 'q' ? "q_proj.weight" : "k_proj.weight"));
    ASSERT_TRUE(gg.ok() && hf.ok());
    const int64_t rows = gg->shape[0];
    auto matvec = [&](const float* w) {
      std::vector<float> y(rows, 0.0f);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t k = 0; k < h; ++k) y[r] += w[r * h + k] * x[k];
      }
      return y;
    };
    std::vector<float> a = matvec(static_cast<const float*>(gg->data));
    std::vector<float> b = matvec(static_cast<const float*>(hf->data));
    for (int64_t head = 0; head < rows / d; ++head) {
      for (int64_t i = 0; i < d / 2; ++i) {
        const float ang = pos * std::pow(500000.0f, -2.0f * i / d);
        const float cs = std::cos(ang), sn = std::sin(ang);
        const float a0 = a[head * d + 2 * i], a1 = a[head * d + 2 * i + 1];  // interleaved
        const float b0 = b[head * d + i], b1 = b[head * d + i + d / 2];      // rotate-half
        EXPECT_FLOAT_EQ(a0 * cs - a1 * sn, b0 * cs - b1 * sn);
        EXPECT_FLOAT_EQ(a0 * sn + a1 * cs, b0 * sn + b1 * cs);
      }
    }
  }
  // Permute / unpermute are inverses.
  std::vector<uint8_t> rows(64 * 3), p(rows.size()), back(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<uint8_t>(i);
  ASSERT_TRUE(PermuteRopeRows(rows.data(), 64, 3, 4, p.data()));
  ASSERT_TRUE(UnpermuteRopeRows(p.data(), 64, 3, 4, back.data()));
  EXPECT_EQ(rows, back);
  EXPECT_NE(rows, p);
  EXPECT_FALSE(PermuteRopeRows(rows.data(), 6, 3, 4, p.data()));
}

TEST(GgufModelTest, Qwen2IsNotPermutedAndHasBiases) {
  TinyModel m = BuildTinyModel(GgmlType::kF32, "qwen2", /*tied=*/true);
  auto g = GgufFile::OpenFromBytes(m.bytes);
  ASSERT_TRUE(g.ok());
  ModelConfig c;
  auto src = OpenGgufModel(*g, &c);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(c.architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(c.attention_bias);
  for (const auto& [name, values] : m.hf) {
    auto v = (*src)->Get(name);
    ASSERT_TRUE(v.ok()) << name;
    EXPECT_EQ(std::memcmp(v->data, values.data(), values.size() * 4), 0) << name;
  }
}

// The real stories260K weights through a llama.cpp-style conversion (Q/K permuted, F32) come
// back from the GGUF source identical to the safetensors ones, ragged FFN of 172 included.
TEST(GgufModelTest, Stories260KThroughGguf) {
  REQUIRE_SHARED(dir, "models/stories260K");
  auto hf = OpenCheckpoint(dir);
  ASSERT_TRUE(hf.ok()) << hf.status();
  const ModelConfig& c = hf->config;
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddUint32("llama.embedding_length", c.hidden_size);
  w.AddUint32("llama.feed_forward_length", c.intermediate_size);
  w.AddUint32("llama.block_count", c.num_hidden_layers);
  w.AddUint32("llama.attention.head_count", c.num_attention_heads);
  w.AddUint32("llama.attention.head_count_kv", c.num_key_value_heads);
  w.AddUint32("llama.context_length", c.max_position_embeddings);
  w.AddFloat32("llama.attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  w.AddFloat32("llama.rope.freq_base", c.rope_theta);
  w.AddStringArray("tokenizer.ggml.tokens", std::vector<std::string>(c.vocab_size, "x"));
  w.AddUint32("tokenizer.ggml.bos_token_id", c.bos_token_id);
  w.AddUint32("tokenizer.ggml.eos_token_id", c.eos_token_id);
  std::map<std::string, std::string> to_gguf;  // HF -> GGUF, inverted from GgufToHfName
  to_gguf["model.embed_tokens.weight"] = "token_embd.weight";
  to_gguf["model.norm.weight"] = "output_norm.weight";
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                          "ffn_down", "attn_norm", "ffn_norm"}) {
      const std::string gg = absl::StrCat("blk.", l, ".", n, ".weight");
      to_gguf[GgufToHfName(gg)] = gg;
    }
  }
  const auto names = hf->tensors->Names();
  ASSERT_EQ(names.size(), to_gguf.size());
  for (const std::string& name : names) {
    ASSERT_TRUE(to_gguf.count(name)) << name;
    auto v = hf->tensors->Get(name);
    ASSERT_TRUE(v.ok());
    std::vector<float> x(static_cast<const float*>(v->data),
                         static_cast<const float*>(v->data) + v->numel());
    const std::string& gg = to_gguf[name];
    int64_t heads = 0;
    if (absl::StrContains(gg, "attn_q")) heads = c.num_attention_heads;
    if (absl::StrContains(gg, "attn_k")) heads = c.num_key_value_heads;
    if (heads) x = ConverterPermute(x, v->shape[0], v->shape[1], heads);
    ASSERT_TRUE(w.AddTensor(gg, GgmlType::kF32, v->shape, x.data()).ok()) << gg;
  }
  auto g = GgufFile::OpenFromBytes(w.Serialize());
  ASSERT_TRUE(g.ok()) << g.status();
  ModelConfig gc;
  auto src = OpenGgufModel(*g, &gc);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(gc.head_dim, c.head_dim);
  EXPECT_EQ(gc.vocab_size, c.vocab_size);
  EXPECT_EQ(gc.intermediate_size, 172);
  EXPECT_TRUE(gc.tie_word_embeddings);
  EXPECT_EQ(gc.eos_token_id, c.eos_token_id);
  EXPECT_EQ((*src)->Names(), names);
  for (const std::string& name : names) {
    auto a = hf->tensors->Get(name);
    auto b = (*src)->Get(name);
    ASSERT_TRUE(b.ok()) << name;
    EXPECT_EQ(a->shape, b->shape) << name;
    ASSERT_EQ(a->bytes, b->bytes) << name;
    EXPECT_EQ(std::memcmp(a->data, b->data, a->bytes), 0) << name;
  }
}

TEST(GgufModelTest, OpenCheckpointFromFile) {
  TinyModel m = BuildTinyModel(GgmlType::kQ8_0, "llama", /*tied=*/true);
  std::string dir = ::testing::TempDir() + "/gguf_XXXXXX";
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  const std::string path = dir + "/tiny.gguf";
  {
    std::ofstream f(path, std::ios::binary);
    f.write(m.bytes.data(), static_cast<std::streamsize>(m.bytes.size()));
  }
  auto c = OpenCheckpoint(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NE(c->gguf, nullptr);
  EXPECT_EQ(c->dir, dir);
  EXPECT_EQ(c->config.num_hidden_layers, 2);
  auto q = c->tensors->Get("model.layers.0.self_attn.q_proj.weight");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->storage, StorageType::kQ8_0);
  auto vocab = ReadGgufVocab(*c->gguf);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_EQ(vocab->tokens.size(), 40u);
  // A GGUF file with a bad header names the path.
  const std::string bad = dir + "/bad.gguf";
  {
    std::ofstream f(bad, std::ios::binary);
    f << "GGUF\x09";
  }
  auto b = OpenCheckpoint(bad);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(b.status()), HasSubstr(bad));
}

}  // namespace
}  // namespace compressd

// GPTQ / AWQ 4-bit checkpoints (checkpoint_io.h WrapQuantizedSafetensors): a tiny synthetic
// safetensors file written here (with its own small writer) loads as int4 group Linears whose
// values equal scale * (q - zero) exactly as each packing defines them; act-order GPTQ falls
// back to BF16; other bit widths are UNIMPLEMENTED.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <vector>

#include "engine/compress/checkpoint_io.h"
#include "gtest/gtest.h"
#include "kernels/gemm.h"
#include "nlohmann/json.hpp"

namespace compressd {
namespace {

struct StTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

std::string SafetensorsBytes(const std::vector<StTensor>& ts) {
  nlohmann::json h = nlohmann::json::object();
  size_t off = 0;
  std::string body;
  for (const StTensor& t : ts) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    body.append(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
    off += t.bytes.size();
  }
  const std::string hs = h.dump();
  const uint64_t n = hs.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + hs + body;
}

template <typename T>
std::vector<uint8_t> Bytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

struct Synthetic {
  int64_t out = 16, in = 128, gs = 32;
  std::vector<uint8_t> q;   // [out][in]
  std::vector<uint8_t> z;   // [groups][out] (actual zero)
  std::vector<float> s;     // [groups][out], fp16-exact
  std::vector<int32_t> g_idx;
  float Value(int64_t o, int64_t i) const {
    const int64_t g = g_idx[i];
    return s[g * out + o] * (static_cast<float>(q[o * in + i]) - z[g * out + o]);
  }
};

Synthetic MakeValues(bool act_order) {
  Synthetic x;
  std::mt19937 rng(5);
  const int64_t groups = x.in / x.gs;
  x.q.resize(x.out * x.in);
  for (auto& v : x.q) v = rng() % 16;
  x.z.resize(groups * x.out);
  for (auto& v : x.z) v = 1 + rng() % 15;  // GPTQ v1 stores zero - 1 in 4 bits
  x.s.resize(groups * x.out);
  for (auto& v : x.s) v = kernels::F16ToF32(kernels::F32ToF16(0.001f * (1 + rng() % 50)));
  for (int64_t i = 0; i < x.in; ++i) x.g_idx.push_back(static_cast<int32_t>(i / x.gs));
  if (act_order) std::shuffle(x.g_idx.begin(), x.g_idx.end(), rng);
  return x;
}

std::vector<StTensor> Pack(const Synthetic& x, bool awq) {
  static const int kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};  // AWQ: nibble j holds out offset
  const int64_t groups = x.in / x.gs;
  std::vector<int32_t> qw, qz(groups * x.out / 8, 0);
  std::vector<uint16_t> sc(x.s.size());
  for (size_t i = 0; i < sc.size(); ++i) sc[i] = kernels::F32ToF16(x.s[i]);
  if (awq) {
    qw.assign(x.in * x.out / 8, 0);
    for (int64_t i = 0; i < x.in; ++i) {
      for (int64_t o8 = 0; o8 < x.out / 8; ++o8) {
        uint32_t w = 0;
        for (int j = 0; j < 8; ++j) w |= uint32_t{x.q[(o8 * 8 + kOrder[j]) * x.in + i]} << (4 * j);
        qw[i * (x.out / 8) + o8] = static_cast<int32_t>(w);
      }
    }
  } else {
    qw.assign(x.in / 8 * x.out, 0);
    for (int64_t i8 = 0; i8 < x.in / 8; ++i8) {
      for (int64_t o = 0; o < x.out; ++o) {
        uint32_t w = 0;
        for (int j = 0; j < 8; ++j) w |= uint32_t{x.q[o * x.in + i8 * 8 + j]} << (4 * j);
        qw[i8 * x.out + o] = static_cast<int32_t>(w);
      }
    }
  }
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t o8 = 0; o8 < x.out / 8; ++o8) {
      uint32_t w = 0;
      for (int j = 0; j < 8; ++j) {
        const int64_t o = o8 * 8 + (awq ? kOrder[j] : j);
        w |= uint32_t(x.z[g * x.out + o] - (awq ? 0 : 1)) << (4 * j);
      }
      qz[g * (x.out / 8) + o8] = static_cast<int32_t>(w);
    }
  }
  const std::string b = "model.layers.0.mlp.up_proj";
  std::vector<StTensor> ts = {
      {b + ".qweight", "I32", awq ? std::vector<int64_t>{x.in, x.out / 8} : std::vector<int64_t>{x.in / 8, x.out}, Bytes(qw)},
      {b + ".qzeros", "I32", {groups, x.out / 8}, Bytes(qz)},
      {b + ".scales", "F16", {groups, x.out}, Bytes(sc)},
      {"model.norm.weight", "F32", {4}, Bytes(std::vector<float>{1, 2, 3, 4})}};
  if (!awq) ts.push_back({b + ".g_idx", "I32", {x.in}, Bytes(x.g_idx)});
  return ts;
}

std::string WriteConfig(const std::string& method, int bits) {
  const std::string dir = ::testing::TempDir() + "gptq_" + method + std::to_string(bits) + "_" +
                          std::to_string(::getpid());
  ::mkdir(dir.c_str(), 0755);
  nlohmann::json cfg = {{"quantization_config", {{"quant_method", method}, {"bits", bits}, {"group_size", 32}}}};
  std::ofstream(dir + "/config.json") << cfg.dump();
  return dir;
}

void CheckLoads(bool awq, bool act_order) {
  const Synthetic x = MakeValues(act_order);
  auto st = SafetensorsSource::OpenFromBytes(SafetensorsBytes(Pack(x, awq)));
  ASSERT_TRUE(st.ok()) << st.status();
  auto src = WrapQuantizedSafetensors(std::move(*st), WriteConfig(awq ? "awq" : "gptq", 4));
  ASSERT_TRUE(src.ok()) << src.status();
  const auto* stored = dynamic_cast<const StoredLinearSource*>(src->get());
  ASSERT_NE(stored, nullptr);
  const std::string name = "model.layers.0.mlp.up_proj.weight";
  EXPECT_TRUE((*src)->Has(name));
  EXPECT_TRUE((*src)->Has("model.norm.weight"));
  auto l = stored->LoadLinear(name);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->rows(), x.out);
  EXPECT_EQ(l->cols(), x.in);
  if (act_order) {
    EXPECT_EQ(l->format_name, "bf16");
  } else {
    EXPECT_EQ(l->w.format.kind, kernels::WeightKind::kQuant);
    EXPECT_EQ(l->w.format.bits, 4);
  }
  std::vector<float> got(x.out * x.in);
  kernels::DequantizeRows(l->w, 0, x.out, got.data());
  auto view = (*src)->Get(name);
  ASSERT_TRUE(view.ok());
  const float* f32 = static_cast<const float*>(view->data);
  for (int64_t o = 0; o < x.out; ++o) {
    for (int64_t i = 0; i < x.in; ++i) {
      const float want = x.Value(o, i);
      ASSERT_EQ(f32[o * x.in + i], want) << o << "," << i;
      // int4 groups store min = -zero*scale in fp16; bf16 rounds the value.
      ASSERT_NEAR(got[o * x.in + i], want, 0.01 * std::fabs(want) + 2e-4) << o << "," << i;
    }
  }
}

TEST(GptqCheckpoint, GptqLoadsAsInt4Groups) { CheckLoads(false, false); }
TEST(GptqCheckpoint, AwqLoadsAsInt4Groups) { CheckLoads(true, false); }
TEST(GptqCheckpoint, ActOrderFallsBackToBf16) { CheckLoads(false, true); }

TEST(GptqCheckpoint, OnlyFourBit) {
  const Synthetic x = MakeValues(false);
  auto st = SafetensorsSource::OpenFromBytes(SafetensorsBytes(Pack(x, false)));
  ASSERT_TRUE(st.ok());
  auto src = WrapQuantizedSafetensors(std::move(*st), WriteConfig("gptq", 8));
  EXPECT_EQ(src.status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace compressd

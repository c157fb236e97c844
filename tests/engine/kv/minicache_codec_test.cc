// MiniCache cross-layer merging: names, block accounting with the real bytes, round trip of
// merged and retained tokens against directions/magnitudes computed here, the retention budget,
// attention against a dense reference, and the codec inside ModelRunner through KvCache's
// block layout (SpansLayers). With "+int8|int4|int2": exact block bytes, the round trip within
// the quantization error, Attend against its scalar reference and against attention over the
// decoded rows, and the option errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/thread_pool.h"
#include "engine/exec/runner.h"
#include "engine/kv/codecs.h"
#include "engine/kv/kv_cache.h"
#include "engine/kv/kv_codec.h"
#include "engine/model/model_loader.h"
#include "kernels/kv_quant.h"
#include "kernels/types.h"
#include "tests/util/test_env.h"

namespace compressd {
namespace {

KvGeometry Geo(int layers = 4) {
  KvGeometry g;
  g.n_layers = layers;
  g.n_heads = 4;
  g.n_kv_heads = 2;
  g.head_dim = 32;
  g.block_size = 16;
  return g;
}

TEST(MiniCacheCodec, NamesAndErrors) {
  for (const char* ok : {"minicache", "minicache:t30", "minicache:r10:t60", "minicache:t0,r0",
                         "cskv:r16+minicache", "minicache+int4", "minicache+int8", "minicache+int2",
                         "minicache:t45:r25+int4:g32", "int4:g16+minicache:r0", "minicache+int4:k8",
                         "minicache:r100+int4:noclip", "cskv:r16+minicache+int4"}) {
    auto c = MakeKvCodec(ok, Geo());
    EXPECT_TRUE(c.ok()) << ok << ": " << c.status();
  }
  EXPECT_EQ((*MakeKvCodec("minicache", Geo()))->name(), "minicache");
  EXPECT_EQ((*MakeKvCodec("minicache:t30", Geo()))->name(), "minicache:t30:r25");
  EXPECT_EQ((*MakeKvCodec("minicache+int4", Geo()))->name(), "minicache+int4");
  EXPECT_EQ((*MakeKvCodec("minicache:t30+int4:g16", Geo()))->name(), "minicache:t30:r25+int4:g16");
  // Each bad name with a fragment of the message that must name the problem.
  const std::pair<const char*, const char*> bad[] = {
      {"minicache:t200", "tA"},
      {"minicache:r101", "rP"},
      {"minicache:x", "unknown option 'x'"},
      {"minicache:t", "unknown option 't'"},
      {"minicache:t200+int4", "tA"},
      {"minicache+int4:x", "unknown option 'x'"},
      {"minicache+int4:g7", "value group"},
      {"minicache+int3", "unknown --kv-cache codec 'int3'"},
      {"minicache+gear", "GEAR"},
      {"minicache+int4+gear", "GEAR"},
      {"minicache+int4+int8", "unsupported combination"},
      {"minicache+ems", "composes only with int8|int4|int2"},
      {"minicache+fp16", "composes only with int8|int4|int2"},
      {"minicache+minicache", "minicache twice"},
      {"minicache+", "unknown --kv-cache codec ''"},
  };
  for (const auto& [name, why] : bad) {
    auto c = MakeKvCodec(name, Geo());
    ASSERT_FALSE(c.ok()) << name;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_NE(c.status().message().find(absl::StrCat("'", name, "'")), std::string::npos)
        << c.status().message();
    EXPECT_NE(c.status().message().find(why), std::string::npos) << c.status().message();
  }
}

TEST(MiniCacheCodec, BlockAccountingUsesRealBytes) {
  // 4 layers: 0, 1 dense fp16; (2, 3) a pair. hd 32, bs 16, 2 KV heads, r25 -> 4 retained.
  auto c = *MakeKvCodec("minicache", Geo(4));
  const size_t dense = 2 * 2 * 16 * 32 * 2;                                   // 4096
  const size_t head = 16 * 32 * 2 * 2 + 16 * 4 * 2 + 16 + 4 * 32 * 2 * 2;     // 2704
  const size_t pair = 8 + 2 * head;                                           // 5416
  EXPECT_EQ(MiniCacheTotalBlockBytes(*c), 2 * dense + pair);
  EXPECT_GE(c->LayerBlockBytes() * 4, 2 * dense + pair);
  EXPECT_LT(c->LayerBlockBytes() * 4, 2 * dense + pair + 8 * 4);
  EXPECT_TRUE(c->SpansLayers());
  auto fp16 = *MakeKvCodec("fp16", Geo(4));
  EXPECT_LT(c->BytesPerToken(), fp16->BytesPerToken());
  // 5 layers: (2, 3) paired, 4 dense. r0: no retention slots.
  auto c5 = *MakeKvCodec("minicache:r0", Geo(5));
  EXPECT_EQ(MiniCacheTotalBlockBytes(*c5), 3 * dense + 8 + 2 * (16 * 32 * 2 * 2 + 16 * 4 * 2 + 16));
  // A smaller codec admits more blocks in the same budget.
  const int64_t budget = 1 << 20;
  auto cache_mc = *KvCache::Create(std::move(c), budget);
  auto cache_16 = *KvCache::Create(std::move(fp16), budget);
  EXPECT_GT(cache_mc->pool().num_blocks(), cache_16->pool().num_blocks());
}

// Rotates unit-norm `a` towards a random orthogonal direction by `angle` radians.
std::vector<float> Rotate(const std::vector<float>& a, double angle, std::mt19937& rng) {
  std::normal_distribution<float> n(0, 1);
  std::vector<float> r(a.size());
  double dot = 0, na = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    r[i] = n(rng);
    dot += r[i] * a[i];
    na += a[i] * a[i];
  }
  double nr = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    r[i] -= static_cast<float>(dot / na) * a[i];
    nr += r[i] * r[i];
  }
  std::vector<float> out(a.size());
  const double s = std::sqrt(na);
  for (size_t i = 0; i < a.size(); ++i) {
    out[i] = static_cast<float>(std::cos(angle) * a[i] + std::sin(angle) * s * r[i] / std::sqrt(nr));
  }
  return out;
}

double Norm(const float* x, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return std::sqrt(s);
}

// Data of one block for every layer: [layer][slot][K/V][h][d]. Layers 2 and 3 (a pair) differ
// by `small` radians, except slots in `far` (by `large`), and by a magnitude factor.
struct Data {
  std::vector<float> x;
  int L, bs, nkv, hd;
  float* At(int l, int s, int kv, int h) {
    return x.data() + ((((static_cast<size_t>(l) * bs + s) * 2 + kv) * nkv + h) * hd);
  }
};

Data MakeData(const KvGeometry& g, double small, double large, const std::vector<int>& far,
              uint32_t seed) {
  Data d{{}, g.n_layers, g.block_size, g.n_kv_heads, g.head_dim};
  d.x.resize(static_cast<size_t>(g.n_layers) * g.block_size * 2 * g.n_kv_heads * g.head_dim);
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0, 1);
  for (auto& v : d.x) v = n(rng);
  for (int s = 0; s < g.block_size; ++s) {
    const bool is_far = std::find(far.begin(), far.end(), s) != far.end();
    for (int kv = 0; kv < 2; ++kv) {
      for (int h = 0; h < g.n_kv_heads; ++h) {
        std::vector<float> a(d.At(2, s, kv, h), d.At(2, s, kv, h) + g.head_dim);
        std::vector<float> b = Rotate(a, is_far ? large : small, rng);
        const float mag = 0.5f + 0.1f * (s % 7);
        for (int i = 0; i < g.head_dim; ++i) d.At(3, s, kv, h)[i] = b[i] * mag;
      }
    }
  }
  return d;
}

// Stores n_tok tokens of `d` into one block as the runner does: layer by layer, then Seal.
void StoreBlock(const KvCodec& c, uint8_t* block, Data& d, int n_tok) {
  const KvGeometry& g = c.geometry();
  std::vector<float> k(g.n_kv_heads * g.head_dim), v(k.size());
  for (int l = 0; l < g.n_layers; ++l) {
    uint8_t* region = block + static_cast<size_t>(l) * c.LayerBlockBytes();
    for (int s = 0; s < n_tok; ++s) {
      for (int h = 0; h < g.n_kv_heads; ++h) {
        std::copy(d.At(l, s, 0, h), d.At(l, s, 0, h) + g.head_dim, k.begin() + h * g.head_dim);
        std::copy(d.At(l, s, 1, h), d.At(l, s, 1, h) + g.head_dim, v.begin() + h * g.head_dim);
      }
      c.Store(l, region, s, k.data(), v.data());
    }
    if (n_tok == g.block_size) c.Seal(l, region);
  }
}

TEST(MiniCacheCodec, RoundTripMergedAndRetained) {
  const KvGeometry g = Geo(4);
  auto c = *MakeKvCodec("minicache:t30", g);
  const std::vector<int> far = {3, 9};
  Data d = MakeData(g, 0.2, 1.2, far, 7);
  std::vector<uint8_t> block(c->LayerBlockBytes() * g.n_layers);
  StoreBlock(*c, block.data(), d, g.block_size);
  EXPECT_EQ(MiniCacheRetained(*c), static_cast<int64_t>(far.size()) * g.n_kv_heads);
  EXPECT_EQ(MiniCacheRetentionOverflow(*c), 0);
  std::vector<float> row(g.head_dim);
  const int hd = g.head_dim;
  for (int l = 0; l < g.n_layers; ++l) {
    const uint8_t* region = block.data() + static_cast<size_t>(l) * c->LayerBlockBytes();
    for (int s = 0; s < g.block_size; ++s) {
      const bool is_far = std::find(far.begin(), far.end(), s) != far.end();
      for (int kv = 0; kv < 2; ++kv) {
        for (int h = 0; h < g.n_kv_heads; ++h) {
          MiniCacheDecode(*c, l, region, h, s, kv, row.data());
          const float* x = d.At(l, s, kv, h);
          const double nx = Norm(x, hd);
          if (l < 2 || is_far) {  // dense layers and retained tokens: fp16 round trip
            for (int i = 0; i < hd; ++i) ASSERT_NEAR(row[i], x[i], 2e-3 * nx) << l << " " << s;
            continue;
          }
          // Merged: magnitude of this layer, direction (u_2 + u_3) / |u_2 + u_3|.
          const float* a = d.At(2, s, kv, h);
          const float* b = d.At(3, s, kv, h);
          const double na = Norm(a, hd), nb = Norm(b, hd);
          std::vector<double> u(hd);
          for (int i = 0; i < hd; ++i) u[i] = a[i] / na + b[i] / nb;
          double nu = 0;
          for (double e : u) nu += e * e;
          nu = std::sqrt(nu);
          for (int i = 0; i < hd; ++i) ASSERT_NEAR(row[i], nx * u[i] / nu, 2e-3 * nx) << l << " " << s;
          // Half of the pair's 0.2 rad from either layer's own direction.
          double dot = 0;
          for (int i = 0; i < hd; ++i) dot += row[i] * x[i];
          EXPECT_NEAR(std::acos(std::min(1.0, dot / (Norm(row.data(), hd) * nx))), 0.1, 0.01);
        }
      }
    }
  }
}

TEST(MiniCacheCodec, RetentionBudgetOverflowsIntoMerging) {
  const KvGeometry g = Geo(4);
  // Threshold 5 degrees: all 16 tokens (0.2 rad = 11.5 degrees apart) are candidates;
  // r25 keeps 4 per head, the largest angles first (the two far tokens among them).
  auto c = *MakeKvCodec("minicache:t5", g);
  const std::vector<int> far = {0, 15};
  Data d = MakeData(g, 0.2, 1.0, far, 11);
  std::vector<uint8_t> block(c->LayerBlockBytes() * g.n_layers);
  StoreBlock(*c, block.data(), d, g.block_size);
  EXPECT_EQ(MiniCacheRetained(*c), 4 * g.n_kv_heads);
  EXPECT_EQ(MiniCacheRetentionOverflow(*c), 12 * g.n_kv_heads);
  std::vector<float> row(g.head_dim);
  const uint8_t* region3 = block.data() + 3 * c->LayerBlockBytes();
  for (int s : far) {
    MiniCacheDecode(*c, 3, region3, 1, s, 0, row.data());
    const float* x = d.At(3, s, 0, 1);
    for (int i = 0; i < g.head_dim; ++i) EXPECT_NEAR(row[i], x[i], 2e-3 * Norm(x, g.head_dim));
  }
}

// Softmax attention over rows given by `row(t, kv, h)`.
template <typename F>
std::vector<float> RefAttend(const KvGeometry& g, const float* q, int n_ctx, float scale, F row) {
  const int hd = g.head_dim, group = g.n_heads / g.n_kv_heads;
  std::vector<float> out(static_cast<size_t>(g.n_heads) * hd, 0.0f);
  for (int h = 0; h < g.n_heads; ++h) {
    std::vector<double> s(n_ctx);
    double mx = -1e300, sum = 0;
    for (int t = 0; t < n_ctx; ++t) {
      const float* k = row(t, 0, h / group);
      double dot = 0;
      for (int i = 0; i < hd; ++i) dot += q[h * hd + i] * k[i];
      s[t] = dot * scale;
      mx = std::max(mx, s[t]);
    }
    for (auto& e : s) sum += (e = std::exp(e - mx));
    for (int t = 0; t < n_ctx; ++t) {
      const float* v = row(t, 1, h / group);
      for (int i = 0; i < hd; ++i) out[h * hd + i] += static_cast<float>(s[t] / sum) * v[i];
    }
  }
  return out;
}

TEST(MiniCacheCodec, AttendMatchesDenseWhenPairsAreParallel) {
  // Layer 3 = a scaled copy of layer 2 (angle 0): merging is lossless, so every layer's
  // attention equals attention over the fp32 data up to fp16 rounding; the second block is
  // partial (unsealed, read from staging).
  const KvGeometry g = Geo(4);
  auto c = *MakeKvCodec("minicache:r0", g);
  Data d0 = MakeData(g, 0.0, 0.0, {}, 3);
  Data d1 = MakeData(g, 0.0, 0.0, {}, 4);
  const size_t bb = c->LayerBlockBytes() * g.n_layers;
  std::vector<uint8_t> arena(2 * bb);
  StoreBlock(*c, arena.data(), d0, g.block_size);
  StoreBlock(*c, arena.data() + bb, d1, 5);
  const int n_ctx = g.block_size + 5;
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> q(g.n_heads * g.head_dim);
  for (auto& e : q) e = n(rng);
  const float scale = 1.0f / std::sqrt(32.0f);
  std::vector<float> scratch(c->ScratchFloats(n_ctx)), out(q.size());
  for (int l = 0; l < g.n_layers; ++l) {
    const uint8_t* blocks[2] = {arena.data() + l * c->LayerBlockBytes(),
                                arena.data() + bb + l * c->LayerBlockBytes()};
    c->Attend(l, q.data(), blocks, n_ctx, scale, out.data(), scratch.data(), 0, g.n_heads);
    auto ref = RefAttend(g, q.data(), n_ctx, scale, [&](int t, int kv, int h) {
      return t < g.block_size ? d0.At(l, t, kv, h) : d1.At(l, t - g.block_size, kv, h);
    });
    for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 5e-3) << "layer " << l;
  }
  EXPECT_EQ(MiniCacheRetained(*c), 0);
}

TEST(MiniCacheCodec, AttendIsAttentionOverDecodedRows) {
  // Dissimilar pairs, small budget: Attend equals a reference attention over the decoded rows
  // (so the kernel reads what the round trip test checks), and differs from the exact data.
  const KvGeometry g = Geo(4);
  auto c = *MakeKvCodec("minicache:t20:r10", g);
  Data d = MakeData(g, 0.6, 1.4, {1, 2, 3}, 9);
  const size_t bb = c->LayerBlockBytes() * g.n_layers;
  std::vector<uint8_t> arena(bb);
  StoreBlock(*c, arena.data(), d, g.block_size);
  EXPECT_GT(MiniCacheRetentionOverflow(*c), 0);
  std::vector<float> q(g.n_heads * g.head_dim);
  std::mt19937 rng(2);
  std::normal_distribution<float> n(0, 1);
  for (auto& e : q) e = n(rng);
  const int n_ctx = g.block_size;
  std::vector<float> scratch(c->ScratchFloats(n_ctx)), out(q.size());
  const int l = 3;
  const uint8_t* blocks[1] = {arena.data() + l * c->LayerBlockBytes()};
  c->Attend(l, q.data(), blocks, n_ctx, 0.2f, out.data(), scratch.data(), 0, g.n_heads);
  std::vector<std::vector<float>> rows(2 * g.n_kv_heads * n_ctx, std::vector<float>(g.head_dim));
  auto decoded = RefAttend(g, q.data(), n_ctx, 0.2f, [&](int t, int kv, int h) {
    float* r = rows[(kv * g.n_kv_heads + h) * n_ctx + t].data();
    MiniCacheDecode(*c, l, blocks[0], h, t, kv, r);
    return static_cast<const float*>(r);
  });
  auto exact = RefAttend(g, q.data(), n_ctx, 0.2f,
                         [&](int t, int kv, int h) { return static_cast<const float*>(d.At(l, t, kv, h)); });
  double diff_exact = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_NEAR(out[i], decoded[i], 1e-4);
    diff_exact = std::max(diff_exact, static_cast<double>(std::fabs(out[i] - exact[i])));
  }
  EXPECT_GT(diff_exact, 1e-2);
}

TEST(MiniCacheCodec, InsideRunnerRetainAllMatchesFp16) {
  // Through KvCache and ModelRunner (block regions per layer, SpansLayers): with every token
  // retained (t0, r100) the codec is fp16 up to unit-vector rounding.
  REQUIRE_SHARED(dir, "models/stories260K");
  ThreadPool pool(2);
  std::vector<int32_t> toks;
  for (int i = 0; i < 41; ++i) toks.push_back(1 + (i * 53) % 500);
  auto run = [&](const std::string& codec_name) {
    LoadOptions lo;
    lo.model = dir;
    lo.threads = 2;
    auto model = *LoadModel(lo);
    const ModelConfig& mc = model->config;
    KvGeometry g;
    g.n_layers = mc.num_hidden_layers;
    g.n_heads = mc.num_attention_heads;
    g.n_kv_heads = mc.num_key_value_heads;
    g.head_dim = mc.head_dim;
    g.block_size = 16;
    auto codec = MakeKvCodec(codec_name, g);
    EXPECT_TRUE(codec.ok()) << codec.status();
    const size_t bb = (*codec)->LayerBlockBytes() * g.n_layers;
    auto cache = *KvCache::Create(std::move(*codec), 8 * bb);
    std::vector<int32_t> blocks;
    for (int i = 0; i < 4; ++i) blocks.push_back(cache->pool().Allocate());
    // Block ids out of order, so a wrong base address would read another block.
    std::swap(blocks[0], blocks[2]);
    ModelRunner runner(model, cache.get(), &pool, 64);
    std::vector<float> logits;
    auto step = [&](int start, int end, LogitsMode mode) {
      BatchEntry e;
      e.tokens = toks.data() + start;
      e.n_tokens = end - start;
      e.start_pos = start;
      e.block_table = blocks.data();
      e.n_blocks = (end + 15) / 16;
      e.logits = mode;
      int64_t rows = 0;
      const float* p = runner.Forward({e}, &rows);
      logits.insert(logits.end(), p, p + rows * mc.vocab_size);
    };
    step(0, 34, LogitsMode::kLast);  // two sealed blocks + a partial one
    for (int t = 34; t < 41; ++t) step(t, t + 1, LogitsMode::kLast);
    return std::make_pair(logits, MiniCacheRetained(cache->codec()));
  };
  auto [ref, r0] = run("fp16");
  auto [all, retained] = run("minicache:t0:r100");
  auto [merged, r_merged] = run("minicache:t180:r0");
  // The same with KIVI codes: every token retained at int8 stays near fp16; int4 merged is
  // the furthest.
  auto [all8, retained8] = run("minicache:t0:r100+int8");
  auto [merged4, r_merged4] = run("minicache:t180:r0+int4");
  EXPECT_EQ(r0, -1);
  EXPECT_GT(retained, 0);
  EXPECT_EQ(r_merged, 0);
  EXPECT_EQ(retained8, retained);
  EXPECT_EQ(r_merged4, 0);
  ASSERT_EQ(ref.size(), all.size());
  ASSERT_EQ(ref.size(), all8.size());
  ASSERT_EQ(ref.size(), merged4.size());
  double d_all = 0, d_merged = 0, d_all8 = 0, d_merged4 = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    d_all = std::max(d_all, static_cast<double>(std::fabs(ref[i] - all[i])));
    d_merged = std::max(d_merged, static_cast<double>(std::fabs(ref[i] - merged[i])));
    d_all8 = std::max(d_all8, static_cast<double>(std::fabs(ref[i] - all8[i])));
    d_merged4 = std::max(d_merged4, static_cast<double>(std::fabs(ref[i] - merged4[i])));
  }
  EXPECT_LT(d_all, 2e-2);
  EXPECT_GT(d_merged, d_all);
  EXPECT_GT(d_all8, d_all);
  EXPECT_LT(d_all8, 0.1);
  EXPECT_GT(d_merged4, d_all8);
}

// "minicache+intN": the KIVI layouts (kernels/kv_quant.h) of the unpaired layers, the shared
// directions (bs tokens) and the retention slots (retain tokens).
TEST(MiniCacheCodec, QuantBlockAccountingUsesRealBytes) {
  const KvGeometry g = Geo(4);  // 0, 1 unpaired; (2, 3) a pair; r25 -> 4 retention slots
  auto c = *MakeKvCodec("minicache+int4", g);
  kernels::KvQuantLayout l;
  l.block_size = 16;
  l.n_kv_heads = 2;
  l.head_dim = 32;
  l.k_bits = l.v_bits = 4;
  l.v_group = 32;
  const size_t dense = l.BlockBytes();
  EXPECT_EQ(dense, 16u + 2 * (4 * 32 + 16 * 16 + 16 * 4 + 16 * 16));  // 1424
  kernels::KvQuantLayout r = l;
  r.block_size = 4;
  const size_t side = 16 * 4 * 2 + 16;  // per head: mags [bs][4] f16, map [bs]
  const size_t pair = 8 + 2 * side + dense + r.BlockBytes();
  EXPECT_EQ(MiniCacheTotalBlockBytes(*c), 2 * dense + pair);
  EXPECT_GE(c->LayerBlockBytes() * 4, 2 * dense + pair);
  EXPECT_LT(c->LayerBlockBytes() * 4, 2 * dense + pair + 8 * 4);
  // Smaller than both of its parts alone.
  auto int4 = *MakeKvCodec("int4", g);
  auto mc = *MakeKvCodec("minicache", g);
  EXPECT_LT(c->BytesPerToken(), int4->BytesPerToken());
  EXPECT_LT(c->BytesPerToken(), mc->BytesPerToken());
  EXPECT_LT((*MakeKvCodec("minicache+int2", g))->BytesPerToken(),
            (*MakeKvCodec("int2", g))->BytesPerToken());
  EXPECT_LT((*MakeKvCodec("minicache+int8", g))->BytesPerToken(),
            (*MakeKvCodec("int8", g))->BytesPerToken());
  // r0: no retention block at all.
  EXPECT_EQ(MiniCacheTotalBlockBytes(**MakeKvCodec("minicache:r0+int4", g)),
            2 * dense + 8 + 2 * side + dense);
  // The pool divides its budget by the real bytes.
  const int64_t budget = 1 << 20;
  auto cache_mc = *KvCache::Create(std::move(c), budget);
  auto cache_4 = *KvCache::Create(std::move(int4), budget);
  EXPECT_GT(cache_mc->pool().num_blocks(), cache_4->pool().num_blocks());
}

double RelRms(const float* got, const double* want, int n) {
  double e = 0, w = 0;
  for (int i = 0; i < n; ++i) {
    e += (got[i] - want[i]) * (got[i] - want[i]);
    w += want[i] * want[i];
  }
  return std::sqrt(e / w);
}

// Round trip of every layer's rows against what they should decode to: the data itself for
// unpaired layers and retained tokens, |x| * SLERP direction for merged tokens; the largest
// relative RMS error over all rows, and the smallest over the unpaired layers' rows (*smallest;
// not over retained rows: with 2 of 4 retention slots used, a key channel has two distinct
// values, which its range represents exactly).
double WorstRoundTripError(const std::string& name, double* smallest) {
  const KvGeometry g = Geo(4);
  auto c = *MakeKvCodec(name, g);
  const std::vector<int> far = {3, 9};
  Data d = MakeData(g, 0.2, 1.2, far, 7);
  std::vector<uint8_t> block(c->LayerBlockBytes() * g.n_layers);
  StoreBlock(*c, block.data(), d, g.block_size);
  EXPECT_EQ(MiniCacheRetained(*c), static_cast<int64_t>(far.size()) * g.n_kv_heads);
  const int hd = g.head_dim;
  std::vector<float> row(hd);
  std::vector<double> want(hd);
  double worst = 0;
  *smallest = 1e9;
  for (int l = 0; l < g.n_layers; ++l) {
    const uint8_t* region = block.data() + static_cast<size_t>(l) * c->LayerBlockBytes();
    for (int s = 0; s < g.block_size; ++s) {
      const bool is_far = std::find(far.begin(), far.end(), s) != far.end();
      for (int kv = 0; kv < 2; ++kv) {
        for (int h = 0; h < g.n_kv_heads; ++h) {
          MiniCacheDecode(*c, l, region, h, s, kv, row.data());
          const float* x = d.At(l, s, kv, h);
          if (l < 2 || is_far) {
            for (int i = 0; i < hd; ++i) want[i] = x[i];
          } else {
            const float* a = d.At(2, s, kv, h);
            const float* b = d.At(3, s, kv, h);
            const double na = Norm(a, hd), nb = Norm(b, hd), nx = Norm(x, hd);
            double nu = 0;
            for (int i = 0; i < hd; ++i) {
              want[i] = a[i] / na + b[i] / nb;
              nu += want[i] * want[i];
            }
            for (int i = 0; i < hd; ++i) want[i] *= nx / std::sqrt(nu);
          }
          const double e = RelRms(row.data(), want.data(), hd);
          worst = std::max(worst, e);
          if (l < 2) *smallest = std::min(*smallest, e);
        }
      }
    }
  }
  return worst;
}

TEST(MiniCacheCodec, QuantRoundTripWithinQuantizationError) {
  // fp16 rounding only, as a control.
  double lo = 0;
  EXPECT_LT(WorstRoundTripError("minicache:t30", &lo), 2e-3);
  // KIVI codes of N(0,1) rows (unpaired layers, retained rows) and of unit directions times an
  // fp16 magnitude (merged rows). A 4-bit code's error is uniform over +-step/2, with the step
  // about range / 15 (per channel over 16 tokens for K, per token over 32 channels for V,
  // clipped): relative RMS ~0.08 on average; 8 bits ~16x less; 2 bits ~5x more.
  const double e8 = WorstRoundTripError("minicache:t30+int8", &lo);
  EXPECT_LT(e8, 0.02);
  EXPECT_GT(lo, 1e-4);  // quantized: not the fp16 round trip
  const double e4 = WorstRoundTripError("minicache:t30+int4", &lo);
  EXPECT_LT(e4, 0.25);
  EXPECT_GT(lo, 1e-2);
  const double e2 = WorstRoundTripError("minicache:t30+int2", &lo);
  EXPECT_LT(e2, 0.8);
  EXPECT_GT(e2, e4);
  EXPECT_GT(e4, e8);
}

// Stores 2 full blocks and a partial one (unsealed, in staging) with dissimilar pairs, then
// checks Attend against the codec's scalar reference and against a softmax over the decoded
// rows, on every layer, for the whole head range and for split ranges.
void CheckAttendMatchesReference(const std::string& name) {
  SCOPED_TRACE(name);
  const KvGeometry g = Geo(5);  // 0, 1 unpaired; (2, 3) a pair; 4 unpaired
  auto c = *MakeKvCodec(name, g);
  const size_t bb = c->LayerBlockBytes() * g.n_layers;
  std::vector<uint8_t> arena(3 * bb);
  Data d[3] = {MakeData(g, 0.6, 1.4, {1, 2, 3}, 21), MakeData(g, 0.3, 1.5, {0, 8}, 22),
               MakeData(g, 0.5, 1.0, {2}, 23)};
  StoreBlock(*c, arena.data(), d[0], g.block_size);
  StoreBlock(*c, arena.data() + bb, d[1], g.block_size);
  StoreBlock(*c, arena.data() + 2 * bb, d[2], 7);
  EXPECT_EQ(MiniCacheRetained(*c) > 0, name.find(":r0") == std::string::npos);
  std::mt19937 rng(31);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> q(g.n_heads * g.head_dim);
  for (auto& e : q) e = n(rng);
  const float scale = 0.3f;
  for (int n_ctx : {5, 16, 2 * g.block_size + 7}) {
    std::vector<float> scratch(c->ScratchFloats(n_ctx)), out(q.size()), split(q.size()),
        ref(q.size());
    for (int l = 0; l < g.n_layers; ++l) {
      const uint8_t* blocks[3];
      for (int i = 0; i < 3; ++i) blocks[i] = arena.data() + i * bb + l * c->LayerBlockBytes();
      c->Attend(l, q.data(), blocks, n_ctx, scale, out.data(), scratch.data(), 0, g.n_heads);
      for (auto [b, e] : {std::pair{0, 1}, std::pair{1, 3}, std::pair{3, 4}}) {
        c->Attend(l, q.data(), blocks, n_ctx, scale, split.data(), scratch.data(), b, e);
      }
      ASSERT_TRUE(MiniCacheAttendRef(*c, l, q.data(), blocks, n_ctx, scale, ref.data(),
                                     scratch.data(), 0, g.n_heads));
      std::vector<std::vector<float>> rows(2 * g.n_kv_heads * n_ctx,
                                           std::vector<float>(g.head_dim));
      auto decoded = RefAttend(g, q.data(), n_ctx, scale, [&](int t, int kv, int h) {
        float* r = rows[(kv * g.n_kv_heads + h) * n_ctx + t].data();
        MiniCacheDecode(*c, l, blocks[t / g.block_size], h, t % g.block_size, kv, r);
        return static_cast<const float*>(r);
      });
      for (size_t i = 0; i < out.size(); ++i) {
        ASSERT_NEAR(out[i], ref[i], 2e-5) << "layer " << l << " n_ctx " << n_ctx << " i " << i;
        ASSERT_EQ(out[i], split[i]) << "layer " << l << " n_ctx " << n_ctx << " i " << i;
        ASSERT_NEAR(ref[i], decoded[i], 2e-5) << "layer " << l << " n_ctx " << n_ctx << " i " << i;
      }
    }
  }
}

TEST(MiniCacheCodec, AttendMatchesScalarReference) {
  for (const char* name :
       {"minicache:t20:r10", "minicache:t20:r10+int4", "minicache:t20+int8",
        "minicache:t20:r50+int2:g16", "minicache:r0+int4", "minicache:t5:r100+int4"}) {
    CheckAttendMatchesReference(name);
  }
}

TEST(MiniCacheCodec, QuantAttendIsCloseToFp16Minicache) {
  // Same merging decisions, directions quantized: int8 stays close to fp16 minicache, int4
  // further, and both differ from it (the codes are really what Attend reads).
  const KvGeometry g = Geo(4);
  Data d = MakeData(g, 0.4, 1.3, {4, 5}, 41);
  std::vector<float> q(g.n_heads * g.head_dim);
  std::mt19937 rng(42);
  std::normal_distribution<float> n(0, 1);
  for (auto& e : q) e = n(rng);
  auto attend = [&](const std::string& name, int l) {
    auto c = *MakeKvCodec(name, g);
    std::vector<uint8_t> arena(c->LayerBlockBytes() * g.n_layers);
    StoreBlock(*c, arena.data(), d, g.block_size);
    std::vector<float> scratch(c->ScratchFloats(g.block_size)), out(q.size());
    const uint8_t* blocks[1] = {arena.data() + l * c->LayerBlockBytes()};
    c->Attend(l, q.data(), blocks, g.block_size, 0.3f, out.data(), scratch.data(), 0, g.n_heads);
    return out;
  };
  for (int l : {1, 2, 3}) {
    auto f16 = attend("minicache:t30", l), i8 = attend("minicache:t30+int8", l),
         i4 = attend("minicache:t30+int4", l);
    double d8 = 0, d4 = 0;
    for (size_t i = 0; i < f16.size(); ++i) {
      d8 = std::max(d8, static_cast<double>(std::fabs(i8[i] - f16[i])));
      d4 = std::max(d4, static_cast<double>(std::fabs(i4[i] - f16[i])));
    }
    EXPECT_GT(d8, 1e-5) << l;
    EXPECT_LT(d8, 2e-2) << l;
    EXPECT_GT(d4, d8) << l;
    EXPECT_LT(d4, 0.6) << l;  // a sharp softmax (scale 0.3 on N(0, 1) rows of 32)
  }
}

}  // namespace
}  // namespace compressd

// The KV pressure ladder's recompression step at the codec level (engine/kv/quant_demote.h):
// which codecs can demote, that a demoted region fits a block, that its values stay close to
// the original ones, and that Attend over a table mixing demoted, sealed and unsealed blocks
// equals a scalar softmax over the dequantized values (the oracle: QuantKvDecodeToken, i.e.
// DecodeDemotedToken / the kernels' KvQuantDecodeToken, and the fp16 staging of the tail).
#include "engine/kv/quant_demote.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "engine/kv/codecs.h"
#include "engine/kv/kv_codec.h"
#include "kernels/cpu_features.h"
#include "kernels/types.h"

namespace compressd {
namespace {

KvGeometry Geo(int hd, int bs = 16, int n_heads = 4, int n_kv = 2) {
  KvGeometry g;
  g.n_layers = 1;
  g.n_heads = n_heads;
  g.n_kv_heads = n_kv;
  g.head_dim = hd;
  g.block_size = bs;
  return g;
}

TEST(KvDemotion, WhichCodecsCanDemote) {
  std::string from, to;
  auto i4 = *MakeKvCodec("int4", Geo(32));
  ASSERT_TRUE(i4->CanDemote(2, &from, &to));
  EXPECT_EQ(from, "int4");
  EXPECT_EQ(to, "int2");
  EXPECT_FALSE(i4->CanDemote(4, nullptr, nullptr));  // floor above int2
  auto i8 = *MakeKvCodec("int8", Geo(32));
  ASSERT_TRUE(i8->CanDemote(4, &from, &to));
  EXPECT_EQ(from, "int8");
  EXPECT_EQ(to, "int4");
  EXPECT_FALSE(i8->CanDemote(8, nullptr, nullptr));
  auto k8v4 = *MakeKvCodec("int8:v4", Geo(32));
  ASSERT_TRUE(k8v4->CanDemote(2, &from, &to));
  EXPECT_EQ(from, "k8v4");
  EXPECT_EQ(to, "k4v2");
  for (const char* no : {"int2", "int4:v2", "gear", "fp16", "fp32", "ems", "mikv"}) {
    auto c = MakeKvCodec(no, Geo(32));
    ASSERT_TRUE(c.ok()) << no;
    EXPECT_FALSE((*c)->CanDemote(2, nullptr, nullptr)) << no;
  }
}

TEST(KvDemotion, DemotedRegionFitsTheBaseBlock) {
  for (int hd : {8, 16, 32, 64, 128}) {
    for (int bits : {4, 8}) {
      for (int vg : {8, 16, 32, 64}) {
        if (vg > hd || hd % vg != 0) continue;
        kernels::KvQuantLayout l;
        l.block_size = 16;
        l.n_kv_heads = 2;
        l.head_dim = hd;
        l.k_bits = l.v_bits = bits;
        l.v_group = vg;
        if (!l.Valid()) continue;
        DemotedLayout d;
        ASSERT_TRUE(DemotedLayoutOf(l, 2, &d)) << hd << " " << bits << " " << vg;
        EXPECT_LE(d.BlockBytes(), l.BlockBytes()) << hd << " " << bits << " " << vg;
        EXPECT_EQ(d.tokens, 32);
        EXPECT_EQ(d.k_bits, bits / 2);
      }
    }
  }
}

// Stores n tokens of random K/V (fixed seed) into consecutive blocks of one layer the way the
// runner does (Store, then Seal of full blocks); returns the fp16-rounded originals
// [token][kv head][head_dim] for K and V.
struct Filled {
  std::vector<std::vector<uint8_t>> blocks;
  std::vector<float> k, v;  // [n][n_kv * hd]
};

Filled Fill(const KvCodec& c, int n, uint32_t seed) {
  const KvGeometry& g = c.geometry();
  const int kvd = g.n_kv_heads * g.head_dim;
  Filled f;
  f.blocks.resize((n + g.block_size - 1) / g.block_size, std::vector<uint8_t>(c.LayerBlockBytes()));
  f.k.resize(static_cast<size_t>(n) * kvd);
  f.v.resize(f.k.size());
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < kvd; ++i) {
      // Channel-dependent offsets and scales, as real keys have.
      f.k[static_cast<size_t>(t) * kvd + i] = nd(rng) * (1 + i % 3) + 0.5f * (i % 5);
      f.v[static_cast<size_t>(t) * kvd + i] = nd(rng);
    }
    c.Store(0, f.blocks[t / g.block_size].data(), t % g.block_size,
            &f.k[static_cast<size_t>(t) * kvd], &f.v[static_cast<size_t>(t) * kvd]);
    if (t % g.block_size == g.block_size - 1) c.Seal(0, f.blocks[t / g.block_size].data());
  }
  for (float& x : f.k) x = kernels::F16ToF32(kernels::F32ToF16(x));
  for (float& x : f.v) x = kernels::F16ToF32(kernels::F32ToF16(x));
  return f;
}

// Scalar oracle: softmax attention over dequantized tokens (demoted/sealed blocks decoded by
// the codec's reference decoder, the unsealed last block's tokens as stored in fp16).
void Reference(const KvCodec& c, const std::vector<const uint8_t*>& blocks,
               const std::vector<int>& tokens_of_block, int unsealed, const Filled& f, int n_ctx,
               const float* q, float scale, std::vector<float>* out) {
  const KvGeometry& g = c.geometry();
  const int hd = g.head_dim, kvd = g.n_kv_heads * hd, group = g.n_heads / g.n_kv_heads;
  std::vector<float> kk(static_cast<size_t>(n_ctx) * kvd), vv(kk.size());
  int t = 0;
  for (size_t b = 0; b < blocks.size() && t < n_ctx; ++b) {
    const bool last_unsealed = static_cast<int>(b) == unsealed;
    for (int s = 0; s < tokens_of_block[b] && t < n_ctx; ++s, ++t) {
      for (int h = 0; h < g.n_kv_heads; ++h) {
        float* kt = &kk[static_cast<size_t>(t) * kvd + h * hd];
        float* vt = &vv[static_cast<size_t>(t) * kvd + h * hd];
        if (last_unsealed) {
          for (int d = 0; d < hd; ++d) {
            kt[d] = f.k[static_cast<size_t>(t) * kvd + h * hd + d];
            vt[d] = f.v[static_cast<size_t>(t) * kvd + h * hd + d];
          }
        } else {
          ASSERT_TRUE(QuantKvDecodeToken(c, blocks[b], h, s, kt, vt));
        }
      }
    }
  }
  out->assign(static_cast<size_t>(g.n_heads) * hd, 0.0f);
  for (int h = 0; h < g.n_heads; ++h) {
    const int kvh = h / group;
    std::vector<double> p(n_ctx);
    double mx = -1e300;
    for (int u = 0; u < n_ctx; ++u) {
      double s = 0;
      for (int d = 0; d < hd; ++d)
        s += double{q[h * hd + d]} * kk[static_cast<size_t>(u) * kvd + kvh * hd + d];
      p[u] = s * scale;
      mx = std::max(mx, p[u]);
    }
    double sum = 0;
    for (double& x : p) sum += (x = std::exp(x - mx));
    for (int u = 0; u < n_ctx; ++u) {
      for (int d = 0; d < hd; ++d) {
        (*out)[h * hd + d] +=
            static_cast<float>(p[u] / sum * vv[static_cast<size_t>(u) * kvd + kvh * hd + d]);
      }
    }
  }
}

class KvDemotionAttend : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(KvDemotionAttend, MixedTableEqualsScalarReference) {
  const auto [name, hd] = GetParam();
  const KvGeometry g = Geo(hd);
  auto c = *MakeKvCodec(name, g);
  ASSERT_TRUE(c->CanDemote(2, nullptr, nullptr));
  const int bs = g.block_size;
  // Blocks 0..5 full, block 6 partial (5 tokens). Demote (1, 2) into 1 and (3, 4) into 4
  // (the destination may alias either block). Table: [0, D12, D34, 5, 6].
  const int n = 6 * bs + 5;
  Filled f = Fill(*c, n, 7u + hd);
  c->Demote(0, f.blocks[1].data(), f.blocks[2].data(), f.blocks[1].data());
  c->Demote(0, f.blocks[3].data(), f.blocks[4].data(), f.blocks[4].data());
  EXPECT_TRUE(IsDemotedBlock(f.blocks[1].data()));
  EXPECT_TRUE(IsDemotedBlock(f.blocks[4].data()));
  EXPECT_FALSE(IsDemotedBlock(f.blocks[0].data()));
  const std::vector<const uint8_t*> table = {f.blocks[0].data(), f.blocks[1].data(),
                                             f.blocks[4].data(), f.blocks[5].data(),
                                             f.blocks[6].data()};
  const std::vector<int> tokens = {bs, 2 * bs, 2 * bs, bs, bs};

  // The demoted values stay close to the originals: relative RMS error well under 1 (int2 of
  // int4: coarse, but far from noise).
  const int kvd = g.n_kv_heads * hd;
  for (int kv = 0; kv < 2; ++kv) {
    double err = 0, ref = 0;
    std::vector<float> kt(hd), vt(hd);
    for (int t = bs; t < 5 * bs; ++t) {
      const uint8_t* blk = t < 3 * bs ? table[1] : table[2];
      const int slot = (t - bs) % (2 * bs);
      for (int h = 0; h < g.n_kv_heads; ++h) {
        ASSERT_TRUE(QuantKvDecodeToken(*c, blk, h, slot, kt.data(), vt.data()));
        for (int d = 0; d < hd; ++d) {
          const float x = (kv == 0 ? f.k : f.v)[static_cast<size_t>(t) * kvd + h * hd + d];
          const float y = kv == 0 ? kt[d] : vt[d];
          err += (x - y) * (x - y);
          ref += x * x;
        }
      }
    }
    std::printf("[ demote ] %s hd %d: %s relative RMS error after demotion %.4f\n", name.c_str(),
                hd, kv == 0 ? "K" : "V", std::sqrt(err / ref));
    EXPECT_LT(std::sqrt(err / ref), name == "int8" ? 0.15 : 0.6) << (kv == 0 ? "K" : "V");
  }

  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(g.n_heads) * hd);
  for (float& x : q) x = nd(rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // Contexts ending in the unsealed tail, at a block boundary and inside the tail.
  for (int n_ctx : {n, 6 * bs, 5 * bs + 1}) {
    const std::vector<const uint8_t*>& t = table;
    std::vector<float> ref;
    Reference(*c, table, tokens, /*unsealed=*/4, f, n_ctx, q.data(), scale, &ref);
    std::vector<float> out(q.size(), 0.0f), scratch(c->ScratchFloats(n_ctx));
    // Two head ranges, as worker threads split them.
    c->Attend(0, q.data(), t.data(), n_ctx, scale, out.data(), scratch.data(), 0, 1);
    c->Attend(0, q.data(), t.data(), n_ctx, scale, out.data(), scratch.data(), 1, g.n_heads);
    for (size_t i = 0; i < out.size(); ++i) {
      EXPECT_NEAR(out[i], ref[i], 2e-5 * (1 + std::fabs(ref[i])))
          << "n_ctx " << n_ctx << " i " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Codecs, KvDemotionAttend,
                         ::testing::Values(std::make_tuple("int4", 16), std::make_tuple("int4", 32),
                                           std::make_tuple("int4", 64),
                                           std::make_tuple("int8", 32)));

TEST(KvDemotion, BlockDecodersMatchTheTokenDecoders) {
  for (const char* name : {"int4", "int8", "gear+int4"}) {
    const KvGeometry g = Geo(32);
    auto c = *MakeKvCodec(name, g);
    const auto* q = c.get();
    Filled f = Fill(*q, 4 * g.block_size, 5u);
    kernels::KvQuantLayout base;
    base.block_size = g.block_size;
    base.n_kv_heads = g.n_kv_heads;
    base.head_dim = g.head_dim;
    base.k_bits = base.v_bits = name[3] == '8' ? 8 : 4;
    base.v_group = 32;
    if (std::string(name) == "gear+int4") {
      base.rank = 1;
      base.outliers = std::max(1, g.block_size * g.head_dim / 50);
    }
    ASSERT_EQ(base.BlockBytes(), c->LayerBlockBytes()) << name;
    const int hd = g.head_dim, T = 2 * g.block_size;
    std::vector<float> kb(static_cast<size_t>(T) * hd), vb(kb.size()), kt(hd), vt(hd);
    for (int h = 0; h < g.n_kv_heads; ++h) {
      DecodeBaseHead(base, f.blocks[0].data(), h, g.block_size, kb.data(), vb.data());
      for (int t = 0; t < g.block_size; ++t) {
        ASSERT_TRUE(QuantKvDecodeToken(*c, f.blocks[0].data(), h, t, kt.data(), vt.data()));
        for (int d = 0; d < hd; ++d) {
          EXPECT_NEAR(kb[t * hd + d], kt[d], 1e-5f * (1 + std::fabs(kt[d]))) << name;
          EXPECT_NEAR(vb[t * hd + d], vt[d], 1e-5f * (1 + std::fabs(vt[d]))) << name;
        }
      }
    }
    if (!c->CanDemote(2, nullptr, nullptr)) continue;
    c->Demote(0, f.blocks[1].data(), f.blocks[2].data(), f.blocks[1].data());
    DemotedLayout d;
    ASSERT_TRUE(DemotedLayoutOf(base, 2, &d));
    for (int h = 0; h < g.n_kv_heads; ++h) {
      DecodeDemotedHead(d, f.blocks[1].data(), h, T, kb.data(), vb.data());
      for (int t = 0; t < T; ++t) {
        ASSERT_TRUE(QuantKvDecodeToken(*c, f.blocks[1].data(), h, t, kt.data(), vt.data()));
        for (int e = 0; e < hd; ++e) {
          EXPECT_NEAR(kb[t * hd + e], kt[e], 1e-5f * (1 + std::fabs(kt[e]))) << name;
          EXPECT_NEAR(vb[t * hd + e], vt[e], 1e-5f * (1 + std::fabs(vt[e]))) << name;
        }
      }
    }
  }
}

// The AVX-512 mixed path (kernels::AttendKvMixedAvx512) against the scalar path of the same
// codec (ISA capped to scalar: decode to fp32, then softmax): int8 -> int4, int4 -> int2 and
// k8v4 -> k4v2, both value-parameter shapes (tg 1 and tg 2), GQA groups of 1 to 4, tables that
// mix base, demoted and unsealed blocks, contexts ending inside blocks, and head splits (which
// must not change a single bit of the output).
TEST(KvDemotion, FastMixedAttendMatchesScalarPath) {
  // Skipped without AVX-512, or when COMPRESSD_CPU_ISA caps it (the two paths would be one).
  kernels::SetIsaCap(kernels::CpuIsa::kAvx512);
  if (kernels::ActiveIsa() != kernels::CpuIsa::kAvx512) GTEST_SKIP() << "AVX-512 not active";
  struct Case {
    const char* name;
    int hd, n_heads, n_kv;
  };
  const Case cases[] = {{"int4", 64, 8, 2},     {"int8", 64, 8, 2},    {"int4", 32, 6, 2},
                        {"int8", 32, 4, 4},     {"int8:v4", 64, 3, 1}, {"int4:g16", 32, 8, 2},
                        {"int8:g32", 128, 4, 1}};
  int fast_differs = 0;
  for (const Case& cs : cases) {
    const KvGeometry g = Geo(cs.hd, 16, cs.n_heads, cs.n_kv);
    auto c = *MakeKvCodec(cs.name, g);
    ASSERT_TRUE(c->CanDemote(2, nullptr, nullptr)) << cs.name;
    const int bs = g.block_size, hd = g.head_dim;
    // Blocks 0..8 full, block 9 unsealed (7 tokens). Demote (1, 2), (3, 4), (6, 7).
    // Table: [0, D12, D34, 5, D67, 8, 9].
    const int n = 9 * bs + 7;
    Filled f = Fill(*c, n, 21u + hd);
    c->Demote(0, f.blocks[1].data(), f.blocks[2].data(), f.blocks[1].data());
    c->Demote(0, f.blocks[3].data(), f.blocks[4].data(), f.blocks[4].data());
    c->Demote(0, f.blocks[6].data(), f.blocks[7].data(), f.blocks[6].data());
    const std::vector<const uint8_t*> table = {
        f.blocks[0].data(), f.blocks[1].data(), f.blocks[4].data(), f.blocks[5].data(),
        f.blocks[6].data(), f.blocks[8].data(), f.blocks[9].data()};
    std::mt19937 rng(5);
    std::normal_distribution<float> nd(0.0f, 1.5f);
    std::vector<float> q(static_cast<size_t>(g.n_heads) * hd);
    for (float& x : q) x = nd(rng);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    // Unsealed tail; block boundary; inside a sealed base block; one token into the block after
    // a demoted one; inside the first demoted block's second half.
    for (int n_ctx : {n, 9 * bs, 9 * bs - 3, 7 * bs + 1, 2 * bs + 5}) {
      std::vector<float> scratch(c->ScratchFloats(n_ctx));
      std::vector<float> ref(q.size(), 0.0f), fast(q.size(), 0.0f), split(q.size(), 0.0f);
      kernels::SetIsaCap(kernels::CpuIsa::kScalar);
      c->Attend(0, q.data(), table.data(), n_ctx, scale, ref.data(), scratch.data(), 0, g.n_heads);
      kernels::SetIsaCap(kernels::CpuIsa::kAvx512);
      c->Attend(0, q.data(), table.data(), n_ctx, scale, fast.data(), scratch.data(), 0, g.n_heads);
      // Head ranges as worker threads split them: singles, then odd-sized ranges.
      for (int h = 0; h < g.n_heads; h += 1 + (h % 3)) {
        const int e = std::min(g.n_heads, h + 1 + (h % 3));
        c->Attend(0, q.data(), table.data(), n_ctx, scale, split.data(), scratch.data(), h, e);
      }
      for (size_t i = 0; i < ref.size(); ++i) {
        EXPECT_NEAR(fast[i], ref[i], 1e-5f * (1 + std::fabs(ref[i])))
            << cs.name << " hd " << hd << " n_ctx " << n_ctx << " i " << i;
        EXPECT_EQ(split[i], fast[i]) << cs.name << " hd " << hd << " n_ctx " << n_ctx << " i " << i;
        fast_differs += fast[i] != ref[i];
      }
    }
  }
  kernels::SetIsaCap(kernels::CpuIsa::kAvx512);
  // Not a tolerance: a sign that the two paths are distinct code (bitwise equal everywhere
  // would mean the fast path was not taken).
  EXPECT_GT(fast_differs, 0);
}

TEST(KvDemotion, TableWithoutDemotedBlocksIsUnchanged) {
  // The fast path: the same output before and after another table of the codec was demoted.
  const KvGeometry g = Geo(32);
  auto c = *MakeKvCodec("int4", g);
  const int n = 3 * g.block_size + 3;
  Filled f = Fill(*c, n, 11u);
  Filled other = Fill(*c, 2 * g.block_size, 12u);
  std::vector<const uint8_t*> t;
  for (auto& b : f.blocks) t.push_back(b.data());
  std::vector<float> q(static_cast<size_t>(g.n_heads) * g.head_dim, 0.25f);
  std::vector<float> a(q.size()), b(q.size()), scratch(c->ScratchFloats(n));
  c->Attend(0, q.data(), t.data(), n, 0.2f, a.data(), scratch.data(), 0, g.n_heads);
  c->Demote(0, other.blocks[0].data(), other.blocks[1].data(), other.blocks[0].data());
  c->Attend(0, q.data(), t.data(), n, 0.2f, b.data(), scratch.data(), 0, g.n_heads);
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace compressd

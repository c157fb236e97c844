// CSKV channel shrinking: names, block accounting (the inner codec's bytes on the r-channel
// geometry), calibration through the moments recorder, and attention against fp32 KV on data
// whose K and V live in a low-dimensional subspace (recovered only after calibration).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/kv/codecs.h"
#include "engine/kv/kv_codec.h"

namespace compressd {
namespace {

KvGeometry Geo(int hd = 32) {
  KvGeometry g;
  g.n_layers = 2;
  g.n_heads = 8;
  g.n_kv_heads = 2;
  g.head_dim = hd;
  g.block_size = 16;
  return g;
}

TEST(CskvCodec, NamesAndErrors) {
  for (const char* ok : {"cskv", "cskv:r8+int4", "int4+cskv:r16", "cskv+mikv:h4:l2:f45",
                         "cskv:r24+int8", "cskv:r32"}) {
    auto c = MakeKvCodec(ok, Geo());
    EXPECT_TRUE(c.ok()) << ok << ": " << c.status();
    if (c.ok()) {
      EXPECT_TRUE((*c)->NeedsCalibration()) << ok;
    }
  }
  for (const char* bad :
       {"cskv:r0", "cskv:r40", "cskv:q", "cskv+cskv", "cskv:r12+int4", "cskv+bogus"}) {
    auto c = MakeKvCodec(bad, Geo());
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(bad), std::string::npos) << c.status().message();
  }
}

TEST(CskvCodec, BytesAreTheInnerCodecsOnRChannels) {
  auto c = *MakeKvCodec("cskv:r16+int4", Geo());
  auto inner = *MakeKvCodec("int4", Geo(16));
  EXPECT_EQ(c->LayerBlockBytes(), inner->LayerBlockBytes());
  auto fp16 = *MakeKvCodec("fp16", Geo());
  EXPECT_DOUBLE_EQ((*MakeKvCodec("cskv:r8", Geo()))->BytesPerToken(), fp16->BytesPerToken() / 4);
  EXPECT_TRUE(c->NeedsSeal());
}

// K and V of every head lie in an 8-dim random subspace (per layer and head) plus small noise.
struct LowRankData {
  std::vector<float> k, v, q;
};

LowRankData MakeLowRank(const KvGeometry& g, int n_tokens, int layer, uint32_t seed) {
  // The subspaces depend on the layer only; the coefficients on the seed.
  std::mt19937 basis_rng(100 + layer);
  std::normal_distribution<float> nd;
  const int hd = g.head_dim, kvd = g.n_kv_heads * hd, sub = 8;
  std::vector<float> bk(static_cast<size_t>(g.n_kv_heads) * sub * hd), bv(bk.size());
  for (auto& x : bk) x = nd(basis_rng);
  for (auto& x : bv) x = nd(basis_rng);
  std::mt19937 rng(seed);
  LowRankData d;
  d.k.resize(static_cast<size_t>(n_tokens) * kvd);
  d.v.resize(d.k.size());
  for (int t = 0; t < n_tokens; ++t) {
    for (int h = 0; h < g.n_kv_heads; ++h) {
      float ck[8], cv[8];
      for (int j = 0; j < sub; ++j) ck[j] = nd(rng) * 0.5f, cv[j] = nd(rng) * 0.5f;
      for (int i = 0; i < hd; ++i) {
        float sk = 0.002f * nd(rng), sv = 0.002f * nd(rng);
        for (int j = 0; j < sub; ++j) {
          sk += ck[j] * bk[(static_cast<size_t>(h) * sub + j) * hd + i];
          sv += cv[j] * bv[(static_cast<size_t>(h) * sub + j) * hd + i];
        }
        d.k[static_cast<size_t>(t) * kvd + h * hd + i] = sk;
        d.v[static_cast<size_t>(t) * kvd + h * hd + i] = sv;
      }
    }
  }
  d.q.resize(static_cast<size_t>(g.n_heads) * hd);
  for (auto& x : d.q) x = nd(rng);
  return d;
}

// Stores n tokens in layer `layer` of both codecs (sealing full blocks), attends, returns the
// relative L2 error of c against fp32.
double AttendError(KvCodec* c, const KvGeometry& g, const LowRankData& d, int n, int layer) {
  auto ref = *MakeKvCodec("fp32", g);
  const int bs = g.block_size, nb = (n + bs - 1) / bs, kvd = g.n_kv_heads * g.head_dim;
  std::vector<uint8_t> rm(ref->LayerBlockBytes() * nb), cm(c->LayerBlockBytes() * nb);
  std::vector<const uint8_t*> rp, cp;
  for (int b = 0; b < nb; ++b) {
    rp.push_back(rm.data() + ref->LayerBlockBytes() * b);
    cp.push_back(cm.data() + c->LayerBlockBytes() * b);
  }
  for (int t = 0; t < n; ++t) {
    c->Store(layer, const_cast<uint8_t*>(cp[t / bs]), t % bs, d.k.data() + t * kvd,
             d.v.data() + t * kvd);
    ref->Store(layer, const_cast<uint8_t*>(rp[t / bs]), t % bs, d.k.data() + t * kvd,
               d.v.data() + t * kvd);
    if (t % bs == bs - 1 && c->NeedsSeal()) c->Seal(layer, const_cast<uint8_t*>(cp[t / bs]));
  }
  const int qd = g.n_heads * g.head_dim;
  std::vector<float> o1(qd), o2(qd), s(std::max(c->ScratchFloats(n), ref->ScratchFloats(n)));
  ref->Attend(layer, d.q.data(), rp.data(), n, 0.3f, o1.data(), s.data(), 0, g.n_heads);
  c->Attend(layer, d.q.data(), cp.data(), n, 0.3f, o2.data(), s.data(), 0, g.n_heads);
  double num = 0, den = 0;
  for (int i = 0; i < qd; ++i) num += (o1[i] - o2[i]) * (o1[i] - o2[i]), den += o1[i] * o1[i];
  return std::sqrt(num / den);
}

TEST(CskvCodec, CalibrationFindsTheSubspace) {
  const KvGeometry g = Geo();
  // Calibration: 200 tokens per layer through the recorder.
  KvMoments m;
  auto rec = MakeKvMomentsRecorder(g, &m);
  ASSERT_NE(rec, nullptr);
  std::vector<uint8_t> mem(rec->LayerBlockBytes() * 13);
  for (int layer = 0; layer < 2; ++layer) {
    LowRankData d = MakeLowRank(g, 200, layer, 1);
    const int kvd = g.n_kv_heads * g.head_dim;
    for (int t = 0; t < 200; ++t) {
      rec->Store(layer, mem.data() + rec->LayerBlockBytes() * (t / 16), t % 16,
                 d.k.data() + t * kvd, d.v.data() + t * kvd);
    }
  }
  EXPECT_EQ(m.tokens, 200);
  auto calibrated = *MakeKvCodec("cskv:r8", g);
  auto uncalibrated = *MakeKvCodec("cskv:r8", g);
  auto full = *MakeKvCodec("cskv:r32", g);
  ASSERT_TRUE(calibrated->Calibrate(m).ok());
  for (int layer = 0; layer < 2; ++layer) {
    for (int h = 0; h < 2; ++h) {
      EXPECT_GT(CskvEnergyKept(*calibrated, 0, layer, h), 0.9999);
      EXPECT_GT(CskvEnergyKept(*calibrated, 1, layer, h), 0.9999);
    }
  }
  // Fresh tokens from the same subspaces (seed 2: other coefficients, same bases per layer).
  for (int layer = 0; layer < 2; ++layer) {
    LowRankData d = MakeLowRank(g, 70, layer, 2);
    EXPECT_LT(AttendError(calibrated.get(), g, d, 70, layer), 5e-3) << layer;
    EXPECT_GT(AttendError(uncalibrated.get(), g, d, 70, layer), 0.2) << layer;
    EXPECT_LT(AttendError(full.get(), g, d, 70, layer), 2e-3) << layer;
  }
  // Quantized features: the error of int8 codes on top of the projection stays small.
  auto q8 = *MakeKvCodec("cskv:r8+int8", g);
  ASSERT_TRUE(q8->Calibrate(m).ok());
  EXPECT_LT(AttendError(q8.get(), g, MakeLowRank(g, 70, 0, 3), 70, 0), 0.02);
  // Moments of another geometry are refused.
  KvMoments other;
  auto rec2 = MakeKvMomentsRecorder(Geo(16), &other);
  other.tokens = 1;
  EXPECT_EQ(calibrated->Calibrate(other).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace compressd

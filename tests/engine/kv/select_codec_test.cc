// The importance-aware codecs (MiKV mixed precision, EMS evict-then-merge): block layout and
// accounting, the encoder's choices, the attention kernel against a dense oracle built from the
// decoded tokens, and the codec driven the way ModelRunner drives a SealAfterAttend codec
// (Store the step's tokens, Attend, then Seal full blocks).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "engine/kv/kv_cache.h"
#include "engine/kv/kv_codec.h"
#include "kernels/kv_quant.h"
#include "kernels/types.h"

namespace compressd {
namespace {

using kernels::KvSelectLayout;

KvGeometry Geo(int hd = 32, int bs = 16) {
  KvGeometry g;
  g.n_layers = 2;
  g.n_heads = 8;
  g.n_kv_heads = 2;
  g.head_dim = hd;
  g.block_size = bs;
  return g;
}

TEST(SelectKvCodec, NamesAndErrors) {
  const auto names = KvCodecNames();
  for (const char* n : {"mikv", "ems"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  }
  for (const char* ok : {"mikv", "ems", "ems+int4", "int8+ems", "ems+int2:f25", "mikv:h4:l2:f25",
                         "mikv:h16:l4", "ems:f30:nomerge", "ems:uniform:sink0", "mikv:g16"}) {
    auto c = MakeKvCodec(ok, Geo());
    EXPECT_TRUE(c.ok()) << ok << ": " << c.status();
  }
  for (const char* bad : {"mikv:l0", "ems+int3", "mikv+int4", "ems+gear", "ems:q1", "mikv+ems",
                          "ems:f150", "mikv:h3", "ems:g12", "ems+int4+int2"}) {
    auto c = MakeKvCodec(bad, Geo());
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(bad), std::string::npos) << c.status().message();
  }
  // Block of more than 64 tokens: the per-head hi mask is 64 bits.
  EXPECT_FALSE(MakeKvCodec("mikv", Geo(32, 128)).ok());
}

TEST(SelectKvCodec, BlockBytesAndAdmission) {
  // mikv:h8:l2:f25, head_dim 32, block 16, 2 KV heads: 8 of 32 tokens hi.
  //   per head: 16 header + 128 lo key channel params = 144
  //   hi row (int8 K and V, one group of 32): 2 * (4 + 32) = 72; lo row: 8 + 4 + 8 = 20
  auto mikv = *MakeKvCodec("mikv:h8:l2:f25", Geo());
  EXPECT_EQ(mikv->LayerBlockBytes(), 16u + 2 * 144 + 8 * 72 + 24 * 20);
  // ems+int4:f50: per head 16 + 128 (hi key params) + 132 (merge slot); 16 rows of 36.
  auto ems = *MakeKvCodec("ems+int4:f50", Geo());
  EXPECT_EQ(ems->LayerBlockBytes(), 16u + 2 * (16 + 128 + 132) + 16 * 36);
  auto fp16 = *MakeKvCodec("fp16", Geo());
  EXPECT_LT(ems->BytesPerToken(), mikv->BytesPerToken());
  EXPECT_LT(mikv->BytesPerToken(), fp16->BytesPerToken() / 2.5);
  // The same memory holds more blocks (so more sequences) with the smaller codec.
  const int64_t budget = 1 << 20;
  auto c16 = *KvCache::Create(std::move(fp16), budget);
  auto cm = *KvCache::Create(std::move(mikv), budget);
  auto ce = *KvCache::Create(std::move(ems), budget);
  EXPECT_GT(cm->pool().num_blocks(), 2 * c16->pool().num_blocks());
  EXPECT_GT(ce->pool().num_blocks(), cm->pool().num_blocks());
}

// Random K/V staging [nkv][bs][hd] (K then V) with outlier key channels, and scores.
struct Block {
  KvSelectLayout l;
  std::vector<uint16_t> stage;
  std::vector<float> score;
  std::vector<uint8_t> bytes;
};

Block MakeBlock(int hi_bits, int lo_bits, int n_hi, bool merge, uint32_t seed) {
  Block b;
  b.l.block_size = 16;
  b.l.n_kv_heads = 2;
  b.l.head_dim = 32;
  b.l.hi_bits = hi_bits;
  b.l.lo_bits = lo_bits;
  b.l.n_hi = n_hi;
  b.l.merge = merge;
  b.l.v_group = 16;
  EXPECT_TRUE(b.l.Valid());
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  const size_t n = static_cast<size_t>(b.l.n_kv_heads) * b.l.block_size * b.l.head_dim;
  b.stage.resize(2 * n);
  for (size_t i = 0; i < 2 * n; ++i) {
    const float x = nd(rng) * (i < n && (i % 32) % 7 == 3 ? 4.0f : 1.0f);
    b.stage[i] = kernels::F32ToF16(x);
  }
  b.score.resize(static_cast<size_t>(b.l.n_kv_heads) * b.l.block_size);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  for (float& s : b.score) s = ud(rng);
  b.bytes.assign(b.l.BlockBytes(), 0xAB);
  return b;
}

float StageAt(const Block& b, bool value, int h, int t, int d) {
  const size_t n = static_cast<size_t>(b.l.n_kv_heads) * b.l.block_size * b.l.head_dim;
  return kernels::F16ToF32(
      b.stage[(value ? n : 0) + (static_cast<size_t>(h) * b.l.block_size + t) * b.l.head_dim + d]);
}

TEST(SelectKvBlock, Fp16HiIsExactAndTopScoresAreChosen) {
  // Uniform budgets: 5 hi per head (10 over 2 heads); the 5 best of each head must be hi.
  Block b = MakeBlock(16, 2, 10, false, 1);
  kernels::KvSelectEncodeBlock(b.l, b.stage.data(), b.score.data(), nullptr, false, b.bytes.data());
  std::vector<float> k(32), v(32);
  for (int h = 0; h < 2; ++h) {
    std::vector<float> sc(b.score.begin() + h * 16, b.score.begin() + (h + 1) * 16);
    std::vector<float> sorted = sc;
    std::sort(sorted.rbegin(), sorted.rend());
    int n_hi = 0;
    double lo_err = 0, lo_norm = 0;
    for (int t = 0; t < 16; ++t) {
      const int cls = kernels::KvSelectDecodeToken(b.l, b.bytes.data(), h, t, k.data(), v.data());
      EXPECT_EQ(cls == 1, sc[t] >= sorted[4]) << h << " " << t;
      n_hi += cls == 1;
      for (int d = 0; d < 32; ++d) {
        if (cls == 1) {
          EXPECT_EQ(k[d], StageAt(b, false, h, t, d));
          EXPECT_EQ(v[d], StageAt(b, true, h, t, d));
        } else {
          lo_err += std::pow(k[d] - StageAt(b, false, h, t, d), 2) +
                    std::pow(v[d] - StageAt(b, true, h, t, d), 2);
          lo_norm +=
              std::pow(StageAt(b, false, h, t, d), 2) + std::pow(StageAt(b, true, h, t, d), 2);
        }
      }
    }
    EXPECT_EQ(n_hi, 5);
    // 2-bit rows: a coarse but bounded reconstruction.
    EXPECT_LT(std::sqrt(lo_err / lo_norm), 0.45);
    EXPECT_GT(std::sqrt(lo_err / lo_norm), 0.02);
  }
}

TEST(SelectKvBlock, HeadWiseBudgetFollowsScoresAndForcedSlots) {
  Block b = MakeBlock(8, 4, 8, false, 2);
  // Head 1's scores dwarf head 0's: beyond head 0's guaranteed 2 (= 8 / 2 heads / 2), the
  // budget goes to head 1. Slot 3 is forced (a sink) in both heads.
  for (int t = 0; t < 16; ++t) b.score[t] = 0.01f * t, b.score[16 + t] = 1.0f + t;
  std::vector<uint8_t> forced(16, 0);
  forced[3] = 1;
  kernels::KvSelectEncodeBlock(b.l, b.stage.data(), b.score.data(), forced.data(), true,
                               b.bytes.data());
  std::vector<float> k(32), v(32);
  std::vector<int> hi0, hi1;
  for (int t = 0; t < 16; ++t) {
    if (kernels::KvSelectDecodeToken(b.l, b.bytes.data(), 0, t, k.data(), v.data()) == 1)
      hi0.push_back(t);
    if (kernels::KvSelectDecodeToken(b.l, b.bytes.data(), 1, t, k.data(), v.data()) == 1)
      hi1.push_back(t);
  }
  EXPECT_EQ(hi0, (std::vector<int>{3, 15}));                  // forced + best (2 guaranteed)
  EXPECT_EQ(hi1, (std::vector<int>{3, 11, 12, 13, 14, 15}));  // forced + the rest of the budget
  // int8 hi rows and int4 lo rows reconstruct closely.
  for (int t = 0; t < 16; ++t) {
    const int cls = kernels::KvSelectDecodeToken(b.l, b.bytes.data(), 1, t, k.data(), v.data());
    for (int d = 0; d < 32; ++d) {
      const float tol = cls == 1 ? 0.05f : 0.9f;
      EXPECT_NEAR(k[d], StageAt(b, false, 1, t, d), tol * (d % 7 == 3 ? 4 : 1)) << t << " " << d;
      EXPECT_NEAR(v[d], StageAt(b, true, 1, t, d), tol) << t << " " << d;
    }
  }
}

TEST(SelectKvBlock, EvictedTokensMergeIntoWeightedAverage) {
  Block b = MakeBlock(16, 0, 12, true, 3);
  kernels::KvSelectEncodeBlock(b.l, b.stage.data(), b.score.data(), nullptr, false, b.bytes.data());
  std::vector<float> k(32), v(32);
  for (int h = 0; h < 2; ++h) {
    std::vector<double> mk(32, 0), mv(32, 0);
    double w = 0;
    int evicted = 0;
    std::vector<float> mkd(32), mvd(32);
    for (int t = 0; t < 16; ++t) {
      if (kernels::KvSelectDecodeToken(b.l, b.bytes.data(), h, t, k.data(), v.data()) != 0)
        continue;
      ++evicted;
      mkd = k, mvd = v;
      const double s = b.score[h * 16 + t] + 1e-6;
      w += s;
      for (int d = 0; d < 32; ++d)
        mk[d] += s * StageAt(b, false, h, t, d), mv[d] += s * StageAt(b, true, h, t, d);
    }
    EXPECT_EQ(evicted, 10);  // 16 - 6 kept per head
    for (int d = 0; d < 32; ++d) {
      EXPECT_NEAR(mkd[d], mk[d] / w, 2e-3 * (1 + std::fabs(mk[d] / w)));
      EXPECT_NEAR(mvd[d], mv[d] / w, 2e-3 * (1 + std::fabs(mv[d] / w)));
    }
  }
}

// Oracle: softmax attention over the decoded tokens of each encoded block (hi/lo rows), plus each
// head's merge slot once with logit bias log(n_evicted), for a full block.
void OracleAttend(const KvSelectLayout& l, int n_heads, const float* q,
                  const std::vector<const uint8_t*>& blocks, int n_ctx, float scale, float* out) {
  const int group = n_heads / l.n_kv_heads, hd = l.head_dim;
  std::vector<float> k(hd), v(hd);
  for (int h = 0; h < n_heads; ++h) {
    std::vector<double> logits;
    std::vector<std::vector<float>> vals;
    for (int t = 0; t < n_ctx; ++t) {
      const int b = t / l.block_size, slot = t % l.block_size;
      const int cls =
          kernels::KvSelectDecodeToken(l, blocks[b], h / group, slot, k.data(), v.data());
      if (cls == 0) continue;
      double s = 0;
      for (int d = 0; d < hd; ++d) s += q[h * hd + d] * k[d];
      logits.push_back(s * scale);
      vals.push_back(v);
    }
    for (size_t b = 0; b < blocks.size(); ++b) {
      int evicted = 0, slot = 0;
      for (int t = 0; t < l.block_size; ++t) {
        if (kernels::KvSelectDecodeToken(l, blocks[b], h / group, t, k.data(), v.data()) == 0) {
          ++evicted, slot = t;
        }
      }
      if (evicted == 0 || !l.merge || l.lo_bits != 0) continue;
      kernels::KvSelectDecodeToken(l, blocks[b], h / group, slot, k.data(), v.data());
      double s = 0;
      for (int d = 0; d < hd; ++d) s += q[h * hd + d] * k[d];
      // The bias is stored as fp16.
      logits.push_back(s * scale +
                       kernels::F16ToF32(kernels::F32ToF16(std::log(static_cast<float>(evicted)))));
      vals.push_back(v);
    }
    const double mx = *std::max_element(logits.begin(), logits.end());
    double den = 0;
    for (double& x : logits) den += (x = std::exp(x - mx));
    for (int d = 0; d < hd; ++d) {
      double o = 0;
      for (size_t i = 0; i < logits.size(); ++i) o += logits[i] / den * vals[i][d];
      out[h * hd + d] = static_cast<float>(o);
    }
  }
}

TEST(SelectKvBlock, AttentionMatchesOracle) {
  struct Cfg {
    int hi, lo, n_hi;
    bool merge;
  };
  for (const Cfg& c : {Cfg{16, 0, 10, true}, Cfg{4, 0, 8, true}, Cfg{8, 2, 6, false},
                       Cfg{4, 2, 12, false}, Cfg{2, 4, 4, false}, Cfg{16, 0, 4, false}}) {
    std::vector<Block> blks;
    std::vector<const uint8_t*> ptrs;
    for (int i = 0; i < 3; ++i) {
      blks.push_back(MakeBlock(c.hi, c.lo, c.n_hi, c.merge, 10 + i));
    }
    for (auto& b : blks) {
      kernels::KvSelectEncodeBlock(b.l, b.stage.data(), b.score.data(), nullptr, true,
                                   b.bytes.data());
      ptrs.push_back(b.bytes.data());
    }
    const KvSelectLayout& l = blks[0].l;
    std::mt19937 rng(5);
    std::normal_distribution<float> nd;
    std::vector<float> q(4 * 32), out(4 * 32), want(4 * 32);
    for (float& x : q) x = nd(rng);
    std::vector<float> scratch(kernels::KvSelectScratchFloats(l, 48));
    kernels::AttendKvSelectRef(l, 4, q.data(), ptrs.data(), nullptr, nullptr, 48, 0.3f, out.data(),
                               scratch.data(), 0, 4);
    OracleAttend(l, 4, q.data(), ptrs, 48, 0.3f, want.data());
    for (int i = 0; i < 4 * 32; ++i) {
      EXPECT_NEAR(out[i], want[i], 1e-4) << c.hi << "/" << c.lo << " " << i;
    }
  }
}

// Drives a codec like ModelRunner does for a SealAfterAttend codec, one block per step: Store the
// step's tokens (two threads, shuffled), Attend every position of the step, then Seal the full
// block. Returns the relative L2 error of the final attention output vs fp32 KV, for queries q.
double RunnerError(const std::string& name, int n_tokens, const std::vector<float>& k,
                   const std::vector<float>& v, const std::vector<float>& q, KvGeometry g,
                   std::unique_ptr<KvCodec>* keep = nullptr,
                   std::vector<uint8_t>* keep_mem = nullptr) {
  auto ref = *MakeKvCodec("fp32", g);
  auto c = *MakeKvCodec(name, g);
  EXPECT_TRUE(c->NeedsSeal() && c->SealAfterAttend());
  const int bs = g.block_size, nb = (n_tokens + bs - 1) / bs;
  const int kvd = g.n_kv_heads * g.head_dim, qd = g.n_heads * g.head_dim;
  std::vector<uint8_t> ref_mem(ref->LayerBlockBytes() * nb), mem(c->LayerBlockBytes() * nb);
  std::vector<const uint8_t*> rp(nb), cp(nb);
  for (int i = 0; i < nb; ++i) {
    rp[i] = ref_mem.data() + ref->LayerBlockBytes() * i;
    cp[i] = mem.data() + c->LayerBlockBytes() * i;
  }
  std::mt19937 rng(9);
  std::vector<float> o1(qd), o2(qd),
      scratch(c->ScratchFloats(n_tokens) + ref->ScratchFloats(n_tokens));
  for (int b = 0; b < nb; ++b) {
    const int t0 = b * bs, t1 = std::min(n_tokens, t0 + bs);
    std::vector<int> order;
    for (int t = t0; t < t1; ++t) order.push_back(t);
    std::shuffle(order.begin(), order.end(), rng);
    auto store = [&](size_t from, size_t to) {
      for (size_t i = from; i < to; ++i) {
        const int t = order[i];
        c->Store(0, const_cast<uint8_t*>(cp[t / bs]), t % bs, k.data() + t * kvd,
                 v.data() + t * kvd);
        ref->Store(0, const_cast<uint8_t*>(rp[t / bs]), t % bs, k.data() + t * kvd,
                   v.data() + t * kvd);
      }
    };
    std::thread th1(store, 0, order.size() / 2), th2(store, order.size() / 2, order.size());
    th1.join();
    th2.join();
    // Every position of the step attends (its query: q rotated by position), in two threads.
    auto attend = [&](int from, int to) {
      std::vector<float> o(qd), s(c->ScratchFloats(n_tokens));
      for (int t = from; t < to; ++t) {
        std::vector<float> qt(q.begin() + static_cast<size_t>(t % 4) * qd,
                              q.begin() + static_cast<size_t>(t % 4 + 1) * qd);
        c->Attend(0, qt.data(), cp.data(), t + 1, 0.25f, o.data(), s.data(), 0, g.n_heads);
      }
    };
    std::thread a1(attend, t0, (t0 + t1) / 2), a2(attend, (t0 + t1) / 2, t1);
    a1.join();
    a2.join();
    if (t1 - t0 == bs) c->Seal(0, const_cast<uint8_t*>(cp[b]));
  }
  double num = 0, den = 0;
  for (int j = 0; j < 4; ++j) {
    const float* qj = q.data() + static_cast<size_t>(j) * qd;
    ref->Attend(0, qj, rp.data(), n_tokens, 0.25f, o1.data(), scratch.data(), 0, g.n_heads);
    c->Attend(0, qj, cp.data(), n_tokens, 0.25f, o2.data(), scratch.data(), 0, g.n_heads);
    for (int i = 0; i < qd; ++i) num += (o1[i] - o2[i]) * (o1[i] - o2[i]), den += o1[i] * o1[i];
  }
  if (keep != nullptr) {
    *keep = std::move(c);
    *keep_mem = std::move(mem);
  }
  return std::sqrt(num / den);
}

struct Data {
  std::vector<float> k, v, q;
};

// Random haystack; `needles` tokens have keys aligned with every query (they receive most of the
// attention), the value of each needle is distinctive.
Data MakeData(const KvGeometry& g, int n_tokens, const std::vector<int>& needles) {
  Data d;
  const int kvd = g.n_kv_heads * g.head_dim, qd = g.n_heads * g.head_dim;
  std::mt19937 rng(21);
  std::normal_distribution<float> nd;
  d.k.resize(static_cast<size_t>(n_tokens) * kvd);
  d.v.resize(d.k.size());
  for (size_t i = 0; i < d.k.size(); ++i) d.k[i] = nd(rng), d.v[i] = nd(rng);
  std::vector<float> dir(g.head_dim);
  for (float& x : dir) x = nd(rng);
  d.q.resize(4 * static_cast<size_t>(qd));
  for (size_t i = 0; i < d.q.size(); ++i) d.q[i] = 1.5f * dir[i % g.head_dim] + 0.3f * nd(rng);
  for (int t : needles) {
    for (int i = 0; i < kvd; ++i) {
      d.k[static_cast<size_t>(t) * kvd + i] = 2.0f * dir[i % g.head_dim];
      d.v[static_cast<size_t>(t) * kvd + i] = 3.0f;
    }
  }
  return d;
}

TEST(SelectKvCodec, ImportantTokensSurviveEviction) {
  const KvGeometry g = Geo();
  const std::vector<int> needles = {5, 21, 40, 58};
  Data d = MakeData(g, 70, needles);
  std::unique_ptr<KvCodec> c;
  std::vector<uint8_t> mem;
  // Keep 25% of each block: the needles, which took the attention, must be among the kept.
  const double err = RunnerError("ems:f25:sink0", 70, d.k, d.v, d.q, g, &c, &mem);
  kernels::KvSelectLayout l;
  l.block_size = 16;
  l.n_kv_heads = 2;
  l.head_dim = 32;
  l.hi_bits = 16;
  l.lo_bits = 0;
  l.merge = true;
  l.n_hi = 8;
  ASSERT_EQ(l.BlockBytes(), c->LayerBlockBytes());
  std::vector<float> k(32), v(32);
  for (int t : needles) {
    if (t >= 64) continue;  // the last block is still staged
    for (int h = 0; h < 2; ++h) {
      EXPECT_EQ(kernels::KvSelectDecodeToken(l, mem.data() + l.BlockBytes() * (t / 16), h, t % 16,
                                             k.data(), v.data()),
                1)
          << "needle " << t << " head " << h;
    }
  }
  // With the needles kept, evicting 75% of the haystack barely moves the output (the control
  // without scores is EvictionNeedsImportance below).
  EXPECT_LT(err, 0.05);
}

TEST(SelectKvCodec, EvictionNeedsImportance) {
  // Needles late in each block: with no queries observed before Seal the scores are all zero
  // and the encoder keeps the earliest slots, losing the needles; the runner protocol (Attend
  // before Seal) keeps them. Compare the two errors.
  const KvGeometry g = Geo();
  const std::vector<int> needles = {13, 29, 45};
  Data d = MakeData(g, 48, needles);
  const double with_scores = RunnerError("ems:f25:sink0", 48, d.k, d.v, d.q, g);
  // Blind: store and seal without attending (scores stay zero).
  auto ref = *MakeKvCodec("fp32", g);
  auto c = *MakeKvCodec("ems:f25:sink0", g);
  const int kvd = g.n_kv_heads * g.head_dim, qd = g.n_heads * g.head_dim;
  std::vector<uint8_t> rm(ref->LayerBlockBytes() * 3), cm(c->LayerBlockBytes() * 3);
  std::vector<const uint8_t*> rp, cp;
  for (int b = 0; b < 3; ++b) {
    rp.push_back(rm.data() + ref->LayerBlockBytes() * b);
    cp.push_back(cm.data() + c->LayerBlockBytes() * b);
  }
  for (int t = 0; t < 48; ++t) {
    c->Store(0, const_cast<uint8_t*>(cp[t / 16]), t % 16, d.k.data() + t * kvd,
             d.v.data() + t * kvd);
    ref->Store(0, const_cast<uint8_t*>(rp[t / 16]), t % 16, d.k.data() + t * kvd,
               d.v.data() + t * kvd);
    if (t % 16 == 15) c->Seal(0, const_cast<uint8_t*>(cp[t / 16]));
  }
  std::vector<float> o1(qd), o2(qd), s(c->ScratchFloats(48) + 64);
  double num = 0, den = 0;
  for (int j = 0; j < 4; ++j) {
    ref->Attend(0, d.q.data() + j * qd, rp.data(), 48, 0.25f, o1.data(), s.data(), 0, g.n_heads);
    c->Attend(0, d.q.data() + j * qd, cp.data(), 48, 0.25f, o2.data(), s.data(), 0, g.n_heads);
    for (int i = 0; i < qd; ++i) num += (o1[i] - o2[i]) * (o1[i] - o2[i]), den += o1[i] * o1[i];
  }
  const double blind = std::sqrt(num / den);
  EXPECT_LT(with_scores * 4, blind) << with_scores << " vs " << blind;
}

TEST(SelectKvCodec, RunnerProtocolCloseToFp32) {
  const KvGeometry g = Geo();
  Data d = MakeData(g, 77, {});
  // Keeping every token at fp16 is exact up to fp16 rounding.
  EXPECT_LT(RunnerError("ems:f100", 77, d.k, d.v, d.q, g), 2e-3);
  EXPECT_LT(RunnerError("mikv:h16:l8:f100", 77, d.k, d.v, d.q, g), 2e-3);
  const double m8 = RunnerError("mikv:h8:l2:f25", 77, d.k, d.v, d.q, g);
  const double m2 = RunnerError("mikv:h2:l2:f25", 77, d.k, d.v, d.q, g);
  EXPECT_LT(m8, 0.3);
  EXPECT_LT(m8, m2);  // higher precision for the chosen tokens helps
  EXPECT_LT(RunnerError("mikv:h8:l8:f25", 77, d.k, d.v, d.q, g), 0.02);
  EXPECT_LT(RunnerError("ems+int8:f100", 77, d.k, d.v, d.q, g), 0.02);
  // A context inside the first (staged) block is read from fp16.
  EXPECT_LT(RunnerError("ems+int2:f10", 12, d.k, d.v, d.q, g), 2e-3);
}

// The attention that scores a staged block arrives in many Attend calls (the step's tokens x
// head ranges, on several threads) whose finishing order varies. The scores, so which tokens
// stay hi and the sealed bytes, must not depend on that order. Built so that float
// accumulation in call order flips a choice: one-hot keys make each query's logits explicit
// (slot t's logit = q[t]); in each KV head, token A (slot 9) gets probability 1 from one query
// and x = 0.75 * 2^-24 from two others, token B (slot 5) gets 1 from one query; C (slot 12) gets
// ~1 twice. In float, 1 + x + x == 1 (a tie with B, which the earlier slot wins) but x + x + 1 >
// 1 (A wins). Exactly, A > B: A must be kept, whatever the order or the threads.
struct AttendCall {
  std::vector<float> q;  // [n_heads * head_dim]
  int h0, h1;
};

std::vector<uint8_t> SealAfterCalls(const std::string& name, const KvGeometry& g,
                                    const std::vector<float>& k, const std::vector<float>& v,
                                    const std::vector<AttendCall>& calls,
                                    const std::vector<int>& order, int threads) {
  auto c = *MakeKvCodec(name, g);
  const int bs = g.block_size, kvd = g.n_kv_heads * g.head_dim;
  std::vector<uint8_t> mem(c->LayerBlockBytes(), 0xCD);
  for (int t = 0; t < bs; ++t) c->Store(0, mem.data(), t, k.data() + t * kvd, v.data() + t * kvd);
  const uint8_t* blocks[1] = {mem.data()};
  auto run = [&](size_t from, size_t to) {
    std::vector<float> out(static_cast<size_t>(g.n_heads) * g.head_dim), s(c->ScratchFloats(bs));
    for (size_t i = from; i < to; ++i) {
      const AttendCall& a = calls[order[i]];
      c->Attend(0, a.q.data(), blocks, bs, 1.0f, out.data(), s.data(), a.h0, a.h1);
    }
  };
  std::vector<std::thread> th;
  for (int i = 0; i < threads; ++i) {
    th.emplace_back(run, order.size() * i / threads, order.size() * (i + 1) / threads);
  }
  for (auto& t : th) t.join();
  c->Seal(0, mem.data());
  return mem;
}

TEST(SelectKvCodec, ScoresDoNotDependOnAttendOrder) {
  const KvGeometry g = Geo();  // 8 query heads, 2 KV heads (group 4), head_dim 32, block 16
  const int bs = g.block_size, hd = g.head_dim, kvd = g.n_kv_heads * hd;
  const std::string name = "mikv:f12:uniform:sink0";  // 4 hi of 32: 2 per KV head
  std::vector<float> k(static_cast<size_t>(bs) * kvd, 0.0f), v(k.size());
  std::mt19937 rng(4);
  std::normal_distribution<float> nd;
  for (int t = 0; t < bs; ++t) {
    for (int h = 0; h < g.n_kv_heads; ++h) k[t * kvd + h * hd + t] = 1.0f;  // one-hot keys
  }
  for (float& x : v) x = nd(rng);
  const int A = 9, B = 5, C = 12;
  const float x_log = std::log(0.75f) - 24 * std::log(2.0f);
  auto call = [&](int h, std::vector<std::pair<int, float>> logits) {
    AttendCall a{std::vector<float>(static_cast<size_t>(g.n_heads) * hd, 0.0f), h, h + 1};
    for (int t = 0; t < bs; ++t) a.q[h * hd + t] = -200.0f;
    for (auto [t, l] : logits) a.q[h * hd + t] = l;
    return a;
  };
  std::vector<AttendCall> calls;
  for (int kvh = 0; kvh < g.n_kv_heads; ++kvh) {
    const int h = kvh * 4;
    calls.push_back(call(h, {{A, 0.0f}}));                  // 0, 4: A gets 1
    calls.push_back(call(h + 1, {{B, 0.0f}}));              // 1, 5: B gets 1
    calls.push_back(call(h + 2, {{C, 0.0f}, {A, x_log}}));  // 2, 6: A gets x
    calls.push_back(call(h + 3, {{C, 0.0f}, {A, x_log}}));  // 3, 7: A gets x
  }
  kernels::KvSelectLayout l;
  l.block_size = bs;
  l.n_kv_heads = g.n_kv_heads;
  l.head_dim = hd;
  l.hi_bits = 8;
  l.lo_bits = 2;
  l.n_hi = 4;
  l.v_group = 32;
  std::vector<std::vector<int>> orders = {{0, 1, 2, 3, 4, 5, 6, 7},   // A's 1 first
                                          {2, 3, 0, 1, 6, 7, 4, 5}};  // A's x first
  std::mt19937 shuf(8);
  for (int i = 0; i < 30; ++i) {
    orders.push_back(orders[0]);
    std::shuffle(orders.back().begin(), orders.back().end(), shuf);
  }
  const std::vector<uint8_t> want = SealAfterCalls(name, g, k, v, calls, orders[0], 1);
  ASSERT_EQ(want.size(), l.BlockBytes());
  std::vector<float> kd(hd), vd(hd);
  for (int h = 0; h < g.n_kv_heads; ++h) {
    std::vector<int> hi;
    for (int t = 0; t < bs; ++t) {
      if (kernels::KvSelectDecodeToken(l, want.data(), h, t, kd.data(), vd.data()) == 1) {
        hi.push_back(t);
      }
    }
    EXPECT_EQ(hi, (std::vector<int>{A, C})) << "KV head " << h;
  }
  for (size_t i = 1; i < orders.size(); ++i) {
    EXPECT_TRUE(SealAfterCalls(name, g, k, v, calls, orders[i], 1) == want) << "order " << i;
  }
  // The same calls from several threads at once, finishing in whatever order they do.
  for (int rep = 0; rep < 20; ++rep) {
    EXPECT_TRUE(SealAfterCalls(name, g, k, v, calls, orders[rep % orders.size()], 2 + rep % 3) ==
                want)
        << "threads, rep " << rep;
  }
}

}  // namespace
}  // namespace compressd

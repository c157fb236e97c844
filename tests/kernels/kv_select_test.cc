// Token-selective KV attention (kernels/kv_quant.h, KvSelectLayout): the AVX-512 kernel against
// the scalar reference (the oracle) over MiKV mixed-precision and EMS evict(-merge) layouts,
// head_dim 8/32/64/128, GQA groupings, staged (unsealed) blocks anywhere in the context, sealed
// partial last blocks, head sub-ranges, and the accumulated attention mass (stage_acc); and the
// kernel's independence from how heads are split into ranges, bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/kv_quant.h"
#include "kernels/types.h"

namespace compressd::kernels {
namespace {

// A context of n_ctx tokens in selective blocks; blocks whose index is in `staged` are left
// unsealed (fp16 staging), the others encoded with random importance (sinks forced in block 0).
struct Context {
  KvSelectLayout l;
  int n_ctx = 0;
  std::vector<std::vector<uint16_t>> stage;
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<const uint8_t*> ptrs;
  std::vector<const uint16_t*> stages;
};

Context MakeContext(const KvSelectLayout& l, int n_ctx, const std::vector<int>& staged,
                    std::mt19937& rng) {
  Context c;
  c.l = l;
  c.n_ctx = n_ctx;
  const int bs = l.block_size, hd = l.head_dim, nb = (n_ctx + bs - 1) / bs;
  const size_t half = static_cast<size_t>(l.n_kv_heads) * bs * hd;
  std::normal_distribution<float> nd;
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  for (int b = 0; b < nb; ++b) {
    std::vector<uint16_t> st(2 * half);
    for (size_t i = 0; i < st.size(); ++i) {
      // Keys with outlier channels and a per-token offset, values plain.
      const int ch = static_cast<int>(i % hd);
      const float amp = (i < half && ch % 5 == 2) ? 4.0f : 1.0f;
      st[i] = F32ToF16(amp * nd(rng) + (i < half ? 0.3f : 0.0f));
    }
    std::vector<float> score(static_cast<size_t>(l.n_kv_heads) * bs);
    for (float& s : score) s = ud(rng) * ud(rng);
    std::vector<uint8_t> sink(bs, 0);
    if (b == 0) std::fill(sink.begin(), sink.begin() + std::min(bs, 2), 1);
    std::vector<uint8_t> bytes(l.BlockBytes(), 0);
    const bool is_staged = std::find(staged.begin(), staged.end(), b) != staged.end();
    if (!is_staged)
      KvSelectEncodeBlock(l, st.data(), score.data(), sink.data(), b % 2 == 0, bytes.data());
    c.stage.push_back(std::move(st));
    c.bytes.push_back(std::move(bytes));
  }
  for (int b = 0; b < nb; ++b) {
    c.ptrs.push_back(c.bytes[b].data());
    const bool is_staged = std::find(staged.begin(), staged.end(), b) != staged.end();
    c.stages.push_back(is_staged ? c.stage[b].data() : nullptr);
  }
  return c;
}

using AttendFn = void (*)(const KvSelectLayout&, int, const float*, const uint8_t* const*,
                          const uint16_t* const*, float* const*, int, float, float*, float*, int,
                          int);

struct Result {
  std::vector<float> out;
  std::vector<std::vector<float>> acc;  // per block (staged blocks only are written)
};

// Runs fn over the head ranges [cuts[i], cuts[i + 1]) in order, on one output and one set of
// accumulators.
Result RunRanges(AttendFn fn, const Context& c, int n_heads, const std::vector<float>& q,
                 float scale, const std::vector<int>& cuts) {
  const KvSelectLayout& l = c.l;
  Result r;
  r.out.assign(static_cast<size_t>(n_heads) * l.head_dim, -7.0f);
  const int nb = static_cast<int>(c.ptrs.size());
  r.acc.assign(nb, std::vector<float>(static_cast<size_t>(l.n_kv_heads) * l.block_size, 0.0f));
  std::vector<float*> accp(nb, nullptr);
  for (int b = 0; b < nb; ++b) {
    if (c.stages[b] != nullptr) accp[b] = r.acc[b].data();
  }
  std::vector<float> scratch(KvSelectScratchFloats(l, c.n_ctx));
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    fn(l, n_heads, q.data(), c.ptrs.data(), c.stages.data(), accp.data(), c.n_ctx, scale,
       r.out.data(), scratch.data(), cuts[i], cuts[i + 1]);
  }
  return r;
}

struct Cfg {
  int hi, lo, percent;
  bool merge;
};

std::string Name(const KvSelectLayout& l, int n_heads, int n_ctx) {
  return "hi" + std::to_string(l.hi_bits) + " lo" + std::to_string(l.lo_bits) + " merge" +
         std::to_string(l.merge) + " n_hi " + std::to_string(l.n_hi) + " hd " +
         std::to_string(l.head_dim) + " g" + std::to_string(l.v_group) + " bs " +
         std::to_string(l.block_size) + " heads " + std::to_string(n_heads) + "/" +
         std::to_string(l.n_kv_heads) + " n_ctx " + std::to_string(n_ctx);
}

const Cfg kCfgs[] = {
    {8, 2, 20, false}, {4, 2, 45, false},  {16, 4, 30, false}, {2, 8, 25, false},
    {8, 8, 50, false}, {16, 2, 0, false},  {4, 4, 100, false}, {16, 0, 45, true},
    {4, 0, 50, true},  {8, 0, 30, true},   {2, 0, 60, true},   {16, 0, 40, false},
    {16, 0, 0, true},  {16, 0, 100, true},
};

TEST(KvSelectAttend, Avx512MatchesRef) {
  if (!GetCpuFeatures().avx512f || !GetCpuFeatures().avx512bw) GTEST_SKIP() << "no AVX-512";
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  struct Geo {
    int hd, vg, n_heads, n_kv, bs, n_ctx;
  };
  const Geo geos[] = {
      {8, 8, 4, 2, 16, 37},     {32, 32, 9, 3, 16, 80},   {64, 32, 9, 3, 16, 131},
      {128, 32, 8, 1, 32, 100}, {64, 16, 12, 2, 64, 200}, {32, 16, 6, 6, 8, 19},
      {128, 64, 16, 4, 16, 64}, {64, 64, 10, 5, 16, 1},   {8, 8, 3, 1, 64, 129},
  };
  int checked = 0;
  for (const Geo& g : geos) {
    for (const Cfg& cf : kCfgs) {
      KvSelectLayout l;
      l.block_size = g.bs;
      l.n_kv_heads = g.n_kv;
      l.head_dim = g.hd;
      l.v_group = g.vg;
      l.hi_bits = cf.hi;
      l.lo_bits = cf.lo;
      l.merge = cf.merge;
      const int total = g.bs * g.n_kv;
      l.n_hi = std::clamp((total * cf.percent + 50) / 100, 0, total);
      ASSERT_TRUE(l.Valid());
      ASSERT_TRUE(KvSelectAvx512Supports(l));
      const int nb = (g.n_ctx + g.bs - 1) / g.bs;
      // Staged: none; the last block (the codec's usual case, partial or full); the last two
      // and one in the middle (a prefill chunk that filled blocks not sealed yet). A sealed
      // last block that is only partly attended (n_ctx not a multiple of block_size) comes
      // with the "none" pattern.
      const std::vector<std::vector<int>> patterns = {{}, {nb - 1}, {nb / 2, nb - 2, nb - 1}};
      for (const auto& staged : patterns) {
        Context c = MakeContext(l, g.n_ctx, staged, rng);
        std::vector<float> q(static_cast<size_t>(g.n_heads) * g.hd);
        for (float& x : q) x = 1.5f * nd(rng);
        const float scale = 1.0f / std::sqrt(static_cast<float>(g.hd));
        // All heads, and a range cut at random points (not on KV-group boundaries).
        std::uniform_int_distribution<int> cut(0, g.n_heads);
        int a = cut(rng), b = cut(rng);
        if (a > b) std::swap(a, b);
        for (const std::vector<int>& cuts :
             {std::vector<int>{0, g.n_heads}, std::vector<int>{a, b}}) {
          const Result want = RunRanges(AttendKvSelectRef, c, g.n_heads, q, scale, cuts);
          const Result got = RunRanges(AttendKvSelectAvx512, c, g.n_heads, q, scale, cuts);
          const std::string what = Name(l, g.n_heads, g.n_ctx) + " staged " +
                                   std::to_string(staged.size()) + " heads [" +
                                   std::to_string(cuts[0]) + "," + std::to_string(cuts[1]) + ")";
          for (size_t i = 0; i < want.out.size(); ++i) {
            ASSERT_NEAR(got.out[i], want.out[i], 2e-5f + 2e-5f * std::fabs(want.out[i]))
                << what << " out " << i;
          }
          for (size_t b2 = 0; b2 < want.acc.size(); ++b2) {
            for (size_t i = 0; i < want.acc[b2].size(); ++i) {
              ASSERT_NEAR(got.acc[b2][i], want.acc[b2][i], 1e-6f + 1e-5f * want.acc[b2][i])
                  << what << " acc block " << b2 << " " << i;
            }
          }
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 300);
}

// The engine hands head ranges to threads dynamically: [0, n) at once must equal any
// [0, k) + [k, n), bit for bit, for the output and the accumulated attention mass.
TEST(KvSelectAttend, Avx512IndependentOfHeadSplit) {
  if (!GetCpuFeatures().avx512f || !GetCpuFeatures().avx512bw) GTEST_SKIP() << "no AVX-512";
  std::mt19937 rng(12);
  std::normal_distribution<float> nd;
  for (int hd : {8, 64}) {
    for (const Cfg& cf : {kCfgs[1], kCfgs[7], kCfgs[2]}) {
      KvSelectLayout l;
      l.block_size = 16;
      l.n_kv_heads = 3;
      l.head_dim = hd;
      l.v_group = std::min(32, hd);
      l.hi_bits = cf.hi;
      l.lo_bits = cf.lo;
      l.merge = cf.merge;
      l.n_hi = (16 * 3 * cf.percent + 50) / 100;
      const int n_heads = 18, n_ctx = 75;  // groups of 6: batches of 4 + 2 in the kernel
      Context c = MakeContext(l, n_ctx, {2, 4}, rng);
      std::vector<float> q(static_cast<size_t>(n_heads) * hd);
      for (float& x : q) x = nd(rng);
      const Result whole = RunRanges(AttendKvSelectAvx512, c, n_heads, q, 0.2f, {0, n_heads});
      for (int k = 1; k < n_heads; ++k) {
        const Result split = RunRanges(AttendKvSelectAvx512, c, n_heads, q, 0.2f, {0, k, n_heads});
        ASSERT_EQ(0, std::memcmp(whole.out.data(), split.out.data(), whole.out.size() * 4))
            << Name(l, n_heads, n_ctx) << " split at " << k;
        for (size_t b = 0; b < whole.acc.size(); ++b) {
          ASSERT_EQ(0,
                    std::memcmp(whole.acc[b].data(), split.acc[b].data(), whole.acc[b].size() * 4))
              << Name(l, n_heads, n_ctx) << " split at " << k << " acc block " << b;
        }
      }
      // Three ranges, one head each at the ends.
      const Result three =
          RunRanges(AttendKvSelectAvx512, c, n_heads, q, 0.2f, {0, 1, n_heads - 1, n_heads});
      EXPECT_EQ(0, std::memcmp(whole.out.data(), three.out.data(), whole.out.size() * 4));
    }
  }
}

// The dispatcher takes the AVX-512 kernel when it can (identical results) and the reference for
// layouts it does not support (value groups narrower than a chunk) or when the ISA is capped.
TEST(KvSelectAttend, DispatchFollowsIsaAndLayout) {
  std::mt19937 rng(13);
  std::normal_distribution<float> nd;
  for (int vg : {32, 8}) {
    KvSelectLayout l;
    l.block_size = 16;
    l.n_kv_heads = 2;
    l.head_dim = 64;
    l.v_group = vg;
    l.hi_bits = 8;
    l.lo_bits = 2;
    l.n_hi = 10;
    EXPECT_EQ(KvSelectAvx512Supports(l), vg == 32);
    Context c = MakeContext(l, 40, {2}, rng);
    std::vector<float> q(6 * 64);
    for (float& x : q) x = nd(rng);
    const Result ref = RunRanges(AttendKvSelectRef, c, 6, q, 0.125f, {0, 6});
    const Result got = RunRanges(AttendKvSelect, c, 6, q, 0.125f, {0, 6});
    const bool fast = ActiveIsa() == CpuIsa::kAvx512 && KvSelectAvx512Supports(l);
    if (fast) {
      const Result avx = RunRanges(AttendKvSelectAvx512, c, 6, q, 0.125f, {0, 6});
      EXPECT_EQ(got.out, avx.out);
      EXPECT_EQ(got.acc, avx.acc);
    } else {
      EXPECT_EQ(got.out, ref.out);
      EXPECT_EQ(got.acc, ref.acc);
    }
    SetIsaCap(CpuIsa::kScalar);
    const Result capped = RunRanges(AttendKvSelect, c, 6, q, 0.125f, {0, 6});
    SetIsaCap(CpuIsa::kAvx512);
    EXPECT_EQ(capped.out, ref.out);
    EXPECT_EQ(capped.acc, ref.acc);
  }
}

}  // namespace
}  // namespace compressd::kernels

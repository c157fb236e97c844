// KIVI-style quantized KV blocks (kernels/kv_quant.h): code packing round trip, block encoding
// error bounds, and parity of the AVX-512 attention kernel with the scalar reference across
// bit widths, head dims, value groups, GQA groupings, head sub-ranges and contexts that end in
// a staged (unsealed) or a sealed block.
#include "kernels/kv_quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/types.h"

namespace compressd::kernels {

namespace {

TEST(KvQuantPack, RoundTrip) {
  std::mt19937 rng(1);
  for (int bits : {2, 4, 8}) {
    for (int chunk : {8, 16}) {
      const int n = 64;
      std::vector<uint8_t> codes(n), back(n), packed(n * bits / 8);
      for (auto& c : codes) c = rng() & ((1 << bits) - 1);
      PackKvCodes(codes.data(), n, bits, chunk, packed.data());
      UnpackKvCodes(packed.data(), n, bits, chunk, back.data());
      EXPECT_EQ(codes, back) << bits << " " << chunk;
    }
  }
}

struct Data {
  KvQuantLayout l;
  std::vector<std::vector<uint16_t>> stage;  // per block, dense fp16
  std::vector<std::vector<uint8_t>> enc;
  std::vector<const uint8_t*> ptrs;
};

Data MakeData(const KvQuantLayout& l, int n_blocks, std::mt19937& rng, bool clip) {
  Data d;
  d.l = l;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const size_t half = static_cast<size_t>(l.n_kv_heads) * l.block_size * l.head_dim;
  for (int b = 0; b < n_blocks; ++b) {
    std::vector<uint16_t> st(2 * half);
    for (size_t i = 0; i < st.size(); ++i) {
      // Keys get outlier channels (KIVI's motivation for per-channel keys).
      const int ch = static_cast<int>(i % l.head_dim);
      const float amp = (i < half && ch % 7 == 3) ? 6.0f : 1.0f;
      st[i] = F32ToF16(amp * nd(rng));
    }
    std::vector<uint8_t> e(l.BlockBytes());
    KvQuantEncodeBlock(l, st.data(), e.data(), clip);
    d.stage.push_back(std::move(st));
    d.enc.push_back(std::move(e));
  }
  for (auto& e : d.enc) d.ptrs.push_back(e.data());
  return d;
}

TEST(KvQuantEncode, ErrorWithinHalfStep) {
  std::mt19937 rng(2);
  for (int bits : {2, 4, 8}) {
    KvQuantLayout l{16, 2, 32, bits, bits, 16};
    ASSERT_TRUE(l.Valid());
    Data d = MakeData(l, 1, rng, /*clip=*/false);
    const size_t half = static_cast<size_t>(l.n_kv_heads) * l.block_size * l.head_dim;
    const uint8_t* kh0 = d.enc[0].data() + kKvQuantHeader;
    std::vector<float> k(l.head_dim), v(l.head_dim);
    for (int h = 0; h < l.n_kv_heads; ++h) {
      const uint16_t* ks = reinterpret_cast<const uint16_t*>(kh0 + l.HeadBytes() * h);
      for (int t = 0; t < l.block_size; ++t) {
        KvQuantDecodeToken(l, d.enc[0].data(), h, t, k.data(), v.data());
        const size_t base = (static_cast<size_t>(h) * l.block_size + t) * l.head_dim;
        float vmax = 0, vmin = 0;
        for (int c = 0; c < l.head_dim; ++c) {
          const float x = F16ToF32(d.stage[0][half + base + c]);
          vmax = c == 0 ? x : std::max(vmax, x);
          vmin = c == 0 ? x : std::min(vmin, x);
        }
        for (int c = 0; c < l.head_dim; ++c) {
          const float kx = F16ToF32(d.stage[0][base + c]);
          EXPECT_LE(std::fabs(k[c] - kx), 0.5f * F16ToF32(ks[c]) * 1.01f + 2e-3f) << bits;
          const float vx = F16ToF32(d.stage[0][half + base + c]);
          EXPECT_LE(std::fabs(v[c] - vx), 0.5f * (vmax - vmin) / ((1 << bits) - 1) * 1.01f + 2e-3f);
        }
      }
    }
  }
}

TEST(KvQuantEncode, ClipSearchNeverWorse) {
  for (int bits : {2, 4}) {
    KvQuantLayout l{32, 1, 64, bits, bits, 32};
    double err[2] = {0, 0};
    for (int clip = 0; clip < 2; ++clip) {
      std::mt19937 rng(3);
      Data d = MakeData(l, 1, rng, clip == 1);
      std::vector<float> k(64), v(64);
      for (int t = 0; t < l.block_size; ++t) {
        KvQuantDecodeToken(l, d.enc[0].data(), 0, t, k.data(), v.data());
        for (int c = 0; c < 64; ++c) {
          const float kx = F16ToF32(d.stage[0][t * 64 + c]);
          const float vx = F16ToF32(d.stage[0][32 * 64 + t * 64 + c]);
          err[clip] += (k[c] - kx) * (k[c] - kx) + (v[c] - vx) * (v[c] - vx);
        }
      }
    }
    EXPECT_LE(err[1], err[0] * 1.0001) << bits;
  }
}

// GEAR extras: the low-rank + sparse corrections strictly reduce the round-trip error of the
// 2-bit base, and outliers beyond the budget are the only large errors left.
TEST(KvQuantEncode, GearExtrasReduceError) {
  double err[3] = {0, 0, 0};
  const int cfg[3][2] = {{0, 0}, {1, 0}, {1, 20}};
  for (int c = 0; c < 3; ++c) {
    KvQuantLayout l{16, 2, 32, 2, 2, 32, cfg[c][0], cfg[c][1]};
    ASSERT_TRUE(l.Valid());
    std::mt19937 rng(9);
    Data d = MakeData(l, 1, rng, true);
    const size_t half = static_cast<size_t>(2) * 16 * 32;
    std::vector<float> k(32), v(32);
    for (int h = 0; h < 2; ++h) {
      for (int t = 0; t < 16; ++t) {
        KvQuantDecodeToken(l, d.enc[0].data(), h, t, k.data(), v.data());
        for (int ch = 0; ch < 32; ++ch) {
          const size_t i = (static_cast<size_t>(h) * 16 + t) * 32 + ch;
          const float ek = k[ch] - F16ToF32(d.stage[0][i]), ev = v[ch] - F16ToF32(d.stage[0][half + i]);
          err[c] += ek * ek + ev * ev;
        }
      }
    }
  }
  EXPECT_LT(err[1], err[0]);
  EXPECT_LT(err[2], err[1] * 0.9);
}

// Reference attention equals dense fp32 attention over the decoded tokens.
TEST(KvQuantAttend, RefMatchesDecodedDense) {
  std::mt19937 rng(4);
  KvQuantLayout l{16, 2, 32, 4, 2, 32};
  Data d = MakeData(l, 3, rng, true);
  const int n_heads = 4, n_ctx = 40;
  std::vector<float> q(n_heads * 32), out(n_heads * 32), scratch(n_ctx + 64);
  std::normal_distribution<float> nd;
  for (auto& x : q) x = nd(rng);
  AttendKvQuantRef(l, n_heads, q.data(), d.ptrs.data(), nullptr, n_ctx, 0.3f, out.data(),
                   scratch.data(), 0, n_heads);
  for (int h = 0; h < n_heads; ++h) {
    const int kvh = h / 2;
    std::vector<float> k(32), v(32), s(n_ctx), o(32, 0.0f);
    double mx = -1e30, sum = 0;
    for (int t = 0; t < n_ctx; ++t) {
      KvQuantDecodeToken(l, d.ptrs[t / 16], kvh, t % 16, k.data(), v.data());
      double a = 0;
      for (int c = 0; c < 32; ++c) a += q[h * 32 + c] * k[c];
      s[t] = static_cast<float>(a * 0.3);
      mx = std::max<double>(mx, s[t]);
    }
    for (int t = 0; t < n_ctx; ++t) sum += std::exp(s[t] - mx);
    for (int t = 0; t < n_ctx; ++t) {
      KvQuantDecodeToken(l, d.ptrs[t / 16], kvh, t % 16, k.data(), v.data());
      const float p = static_cast<float>(std::exp(s[t] - mx) / sum);
      for (int c = 0; c < 32; ++c) o[c] += p * v[c];
    }
    for (int c = 0; c < 32; ++c) EXPECT_NEAR(out[h * 32 + c], o[c], 1e-4);
  }
}

TEST(KvQuantAttend, Avx512MatchesRef) {
  if (!GetCpuFeatures().avx512f) GTEST_SKIP() << "no AVX-512";
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  int cases = 0;
  for (int hd : {16, 32, 64, 128}) {
    for (int kb : {2, 4, 8}) {
      for (int vb : {2, 4, 8}) {
        for (int grp : {16, hd}) {
          for (auto [n_heads, n_kv] : {std::pair{4, 4}, {8, 2}, {6, 2}, {8, 1}, {12, 4}}) {
            const int bs = (cases % 3 == 0) ? 16 : (cases % 3 == 1 ? 32 : 8);
            // Every other case carries GEAR extras (rank 0..2, sparse outliers).
            const int rank = (cases / 2) % 3, outl = (cases % 2) * 7;
            KvQuantLayout l{bs, n_kv, hd, kb, vb, grp, rank, outl};
            if (!l.Valid()) continue;
            const int n_blocks = 5;
            Data d = MakeData(l, n_blocks, rng, true);
            for (int n_ctx : {1, bs, bs * 2 + 3, bs * n_blocks}) {
              for (int staged = 0; staged < 2; ++staged) {
                const uint16_t* tail = staged ? d.stage[(n_ctx - 1) / bs].data() : nullptr;
                std::vector<float> q(n_heads * hd), a(n_heads * hd, 0.f), b(n_heads * hd, 0.f);
                std::vector<float> scratch(n_ctx + 64);
                for (auto& x : q) x = 2.0f * nd(rng);
                const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
                AttendKvQuantRef(l, n_heads, q.data(), d.ptrs.data(), tail, n_ctx, scale,
                                 a.data(), scratch.data(), 0, n_heads);
                // Split heads the way runner threads do: [1, n_heads) after [0, 1).
                AttendKvQuantAvx512(l, n_heads, q.data(), d.ptrs.data(), tail, n_ctx, scale,
                                    b.data(), scratch.data(), 0, 1);
                AttendKvQuantAvx512(l, n_heads, q.data(), d.ptrs.data(), tail, n_ctx, scale,
                                    b.data(), scratch.data(), 1, n_heads);
                for (size_t i = 0; i < a.size(); ++i) {
                  ASSERT_NEAR(a[i], b[i], 2e-4f * (1.0f + std::fabs(a[i])))
                      << "hd " << hd << " kb " << kb << " vb " << vb << " grp " << grp << " heads "
                      << n_heads << "/" << n_kv << " ctx " << n_ctx << " staged " << staged;
                }
                ++cases;
              }
            }
          }
        }
      }
    }
  }
  EXPECT_GT(cases, 500);
}

}  // namespace
}  // namespace compressd::kernels

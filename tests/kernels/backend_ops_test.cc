// Every CUDA op against its CPU reference (the ggml test-backend-ops idea). Compiles in
// every build; GPU cases GTEST_SKIP without CUDA compiled in or without a device. The
// repack/layout cases run on the CPU wherever CUDA is compiled in.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/core/backend.h"
#include "gtest/gtest.h"
#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"
#include "kernels/types.h"

#if defined(COMPRESSD_HAVE_CUDA)
#include <cuda_runtime_api.h>

#include "kernels/cuda_formats.h"
#include "kernels/cuda_gemm_dense.h"
#include "kernels/cuda_ops.h"
#endif

namespace compressd {
namespace {

using kernels::DType;

TEST(BackendRegistry, CpuAlwaysCudaExplainsItself) {
  auto cpu = MakeBackend("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ((*cpu)->name(), "cpu");
  EXPECT_EQ(MakeBackend("gpu").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeBackend("cuda:x").status().code(), absl::StatusCode::kInvalidArgument);
  if (CudaDeviceCount() == 0) {
    EXPECT_EQ(MakeBackend("cuda:0").status().code(), absl::StatusCode::kUnavailable);
  }
  EXPECT_EQ(MakeBackend("cuda:4096").status().code(), absl::StatusCode::kUnavailable);
  void* p = *(*cpu)->Allocate(100);
  const char msg[] = "hello";
  ASSERT_TRUE((*cpu)->CopyToDevice(p, msg, sizeof(msg)).ok());
  char back[sizeof(msg)];
  ASSERT_TRUE((*cpu)->CopyToHost(back, p, sizeof(msg)).ok());
  EXPECT_STREQ(back, "hello");
  (*cpu)->Free(p);
}

#if defined(COMPRESSD_HAVE_CUDA)
namespace kc = kernels::cuda;

struct PlainQuant {
  int64_t rows, cols;
  int group, bits;
  std::vector<uint8_t> codes;
  std::vector<float> scales, zeros;
  kernels::PlainQuantMatrix View() const {
    return {rows, cols, group, bits, codes.data(), scales.data(), zeros.data()};
  }
};

PlainQuant RandomQuant(int64_t rows, int64_t cols, int group, int bits, uint32_t seed) {
  std::mt19937 rng(seed);
  PlainQuant q{rows, cols, group, bits, {}, {}, {}};
  q.codes.resize(rows * cols);
  for (auto& c : q.codes) c = static_cast<uint8_t>(rng() % (1u << bits));
  std::uniform_real_distribution<float> u(0.001f, 0.02f);
  q.scales.resize(rows * cols / group);
  q.zeros.resize(q.scales.size());
  for (size_t i = 0; i < q.scales.size(); ++i) {
    q.scales[i] = u(rng);
    q.zeros[i] = static_cast<float>(rng() % (1u << bits));
  }
  return q;
}

TEST(CudaQuantLayout, RepackRoundTripsEveryCode) {
  for (int bits : {4, 8}) {
    PlainQuant q = RandomQuant(8, 256, 64, bits, 7 + bits);
    ASSERT_EQ(kernels::CudaQuantCheck(q.View()), "");
    kernels::CudaQuantWeight w = kernels::CudaQuantRepack(q.View());
    EXPECT_EQ(w.codes.size(), static_cast<size_t>(8 * 256 * bits / 8));
    for (int64_t r = 0; r < q.rows; ++r) {
      std::vector<float> deq(q.cols);
      kernels::CudaQuantDequantizeRow(w, r, deq.data());
      for (int64_t c = 0; c < q.cols; ++c) {
        ASSERT_EQ(kernels::CudaQuantCode(w, r, c), q.codes[r * q.cols + c]) << r << "," << c;
        const float s = q.scales[(r * q.cols + c) / q.group];
        const float z = q.zeros[(r * q.cols + c) / q.group];
        EXPECT_NEAR(deq[c], (q.codes[r * q.cols + c] - z) * s, 2e-3f + 1e-2f * std::fabs(z * s));
      }
    }
  }
  PlainQuant bad = RandomQuant(4, 96, 48, 4, 1);
  EXPECT_NE(kernels::CudaQuantCheck(bad.View()), "");
}

TEST(CudaQuantLayout, Int4WordFeedsMmaFragmentPairs) {
  // Word t of a chunk: nibbles (j, j+4) = columns (p, p+1), p = {0,8,16,24}[j] + 2t.
  PlainQuant q = RandomQuant(1, 32, 32, 4, 3);
  for (int c = 0; c < 32; ++c) q.codes[c] = static_cast<uint8_t>(c % 16);
  kernels::CudaQuantWeight w = kernels::CudaQuantRepack(q.View());
  for (int t = 0; t < 4; ++t) {
    uint32_t word;
    std::memcpy(&word, w.codes.data() + 4 * t, 4);
    const int base[4] = {0, 8, 16, 24};
    for (int j = 0; j < 4; ++j) {
      EXPECT_EQ((word >> (4 * j)) & 15u, static_cast<uint32_t>((base[j] + 2 * t) % 16));
      EXPECT_EQ((word >> (4 * (j + 4))) & 15u, static_cast<uint32_t>((base[j] + 2 * t + 1) % 16));
    }
  }
}

bool HaveGpu() { return CudaDeviceCount() > 0; }
#define REQUIRE_GPU() \
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device"

// Device buffer for tests.
template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) { EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&p), std::max<size_t>(1, n) * sizeof(T)), cudaSuccess); }
  Dev(const std::vector<T>& h) : Dev(h.size()) {
    EXPECT_EQ(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~Dev() { cudaFree(p); }
  std::vector<T> Get() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

std::vector<float> RandomVec(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}
std::vector<uint16_t> ToHalf(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = kernels::F32ToF16(v[i]);
  return h;
}
std::vector<float> RoundHalf(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = kernels::F16ToF32(kernels::F32ToF16(v[i]));
  return r;
}
std::vector<float> HalfToFloat(const std::vector<uint16_t>& h) {
  std::vector<float> r(h.size());
  for (size_t i = 0; i < h.size(); ++i) r[i] = kernels::F16ToF32(h[i]);
  return r;
}

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, float atol,
                 float rtol, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], atol + rtol * std::fabs(want[i])) << what << " at " << i;
  }
}

TEST(CudaOps, QuantGemmMatchesReference) {
  REQUIRE_GPU();
  for (int bits : {4, 8}) {
    for (int64_t n : {1, 3, 8, 9, 16, 33, 64}) {
      const int64_t rows = 128, cols = 512;
      PlainQuant q = RandomQuant(rows, cols, 128, bits, 11 + bits);
      kernels::CudaQuantWeight w = kernels::CudaQuantRepack(q.View());
      std::vector<float> x = RoundHalf(RandomVec(n * cols, 5));
      std::vector<float> want(n * rows), row(cols);
      for (int64_t r = 0; r < rows; ++r) {
        kernels::CudaQuantDequantizeRow(w, r, row.data());
        for (int64_t t = 0; t < n; ++t) {
          double s = 0;
          for (int64_t c = 0; c < cols; ++c) s += double{row[c]} * x[t * cols + c];
          want[t * rows + r] = static_cast<float>(s);
        }
      }
      Dev<uint8_t> codes(w.codes);
      Dev<uint16_t> so(w.scale_offset);
      Dev<uint16_t> xd(ToHalf(x));
      kc::QuantWeightView v{rows, cols, 128, bits, codes.p, so.p};
      Dev<float> y(n * rows);
      ASSERT_EQ(kc::QuantGemm(v, xd.p, n, y.p, rows, false, nullptr), cudaSuccess);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      ExpectClose(y.Get(), want, 2e-3f, 2e-3f, "quant gemm");
    }
  }
}

TEST(CudaOps, DenseGemmMatchesReference) {
  REQUIRE_GPU();
  int dev = 0, major = 0, minor = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  Dev<uint8_t> ws(32 << 20);
  std::unique_ptr<kc::DenseGemm> g;
  ASSERT_EQ(kc::DenseGemm::Create(ws.p, ws.n, &g), cudaSuccess);
  for (DType dt : {DType::kF16, DType::kBF16}) {
    if (!kc::DenseGemm::IsSupported(major * 10 + minor, dt)) continue;
    const int64_t rows = 96, cols = 256, n = 5;
    std::vector<float> wf = RandomVec(rows * cols, 1), x = RandomVec(n * cols, 2);
    std::vector<uint16_t> wb(wf.size()), xb(x.size());
    for (size_t i = 0; i < wf.size(); ++i) {
      wb[i] = dt == DType::kF16 ? kernels::F32ToF16(wf[i]) : kernels::F32ToBF16(wf[i]);
    }
    for (size_t i = 0; i < x.size(); ++i) {
      xb[i] = dt == DType::kF16 ? kernels::F32ToF16(x[i]) : kernels::F32ToBF16(x[i]);
      x[i] = dt == DType::kF16 ? kernels::F16ToF32(xb[i]) : kernels::BF16ToF32(xb[i]);
    }
    kernels::PackedWeight pw;
    pw.format.dtype = dt;
    pw.rows = rows;
    pw.cols = cols;
    pw.data = wb.data();
    pw.data_bytes = wb.size() * 2;
    std::vector<float> want(n * rows);
    kernels::GemmRef(pw, x.data(), n, want.data(), rows, 0, rows);
    Dev<uint16_t> wd(wb), xd(xb);
    Dev<float> y(n * rows);
    ASSERT_EQ(g->Run(dt, wd.p, rows, cols, xd.p, n, y.p, rows, false, nullptr), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ExpectClose(y.Get(), want, 1e-3f, 1e-3f, "dense gemm");
  }
}

TEST(CudaOps, RmsNormRopeSwiGluMatchReference) {
  REQUIRE_GPU();
  const int64_t T = 3, H = 320, hd = 64, nq = 4, nkv = 2, max_pos = 16;
  std::vector<float> x = RandomVec(T * H, 3), w = RandomVec(H, 4, 0.5f, 1.5f);
  Dev<float> xd(x), wd(w);
  Dev<uint16_t> out(T * H);
  ASSERT_EQ(kc::RmsNormToHalf(xd.p, wd.p, nullptr, T, H, 1e-5f, out.p, nullptr), cudaSuccess);
  std::vector<float> want(T * H);
  for (int64_t t = 0; t < T; ++t) kernels::RmsNormRef(&x[t * H], w.data(), H, 1e-5f, &want[t * H]);
  ExpectClose(HalfToFloat(out.Get()), want, 1e-3f, 2e-3f, "rmsnorm");

  std::vector<float> q = RandomVec(T * nq * hd, 5), k = RandomVec(T * nkv * hd, 6);
  std::vector<float> cs = RandomVec(max_pos * hd / 2, 7), sn = RandomVec(max_pos * hd / 2, 8);
  std::vector<int32_t> pos = {0, 7, 15};
  Dev<float> qd(q), kd(k), csd(cs), snd(sn);
  Dev<int32_t> posd(pos);
  ASSERT_EQ(kc::RopeRotateHalf(qd.p, kd.p, posd.p, T, nq, nkv, hd, csd.p, snd.p, nullptr), cudaSuccess);
  for (int64_t t = 0; t < T; ++t) {
    kernels::RopeRotateHalf(&q[t * nq * hd], nq, hd, &cs[pos[t] * hd / 2], &sn[pos[t] * hd / 2]);
    kernels::RopeRotateHalf(&k[t * nkv * hd], nkv, hd, &cs[pos[t] * hd / 2], &sn[pos[t] * hd / 2]);
  }
  ExpectClose(qd.Get(), q, 1e-5f, 1e-5f, "rope q");
  ExpectClose(kd.Get(), k, 1e-5f, 1e-5f, "rope k");

  std::vector<float> gate = RandomVec(T * H, 9, -4, 4), up = RandomVec(T * H, 10);
  Dev<float> gd(gate), ud(up);
  ASSERT_EQ(kc::SwiGluToHalf(gd.p, ud.p, H, T, H, out.p, nullptr), cudaSuccess);
  std::vector<float> sw(T * H);
  kernels::SiluMulRef(gate.data(), up.data(), sw.data(), T * H);
  ExpectClose(HalfToFloat(out.Get()), sw, 1e-3f, 2e-3f, "swiglu");

  ASSERT_EQ(kc::ResidualAdd(gd.p, ud.p, T * H, nullptr), cudaSuccess);
  std::vector<float> sum = gate;
  kernels::AddInPlace(sum.data(), up.data(), T * H);
  ExpectClose(gd.Get(), sum, 0, 0, "residual add");
}

TEST(CudaOps, PagedAttentionMatchesReference) {
  REQUIRE_GPU();
  for (int hd : {32, 64, 128, 256}) {
    const int n_heads = 8, nkv = 2, bs = 16, n_layers = 2, layer = 1;
    const std::vector<int> ctxs = {1, 37, 700};  // 700 spans 3 splits of 256
    kernels::DenseKvLayout layout{DType::kF16, bs, nkv, hd};
    const size_t half_bytes = static_cast<size_t>(nkv) * bs * hd * 2;
    const size_t layer_bytes = 2 * half_bytes;
    int total_blocks = 0;
    for (int c : ctxs) total_blocks += (c + bs - 1) / bs;
    std::vector<uint8_t> arena(layer_bytes * n_layers * total_blocks, 0);
    // Blocks handed out in reverse to exercise the block table.
    std::vector<int32_t> tables, offsets, nctx;
    int next = total_blocks - 1;
    std::vector<float> q = RandomVec(ctxs.size() * n_heads * hd, 21), want(q.size());
    for (size_t s = 0; s < ctxs.size(); ++s) {
      offsets.push_back(static_cast<int32_t>(tables.size()));
      nctx.push_back(ctxs[s]);
      std::vector<const void*> kp, vp;
      for (int b = 0; b < (ctxs[s] + bs - 1) / bs; ++b) {
        tables.push_back(next);
        uint8_t* blk = arena.data() + (static_cast<size_t>(next) * n_layers + layer) * layer_bytes;
        kp.push_back(blk);
        vp.push_back(blk + half_bytes);
        --next;
      }
      for (int t = 0; t < ctxs[s]; ++t) {
        std::vector<float> k = RandomVec(nkv * hd, 100 + t), v = RandomVec(nkv * hd, 5000 + t);
        kernels::StoreDenseKv(layout, const_cast<void*>(kp[t / bs]), const_cast<void*>(vp[t / bs]),
                              t % bs, k.data(), v.data());
      }
      std::vector<float> scratch(ctxs[s] + 64);
      kernels::AttendDenseRef(layout, n_heads, &q[s * n_heads * hd], kp.data(), vp.data(), ctxs[s],
                              0.125f, &want[s * n_heads * hd], scratch.data(), 0, n_heads);
    }
    Dev<uint8_t> ad(arena);
    Dev<int32_t> td(tables), od(offsets), cd(nctx);
    Dev<float> qd(q);
    kc::PagedKv kv{ad.p, static_cast<int64_t>(layer_bytes), n_layers, layer, bs, nkv, hd};
    kc::AttentionParams p{n_heads, 0.125f, 256, 3};
    Dev<uint8_t> ws(kc::AttentionWorkspaceBytes(ctxs.size(), n_heads, hd, 3));
    Dev<uint16_t> out(q.size());
    ASSERT_EQ(kc::PagedAttention(kv, p, qd.p, td.p, od.p, cd.p, ctxs.size(), ws.p, out.p, nullptr),
              cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ExpectClose(HalfToFloat(out.Get()), want, 2e-3f, 5e-3f, "attention");
  }
}

TEST(CudaOps, StoreKvWritesTheCodecLayout) {
  REQUIRE_GPU();
  const int bs = 16, nkv = 2, hd = 64, n_layers = 1;
  const size_t half_bytes = static_cast<size_t>(nkv) * bs * hd * 2;
  std::vector<float> k = RandomVec(2 * nkv * hd, 1), v = RandomVec(2 * nkv * hd, 2);
  std::vector<int32_t> slots = {1 * bs + 3, -1};
  Dev<uint8_t> arena(std::vector<uint8_t>(2 * 2 * half_bytes, 0));
  Dev<float> kd(k), vd(v);
  Dev<int32_t> sd(slots);
  kc::PagedKv kv{arena.p, static_cast<int64_t>(2 * half_bytes), n_layers, 0, bs, nkv, hd};
  ASSERT_EQ(kc::StoreKv(kv, kd.p, vd.p, sd.p, 2, nullptr), cudaSuccess);
  std::vector<uint8_t> got = arena.Get(), want(got.size(), 0);
  kernels::DenseKvLayout layout{DType::kF16, bs, nkv, hd};
  kernels::StoreDenseKv(layout, want.data() + 2 * half_bytes, want.data() + 3 * half_bytes, 3,
                        k.data(), v.data());
  EXPECT_EQ(got, want);
}

TEST(CudaOps, SamplingGreedyTopKTopP) {
  REQUIRE_GPU();
  const int64_t V = 5000;
  std::vector<float> logits = RandomVec(4 * V, 31, -3, 3);
  logits[0 * V + 1234] = 9.0f;  // clear argmax for the greedy row
  std::vector<kc::SamplingRow> rows(4);
  rows[0].temperature = 0.0f;
  rows[1].top_k = 5;
  rows[1].seed = 42;
  rows[2].top_p = 0.3f;
  rows[2].seed = 43;
  rows[3].top_k = 1;
  Dev<float> ld(logits);
  Dev<kc::SamplingRow> rd(rows);
  Dev<int32_t> tok(4);
  ASSERT_EQ(kc::Sample(ld.p, 4, V, rd.p, tok.p, nullptr), cudaSuccess);
  std::vector<int32_t> t = tok.Get();
  EXPECT_EQ(t[0], 1234);
  auto rank_of = [&](int row, int32_t id) {
    int above = 0;
    for (int64_t i = 0; i < V; ++i) above += logits[row * V + i] > logits[row * V + id];
    return above;
  };
  EXPECT_LT(rank_of(1, t[1]), 5);
  // Top-p 0.3: the chosen token must be inside the smallest set holding 30% of the mass.
  {
    std::vector<float> p(logits.begin() + 2 * V, logits.begin() + 3 * V);
    kernels::SoftmaxInPlace(p.data(), V);
    double above = 0;
    for (int64_t i = 0; i < V; ++i) above += p[i] > p[t[2]] ? p[i] : 0.0;
    EXPECT_LT(above, 0.3);
  }
  EXPECT_EQ(rank_of(3, t[3]), 0);
  // Same seed and offset, same token.
  ASSERT_EQ(kc::Sample(ld.p, 4, V, rd.p, tok.p, nullptr), cudaSuccess);
  EXPECT_EQ(tok.Get(), t);
  EXPECT_EQ(kc::PhiloxUniform(1, 2), kc::PhiloxUniform(1, 2));
  EXPECT_NE(kc::PhiloxUniform(1, 2), kc::PhiloxUniform(1, 3));
}
#endif  // COMPRESSD_HAVE_CUDA

}  // namespace
}  // namespace compressd

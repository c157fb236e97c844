// W4A16 GEMV/GEMM on the GPU: % of HBM bandwidth at batch 1 on Llama-8B shapes, and time
// vs cuBLAS fp16 at batch 1/4/16/64. Skips (SkipWithError) without CUDA or a device.
// Run: ./kernels_cuda_gemv_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "engine/core/backend.h"

#if defined(COMPRESSD_HAVE_CUDA)
#include <cuda_runtime_api.h>

#include "kernels/cuda_formats.h"
#include "kernels/cuda_gemm_dense.h"
#include "kernels/cuda_ops.h"
#include "kernels/types.h"
#endif

namespace compressd {
namespace {

#if defined(COMPRESSD_HAVE_CUDA)
namespace kc = kernels::cuda;

double PeakBandwidthGBs() {
  int dev = 0, clock_khz = 0, bus_bits = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, dev);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev);
  return 2.0 * clock_khz * 1e3 * (bus_bits / 8) / 1e9;  // DDR
}

// xorshift64: fast, deterministic fill of large host buffers.
struct Xorshift {
  uint64_t st;
  explicit Xorshift(uint32_t seed) : st(seed * 0x9e3779b97f4a7c15ull + 1) {}
  uint64_t Next() {
    st ^= st << 13;
    st ^= st >> 7;
    st ^= st << 17;
    return st;
  }
};

// Random fp16 in [lo, hi) (never zeros: they hide unwritten outputs and can run faster).
std::vector<uint16_t> RandomHalves(size_t n, uint32_t seed, float lo, float hi) {
  std::vector<uint16_t> h(n);
  Xorshift rng(seed);
  for (auto& v : h) {
    const float u = static_cast<float>(rng.Next() >> 40) / static_cast<float>(1 << 24);
    v = kernels::F32ToF16(lo + (hi - lo) * u);
  }
  return h;
}

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> b(n);
  Xorshift rng(seed);
  for (auto& v : b) v = static_cast<uint8_t>(rng.Next() >> 32);
  return b;
}

// Device copies of one weight matrix, rotated between launches so that the timed loop
// streams from HBM: together they exceed the L2 several times over.
struct Copies {
  std::vector<void*> ptrs;
  ~Copies() {
    for (void* p : ptrs) cudaFree(p);
  }
};

bool Upload(const void* host, size_t bytes, int copies, Copies* out) {
  for (int i = 0; i < copies; ++i) {
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) return false;
    out->ptrs.push_back(p);
    if (cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice) != cudaSuccess) return false;
  }
  return true;
}

int CopiesFor(size_t bytes) {
  int dev = 0, l2 = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev);
  const size_t want = 4 * static_cast<size_t>(std::max(l2, 1 << 20));
  return static_cast<int>(std::max<size_t>(2, (want + bytes - 1) / bytes));
}

// Arguments: rows (N), cols (K), batch, path (0 = W4A16 kernels, 1 = cuBLASLt fp16).
void BM_Gemm(benchmark::State& state) {
  if (CudaDeviceCount() == 0) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const int64_t rows = state.range(0), cols = state.range(1), n = state.range(2);
  const bool dense = state.range(3) == 1;
  const size_t code_bytes = rows * cols / 2, so_bytes = rows * (cols / 128) * 4;
  const size_t w_bytes = dense ? rows * cols * 2 : code_bytes + so_bytes;
  const int copies = CopiesFor(w_bytes);
  Copies w16, codes, so, xs;
  void* ws = nullptr;
  float* y = nullptr;
  std::unique_ptr<kc::DenseGemm> g;
  bool ok = cudaMalloc(reinterpret_cast<void**>(&y), n * rows * 4) == cudaSuccess;
  const std::vector<uint16_t> xh = RandomHalves(n * cols, 3, -1.0f, 1.0f);
  ok = ok && Upload(xh.data(), xh.size() * 2, 1, &xs);
  if (dense) {
    const std::vector<uint16_t> wh = RandomHalves(rows * cols, 1, -0.05f, 0.05f);
    ok = ok && Upload(wh.data(), wh.size() * 2, copies, &w16);
    ok = ok && cudaMalloc(&ws, 32 << 20) == cudaSuccess;
    ok = ok && kc::DenseGemm::Create(ws, 32 << 20, &g) == cudaSuccess;
  } else {
    const std::vector<uint8_t> cb = RandomBytes(code_bytes, 1);
    // {scale, offset} pairs: scale in [0.001, 0.02), offset in [-0.2, 0)
    std::vector<uint16_t> sh = RandomHalves(so_bytes / 2, 2, 0.001f, 0.02f);
    const std::vector<uint16_t> oh = RandomHalves(so_bytes / 4, 4, -0.2f, 0.0f);
    for (size_t i = 0; i < oh.size(); ++i) sh[2 * i + 1] = oh[i];
    ok = ok && Upload(cb.data(), cb.size(), copies, &codes);
    ok = ok && Upload(sh.data(), so_bytes, copies, &so);
  }
  if (!ok) {
    state.SkipWithError("device allocation failed");
    cudaFree(y);
    cudaFree(ws);
    return;
  }
  int next = 0;
  auto run = [&] {
    const int i = next;
    next = (next + 1) % copies;
    if (dense) {
      return g->Run(kernels::DType::kF16, w16.ptrs[i], rows, cols, xs.ptrs[0], n, y, rows, false,
                    nullptr);
    }
    kc::QuantWeightView v{rows, cols, 128, 4, codes.ptrs[i], so.ptrs[i]};
    return kc::QuantGemm(v, xs.ptrs[0], n, y, rows, false, nullptr);
  };
  for (int i = 0; i < copies; ++i) {
    if (run() != cudaSuccess) {
      state.SkipWithError("launch failed");
      break;
    }
  }
  if (cudaDeviceSynchronize() != cudaSuccess) state.SkipWithError("launch failed");
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  const int iters = 10 * copies;
  for (auto _ : state) {
    cudaEventRecord(e0);
    for (int i = 0; i < iters; ++i) run();
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    state.SetIterationTime(ms / 1e3 / iters);
  }
  const double bytes = w_bytes + n * cols * 2.0 + n * rows * 4.0;
  state.counters["GB/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_GB/s"] = PeakBandwidthGBs();
  state.counters["copies"] = copies;
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(y);
  cudaFree(ws);
}

// Device-to-device copy of 1 GiB: the measured bandwidth ceiling (bytes read + written).
void BM_DeviceCopy(benchmark::State& state) {
  if (CudaDeviceCount() == 0) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
    state.SkipWithError("device allocation failed");
    cudaFree(a);
    return;
  }
  cudaMemset(a, 1, bytes);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
  for (auto _ : state) {
    cudaEventRecord(e0);
    cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    state.SetIterationTime(ms / 1e3);
  }
  state.counters["GB/s"] = benchmark::Counter(2.0 * bytes, benchmark::Counter::kIsIterationInvariantRate);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
}
BENCHMARK(BM_DeviceCopy)->UseManualTime()->Iterations(20);

void Shapes(benchmark::internal::Benchmark* b) {
  const int64_t shapes[3][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}};
  for (const auto& s : shapes) {
    for (int64_t n : {1, 4, 16, 64}) {
      for (int64_t path : {0, 1}) b->Args({s[0], s[1], n, path});
    }
  }
}
// Fixed iterations: each one times 10 launches per weight copy (the reported time is per
// launch), so letting the library scale iterations by that time would run for minutes.
BENCHMARK(BM_Gemm)->Apply(Shapes)->UseManualTime()->Iterations(3)->ArgNames({"N", "K", "batch", "cublas"});
#else
void BM_NoCuda(benchmark::State& state) {
  for (auto _ : state) state.SkipWithError("built without CUDA");
}
BENCHMARK(BM_NoCuda);
#endif

}  // namespace
}  // namespace compressd

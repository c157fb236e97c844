// W4A16 GEMV/GEMM on the GPU: % of HBM bandwidth at batch 1 on Llama-8B shapes, and time
// vs cuBLAS fp16 at batch 1/4/16/64. Skips (SkipWithError) without CUDA or a device.
// Run: ./kernels_cuda_gemv_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <vector>

#include "engine/core/backend.h"

#if defined(COMPRESSD_HAVE_CUDA)
#include <cuda_runtime_api.h>

#include "kernels/cuda_formats.h"
#include "kernels/cuda_gemm_dense.h"
#include "kernels/cuda_ops.h"
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

struct Buffers {
  void* codes = nullptr;
  void* so = nullptr;
  void* w16 = nullptr;
  void* x = nullptr;
  float* y = nullptr;
  void* ws = nullptr;
  ~Buffers() {
    cudaFree(codes);
    cudaFree(so);
    cudaFree(w16);
    cudaFree(x);
    cudaFree(y);
    cudaFree(ws);
  }
};

// Arguments: rows (N), cols (K), batch, path (0 = W4A16 kernels, 1 = cuBLAS fp16).
void BM_Gemm(benchmark::State& state) {
  if (CudaDeviceCount() == 0) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const int64_t rows = state.range(0), cols = state.range(1), n = state.range(2);
  const bool dense = state.range(3) == 1;
  Buffers b;
  const size_t code_bytes = rows * cols / 2, so_bytes = rows * (cols / 128) * 4;
  cudaMalloc(&b.x, n * cols * 2);
  cudaMemset(b.x, 0, n * cols * 2);
  cudaMalloc(reinterpret_cast<void**>(&b.y), n * rows * 4);
  std::unique_ptr<kc::DenseGemm> g;
  if (dense) {
    cudaMalloc(&b.w16, rows * cols * 2);
    cudaMemset(b.w16, 0, rows * cols * 2);
    cudaMalloc(&b.ws, 32 << 20);
    kc::DenseGemm::Create(b.ws, 32 << 20, &g);
  } else {
    cudaMalloc(&b.codes, code_bytes);
    cudaMalloc(&b.so, so_bytes);
    cudaMemset(b.codes, 0x11, code_bytes);
    cudaMemset(b.so, 0, so_bytes);
  }
  kc::QuantWeightView v{rows, cols, 128, 4, b.codes, b.so};
  auto run = [&] {
    return dense ? g->Run(kernels::DType::kF16, b.w16, rows, cols, b.x, n, b.y, rows, false, nullptr)
                 : kc::QuantGemm(v, b.x, n, b.y, rows, false, nullptr);
  };
  if (run() != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess) {
    state.SkipWithError("launch failed");
    return;
  }
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  constexpr int kIters = 50;
  for (auto _ : state) {
    cudaEventRecord(e0);
    for (int i = 0; i < kIters; ++i) run();
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    state.SetIterationTime(ms / 1e3 / kIters);
  }
  const double bytes = dense ? rows * cols * 2.0 : code_bytes + so_bytes;
  state.counters["GB/s"] = benchmark::Counter(bytes + n * cols * 2.0 + n * rows * 4.0,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_GB/s"] = PeakBandwidthGBs();
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
}

void Shapes(benchmark::internal::Benchmark* b) {
  const int64_t shapes[3][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}};
  for (const auto& s : shapes) {
    for (int64_t n : {1, 4, 16, 64}) {
      for (int64_t path : {0, 1}) b->Args({s[0], s[1], n, path});
    }
  }
}
BENCHMARK(BM_Gemm)->Apply(Shapes)->UseManualTime()->ArgNames({"N", "K", "batch", "cublas"});
#else
void BM_NoCuda(benchmark::State& state) {
  for (auto _ : state) state.SkipWithError("built without CUDA");
}
BENCHMARK(BM_NoCuda);
#endif

}  // namespace
}  // namespace compressd

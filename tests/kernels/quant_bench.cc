// GB/s of packed weight bytes read by the fused quantized GEMM/GEMV, per format, shape
// (rows x cols), tokens n (1 = GEMV, 4, 16) and threads (1, 2: rows split in halves, as the
// engine's ThreadPool does). Example:
//   ./build-quant/tests/kernels_quant_bench --benchmark_filter='int4.*/1/'
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/quant.h"

namespace compressd::kernels {
namespace {

struct Shape {
  int64_t rows, cols;
};
const Shape kShapes[] = {{576, 1536}, {1536, 576}, {2048, 8192}, {8192, 2048}};

PackedQuant MakeWeight(const std::string& fmt, int64_t rows, int64_t cols) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 0.05f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = nd(rng);
  if (fmt == "int8") return PackInt8Rows(w.data(), rows, cols, false);
  if (fmt == "w8a8") return PackInt8Rows(w.data(), rows, cols, true);
  if (fmt == "int4") return PackGroup(w.data(), rows, cols, 4, 128);
  if (fmt == "int4-g32") return PackGroup(w.data(), rows, cols, 4, 32);
  if (fmt == "int3") return PackGroup(w.data(), rows, cols, 3, 64);
  if (fmt == "int2") return PackGroup(w.data(), rows, cols, 2, 32);
  return PackSpqr(w.data(), rows, cols, 3, 0.01f);
}

void BM_QuantGemm(benchmark::State& st, std::string fmt) {
  const Shape sh = kShapes[st.range(0)];
  const int64_t n = st.range(1);
  const int threads = static_cast<int>(st.range(2));
  PackedQuant p = MakeWeight(fmt, sh.rows, sh.cols);
  std::vector<float> x(static_cast<size_t>(n * sh.cols), 0.5f), y(static_cast<size_t>(n * sh.rows));
  for (auto _ : st) {
    if (threads == 1) {
      Gemm(p.view, x.data(), n, y.data(), sh.rows, 0, sh.rows);
    } else {
      const int64_t mid = sh.rows / 2 / 4 * 4;
      std::thread t([&] { Gemm(p.view, x.data(), n, y.data(), sh.rows, mid, sh.rows); });
      Gemm(p.view, x.data(), n, y.data(), sh.rows, 0, mid);
      t.join();
    }
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * static_cast<int64_t>(p.bytes()));
  st.SetLabel(std::to_string(sh.rows) + "x" + std::to_string(sh.cols) + " n=" + std::to_string(n) +
              " t=" + std::to_string(threads));
}

void Args(benchmark::internal::Benchmark* b) {
  for (int s = 0; s < 4; ++s)
    for (int n : {1, 4, 16})
      for (int t : {1, 2}) b->Args({s, n, t});
  b->UseRealTime();
}

BENCHMARK_CAPTURE(BM_QuantGemm, int8, std::string("int8"))->Apply(Args);
BENCHMARK_CAPTURE(BM_QuantGemm, w8a8, std::string("w8a8"))->Apply(Args);
BENCHMARK_CAPTURE(BM_QuantGemm, int4, std::string("int4"))->Apply(Args);
BENCHMARK_CAPTURE(BM_QuantGemm, int4_g32, std::string("int4-g32"))->Apply(Args);
BENCHMARK_CAPTURE(BM_QuantGemm, int3, std::string("int3"))->Apply(Args);
BENCHMARK_CAPTURE(BM_QuantGemm, int2, std::string("int2"))->Apply(Args);
BENCHMARK_CAPTURE(BM_QuantGemm, spqr3, std::string("spqr3"))->Apply(Args);

}  // namespace
}  // namespace compressd::kernels

BENCHMARK_MAIN();

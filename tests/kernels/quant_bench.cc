// GB/s of packed weight bytes read by the fused quantized GEMM/GEMV, per format, shape
// (rows x cols), tokens n (1 = GEMV, 4, 16) and threads (1, 2: rows split in halves, as the
// engine's ThreadPool does). Example:
//   ./build-kern/tests/kernels_quant_bench --benchmark_filter='int4/.*/1/'
//
// Decode is memory bound, so each iteration reads a different copy of the packed weight out
// of a pool of >= 128 MiB (4x the 32 MiB L3): the figures are for weights coming from DRAM,
// as they do when a whole model runs, not from a cache that one small matrix would fit in.
// The second thread is a persistent helper (no thread start per iteration). Rates use CPU
// time for 1 thread (robust on a shared machine) and wall time for 2 threads.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/quant.h"

#include "tests/util/bench_helper.h"

namespace compressd::kernels {
namespace {

struct Shape {
  int64_t rows, cols;
};
const Shape kShapes[] = {{576, 1536}, {1536, 576}, {2048, 8192}, {8192, 2048}, {49152, 576}, {576, 576}};
constexpr uint64_t kPoolBytes = uint64_t{128} << 20;

PackedQuant MakeWeight(const std::string& fmt, int64_t rows, int64_t cols) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 0.05f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = nd(rng);
  if (fmt == "int8") return PackInt8Rows(w.data(), rows, cols, false);
  if (fmt == "w8a8") return PackInt8Rows(w.data(), rows, cols, true);
  if (fmt == "int8-g128") return PackGroup(w.data(), rows, cols, 8, 128);
  if (fmt == "int8-g32") return PackGroup(w.data(), rows, cols, 8, 32);
  if (fmt == "int4-sb" || fmt == "int4-g32-sb") {
    // The engine's in-memory order for the W4A8 kernel (kLayoutA8Superblock).
    PackedQuant p = PackGroup(w.data(), rows, cols, 4, fmt == "int4-sb" ? 128 : 32);
    if (Quant4UsesSuperblocks(p.view.format)) {
      PermuteQuant4Superblocks(p.buffers[0].data(), p.buffers[0].data(), 0, rows,
                               QuantPaddedCols(p.view.format, cols), true);
      p.view.format.layout = kLayoutA8Superblock;
    }
    return p;
  }
  if (fmt == "int4") return PackGroup(w.data(), rows, cols, 4, 128);
  if (fmt == "int4-g32") return PackGroup(w.data(), rows, cols, 4, 32);
  if (fmt == "int3") return PackGroup(w.data(), rows, cols, 3, 64);
  if (fmt == "int2") return PackGroup(w.data(), rows, cols, 2, 32);
  return PackSpqr(w.data(), rows, cols, 3, 0.01f);
}

void RunQuantGemm(benchmark::State& st, const std::string& fmt, uint64_t pool_bytes) {
  const Shape sh = kShapes[st.range(0)];
  const int64_t n = st.range(1);
  const int threads = static_cast<int>(st.range(2));
  // Copies of the packed weight (all buffers) totalling >= kPoolBytes.
  std::vector<PackedQuant> pool;
  PackedQuant first = MakeWeight(fmt, sh.rows, sh.cols);
  const uint64_t bytes = first.bytes();
  const uint64_t copies = std::max<uint64_t>(1, (pool_bytes + bytes - 1) / bytes);
  pool.reserve(copies);
  for (uint64_t c = 0; c < copies; ++c) {
    pool.push_back(first);
    pool.back().Bind();
  }
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0, 1.0f);
  std::vector<float> x(static_cast<size_t>(n * sh.cols)), y(static_cast<size_t>(n * sh.rows));
  for (auto& v : x) v = nd(rng);
  compressd::testing::BenchHelper helper;
  const int64_t mid = sh.rows / 2 / 4 * 4;
  size_t copy = 0;
  for (auto _ : st) {
    const PackedWeight& w = pool[copy].view;
    copy = (copy + 1) % pool.size();
    if (threads == 1) {
      Gemm(w, x.data(), n, y.data(), sh.rows, 0, sh.rows);
    } else {
      helper.Start([&w, &x, &y, n, sh, mid] {
        Gemm(w, x.data(), n, y.data(), sh.rows, mid, sh.rows);
      });
      Gemm(w, x.data(), n, y.data(), sh.rows, 0, mid);
      helper.Wait();
    }
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * static_cast<int64_t>(bytes));
  st.SetLabel(fmt + " " + std::to_string(sh.rows) + "x" + std::to_string(sh.cols) +
              " n=" + std::to_string(n) + " t=" + std::to_string(threads) + " copies=" +
              std::to_string(pool.size()));
}

void BM_QuantGemm(benchmark::State& st, std::string fmt) { RunQuantGemm(st, fmt, kPoolBytes); }
// One copy of the weight, warm in L2/L3 after the first iteration: the compute-bound rate
// of the kernel (the gap to BM_QuantGemm is what memory costs).
void BM_QuantGemmHot(benchmark::State& st, std::string fmt) { RunQuantGemm(st, fmt, 0); }

void Args1(benchmark::internal::Benchmark* b) {
  b->ArgNames({"shape", "n", "threads"});
  for (int s = 0; s < 6; ++s)
    for (int n : {1, 4, 16}) b->Args({s, n, 1});
}
void Args2(benchmark::internal::Benchmark* b) {
  b->ArgNames({"shape", "n", "threads"});
  for (int s = 0; s < 6; ++s)
    for (int n : {1, 4, 16}) b->Args({s, n, 2});
  b->UseRealTime();
}

#define QUANT_BENCH(name, fmt)                                          \
  BENCHMARK_CAPTURE(BM_QuantGemm, name, std::string(fmt))->Apply(Args1); \
  BENCHMARK_CAPTURE(BM_QuantGemm, name, std::string(fmt))->Apply(Args2)

QUANT_BENCH(int8, "int8");
QUANT_BENCH(w8a8, "w8a8");
QUANT_BENCH(int8_g128, "int8-g128");
QUANT_BENCH(int8_g32, "int8-g32");
QUANT_BENCH(int4, "int4");
QUANT_BENCH(int4_g32, "int4-g32");
QUANT_BENCH(int4_sb, "int4-sb");
QUANT_BENCH(int4_g32_sb, "int4-g32-sb");
QUANT_BENCH(int3, "int3");
QUANT_BENCH(int2, "int2");
QUANT_BENCH(spqr3, "spqr3");
BENCHMARK_CAPTURE(BM_QuantGemmHot, int4, std::string("int4"))->Apply(Args1);
BENCHMARK_CAPTURE(BM_QuantGemmHot, int4_sb, std::string("int4-sb"))->Apply(Args1);
BENCHMARK_CAPTURE(BM_QuantGemmHot, int4_g32_sb, std::string("int4-g32-sb"))->Apply(Args1);
BENCHMARK_CAPTURE(BM_QuantGemmHot, int3, std::string("int3"))->Apply(Args1);
BENCHMARK_CAPTURE(BM_QuantGemmHot, int8, std::string("int8"))->Apply(Args1);
BENCHMARK_CAPTURE(BM_QuantGemmHot, int8_g128, std::string("int8-g128"))->Apply(Args1);

}  // namespace
}  // namespace compressd::kernels

BENCHMARK_MAIN();

// Dense GEMM throughput: GB/s of weight bytes read (bytes_per_second) and GFLOP/s, for the
// linear-layer shapes of SmolLM2-135M and Llama-3.2-1B, F32/F16/BF16, n tokens, 1 or 2
// threads (rows split in two halves, the way the engine spreads a GEMM over its threads).
//
// Decode is memory bound, so each iteration reads a different copy of the weights out of a
// pool of >= 128 MiB: the figures are for weights coming from DRAM, as they do when a whole
// model is run, not from a cache that a single small matrix would fit in.
// Rates use CPU time for 1 thread (robust on a shared machine) and wall time for 2 threads.
//
// Args: {shape index, n, threads, dtype (0 F32, 1 F16, 2 BF16), isa (1 avx2, 2 avx512)}.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/gemm.h"
#include "kernels/types.h"

#include "tests/util/bench_helper.h"

namespace compressd::kernels {
namespace {

struct Shape {
  int64_t rows, cols;
};
constexpr Shape kShapes[] = {{576, 576},   {1536, 576},  {576, 1536}, {49152, 576},
                             {2048, 2048}, {8192, 2048}, {2048, 8192}};
constexpr size_t kPoolBytes = size_t{128} << 20;  // 4x a 32 MiB L3

using GemmFn = void (*)(const PackedWeight&, const float*, int64_t, float*, int64_t, int64_t,
                        int64_t);

void BM_GemmDense(benchmark::State& state) {
  const Shape shape = kShapes[state.range(0)];
  const int64_t n = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  const DType dt = static_cast<DType>(state.range(3));
  const CpuFeatures& f = GetCpuFeatures();
  GemmFn fn = &GemmDenseAvx2;
  if (state.range(4) == 2) {
    if (!f.avx512f || !f.avx512bw || !f.avx512vl || !f.avx512dq) {
      state.SkipWithError("no AVX-512");
      return;
    }
    fn = &GemmDenseAvx512;
  } else if (!f.avx2 || !f.fma || !f.f16c) {
    state.SkipWithError("no AVX2");
    return;
  }

  const size_t bytes = DenseBytes(dt, shape.rows, shape.cols);
  const size_t copies = std::max<size_t>(1, kPoolBytes / bytes);
  std::vector<uint8_t> pool(bytes * copies);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  // Fill one copy with real values (so no denormal/zero shortcuts), replicate it.
  for (size_t i = 0; i < bytes / DTypeSize(dt); ++i) {
    const float v = u(rng);
    if (dt == DType::kF32) {
      std::memcpy(&pool[i * 4], &v, 4);
    } else {
      const uint16_t h = dt == DType::kF16 ? F32ToF16(v) : F32ToBF16(v);
      std::memcpy(&pool[i * 2], &h, 2);
    }
  }
  for (size_t c = 1; c < copies; ++c) std::memcpy(&pool[c * bytes], pool.data(), bytes);
  std::vector<float> x(static_cast<size_t>(n * shape.cols));
  for (float& v : x) v = u(rng);
  std::vector<float> y(static_cast<size_t>(n * shape.rows));

  PackedWeight w;
  w.format.kind = WeightKind::kDense;
  w.format.dtype = dt;
  w.rows = shape.rows;
  w.cols = shape.cols;
  w.data_bytes = bytes;
  compressd::testing::BenchHelper helper;
  const int64_t split = threads == 2 ? (shape.rows / 2 + 15) & ~int64_t{15} : shape.rows;
  size_t copy = 0;
  for (auto _ : state) {
    w.data = &pool[copy * bytes];
    copy = (copy + 1) % copies;
    if (threads == 2) {
      const PackedWeight wc = w;
      helper.Start([&, wc] { fn(wc, x.data(), n, y.data(), shape.rows, split, shape.rows); });
      fn(w, x.data(), n, y.data(), shape.rows, 0, split);
      helper.Wait();
    } else {
      fn(w, x.data(), n, y.data(), shape.rows, 0, shape.rows);
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(bytes));
  state.counters["GFLOPs"] = benchmark::Counter(
      2.0 * shape.rows * shape.cols * n * static_cast<double>(state.iterations()) * 1e-9,
      benchmark::Counter::kIsRate);
  state.SetLabel(std::string(DTypeName(dt)) + " " + std::to_string(shape.rows) + "x" +
                 std::to_string(shape.cols) + " n=" + std::to_string(n) +
                 " t=" + std::to_string(threads) + (state.range(4) == 2 ? " avx512" : " avx2"));
}

void Args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"shape", "n", "threads", "dtype", "isa"});
  for (int isa : {2, 1}) {
    for (int dt : {0, 1, 2}) {
      for (int s = 0; s < static_cast<int>(std::size(kShapes)); ++s) {
        for (int n : {1, 4, 16, 64, 256}) {
          b->Args({s, n, 1, dt, isa});
        }
      }
    }
  }
}

void Args2(benchmark::internal::Benchmark* b) {
  b->ArgNames({"shape", "n", "threads", "dtype", "isa"});
  for (int isa : {2, 1}) {
    for (int dt : {0, 1, 2}) {
      for (int s = 0; s < static_cast<int>(std::size(kShapes)); ++s) {
        for (int n : {1, 4, 16, 64, 256}) {
          b->Args({s, n, 2, dt, isa});
        }
      }
    }
  }
}
BENCHMARK(BM_GemmDense)->Apply(Args);
BENCHMARK(BM_GemmDense)->Apply(Args2)->UseRealTime();

}  // namespace
}  // namespace compressd::kernels

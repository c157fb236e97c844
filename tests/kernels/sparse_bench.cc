// Sparse and GGUF-block GEMM throughput for a 2048 x 8192 weight (Llama-3.2-1B down_proj
// shape): GB/s of packed weight bytes (bytes_per_second) at n = 1, 4, 16 tokens, one thread,
// for 50% unstructured (bitmap + fp16), 2:4 (fp16 + 2-bit indices), GQSA 50% (int4 groups
// of 16), GGUF Q8_0 / Q4_0, and dense BF16 as the baseline. Several copies of each weight
// (>= 128 MiB in all) are cycled so that the weights come from DRAM, as in a whole model.
//
// Args: {format (0 sparse50, 1 2:4, 2 gqsa50-int4, 3 q8_0, 4 q4_0, 5 bf16, 6 q8_0-a8,
// 7 q4_0-a8, 8 q4_0-split, 9 q8_0-split), n}. q8_0/q4_0 run what Gemm() picks (GgufUsesA8);
// the -a8 variants force the int8-activation VNNI path (GemmGgufA8Avx512) for comparison;
// the -split ones are the layout the engine gives them on such CPUs (kLayoutGgufSplit: the
// W4A8 int4 / W8A8 int8 group kernels).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/gemm.h"
#include "kernels/ggml_quant.h"
#include "kernels/sparse.h"

namespace compressd::kernels {
namespace {

constexpr int64_t kRows = 2048, kCols = 8192;
constexpr size_t kPoolBytes = size_t{128} << 20;

struct Owned {
  std::vector<uint8_t> data, aux[4];
  PackedWeight view;
};

Owned Make(int format, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> w(kRows * kCols);
  for (float& x : w) x = u(rng);
  Owned o;
  if (format <= 2) {
    SparsePacked p;
    if (format == 2) {
      std::vector<uint8_t> keep(kRows * kCols / 16);
      for (auto& k : keep) k = rng() & 1;
      p = PackSparseGroup(w.data(), keep.data(), kRows, kCols, 4);
    } else {
      std::vector<uint8_t> keep(kRows * kCols, 0);
      for (int64_t i = 0; i < kRows * kCols; i += 4) {
        const int a = rng() % 4, b = (a + 1 + rng() % 3) % 4;
        if (format == 0) {
          for (int j = 0; j < 4; ++j) keep[i + j] = rng() & 1;
        } else {
          keep[i + a] = keep[i + b] = 1;
        }
      }
      p = format == 0 ? PackSparseUnstructured(w.data(), keep.data(), kRows, kCols)
                      : PackSparseTwoFour(w.data(), keep.data(), kRows, kCols);
    }
    o.data = std::move(p.data);
    for (int i = 0; i < 4; ++i) o.aux[i] = std::move(p.aux[i]);
    o.view.format = p.format;
  } else if (format <= 4) {
    o.view.format = format == 3 ? GgufQ8_0Format() : GgufQ4_0Format();
    o.data.resize(GgufQuantBytes(o.view.format, kRows, kCols));
    for (size_t i = 0; i < o.data.size(); ++i) o.data[i] = static_cast<uint8_t>(rng());
    const size_t bs = format == 3 ? sizeof(GgufBlockQ8_0) : sizeof(GgufBlockQ4_0);
    for (size_t b = 0; b < o.data.size(); b += bs) {  // sane fp16 scales
      const uint16_t d = F32ToF16(0.01f);
      o.data[b] = static_cast<uint8_t>(d);
      o.data[b + 1] = static_cast<uint8_t>(d >> 8);
    }
  } else {
    o.view.format.kind = WeightKind::kDense;
    o.view.format.dtype = DType::kBF16;
    o.data.resize(kRows * kCols * 2);
    auto* h = reinterpret_cast<uint16_t*>(o.data.data());
    for (int64_t i = 0; i < kRows * kCols; ++i) h[i] = F32ToBF16(w[i]);
  }
  o.view.rows = kRows;
  o.view.cols = kCols;
  o.view.data = o.data.data();
  o.view.data_bytes = o.data.size();
  for (int i = 0; i < 4; ++i) {
    o.view.aux[i] = o.aux[i].empty() ? nullptr : o.aux[i].data();
    o.view.aux_bytes[i] = o.aux[i].size();
  }
  return o;
}

size_t Bytes(const PackedWeight& w) {
  size_t b = w.data_bytes;
  for (size_t a : w.aux_bytes) b += a;
  return b;
}

void BM_SparseGemm(benchmark::State& state) {
  const int label = static_cast<int>(state.range(0));
  const bool a8 = label == 6 || label == 7, split = label == 8 || label == 9;
  const int format = label == 8 ? 4 : label == 9 ? 3 : a8 ? label - 3 : label;
  const WeightFormat gguf = format == 3 ? GgufQ8_0Format() : GgufQ4_0Format();
  if ((a8 && !GetCpuFeatures().avx512vnni) || (split && !GgufSplitApplies(gguf, kCols))) {
    state.SkipWithError("no AVX-512 VNNI");
    return;
  }
  const int64_t n = state.range(1);
  std::mt19937 rng(7);
  std::vector<Owned> pool;
  pool.push_back(Make(format, rng));
  if (split) {
    GgufToSplit(gguf, pool[0].data.data(), pool[0].data.data(), kRows, kCols);
    pool[0].view.format.layout = kLayoutGgufSplit;
  }
  const size_t bytes = Bytes(pool[0].view);
  const size_t copies = std::max<size_t>(2, kPoolBytes / bytes);
  for (size_t i = 1; i < copies; ++i) {
    Owned c = pool[0];
    c.view.data = c.data.data();
    for (int a = 0; a < 4; ++a) c.view.aux[a] = c.aux[a].empty() ? nullptr : c.aux[a].data();
    pool.push_back(std::move(c));
  }
  std::vector<float> x(n * kCols), y(n * kRows);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (float& v : x) v = u(rng);
  size_t i = 0;
  for (auto _ : state) {
    if (a8) {
      GemmGgufA8Avx512(pool[i].view, x.data(), n, y.data(), kRows, 0, kRows);
    } else {
      Gemm(pool[i].view, x.data(), n, y.data(), kRows, 0, kRows);
    }
    benchmark::DoNotOptimize(y.data());
    i = (i + 1) % pool.size();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
  state.counters["MB"] = bytes / 1e6;
  state.counters["GFLOPs"] = benchmark::Counter(2.0 * kRows * kCols * n * state.iterations(),
                                                benchmark::Counter::kIsRate);
  static const char* kNames[] = {"sparse50", "2:4",  "gqsa50-int4", "q8_0",
                                 "q4_0",     "bf16", "q8_0-a8",     "q4_0-a8", "q4_0-split",
                                 "q8_0-split"};
  state.SetLabel(kNames[label]);
}

BENCHMARK(BM_SparseGemm)
    ->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 4, 16}})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.3);

}  // namespace
}  // namespace compressd::kernels

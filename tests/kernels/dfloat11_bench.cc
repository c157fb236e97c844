// DFloat11-style lossless bf16 (kernels/dfloat11.h): decode throughput and GEMM time against
// dense bf16, one thread, for a 576 x 1536 weight (SmolLM2-135M down_proj shape) of
// trained-like values (N(0, 0.02) rounded to bf16: ~2.6-bit exponents; a real checkpoint's
// histogram is close to this). Several copies (>= 64 MiB of bf16 in all) are cycled so the
// weights come from DRAM as in a whole model.
//
// BM_Df11Decode: weights decoded per second (items_per_second), table decoder vs reference.
// BM_Gemm/{format (0 df11, 1 bf16), n}: bytes_per_second = stored weight bytes read.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/dfloat11.h"
#include "kernels/gemm.h"
#include "kernels/types.h"

namespace compressd::kernels {
namespace {

constexpr int64_t kRows = 576, kCols = 1536;
constexpr size_t kPoolBytes = size_t{64} << 20;

struct Copy {
  std::vector<uint16_t> bits;
  Df11Packed packed;
  PackedWeight dense, df11;
};

const std::vector<Copy>& Pool() {
  static const std::vector<Copy> pool = [] {
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0.0f, 0.02f);
    const size_t copies = kPoolBytes / (kRows * kCols * 2);
    std::vector<Copy> v(copies);
    for (Copy& c : v) {
      c.bits.resize(kRows * kCols);
      for (auto& b : c.bits) b = F32ToBF16(d(rng));
      c.packed = PackDf11(c.bits.data(), kRows, kCols);
      c.df11 = c.packed.View();
      c.dense.format.kind = WeightKind::kDense;
      c.dense.format.dtype = DType::kBF16;
      c.dense.rows = kRows;
      c.dense.cols = kCols;
      c.dense.data = c.bits.data();
      c.dense.data_bytes = c.bits.size() * 2;
    }
    return v;
  }();
  return pool;
}

void BM_Df11Decode(benchmark::State& state) {
  const bool ref = state.range(0) == 1;
  const auto& pool = Pool();
  std::vector<uint16_t> out(kRows * kCols);
  size_t i = 0;
  for (auto _ : state) {
    const PackedWeight& w = pool[i++ % pool.size()].df11;
    if (ref) {
      Df11DecodeRowsRef(w, 0, kRows, out.data());
    } else {
      Df11DecodeRows(w, 0, kRows, out.data());
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * kRows * kCols);
  state.counters["bits_per_weight"] = Df11BitsPerWeight(pool[0].packed);
}
BENCHMARK(BM_Df11Decode)->Arg(0)->Arg(1)->ArgNames({"ref"});

void BM_Gemm(benchmark::State& state) {
  const bool df11 = state.range(0) == 0;
  const int64_t n = state.range(1);
  const auto& pool = Pool();
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(n * kCols), y(n * kRows);
  for (float& v : x) v = u(rng);
  size_t i = 0;
  size_t bytes = 0;
  for (auto _ : state) {
    const Copy& c = pool[i++ % pool.size()];
    const PackedWeight& w = df11 ? c.df11 : c.dense;
    Gemm(w, x.data(), n, y.data(), kRows, 0, kRows);
    benchmark::DoNotOptimize(y.data());
    bytes += df11 ? c.packed.bytes() : c.bits.size() * 2;
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.SetItemsProcessed(state.iterations() * kRows * kCols * n);
}
BENCHMARK(BM_Gemm)->ArgsProduct({{0, 1}, {1, 4, 16, 64}})->ArgNames({"bf16", "n"});

}  // namespace
}  // namespace compressd::kernels

// Decode attention throughput: one query token per head over n_ctx cached tokens, reported
// as GB/s of K+V bytes read (bytes_per_second). Shapes: SmolLM2-135M (9 heads / 3 KV heads,
// head_dim 64) and Llama-3.2-1B (32 / 8, head_dim 64); block_size 16.
//
// Args: {model (0 SmolLM2, 1 Llama), n_ctx, dtype (0 F32, 1 F16, 2 BF16), isa (0 ref, 1 avx2,
// 2 avx512)}.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cpu_features.h"
#include "kernels/types.h"

namespace compressd::kernels {

void AttendDenseAvx2(const DenseKvLayout& layout, int n_heads, const float* q,
                     const void* const* k_blocks, const void* const* v_blocks, int n_ctx,
                     float scale, float* out, float* scratch, int head_begin, int head_end);
void AttendDenseAvx512(const DenseKvLayout& layout, int n_heads, const float* q,
                       const void* const* k_blocks, const void* const* v_blocks, int n_ctx,
                       float scale, float* out, float* scratch, int head_begin, int head_end);

namespace {

void BM_AttendDense(benchmark::State& state) {
  const int n_heads = state.range(0) == 0 ? 9 : 32;
  const int n_kv = state.range(0) == 0 ? 3 : 8;
  const int head_dim = 64, block_size = 16;
  const int n_ctx = static_cast<int>(state.range(1));
  const DType dt = static_cast<DType>(state.range(2));
  const CpuFeatures& f = GetCpuFeatures();
  decltype(&AttendDenseRef) fn = &AttendDenseRef;
  if (state.range(3) == 2) {
    if (!f.avx512f || !f.avx512bw || !f.avx512vl || !f.avx512dq) {
      state.SkipWithError("no AVX-512");
      return;
    }
    fn = &AttendDenseAvx512;
  } else if (state.range(3) == 1) {
    if (!f.avx2 || !f.fma || !f.f16c) {
      state.SkipWithError("no AVX2");
      return;
    }
    fn = &AttendDenseAvx2;
  }
  const DenseKvLayout layout{dt, block_size, n_kv, head_dim};
  const int n_blocks = (n_ctx + block_size - 1) / block_size;
  const size_t block_bytes = static_cast<size_t>(block_size) * n_kv * head_dim * DTypeSize(dt);
  std::vector<std::vector<uint8_t>> k(n_blocks, std::vector<uint8_t>(block_bytes));
  std::vector<std::vector<uint8_t>> v(n_blocks, std::vector<uint8_t>(block_bytes));
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> kt(static_cast<size_t>(n_kv) * head_dim), vt = kt;
  for (int t = 0; t < n_ctx; ++t) {
    for (float& x : kt) x = u(rng);
    for (float& x : vt) x = u(rng);
    StoreDenseKv(layout, k[t / block_size].data(), v[t / block_size].data(), t % block_size,
                 kt.data(), vt.data());
  }
  std::vector<const void*> kp, vp;
  for (int b = 0; b < n_blocks; ++b) {
    kp.push_back(k[b].data());
    vp.push_back(v[b].data());
  }
  std::vector<float> q(static_cast<size_t>(n_heads) * head_dim), out(q.size()), scratch(n_ctx);
  for (float& x : q) x = u(rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  for (auto _ : state) {
    fn(layout, n_heads, q.data(), kp.data(), vp.data(), n_ctx, scale, out.data(), scratch.data(), 0,
       n_heads);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 2 *
                          static_cast<int64_t>(n_ctx) * n_kv * head_dim * DTypeSize(dt));
  state.SetLabel(std::string(state.range(0) == 0 ? "SmolLM2 9/3x64 " : "Llama1B 32/8x64 ") +
                 DTypeName(dt));
}

void Args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"model", "ctx", "dtype", "isa"});
  for (int isa : {2, 1, 0}) {
    for (int model : {0, 1}) {
      for (int dt : {0, 1, 2}) {
        for (int ctx : {128, 1024, 4096}) b->Args({model, ctx, dt, isa});
      }
    }
  }
}
BENCHMARK(BM_AttendDense)->Apply(Args);

}  // namespace
}  // namespace compressd::kernels

// Decode attention over compressed KV blocks vs the fp16 dense kernel: one query token per
// head over n_ctx cached tokens, Llama-3.2-1B shape (32 query / 8 KV heads, head_dim 64) and
// kdocs-7m shape (8 / 4, head_dim 32), block_size 16; 4k tokens (cache-resident on Zen 4:
// 8 MB of fp16 KV for the Llama shape) and 32k (64 MB, past L3: memory-bound); and the
// SmolLM2-135M shape (9 / 3, head_dim 64) at 1k tokens (fp16, int4, token-selective). Reported
// bytes_per_second = KV bytes read (encoded blocks, scales included) per second;
// items_per_second = tokens attended per second.
//
// Args: {shape (0 Llama-1B, 1 kdocs-7m, 2 SmolLM2-135M), n_ctx, codec (0 fp16 dense, 8 int8,
// 4 int4, 2 int2, 42 k4/v2, token-selective: 100 mikv:h4:l2:f45 and 101 ems+int4:f50 through
// the scalar reference AttendKvSelectRef, 110 and 111 the same through AttendKvSelectAvx512)}.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cpu_features.h"
#include "kernels/kv_quant.h"
#include "kernels/types.h"

namespace compressd::kernels {
namespace {

void BM_KvAttention(benchmark::State& state) {
  const int shape = static_cast<int>(state.range(0));
  const int n_heads = shape == 1 ? 8 : shape == 2 ? 9 : 32;
  const int n_kv = shape == 1 ? 4 : shape == 2 ? 3 : 8, hd = shape == 1 ? 32 : 64, bs = 16;
  const int n_ctx = static_cast<int>(state.range(1));
  const int codec = static_cast<int>(state.range(2));
  const int nb = (n_ctx + bs - 1) / bs;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> q(static_cast<size_t>(n_heads) * hd), out(q.size()), scratch(n_ctx + 64);
  for (float& x : q) x = nd(rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const size_t half = static_cast<size_t>(n_kv) * bs * hd;
  std::vector<std::vector<uint8_t>> mem(nb);
  std::vector<const uint8_t*> ptrs(nb);
  size_t bytes = 0;
  if (codec == 0) {
    DenseKvLayout l{DType::kF16, bs, n_kv, hd};
    std::vector<const void*> kp(nb), vp(nb);
    for (int b = 0; b < nb; ++b) {
      mem[b].resize(half * 4);
      uint16_t* p = reinterpret_cast<uint16_t*>(mem[b].data());
      for (size_t i = 0; i < half * 2; ++i) p[i] = F32ToF16(nd(rng));
      kp[b] = p;
      vp[b] = p + half;
      bytes += half * 4;
    }
    for (auto _ : state) {
      AttendDense(l, n_heads, q.data(), kp.data(), vp.data(), n_ctx, scale, out.data(),
                  scratch.data(), 0, n_heads);
      benchmark::DoNotOptimize(out.data());
    }
  } else if (codec >= 100) {
    KvSelectLayout l;
    l.block_size = bs;
    l.n_kv_heads = n_kv;
    l.head_dim = hd;
    l.v_group = std::min(32, hd);
    l.hi_bits = 4;
    const bool mikv = codec % 10 == 0, avx512 = codec >= 110;
    if (avx512 && !GetCpuFeatures().avx512bw) {
      state.SkipWithError("no AVX-512");
      return;
    }
    l.lo_bits = mikv ? 2 : 0;
    l.merge = true;
    l.n_hi = (bs * n_kv * (mikv ? 45 : 50) + 50) / 100;
    std::vector<uint16_t> stage(half * 2);
    std::vector<float> score(static_cast<size_t>(n_kv) * bs);
    std::uniform_real_distribution<float> ud(0.0f, 1.0f);
    for (int b = 0; b < nb; ++b) {
      for (auto& x : stage) x = F32ToF16(nd(rng));
      for (auto& x : score) x = ud(rng);
      mem[b].resize(l.BlockBytes());
      KvSelectEncodeBlock(l, stage.data(), score.data(), nullptr, true, mem[b].data());
      ptrs[b] = mem[b].data();
      bytes += l.BlockBytes();
    }
    scratch.resize(KvSelectScratchFloats(l, n_ctx));
    const auto fn = avx512 ? AttendKvSelectAvx512 : AttendKvSelectRef;
    for (auto _ : state) {
      fn(l, n_heads, q.data(), ptrs.data(), nullptr, nullptr, n_ctx, scale, out.data(),
         scratch.data(), 0, n_heads);
      benchmark::DoNotOptimize(out.data());
    }
  } else {
    KvQuantLayout l{bs, n_kv, hd, codec == 42 ? 4 : codec, codec == 42 ? 2 : codec, hd};
    std::vector<uint16_t> stage(half * 2);
    for (int b = 0; b < nb; ++b) {
      for (auto& x : stage) x = F32ToF16(nd(rng));
      mem[b].resize(l.BlockBytes());
      KvQuantEncodeBlock(l, stage.data(), mem[b].data(), /*clip_search=*/false);
      ptrs[b] = mem[b].data();
      bytes += l.BlockBytes();
    }
    for (auto _ : state) {
      AttendKvQuant(l, n_heads, q.data(), ptrs.data(), nullptr, n_ctx, scale, out.data(),
                    scratch.data(), 0, n_heads);
      benchmark::DoNotOptimize(out.data());
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * bytes);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * n_ctx);
  state.counters["kv_bytes"] = static_cast<double>(bytes);
}

BENCHMARK(BM_KvAttention)
    ->ArgsProduct({{0, 1}, {4096, 32768}, {0, 8, 4, 2, 42, 100, 101, 110, 111}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_KvAttention)
    ->ArgsProduct({{2}, {1024}, {0, 4, 100, 101, 110, 111}})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace compressd::kernels

BENCHMARK_MAIN();

// The KV pressure ladder's costs (engine/kv/quant_demote.h), per layer region:
// - BM_KvDemote: one demotion (decode two sealed blocks, re-encode 2 x block_size tokens at half
//   the bits with the clipped range search) of one layer; an engine demotion costs this times
//   n_layers, spread over the thread pool. Each iteration also copies the two source regions
//   back (a few KB) so that it demotes base blocks every time.
// - BM_KvAttendDemoted: decode attention of one token over n_ctx tokens with no demoted block
//   (the kernels' fast path) or with all but the sink, newest full and tail blocks demoted
//   (the mixed path: kernels::AttendKvMixedAvx512, or the scalar decode path without AVX-512).
// Args: {shape (0 Llama-3.2-1B: 32/8 heads, head_dim 64; 1 kdocs-7m: 8/4, head_dim 32),
//        bits (8 or 4), [n_ctx, demoted (0/1)]}. block_size 16.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/kv/kv_codec.h"
#include "engine/sched/ladder.h"

namespace compressd {
namespace {

KvGeometry Shape(int shape) {
  KvGeometry g;
  g.n_layers = 1;
  g.n_heads = shape == 1 ? 8 : 32;
  g.n_kv_heads = shape == 1 ? 4 : 8;
  g.head_dim = shape == 1 ? 32 : 64;
  g.block_size = 16;
  return g;
}

std::vector<std::vector<uint8_t>> Filled(const KvCodec& c, int n) {
  const KvGeometry& g = c.geometry();
  const int kvd = g.n_kv_heads * g.head_dim;
  std::vector<std::vector<uint8_t>> blocks((n + g.block_size - 1) / g.block_size,
                                           std::vector<uint8_t>(c.LayerBlockBytes()));
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> k(kvd), v(kvd);
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < kvd; ++i) k[i] = nd(rng), v[i] = nd(rng);
    c.Store(0, blocks[t / g.block_size].data(), t % g.block_size, k.data(), v.data());
    if (t % g.block_size == g.block_size - 1) c.Seal(0, blocks[t / g.block_size].data());
  }
  return blocks;
}

void BM_KvDemote(benchmark::State& state) {
  const KvGeometry g = Shape(static_cast<int>(state.range(0)));
  auto c = *MakeKvCodec(state.range(1) == 8 ? "int8" : "int4", g);
  auto src = Filled(*c, 2 * g.block_size);
  auto work = src;
  for (auto _ : state) {
    std::memcpy(work[0].data(), src[0].data(), src[0].size());
    std::memcpy(work[1].data(), src[1].data(), src[1].size());
    c->Demote(0, work[0].data(), work[1].data(), work[0].data());
    benchmark::DoNotOptimize(work[0].data());
  }
  state.SetItemsProcessed(state.iterations() * 2 * g.block_size);
}
BENCHMARK(BM_KvDemote)
    ->Args({0, 4})
    ->Args({0, 8})
    ->Args({1, 4})
    ->Args({1, 8})
    ->Unit(benchmark::kMicrosecond);

void BM_KvAttendDemoted(benchmark::State& state) {
  const KvGeometry g = Shape(static_cast<int>(state.range(0)));
  auto c = *MakeKvCodec(state.range(1) == 8 ? "int8" : "int4", g);
  const int n_ctx = static_cast<int>(state.range(2));
  auto blocks = Filled(*c, n_ctx);
  std::vector<const uint8_t*> table;
  if (state.range(3) != 0) {
    std::vector<LadderBlock> info(blocks.size());
    const auto merges = PlanBlockMerges(LadderConfig{}, info, n_ctx / g.block_size, 1 << 20);
    std::vector<bool> dropped(blocks.size(), false);
    for (int32_t i : merges) {
      c->Demote(0, blocks[i].data(), blocks[i + 1].data(), blocks[i].data());
      dropped[i + 1] = true;
    }
    for (size_t i = 0; i < blocks.size(); ++i) {
      if (!dropped[i]) table.push_back(blocks[i].data());
    }
  } else {
    for (auto& b : blocks) table.push_back(b.data());
  }
  std::vector<float> q(static_cast<size_t>(g.n_heads) * g.head_dim, 0.1f), out(q.size());
  std::vector<float> scratch(c->ScratchFloats(n_ctx));
  const float scale = 1.0f / std::sqrt(static_cast<float>(g.head_dim));
  for (auto _ : state) {
    c->Attend(0, q.data(), table.data(), n_ctx, scale, out.data(), scratch.data(), 0, g.n_heads);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * n_ctx);
}
BENCHMARK(BM_KvAttendDemoted)
    ->Args({0, 4, 1024, 0})
    ->Args({0, 4, 1024, 1})
    ->Args({1, 4, 256, 0})
    ->Args({1, 4, 256, 1})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace compressd

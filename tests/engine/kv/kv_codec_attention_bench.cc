// Decode attention of one token over n_ctx tokens through a KV codec's Attend (engine level,
// so codecs without a kernel of their own are timed too), on a kdocs-7m-like geometry
// (8 query / 4 KV heads, head_dim 32, block 16, 4 layers: MiniCache pairs layers 2 and 3).
// The layer timed is 3, the second of a MiniCache pair (directions shared with layer 2,
// dissimilar tokens retained). Args: {codec, n_ctx}; codec 0 fp16, 1 int4, 2 minicache,
// 3 minicache through MiniCacheAttendRef (its scalar reference), 4 minicache+int4,
// 5 minicache+int4 through the reference. Bytes read = n_ctx x BytesPerToken / n_layers.
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/kv/codecs.h"
#include "engine/kv/kv_codec.h"

namespace compressd {
namespace {

void BM_CodecAttend(benchmark::State& state) {
  static const char* kNames[] = {"fp16", "int4", "minicache", "minicache", "minicache+int4",
                                 "minicache+int4"};
  const int which = static_cast<int>(state.range(0));
  const bool ref = which == 3 || which == 5;
  const int n_ctx = static_cast<int>(state.range(1));
  KvGeometry g;
  g.n_layers = 4;
  g.n_heads = 8;
  g.n_kv_heads = 4;
  g.head_dim = 32;
  g.block_size = 16;
  auto made = MakeKvCodec(kNames[which], g);
  if (!made.ok()) {
    state.SkipWithError(std::string(made.status().message()).c_str());
    return;
  }
  const KvCodec& c = **made;
  const size_t lb = c.LayerBlockBytes(), bb = lb * g.n_layers;
  const int n_blocks = (n_ctx + g.block_size - 1) / g.block_size;
  std::vector<uint8_t> arena(bb * n_blocks);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  const int kvd = g.n_kv_heads * g.head_dim;
  std::vector<float> k(kvd), v(kvd);
  for (int t = 0; t < n_ctx; ++t) {
    uint8_t* block = arena.data() + (t / g.block_size) * bb;
    for (int l = 0; l < g.n_layers; ++l) {
      for (int i = 0; i < kvd; ++i) k[i] = nd(rng), v[i] = nd(rng);
      c.Store(l, block + l * lb, t % g.block_size, k.data(), v.data());
    }
    if (t % g.block_size == g.block_size - 1 && c.NeedsSeal()) {
      for (int l = 0; l < g.n_layers; ++l) c.Seal(l, block + l * lb);
    }
  }
  const int layer = 3;
  std::vector<const uint8_t*> table(n_blocks);
  for (int b = 0; b < n_blocks; ++b) table[b] = arena.data() + b * bb + layer * lb;
  std::vector<float> q(static_cast<size_t>(g.n_heads) * g.head_dim), out(q.size());
  for (auto& e : q) e = nd(rng);
  std::vector<float> scratch(c.ScratchFloats(n_ctx));
  const float scale = 1.0f / std::sqrt(static_cast<float>(g.head_dim));
  for (auto _ : state) {
    if (ref) {
      MiniCacheAttendRef(c, layer, q.data(), table.data(), n_ctx, scale, out.data(),
                         scratch.data(), 0, g.n_heads);
    } else {
      c.Attend(layer, q.data(), table.data(), n_ctx, scale, out.data(), scratch.data(), 0,
               g.n_heads);
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetLabel(std::string(kNames[which]) + (ref ? " (ref)" : ""));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(n_ctx * c.BytesPerToken() / g.n_layers));
}
BENCHMARK(BM_CodecAttend)
    ->ArgsProduct({{0, 1, 2, 3, 4, 5}, {4096}})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace compressd

// Fuzzes the KV codec spec parser (`--kv-cache`, engine/kv/kv_codec.h MakeKvCodec and the
// families registered in codec_registry.cc: intN options, gear, mikv/ems, cskv, minicache,
// their "+" compositions). Byte 0 picks a model geometry; the rest is the spec. A codec that
// parses is then exercised: calibrated with synthetic moments if it asks, one full block and
// a partial one stored in every layer (full blocks sealed), and attention over them run for
// every layer; outputs must be finite. A spec must never crash, hang or leak, and what it
// accepts must hold its own block layout.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/kv/kv_codec.h"

namespace {

using compressd::KvGeometry;

// layers, query heads, KV heads, head_dim, block size: kdocs-7m, stories260K, SmolLM2-135M
// (fewer layers), a GQA-free odd one.
constexpr int kGeometries[][5] = {
    {8, 8, 4, 32, 16}, {5, 8, 4, 8, 16}, {4, 9, 3, 64, 16}, {3, 2, 2, 16, 7}};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 512) return 0;
  const int* gi = kGeometries[data[0] % (sizeof(kGeometries) / sizeof(kGeometries[0]))];
  KvGeometry g;
  g.n_layers = gi[0];
  g.n_heads = gi[1];
  g.n_kv_heads = gi[2];
  g.head_dim = gi[3];
  g.block_size = gi[4];
  const std::string spec(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto made = compressd::MakeKvCodec(spec, g);
  if (!made.ok()) {
    if (made.status().message().empty()) std::abort();  // errors must say something
    return 0;
  }
  compressd::KvCodec& c = **made;
  const size_t lb = c.LayerBlockBytes();
  if (lb == 0 || lb > (size_t{8} << 20) || !(c.BytesPerToken() > 0)) std::abort();
  if (c.NeedsCalibration()) {
    compressd::KvMoments m;
    m.geometry = g;
    const size_t per = static_cast<size_t>(g.n_layers) * g.n_kv_heads * g.head_dim * g.head_dim;
    m.k.assign(per, 0.0);
    m.v.assign(per, 0.0);
    for (size_t lh = 0; lh < static_cast<size_t>(g.n_layers) * g.n_kv_heads; ++lh) {
      for (int i = 0; i < g.head_dim; ++i) {
        const size_t at = (lh * g.head_dim + i) * g.head_dim + i;
        m.k[at] = 100.0 * (g.head_dim - i);
        m.v[at] = 50.0 * (g.head_dim - i) + 1;
      }
    }
    m.tokens = 100;
    if (!c.Calibrate(m).ok()) return 0;
  }
  const int n_ctx = g.block_size + 3;  // one full block, three tokens of the next
  const size_t bb = lb * g.n_layers;
  std::vector<uint8_t> arena(2 * bb);
  const int kvd = g.n_kv_heads * g.head_dim;
  std::vector<float> k(kvd), v(kvd);
  for (int t = 0; t < n_ctx; ++t) {
    uint8_t* block = arena.data() + (t / g.block_size) * bb;
    for (int l = 0; l < g.n_layers; ++l) {
      for (int i = 0; i < kvd; ++i) {
        k[i] = std::sin(0.37f * (t * kvd + i) + l);
        v[i] = std::cos(0.23f * (t * kvd + i) - l);
      }
      c.Store(l, block + l * lb, t % g.block_size, k.data(), v.data());
    }
    if (t % g.block_size == g.block_size - 1 && c.NeedsSeal()) {
      for (int l = 0; l < g.n_layers; ++l) c.Seal(l, block + l * lb);
    }
  }
  std::vector<float> q(static_cast<size_t>(g.n_heads) * g.head_dim), out(q.size());
  for (size_t i = 0; i < q.size(); ++i) q[i] = std::sin(0.11f * i);
  std::vector<float> scratch(c.ScratchFloats(n_ctx));
  for (int l = 0; l < g.n_layers; ++l) {
    const uint8_t* blocks[2] = {arena.data() + l * lb, arena.data() + bb + l * lb};
    c.Attend(l, q.data(), blocks, n_ctx, 0.25f, out.data(), scratch.data(), 0, g.n_heads);
    for (float o : out) {
      if (!std::isfinite(o)) std::abort();
    }
  }
  return 0;
}

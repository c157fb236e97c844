// Dense KV codecs (fp32, fp16, bf16): the uncompressed reference layout.
// Block layout per layer: K then V, each [n_kv_heads][block_size][head_dim].
#include <mutex>

#include "absl/strings/str_join.h"
#include "engine/kv/kv_codec.h"
#include "kernels/attention.h"

namespace compressd {
namespace {

class DenseCodec : public KvCodec {
 public:
  DenseCodec(const KvGeometry& g, kernels::DType dt, std::string name)
      : KvCodec(g), name_(std::move(name)) {
    layout_.dtype = dt;
    layout_.block_size = g.block_size;
    layout_.n_kv_heads = g.n_kv_heads;
    layout_.head_dim = g.head_dim;
    half_ = static_cast<size_t>(g.n_kv_heads) * g.block_size * g.head_dim *
            kernels::DTypeSize(dt);
  }
  std::string name() const override { return name_; }
  size_t LayerBlockBytes() const override { return 2 * half_; }
  void Store(int, uint8_t* block, int slot, const float* k, const float* v) const override {
    kernels::StoreDenseKv(layout_, block, block + half_, slot, k, v);
  }
  void Attend(int, const float* q, const uint8_t* const* blocks, int n_ctx, float scale,
              float* out, float* scratch, int head_begin, int head_end) const override {
    const int nb = (n_ctx + geo_.block_size - 1) / geo_.block_size;
    // Small fixed arrays avoid allocation on the hot path for typical contexts.
    constexpr int kMax = 512;
    const void* kp_small[kMax];
    const void* vp_small[kMax];
    std::vector<const void*> kp_big, vp_big;
    const void** kp = kp_small;
    const void** vp = vp_small;
    if (nb > kMax) {
      kp_big.resize(nb);
      vp_big.resize(nb);
      kp = kp_big.data();
      vp = vp_big.data();
    }
    for (int i = 0; i < nb; ++i) {
      kp[i] = blocks[i];
      vp[i] = blocks[i] + half_;
    }
    kernels::AttendDense(layout_, geo_.n_heads, q, kp, vp, n_ctx, scale, out, scratch,
                         head_begin, head_end);
  }

 private:
  std::string name_;
  kernels::DenseKvLayout layout_;
  size_t half_ = 0;
};

struct Registry {
  std::mutex mu;
  std::vector<std::pair<KvCodecMaker, std::vector<std::string>>> makers;
};
Registry& GetRegistry() {
  static Registry r;
  return r;
}

}  // namespace

// engine/kv/codec_registry.cc: registers the compressed codec families. Called here, once,
// rather than from static initialisers that static-library linking would drop.
void RegisterBuiltinKvCodecs();

namespace {
void EnsureBuiltins() {
  static std::once_flag once;
  std::call_once(once, [] { RegisterBuiltinKvCodecs(); });
}
}  // namespace

void RegisterKvCodecMaker(KvCodecMaker maker, std::vector<std::string> names) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.makers.emplace_back(maker, std::move(names));
}

std::vector<std::string> KvCodecNames() {
  EnsureBuiltins();
  std::vector<std::string> n = {"fp32", "fp16", "bf16"};
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const auto& [m, names] : r.makers) n.insert(n.end(), names.begin(), names.end());
  return n;
}

absl::StatusOr<std::unique_ptr<KvCodec>> MakeKvCodec(const std::string& name,
                                                     const KvGeometry& g) {
  EnsureBuiltins();
  if (g.n_kv_heads <= 0 || g.head_dim <= 0 || g.block_size <= 0 || g.n_layers <= 0 ||
      g.n_heads % g.n_kv_heads != 0) {
    return absl::InvalidArgumentError("invalid KV geometry");
  }
  if (name == "fp32" || name == "f32") return std::make_unique<DenseCodec>(g, kernels::DType::kF32, "fp32");
  if (name == "fp16" || name == "f16") return std::make_unique<DenseCodec>(g, kernels::DType::kF16, "fp16");
  if (name == "bf16") return std::make_unique<DenseCodec>(g, kernels::DType::kBF16, "bf16");
  Registry& r = GetRegistry();
  std::vector<std::pair<KvCodecMaker, std::vector<std::string>>> makers;
  {
    std::lock_guard<std::mutex> lock(r.mu);
    makers = r.makers;
  }
  for (const auto& [maker, names] : makers) {
    absl::Status err;
    std::unique_ptr<KvCodec> c = maker(name, g, &err);
    if (c) return c;
    if (!err.ok()) return err;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown --kv-cache codec '", name,
                                                 "'; known: ", absl::StrJoin(KvCodecNames(), ", ")));
}

}  // namespace compressd

// MiniCache cross-layer merging ("minicache[:tA][:rP]"), a scalar reference codec.
//
// From the middle layer m = n_layers / 2 on, adjacent layers (m, m+1), (m+2, m+3), ... form
// pairs; a last unpaired layer and the layers below m are stored as fp16 (the dense layout).
// For each token and KV head of a pair, K and V of the two layers are split into magnitude and
// unit direction; the pair keeps ONE direction per token (SLERP of the two unit vectors at
// t = 1/2, which is (u_a + u_b) / |u_a + u_b|) plus both layers' magnitudes. Tokens whose
// directions are too far apart (angle of K or of V above tA degrees, default 45) are retained
// unmerged: up to rP percent of a block's tokens per KV head (default 25, the most dissimilar
// first) keep the second layer's direction in a retention slot; the first layer's direction is
// then the shared slot. Retention candidates beyond the budget are merged (counted, not
// dropped silently: RetentionOverflow()).
//
// Cross-layer storage (kv_codec.h, KvCodec::SpansLayers): the codec lays out a whole block
// (all layers) itself; a pair's two layers share one region. KvCache hands out layer l's
// region of block b at arena + (b * n_layers + l) * LayerBlockBytes, so the block's base is
// region - l * LayerBlockBytes and LayerBlockBytes = ceil(real bytes of all layers / n_layers).
// The runner's calls (Store/Seal/Attend per layer) are unchanged.
//
// Sealing: a pair is encoded when its second layer's block fills (Seal of the second layer,
// after that step's attention; the runner processes layers in order, so the first layer's
// tokens of that block are all stored by then). Until then both layers' tokens live in an fp32 staging buffer of the codec
// (one per pair region being filled), from which Attend reads unsealed blocks.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "engine/kv/codecs.h"
#include "kernels/types.h"

namespace compressd {
namespace {

constexpr uint32_t kSealed = 0x4d43534cu;  // "MCSL"
constexpr size_t kHeader = 8;
constexpr uint8_t kMerged = 0xFF;

size_t Align8(size_t x) { return (x + 7) / 8 * 8; }

class MiniCacheCodec : public KvCodec {
 public:
  MiniCacheCodec(const KvGeometry& g, double threshold_deg, int retain_pct, std::string name)
      : KvCodec(g), name_(std::move(name)) {
    thr_rad_ = threshold_deg * M_PI / 180.0;
    const int bs = g.block_size, hd = g.head_dim, nkv = g.n_kv_heads;
    retain_ = std::min(bs, (bs * retain_pct + 99) / 100);
    dense_bytes_ = static_cast<size_t>(2) * nkv * bs * hd * sizeof(uint16_t);
    // Per KV head of a pair: dirK, dirV [bs][hd]; mags [bs][4] (kA, kB, vA, vB); map [bs]
    // (retention index or kMerged, padded to 8); retK, retV [retain][hd].
    off_dir_k_ = 0;
    off_dir_v_ = off_dir_k_ + static_cast<size_t>(bs) * hd * 2;
    off_mag_ = off_dir_v_ + static_cast<size_t>(bs) * hd * 2;
    off_map_ = off_mag_ + static_cast<size_t>(bs) * 4 * 2;
    off_ret_k_ = off_map_ + Align8(bs);
    off_ret_v_ = off_ret_k_ + static_cast<size_t>(retain_) * hd * 2;
    head_bytes_ = Align8(off_ret_v_ + static_cast<size_t>(retain_) * hd * 2);
    pair_bytes_ = kHeader + head_bytes_ * nkv;
    const int L = g.n_layers, mid = L / 2;
    offset_.assign(L, 0);
    role_.assign(L, kDense);
    size_t total = 0;
    for (int l = 0; l < L; ++l) {
      if (l >= mid && (l - mid) % 2 == 0 && l + 1 < L) {
        role_[l] = kFirst;
        role_[l + 1] = kSecond;
        offset_[l] = offset_[l + 1] = total;
        total += pair_bytes_;
        ++l;
      } else {
        offset_[l] = total;
        total += dense_bytes_;
      }
    }
    total_bytes_ = total;
    layer_bytes_ = Align8((total + L - 1) / L);
    stage_floats_ = static_cast<size_t>(2) * 2 * nkv * bs * hd;  // [layer][K/V][h][slot][d]
  }

  std::string name() const override { return name_; }
  size_t LayerBlockBytes() const override { return layer_bytes_; }
  bool SpansLayers() const override { return true; }
  bool NeedsSeal() const override { return true; }
  // After the step's attention: in a step that fills a block, both layers of a pair attend
  // over that block from staging (the same full-precision window), and `compressd eval` runs
  // the codec block by block (decode window, as MiKV/EMS) rather than over a whole chunk at once.
  bool SealAfterAttend() const override { return true; }

  // Real bytes of one block, all layers (LayerBlockBytes * n_layers rounds this up).
  size_t TotalBlockBytes() const { return total_bytes_; }
  int64_t RetentionOverflow() const {
    absl::MutexLock lock(&mu_);
    return overflow_;
  }
  int64_t Retained() const {
    absl::MutexLock lock(&mu_);
    return retained_;
  }

  void Store(int layer, uint8_t* block, int slot, const float* k, const float* v) const override {
    uint8_t* region = Region(layer, block);
    const int hd = geo_.head_dim, bs = geo_.block_size, nkv = geo_.n_kv_heads;
    if (role_[layer] == kDense) {
      uint16_t* kd = reinterpret_cast<uint16_t*>(region);
      uint16_t* vd = kd + static_cast<size_t>(nkv) * bs * hd;
      for (int h = 0; h < nkv; ++h) {
        const size_t base = (static_cast<size_t>(h) * bs + slot) * hd;
        for (int d = 0; d < hd; ++d) {
          kd[base + d] = kernels::F32ToF16(k[h * hd + d]);
          vd[base + d] = kernels::F32ToF16(v[h * hd + d]);
        }
      }
      return;
    }
    if (slot == 0) std::memset(region, 0, kHeader);  // not sealed
    float* st = Stage(region);
    const int which = role_[layer] == kFirst ? 0 : 1;
    for (int kv = 0; kv < 2; ++kv) {
      const float* src = kv == 0 ? k : v;
      for (int h = 0; h < nkv; ++h) {
        std::memcpy(st + StageIndex(which, kv, h, slot), src + h * hd, hd * sizeof(float));
      }
    }
  }

  void Seal(int layer, uint8_t* block) const override {
    if (role_[layer] != kSecond) return;
    uint8_t* region = Region(layer, block);
    std::unique_ptr<float[]> buf;
    {
      absl::MutexLock lock(&mu_);
      auto it = stage_.find(region);
      if (it == stage_.end()) return;
      buf = std::move(it->second);
      stage_.erase(it);
    }
    int64_t retained = 0, overflow = 0;
    EncodePair(buf.get(), region, &retained, &overflow);
    absl::MutexLock lock(&mu_);
    retained_ += retained;
    overflow_ += overflow;
    free_.push_back(std::move(buf));
  }

  void Attend(int layer, const float* q, const uint8_t* const* blocks, int n_ctx, float scale,
              float* out, float* scratch, int head_begin, int head_end) const override {
    const int hd = geo_.head_dim, bs = geo_.block_size;
    const int group = geo_.n_heads / geo_.n_kv_heads;
    const int nb = (n_ctx + bs - 1) / bs;
    float* scores = scratch;
    float* row = scratch + n_ctx;
    // Per block: the staging buffer when the pair is not sealed yet.
    std::vector<const float*> stage(nb, nullptr);
    if (role_[layer] != kDense) {
      absl::ReaderMutexLock lock(&mu_);
      for (int i = 0; i < nb; ++i) {
        const uint8_t* region = Region(layer, blocks[i]);
        if (Sealed(region)) continue;
        auto it = stage_.find(region);
        stage[i] = it == stage_.end() ? nullptr : it->second.get();
      }
    }
    for (int h = head_begin; h < head_end; ++h) {
      const int g = h / group;
      const float* qh = q + static_cast<size_t>(h) * hd;
      float mx = -INFINITY;
      for (int t = 0; t < n_ctx; ++t) {
        DecodeRow(layer, blocks[t / bs], stage[t / bs], g, t % bs, 0, row);
        double s = 0;
        for (int d = 0; d < hd; ++d) s += static_cast<double>(qh[d]) * row[d];
        scores[t] = static_cast<float>(s) * scale;
        mx = std::max(mx, scores[t]);
      }
      double sum = 0;
      for (int t = 0; t < n_ctx; ++t) {
        scores[t] = std::exp(scores[t] - mx);
        sum += scores[t];
      }
      float* o = out + static_cast<size_t>(h) * hd;
      std::vector<double> acc(hd, 0.0);
      for (int t = 0; t < n_ctx; ++t) {
        DecodeRow(layer, blocks[t / bs], stage[t / bs], g, t % bs, 1, row);
        const double w = scores[t] / sum;
        for (int d = 0; d < hd; ++d) acc[d] += w * row[d];
      }
      for (int d = 0; d < hd; ++d) o[d] = static_cast<float>(acc[d]);
    }
  }
  size_t ScratchFloats(int n_ctx) const override {
    return static_cast<size_t>(n_ctx) + geo_.head_dim + 64;
  }

  // Tests: the decoded row of K (kv = 0) or V (1) of a sealed or staged block, as Attend sees it.
  void Decode(int layer, const uint8_t* block, int h, int slot, int kv, float* row) const {
    const float* st = nullptr;
    if (role_[layer] != kDense && !Sealed(Region(layer, block))) {
      absl::ReaderMutexLock lock(&mu_);
      auto it = stage_.find(Region(layer, block));
      st = it == stage_.end() ? nullptr : it->second.get();
    }
    DecodeRow(layer, block, st, h, slot, kv, row);
  }

 private:
  enum Role { kDense, kFirst, kSecond };

  // This layer's storage inside the whole block (see the file comment).
  uint8_t* Region(int layer, uint8_t* layer_ptr) const {
    return layer_ptr - static_cast<size_t>(layer) * layer_bytes_ + offset_[layer];
  }
  const uint8_t* Region(int layer, const uint8_t* layer_ptr) const {
    return layer_ptr - static_cast<size_t>(layer) * layer_bytes_ + offset_[layer];
  }
  static bool Sealed(const uint8_t* region) {
    uint32_t s;
    std::memcpy(&s, region, 4);
    return s == kSealed;
  }
  size_t StageIndex(int which, int kv, int h, int slot) const {
    const int bs = geo_.block_size, hd = geo_.head_dim, nkv = geo_.n_kv_heads;
    return (((static_cast<size_t>(which) * 2 + kv) * nkv + h) * bs + slot) * hd;
  }
  float* Stage(const uint8_t* region) const {
    absl::MutexLock lock(&mu_);
    auto& s = stage_[region];
    if (s == nullptr) {
      if (!free_.empty()) {
        s = std::move(free_.back());
        free_.pop_back();
      } else {
        s = std::make_unique<float[]>(stage_floats_);
      }
    }
    return s.get();
  }

  void DecodeRow(int layer, const uint8_t* layer_ptr, const float* stage, int h, int slot, int kv,
                 float* row) const {
    const int hd = geo_.head_dim, bs = geo_.block_size, nkv = geo_.n_kv_heads;
    const uint8_t* region = Region(layer, layer_ptr);
    if (role_[layer] == kDense) {
      const uint16_t* p = reinterpret_cast<const uint16_t*>(region) +
                          ((static_cast<size_t>(kv) * nkv + h) * bs + slot) * hd;
      for (int d = 0; d < hd; ++d) row[d] = kernels::F16ToF32(p[d]);
      return;
    }
    const int which = role_[layer] == kFirst ? 0 : 1;
    if (!Sealed(region)) {
      if (stage == nullptr) {  // Store was never called for this block (a runner bug)
        std::fill(row, row + hd, 0.0f);
        return;
      }
      std::memcpy(row, stage + StageIndex(which, kv, h, slot), hd * sizeof(float));
      return;
    }
    const uint8_t* head = region + kHeader + static_cast<size_t>(h) * head_bytes_;
    const uint16_t* mags = reinterpret_cast<const uint16_t*>(head + off_mag_) + slot * 4;
    const float mag = kernels::F16ToF32(mags[kv * 2 + which]);
    const uint8_t r = head[off_map_ + slot];
    const uint16_t* dir;
    if (which == 1 && r != kMerged) {
      dir = reinterpret_cast<const uint16_t*>(head + (kv == 0 ? off_ret_k_ : off_ret_v_)) +
            static_cast<size_t>(r) * hd;
    } else {
      dir = reinterpret_cast<const uint16_t*>(head + (kv == 0 ? off_dir_k_ : off_dir_v_)) +
            static_cast<size_t>(slot) * hd;
    }
    for (int d = 0; d < hd; ++d) row[d] = kernels::F16ToF32(dir[d]) * mag;
  }

  void EncodePair(const float* st, uint8_t* region, int64_t* retained, int64_t* overflow) const {
    const int hd = geo_.head_dim, bs = geo_.block_size, nkv = geo_.n_kv_heads;
    std::vector<float> ua(hd), ub(hd);
    std::vector<double> angle(bs);
    std::vector<float> norms(static_cast<size_t>(bs) * 4);
    std::vector<int> order;
    for (int h = 0; h < nkv; ++h) {
      uint8_t* head = region + kHeader + static_cast<size_t>(h) * head_bytes_;
      std::memset(head, 0, head_bytes_);
      // Angles (the larger of K's and V's) decide retention.
      for (int s = 0; s < bs; ++s) {
        double worst = 0;
        for (int kv = 0; kv < 2; ++kv) {
          const float* a = st + StageIndex(0, kv, h, s);
          const float* b = st + StageIndex(1, kv, h, s);
          double na = 0, nb = 0, dot = 0;
          for (int d = 0; d < hd; ++d) {
            na += static_cast<double>(a[d]) * a[d];
            nb += static_cast<double>(b[d]) * b[d];
            dot += static_cast<double>(a[d]) * b[d];
          }
          na = std::sqrt(na);
          nb = std::sqrt(nb);
          norms[s * 4 + kv * 2 + 0] = static_cast<float>(na);
          norms[s * 4 + kv * 2 + 1] = static_cast<float>(nb);
          const double c = (na > 0 && nb > 0) ? std::clamp(dot / (na * nb), -1.0, 1.0) : 1.0;
          worst = std::max(worst, std::acos(c));
        }
        angle[s] = worst;
      }
      order.clear();
      for (int s = 0; s < bs; ++s) {
        if (angle[s] > thr_rad_) order.push_back(s);
      }
      std::stable_sort(order.begin(), order.end(),
                       [&](int x, int y) { return angle[x] > angle[y]; });
      uint8_t* map = head + off_map_;
      std::fill(map, map + bs, kMerged);
      const int keep = std::min<int>(retain_, static_cast<int>(order.size()));
      *overflow += static_cast<int64_t>(order.size()) - keep;
      *retained += keep;
      for (int i = 0; i < keep; ++i) map[order[i]] = static_cast<uint8_t>(i);
      uint16_t* mags = reinterpret_cast<uint16_t*>(head + off_mag_);
      for (int s = 0; s < bs; ++s) {
        for (int j = 0; j < 4; ++j) mags[s * 4 + j] = kernels::F32ToF16(norms[s * 4 + j]);
        for (int kv = 0; kv < 2; ++kv) {
          const float* a = st + StageIndex(0, kv, h, s);
          const float* b = st + StageIndex(1, kv, h, s);
          const float na = norms[s * 4 + kv * 2], nb = norms[s * 4 + kv * 2 + 1];
          for (int d = 0; d < hd; ++d) {
            ua[d] = na > 0 ? a[d] / na : 0.0f;
            ub[d] = nb > 0 ? b[d] / nb : 0.0f;
          }
          uint16_t* dir = reinterpret_cast<uint16_t*>(head + (kv == 0 ? off_dir_k_ : off_dir_v_)) +
                          static_cast<size_t>(s) * hd;
          if (map[s] != kMerged) {
            uint16_t* ret =
                reinterpret_cast<uint16_t*>(head + (kv == 0 ? off_ret_k_ : off_ret_v_)) +
                static_cast<size_t>(map[s]) * hd;
            for (int d = 0; d < hd; ++d) {
              dir[d] = kernels::F32ToF16(ua[d]);
              ret[d] = kernels::F32ToF16(ub[d]);
            }
            continue;
          }
          // SLERP(u_a, u_b, 1/2) = (u_a + u_b) / |u_a + u_b|; a zero vector on one side
          // (norm 0) leaves the other's direction.
          double n2 = 0;
          for (int d = 0; d < hd; ++d) n2 += static_cast<double>(ua[d] + ub[d]) * (ua[d] + ub[d]);
          const double inv = n2 > 1e-24 ? 1.0 / std::sqrt(n2) : 0.0;
          for (int d = 0; d < hd; ++d) {
            dir[d] = kernels::F32ToF16(static_cast<float>((ua[d] + ub[d]) * inv));
          }
        }
      }
    }
    const uint32_t sealed = kSealed;
    std::memcpy(region, &sealed, 4);
  }

  std::string name_;
  double thr_rad_ = 0;
  int retain_ = 0;
  size_t dense_bytes_ = 0, pair_bytes_ = 0, head_bytes_ = 0, total_bytes_ = 0, layer_bytes_ = 0;
  size_t off_dir_k_ = 0, off_dir_v_ = 0, off_mag_ = 0, off_map_ = 0, off_ret_k_ = 0,
         off_ret_v_ = 0;
  std::vector<size_t> offset_;
  std::vector<Role> role_;
  size_t stage_floats_ = 0;
  mutable absl::Mutex mu_;
  mutable absl::flat_hash_map<const uint8_t*, std::unique_ptr<float[]>> stage_;
  mutable std::vector<std::unique_ptr<float[]>> free_;
  mutable int64_t retained_ = 0, overflow_ = 0;
};

}  // namespace

std::unique_ptr<KvCodec> MakeMiniCacheKvCodec(const std::string& name, const KvGeometry& g,
                                              absl::Status* error) {
  const std::string base = name.substr(0, name.find_first_of(":+"));
  if (base != "minicache") return nullptr;
  auto fail = [&](const std::string& why) -> std::unique_ptr<KvCodec> {
    *error = absl::InvalidArgumentError(absl::StrCat("--kv-cache '", name, "': ", why));
    return nullptr;
  };
  if (name.find('+') != std::string::npos) {
    return fail("minicache does not compose with another codec yet (minicache+int4 is not "
                "implemented); use minicache[:tA][:rP]");
  }
  if (g.block_size > 255) return fail("minicache needs --kv-block-size <= 255");
  double threshold = 45;
  int retain = 25;
  if (name.size() > base.size()) {
    for (absl::string_view opt : absl::StrSplit(name.substr(base.size() + 1), absl::ByAnyChar(":,"))) {
      if (opt.size() >= 2 && opt[0] == 't') {
        double t;
        if (!absl::SimpleAtod(opt.substr(1), &t) || !(t >= 0 && t <= 180)) {
          return fail("tA: angle threshold in degrees, 0..180");
        }
        threshold = t;
      } else if (opt.size() >= 2 && opt[0] == 'r') {
        int r;
        if (!absl::SimpleAtoi(opt.substr(1), &r) || r < 0 || r > 100) {
          return fail("rP: retention budget, percent of a block's tokens, 0..100");
        }
        retain = r;
      } else {
        return fail(absl::StrCat("unknown option '", opt, "' (tA, rP)"));
      }
    }
  }
  std::string canon = "minicache";
  if (threshold != 45 || retain != 25) {
    canon = absl::StrCat("minicache:t", threshold, ":r", retain);
  }
  return std::make_unique<MiniCacheCodec>(g, threshold, retain, canon);
}

int64_t MiniCacheRetentionOverflow(const KvCodec& codec) {
  const auto* m = dynamic_cast<const MiniCacheCodec*>(&codec);
  return m == nullptr ? -1 : m->RetentionOverflow();
}
int64_t MiniCacheRetained(const KvCodec& codec) {
  const auto* m = dynamic_cast<const MiniCacheCodec*>(&codec);
  return m == nullptr ? -1 : m->Retained();
}
size_t MiniCacheTotalBlockBytes(const KvCodec& codec) {
  const auto* m = dynamic_cast<const MiniCacheCodec*>(&codec);
  return m == nullptr ? 0 : m->TotalBlockBytes();
}
void MiniCacheDecode(const KvCodec& codec, int layer, const uint8_t* block, int h, int slot, int kv,
                     float* row) {
  const auto* m = dynamic_cast<const MiniCacheCodec*>(&codec);
  if (m != nullptr) m->Decode(layer, block, h, slot, kv, row);
}

}  // namespace compressd

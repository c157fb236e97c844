// MiniCache cross-layer merging ("minicache[:tA][:rP][+intN[:opts]]").
//
// From the middle layer m = n_layers / 2 on, adjacent layers (m, m+1), (m+2, m+3), ... form
// pairs; a last unpaired layer and the layers below m are stored unmerged ("dense" layers).
// For each token and KV head of a pair, K and V of the two layers are split into magnitude and
// unit direction; the pair keeps ONE direction per token (SLERP of the two unit vectors at
// t = 1/2, which is (u_a + u_b) / |u_a + u_b|) plus both layers' magnitudes. Tokens whose
// directions are too far apart (angle of K or of V above tA degrees, default 45) are retained
// unmerged: up to rP percent of a block's tokens per KV head (default 25, the most dissimilar
// first) keep the second layer's direction in a retention slot; the first layer's direction is
// then the shared slot. Retention candidates beyond the budget are merged (counted, not
// dropped silently: RetentionOverflow()).
//
// Storage. Without an inner codec everything is fp16: dense layers in the dense layout, a pair
// region as header + per KV head {dirK, dirV [bs][hd], mags [bs][4], map [bs], retK, retV
// [retain][hd]}. With "+int8|int4|int2[:gN:kN:vN:noclip]" (the quant family parses and checks
// those options: quant_inner.h) the directions and rows are KIVI blocks of that layout
// (kernels/kv_quant.h: keys per channel over the block's tokens, values per token in groups):
// a dense layer's region IS a KIVI block (the int4 codec's bytes); a pair region is
//   header 8 | per KV head {mags [bs][4] f16 (kA, kB, vA, vB), map [bs]} |
//   KIVI block of the shared directions (bs tokens) | KIVI block of the retention slots
//   (retain tokens; unused slots repeat slot 0, so they do not widen the key ranges).
// Magnitudes stay fp16: a direction's quantization error is then relative to its token's norm.
//
// Cross-layer storage (kv_codec.h, KvCodec::SpansLayers): the codec lays out a whole block
// (all layers) itself; a pair's two layers share one region. KvCache hands out layer l's
// region of block b at arena + (b * n_layers + l) * LayerBlockBytes, so the block's base is
// region - l * LayerBlockBytes and LayerBlockBytes = ceil(real bytes of all layers / n_layers).
// The runner's calls (Store/Seal/Attend per layer) are unchanged.
//
// Sealing: a pair is encoded when its second layer's block fills (Seal of the second layer,
// after that step's attention; the runner processes layers in order, so the first layer's
// tokens of that block are all stored by then); with an inner codec a dense layer is encoded
// by its own Seal. Until then the tokens live in an fp32 staging buffer of the codec (one per
// region being filled), from which Attend reads unsealed blocks (the full-precision window).
//
// Attention: Attend decodes one block of one KV head at a time (bs rows of K and V, shared by
// the head's query heads) and folds it into an online softmax: nothing of the context is
// materialised beyond one block. AttendRef, decoding row by row with a plain two-pass softmax,
// is its scalar reference (MiniCacheAttendRef; parity in tests/engine/kv/minicache_codec_test).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "engine/kv/codecs.h"
#include "engine/kv/quant_demote.h"
#include "engine/kv/quant_inner.h"
#include "kernels/kv_quant.h"
#include "kernels/types.h"

namespace compressd {
namespace {

constexpr uint32_t kSealed = 0x4d43534cu;  // "MCSL"
constexpr size_t kHeader = 8;
constexpr uint8_t kMerged = 0xFF;

size_t Align8(size_t x) { return (x + 7) / 8 * 8; }

// The inner KIVI codec of "minicache+intN": its layout (block_size = the block's) and clip.
struct InnerQuant {
  kernels::KvQuantLayout layout;
  bool clip = true;
};

class MiniCacheCodec : public KvCodec {
 public:
  MiniCacheCodec(const KvGeometry& g, double threshold_deg, int retain_pct,
                 std::optional<InnerQuant> inner, std::string name)
      : KvCodec(g), name_(std::move(name)) {
    thr_rad_ = threshold_deg * M_PI / 180.0;
    const int bs = g.block_size, hd = g.head_dim, nkv = g.n_kv_heads;
    retain_ = std::min(bs, (bs * retain_pct + 99) / 100);
    if (inner.has_value()) {
      quant_ = true;
      clip_ = inner->clip;
      q_dir_ = q_ret_ = inner->layout;
      q_ret_.block_size = retain_;
      dense_bytes_ = Align8(q_dir_.BlockBytes());
      // Per KV head of a pair: mags [bs][4]; map [bs] (padded to 8). Then the two KIVI blocks.
      off_mag_ = 0;
      off_map_ = static_cast<size_t>(bs) * 4 * 2;
      head_bytes_ = Align8(off_map_ + Align8(bs));
      off_q_dir_ = Align8(kHeader + head_bytes_ * nkv);
      off_q_ret_ = Align8(off_q_dir_ + q_dir_.BlockBytes());
      pair_bytes_ = Align8(off_q_ret_ + (retain_ > 0 ? q_ret_.BlockBytes() : 0));
    } else {
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
    }
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
    if (!Staged(layer)) {  // a dense fp16 layer: written in place
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
    // Not sealed (a pair's header or a dense KIVI block's).
    if (slot == 0)
      std::memset(region, 0, role_[layer] == kDense ? kernels::kKvQuantHeader : kHeader);
    float* st = Stage(region);
    const int which = role_[layer] == kSecond ? 1 : 0;
    for (int kv = 0; kv < 2; ++kv) {
      const float* src = kv == 0 ? k : v;
      for (int h = 0; h < nkv; ++h) {
        std::memcpy(st + StageIndex(which, kv, h, slot), src + h * hd, hd * sizeof(float));
      }
    }
  }

  void Seal(int layer, uint8_t* block) const override {
    if (role_[layer] == kFirst || !Staged(layer)) return;
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
    if (role_[layer] == kDense) {
      // The first layer half of the staging is [K/V][h][slot][d]: KIVI's staging order.
      thread_local std::vector<uint16_t> st16;
      st16.resize(stage_floats_ / 2);
      for (size_t i = 0; i < st16.size(); ++i) st16[i] = kernels::F32ToF16(buf[i]);
      kernels::KvQuantEncodeBlock(q_dir_, st16.data(), region, clip_);
    } else {
      EncodePair(buf.get(), region, &retained, &overflow);
    }
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
    std::vector<const float*> stage = Stages(layer, blocks, nb);
    thread_local std::vector<float> kt, vt, kr, vr;
    thread_local std::vector<double> acc, run_max, run_sum;
    kt.resize(static_cast<size_t>(bs) * hd);
    vt.resize(kt.size());
    kr.resize(static_cast<size_t>(std::max(retain_, 1)) * hd);
    vr.resize(kr.size());
    float* s = scratch;  // one block's scores (<= min(bs, n_ctx) floats)
    for (int g = head_begin / group; g * group < head_end; ++g) {
      const int h0 = std::max(head_begin, g * group), h1 = std::min(head_end, (g + 1) * group);
      const int nh = h1 - h0;
      acc.assign(static_cast<size_t>(nh) * hd, 0.0);
      run_max.assign(nh, -INFINITY);
      run_sum.assign(nh, 0.0);
      for (int i = 0; i < nb; ++i) {
        const int cnt = std::min(bs, n_ctx - i * bs);
        DecodeTile(layer, blocks[i], stage[i], g, cnt, kt.data(), vt.data(), kr.data(), vr.data());
        for (int j = 0; j < nh; ++j) {
          const float* qh = q + static_cast<size_t>(h0 + j) * hd;
          float mx = -INFINITY;
          for (int t = 0; t < cnt; ++t) {
            const float* kr_t = kt.data() + static_cast<size_t>(t) * hd;
            double dot = 0;
            for (int d = 0; d < hd; ++d) dot += static_cast<double>(qh[d]) * kr_t[d];
            s[t] = static_cast<float>(dot) * scale;
            mx = std::max(mx, s[t]);
          }
          const double m_new = std::max(run_max[j], static_cast<double>(mx));
          double* a = acc.data() + static_cast<size_t>(j) * hd;
          if (run_max[j] != m_new) {
            const double c = std::exp(run_max[j] - m_new);  // 0 for the first block
            run_sum[j] *= c;
            for (int d = 0; d < hd; ++d) a[d] *= c;
            run_max[j] = m_new;
          }
          for (int t = 0; t < cnt; ++t) {
            const double p = std::exp(static_cast<double>(s[t]) - m_new);
            run_sum[j] += p;
            const float* v_t = vt.data() + static_cast<size_t>(t) * hd;
            for (int d = 0; d < hd; ++d) a[d] += p * v_t[d];
          }
        }
      }
      for (int j = 0; j < nh; ++j) {
        float* o = out + static_cast<size_t>(h0 + j) * hd;
        const double* a = acc.data() + static_cast<size_t>(j) * hd;
        for (int d = 0; d < hd; ++d) o[d] = static_cast<float>(a[d] / run_sum[j]);
      }
    }
  }
  size_t ScratchFloats(int n_ctx) const override {
    return static_cast<size_t>(n_ctx) + geo_.head_dim + 64;
  }

  // The scalar reference of Attend: every row decoded on its own (DecodeRow), two-pass softmax.
  void AttendRef(int layer, const float* q, const uint8_t* const* blocks, int n_ctx, float scale,
                 float* out, float* scratch, int head_begin, int head_end) const {
    const int hd = geo_.head_dim, bs = geo_.block_size;
    const int group = geo_.n_heads / geo_.n_kv_heads;
    const int nb = (n_ctx + bs - 1) / bs;
    float* scores = scratch;
    float* row = scratch + n_ctx;
    std::vector<const float*> stage = Stages(layer, blocks, nb);
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

  // Tests: the decoded row of K (kv = 0) or V (1) of a sealed or staged block, as Attend sees it.
  void Decode(int layer, const uint8_t* block, int h, int slot, int kv, float* row) const {
    const float* st = nullptr;
    if (Staged(layer) && !Sealed(layer, Region(layer, block))) {
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
  // Layers whose tokens wait in staging until Seal: pairs, and dense layers with an inner codec.
  bool Staged(int layer) const { return quant_ || role_[layer] != kDense; }
  bool Sealed(int layer, const uint8_t* region) const {
    uint32_t s;
    std::memcpy(&s, region, 4);
    if (role_[layer] != kDense) return s == kSealed;
    return !quant_ || s == kernels::kKvQuantSealed;
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
  // Per block of a context: its staging buffer when not sealed yet (else nullptr).
  std::vector<const float*> Stages(int layer, const uint8_t* const* blocks, int nb) const {
    std::vector<const float*> stage(nb, nullptr);
    if (!Staged(layer)) return stage;
    absl::ReaderMutexLock lock(&mu_);
    for (int i = 0; i < nb; ++i) {
      const uint8_t* region = Region(layer, blocks[i]);
      if (Sealed(layer, region)) continue;
      auto it = stage_.find(region);
      stage[i] = it == stage_.end() ? nullptr : it->second.get();
    }
    return stage;
  }
  const uint16_t* Mags(const uint8_t* region, int h) const {
    return reinterpret_cast<const uint16_t*>(region + kHeader + h * head_bytes_ + off_mag_);
  }
  const uint8_t* Map(const uint8_t* region, int h) const {
    return region + kHeader + h * head_bytes_ + off_map_;
  }
  // fp16 layout: byte offset in a pair region of row `i` of the shared directions (ret = false)
  // or of the retention slots.
  size_t Fp16Dir(int h, int kv, bool ret, int i) const {
    const size_t off =
        ret ? (kv == 0 ? off_ret_k_ : off_ret_v_) : (kv == 0 ? off_dir_k_ : off_dir_v_);
    return kHeader + static_cast<size_t>(h) * head_bytes_ + off +
           static_cast<size_t>(i) * geo_.head_dim * sizeof(uint16_t);
  }

  // The scalar reference decoder: one row of K (kv = 0) or V (1).
  void DecodeRow(int layer, const uint8_t* layer_ptr, const float* stage, int h, int slot, int kv,
                 float* row) const {
    const int hd = geo_.head_dim, bs = geo_.block_size, nkv = geo_.n_kv_heads;
    const uint8_t* region = Region(layer, layer_ptr);
    if (Staged(layer) && !Sealed(layer, region)) {
      if (stage == nullptr) {  // Store was never called for this block (a runner bug)
        std::fill(row, row + hd, 0.0f);
        return;
      }
      const int which = role_[layer] == kSecond ? 1 : 0;
      std::memcpy(row, stage + StageIndex(which, kv, h, slot), hd * sizeof(float));
      return;
    }
    thread_local std::vector<float> other;
    other.resize(hd);
    float* k = kv == 0 ? row : other.data();
    float* v = kv == 0 ? other.data() : row;
    if (role_[layer] == kDense) {
      if (quant_) {
        kernels::KvQuantDecodeToken(q_dir_, region, h, slot, k, v);
        return;
      }
      const uint16_t* p = reinterpret_cast<const uint16_t*>(region) +
                          ((static_cast<size_t>(kv) * nkv + h) * bs + slot) * hd;
      for (int d = 0; d < hd; ++d) row[d] = kernels::F16ToF32(p[d]);
      return;
    }
    const int which = role_[layer] == kFirst ? 0 : 1;
    const float mag = kernels::F16ToF32(Mags(region, h)[slot * 4 + kv * 2 + which]);
    const uint8_t r = Map(region, h)[slot];
    const bool ret = which == 1 && r != kMerged;
    if (quant_) {
      if (ret) {
        kernels::KvQuantDecodeToken(q_ret_, region + off_q_ret_, h, r, k, v);
      } else {
        kernels::KvQuantDecodeToken(q_dir_, region + off_q_dir_, h, slot, k, v);
      }
      for (int d = 0; d < hd; ++d) row[d] *= mag;
      return;
    }
    const auto* dir =
        reinterpret_cast<const uint16_t*>(region + Fp16Dir(h, kv, ret, ret ? r : slot));
    for (int d = 0; d < hd; ++d) row[d] = kernels::F16ToF32(dir[d]) * mag;
  }

  // Attend's decoder: rows [0, cnt) of KV head h of one block into k and v ([cnt][hd] each);
  // kr/vr: room for retain_ rows (the retention slots of a quantized pair).
  void DecodeTile(int layer, const uint8_t* layer_ptr, const float* stage, int h, int cnt, float* k,
                  float* v, float* kr, float* vr) const {
    const int hd = geo_.head_dim, bs = geo_.block_size, nkv = geo_.n_kv_heads;
    const size_t n = static_cast<size_t>(cnt) * hd;
    const uint8_t* region = Region(layer, layer_ptr);
    if (Staged(layer) && !Sealed(layer, region)) {
      if (stage == nullptr) {  // as DecodeRow
        std::fill(k, k + n, 0.0f);
        std::fill(v, v + n, 0.0f);
        return;
      }
      const int which = role_[layer] == kSecond ? 1 : 0;
      std::memcpy(k, stage + StageIndex(which, 0, h, 0), n * sizeof(float));
      std::memcpy(v, stage + StageIndex(which, 1, h, 0), n * sizeof(float));
      return;
    }
    if (role_[layer] == kDense) {
      if (quant_) {
        DecodeBaseHead(q_dir_, region, h, cnt, k, v);
        return;
      }
      const uint16_t* kp =
          reinterpret_cast<const uint16_t*>(region) + static_cast<size_t>(h) * bs * hd;
      const uint16_t* vp = kp + static_cast<size_t>(nkv) * bs * hd;
      for (size_t i = 0; i < n; ++i)
        k[i] = kernels::F16ToF32(kp[i]), v[i] = kernels::F16ToF32(vp[i]);
      return;
    }
    const int which = role_[layer] == kFirst ? 0 : 1;
    const uint16_t* mags = Mags(region, h);
    const uint8_t* map = Map(region, h);
    bool any_ret = false;
    if (quant_) {
      DecodeBaseHead(q_dir_, region + off_q_dir_, h, cnt, k, v);
      for (int t = 0; t < cnt && which == 1; ++t) any_ret = any_ret || map[t] != kMerged;
      if (any_ret) DecodeBaseHead(q_ret_, region + off_q_ret_, h, retain_, kr, vr);
    }
    for (int t = 0; t < cnt; ++t) {
      float* kt = k + static_cast<size_t>(t) * hd;
      float* vt = v + static_cast<size_t>(t) * hd;
      const float mk = kernels::F16ToF32(mags[t * 4 + which]);
      const float mv = kernels::F16ToF32(mags[t * 4 + 2 + which]);
      const int r = map[t];
      const bool ret = which == 1 && r != kMerged;
      if (quant_) {
        const float* ks = ret ? kr + static_cast<size_t>(r) * hd : kt;
        const float* vs = ret ? vr + static_cast<size_t>(r) * hd : vt;
        for (int d = 0; d < hd; ++d) kt[d] = ks[d] * mk, vt[d] = vs[d] * mv;
        continue;
      }
      const auto* kd = reinterpret_cast<const uint16_t*>(region + Fp16Dir(h, 0, ret, ret ? r : t));
      const auto* vd = reinterpret_cast<const uint16_t*>(region + Fp16Dir(h, 1, ret, ret ? r : t));
      for (int d = 0; d < hd; ++d) {
        kt[d] = kernels::F16ToF32(kd[d]) * mk;
        vt[d] = kernels::F16ToF32(vd[d]) * mv;
      }
    }
  }

  // Merges the staged pair (st: both layers) into `region`: magnitudes and map per head, the
  // directions in fp32 first ([K/V][h][slot][d], retention slots [K/V][h][r][d]), then stored
  // as fp16 rows or as KIVI blocks.
  void EncodePair(const float* st, uint8_t* region, int64_t* retained, int64_t* overflow) const {
    const int hd = geo_.head_dim, bs = geo_.block_size, nkv = geo_.n_kv_heads;
    const size_t rows = static_cast<size_t>(2) * nkv * bs,
                 ret_rows = static_cast<size_t>(2) * nkv * retain_;
    thread_local std::vector<float> dir, ret;
    dir.assign(rows * hd, 0.0f);
    ret.assign(ret_rows * hd, 0.0f);
    auto dir_row = [&](int kv, int h, int s) {
      return dir.data() + ((static_cast<size_t>(kv) * nkv + h) * bs + s) * hd;
    };
    auto ret_row = [&](int kv, int h, int r) {
      return ret.data() + ((static_cast<size_t>(kv) * nkv + h) * retain_ + r) * hd;
    };
    std::vector<int> kept(nkv, 0);
    std::vector<float> ua(hd), ub(hd);
    std::vector<double> angle(bs);
    std::vector<float> norms(static_cast<size_t>(bs) * 4);
    std::vector<int> order;
    std::memset(region + kHeader, 0, head_bytes_ * nkv);
    for (int h = 0; h < nkv; ++h) {
      uint8_t* head = region + kHeader + static_cast<size_t>(h) * head_bytes_;
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
      kept[h] = keep;
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
          float* out = dir_row(kv, h, s);
          if (map[s] != kMerged) {
            std::copy(ua.begin(), ua.end(), out);
            std::copy(ub.begin(), ub.end(), ret_row(kv, h, map[s]));
            continue;
          }
          // SLERP(u_a, u_b, 1/2) = (u_a + u_b) / |u_a + u_b|; a zero vector on one side
          // (norm 0) leaves the other's direction.
          double n2 = 0;
          for (int d = 0; d < hd; ++d) n2 += static_cast<double>(ua[d] + ub[d]) * (ua[d] + ub[d]);
          const double inv = n2 > 1e-24 ? 1.0 / std::sqrt(n2) : 0.0;
          for (int d = 0; d < hd; ++d) out[d] = static_cast<float>((ua[d] + ub[d]) * inv);
        }
      }
    }
    if (quant_) {
      // Unused retention slots repeat the head's slot 0 (zeros when it has none), so that
      // they neither widen the per-channel key ranges nor cost a separate range.
      for (int kv = 0; kv < 2; ++kv) {
        for (int h = 0; h < nkv; ++h) {
          for (int r = kept[h]; r < retain_ && kept[h] > 0; ++r) {
            std::copy(ret_row(kv, h, 0), ret_row(kv, h, 0) + hd, ret_row(kv, h, r));
          }
        }
      }
      thread_local std::vector<uint16_t> st16;
      st16.resize(std::max(dir.size(), ret.size()));
      for (size_t i = 0; i < dir.size(); ++i) st16[i] = kernels::F32ToF16(dir[i]);
      kernels::KvQuantEncodeBlock(q_dir_, st16.data(), region + off_q_dir_, clip_);
      if (retain_ > 0) {
        for (size_t i = 0; i < ret.size(); ++i) st16[i] = kernels::F32ToF16(ret[i]);
        kernels::KvQuantEncodeBlock(q_ret_, st16.data(), region + off_q_ret_, clip_);
      }
    } else {
      for (int h = 0; h < nkv; ++h) {
        for (int kv = 0; kv < 2; ++kv) {
          for (int s = 0; s < bs; ++s) {
            auto* o = reinterpret_cast<uint16_t*>(region + Fp16Dir(h, kv, false, s));
            const float* x = dir_row(kv, h, s);
            for (int d = 0; d < hd; ++d) o[d] = kernels::F32ToF16(x[d]);
          }
          for (int r = 0; r < kept[h]; ++r) {
            auto* o = reinterpret_cast<uint16_t*>(region + Fp16Dir(h, kv, true, r));
            const float* x = ret_row(kv, h, r);
            for (int d = 0; d < hd; ++d) o[d] = kernels::F32ToF16(x[d]);
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
  bool quant_ = false, clip_ = true;
  kernels::KvQuantLayout q_dir_, q_ret_;  // with an inner codec: bs and retain_ tokens
  size_t dense_bytes_ = 0, pair_bytes_ = 0, head_bytes_ = 0, total_bytes_ = 0, layer_bytes_ = 0;
  size_t off_dir_k_ = 0, off_dir_v_ = 0, off_mag_ = 0, off_map_ = 0, off_ret_k_ = 0, off_ret_v_ = 0,
         off_q_dir_ = 0, off_q_ret_ = 0;
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
  std::vector<std::string> comps = absl::StrSplit(name, '+');
  auto fail = [&](const std::string& why) -> std::unique_ptr<KvCodec> {
    *error = absl::InvalidArgumentError(absl::StrCat("--kv-cache '", name, "': ", why));
    return nullptr;
  };
  int found = -1;
  for (size_t i = 0; i < comps.size(); ++i) {
    if (comps[i] == "minicache" || absl::StartsWith(comps[i], "minicache:")) {
      if (found >= 0) return fail("minicache twice");
      found = static_cast<int>(i);
    }
  }
  if (found < 0) return nullptr;  // not this family
  if (g.block_size > 255) return fail("minicache needs --kv-block-size <= 255");
  double threshold = 45;
  int retain = 25;
  const std::string own = comps[found];
  if (own.size() > 9) {
    for (absl::string_view opt : absl::StrSplit(own.substr(10), absl::ByAnyChar(":,"))) {
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
        return fail(absl::StrCat("unknown option '", opt, "' of minicache (tA, rP)"));
      }
    }
  }
  std::string canon = "minicache";
  if (threshold != 45 || retain != 25) {
    canon = absl::StrCat("minicache:t", threshold, ":r", retain);
  }
  comps.erase(comps.begin() + found);
  std::optional<InnerQuant> inner;
  if (!comps.empty()) {
    // The quant family parses and validates the inner codec's options (quant_inner.h).
    const std::string inner_name = absl::StrJoin(comps, "+");
    auto codec = MakeKvCodec(inner_name, g);
    if (!codec.ok()) {
      return fail(absl::StrCat("the codec of minicache's directions and rows ('", inner_name,
                               "') is invalid: ", codec.status().message()));
    }
    InnerQuant q;
    if (!QuantKvLayoutOf(**codec, &q.layout, &q.clip)) {
      return fail(absl::StrCat("minicache composes only with int8|int4|int2[:gN:kN:vN:noclip] ('",
                               inner_name, "' given; plain 'minicache' is fp16)"));
    }
    if (q.layout.rank > 0 || q.layout.outliers > 0) {
      return fail(absl::StrCat("minicache does not compose with GEAR ('", inner_name,
                               "'); use int8|int4|int2"));
    }
    inner = q;
    canon = absl::StrCat(canon, "+", (*codec)->name());
  }
  return std::make_unique<MiniCacheCodec>(g, threshold, retain, inner, canon);
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
bool MiniCacheAttendRef(const KvCodec& codec, int layer, const float* q,
                        const uint8_t* const* blocks, int n_ctx, float scale, float* out,
                        float* scratch, int head_begin, int head_end) {
  const auto* m = dynamic_cast<const MiniCacheCodec*>(&codec);
  if (m == nullptr) return false;
  m->AttendRef(layer, q, blocks, n_ctx, scale, out, scratch, head_begin, head_end);
  return true;
}

}  // namespace compressd

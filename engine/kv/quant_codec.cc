// KIVI-style quantized KV codec ("int8", "int4", "int2"): keys per channel over the block's
// tokens, values per token in groups of channels, fp16 staging for the block being filled.
//
// A block is encoded once, when full (Seal), from its fp16 staging buffer; until then its
// tokens are attended from that buffer (the full-precision recent window: between 1 and
// block_size tokens, i.e. --kv-residual-window = block size). Staging buffers live in the
// codec, one per (block, layer) being filled, and are recycled when the block is sealed; a
// block freed while partially filled keeps its buffer until that block id is filled again.
// BytesPerToken counts the encoded block only (the window is O(block) per sequence, not per
// token); the window's bytes are 2 * 2 * n_kv_heads * head_dim * block_size per layer per
// sequence.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "engine/core/logging.h"
#include "engine/kv/codecs.h"
#include "engine/kv/quant_demote.h"
#include "engine/kv/quant_inner.h"
#include "kernels/cpu_features.h"
#include "kernels/kv_quant.h"
#include "kernels/ops.h"
#include "kernels/types.h"

namespace compressd {
namespace {

class QuantKvCodec : public KvCodec {
 public:
  QuantKvCodec(const KvGeometry& g, const kernels::KvQuantLayout& l, bool clip, std::string name)
      : KvCodec(g), layout_(l), clip_(clip), name_(std::move(name)) {
    stage_elems_ = static_cast<size_t>(2) * g.n_kv_heads * g.block_size * g.head_dim;
    can_demote_ = DemotedLayoutOf(l, 2, &demoted_);
    // Layouts the AVX-512 mixed kernel takes (others keep the scalar path).
    mixed_avx512_ = can_demote_ && l.chunk() == 16 && l.head_dim <= 256 && l.rank == 0 &&
                    l.outliers == 0 && l.n_groups() <= 16 && demoted_.tokens <= 256 &&
                    demoted_.vg % 16 == 0 && demoted_.tokens % demoted_.tg == 0;
    if (mixed_avx512_) {
      dem_as_layout_ = l;
      dem_as_layout_.block_size = demoted_.tokens;
      dem_as_layout_.k_bits = demoted_.k_bits;
      dem_as_layout_.v_bits = demoted_.v_bits;
      dem_as_layout_.v_group = demoted_.vg;
    }
  }
  std::string name() const override { return name_; }
  size_t LayerBlockBytes() const override { return layout_.BlockBytes(); }
  bool NeedsSeal() const override { return true; }

  void Store(int, uint8_t* block, int slot, const float* k, const float* v) const override {
    if (slot == 0) std::memset(block, 0, kernels::kKvQuantHeader);  // not sealed
    uint16_t* st = Stage(block);
    const int hd = geo_.head_dim, bs = geo_.block_size;
    const size_t half = stage_elems_ / 2;
    for (int h = 0; h < geo_.n_kv_heads; ++h) {
      const size_t base = (static_cast<size_t>(h) * bs + slot) * hd;
      for (int d = 0; d < hd; ++d) {
        st[base + d] = kernels::F32ToF16(k[h * hd + d]);
        st[half + base + d] = kernels::F32ToF16(v[h * hd + d]);
      }
    }
  }

  void Seal(int, uint8_t* block) const override {
    std::unique_ptr<uint16_t[]> buf;
    {
      absl::MutexLock lock(&mu_);
      auto it = stage_.find(block);
      if (it == stage_.end()) return;
      buf = std::move(it->second);
      stage_.erase(it);
    }
    kernels::KvQuantEncodeBlock(layout_, buf.get(), block, clip_);
    absl::MutexLock lock(&mu_);
    free_.push_back(std::move(buf));
  }

  void Attend(int, const float* q, const uint8_t* const* blocks, int n_ctx, float scale,
              float* out, float* scratch, int head_begin, int head_end) const override {
    if (can_demote_) {
      // Demoted blocks (2 * block_size tokens each) can only precede the last block; a table
      // without any takes the kernel's fast path unchanged.
      const int bs = geo_.block_size;
      for (int i = 0, covered = 0; covered < n_ctx; ++i) {
        if (IsDemotedBlock(blocks[i])) {
          AttendMixed(q, blocks, n_ctx, scale, out, scratch, head_begin, head_end);
          return;
        }
        covered += bs;
      }
    }
    const uint8_t* last = blocks[(n_ctx - 1) / geo_.block_size];
    uint32_t state;
    std::memcpy(&state, last, 4);
    const uint16_t* tail = nullptr;
    if (state != kernels::kKvQuantSealed) {
      absl::ReaderMutexLock lock(&mu_);
      auto it = stage_.find(last);
      tail = it == stage_.end() ? nullptr : it->second.get();
      // Not sealed and no buffer: Store was never called for it (a runner bug).
      if (tail == nullptr) {
        for (int i = head_begin * geo_.head_dim; i < head_end * geo_.head_dim; ++i) out[i] = 0.0f;
        return;
      }
    }
    kernels::AttendKvQuant(layout_, geo_.n_heads, q, blocks, tail, n_ctx, scale, out, scratch,
                           head_begin, head_end);
  }

  const kernels::KvQuantLayout& layout() const { return layout_; }
  bool clip() const { return clip_; }

  bool CanDemote(int min_bits, std::string* from, std::string* to) const override {
    DemotedLayout d;
    if (!DemotedLayoutOf(layout_, min_bits, &d)) return false;
    auto label = [](int k, int v) {
      return k == v ? absl::StrCat("int", k) : absl::StrCat("k", k, "v", v);
    };
    if (from != nullptr) *from = label(layout_.k_bits, layout_.v_bits);
    if (to != nullptr) *to = label(d.k_bits, d.v_bits);
    return true;
  }

  void Demote(int, const uint8_t* a, const uint8_t* b, uint8_t* dst) const override {
    CHECK(can_demote_);
    const int bs = geo_.block_size, hd = geo_.head_dim, T = 2 * bs;
    const size_t n = static_cast<size_t>(geo_.n_kv_heads) * T * hd;
    std::vector<float> k(n), v(n);
    std::vector<uint8_t> enc(demoted_.BlockBytes());
    for (int h = 0; h < geo_.n_kv_heads; ++h) {
      const size_t off = static_cast<size_t>(h) * T * hd;
      DecodeBaseHead(layout_, a, h, bs, k.data() + off, v.data() + off);
      DecodeBaseHead(layout_, b, h, bs, k.data() + off + static_cast<size_t>(bs) * hd,
                     v.data() + off + static_cast<size_t>(bs) * hd);
    }
    EncodeDemotedBlock(demoted_, k.data(), v.data(), clip_, enc.data());
    std::memcpy(dst, enc.data(), enc.size());
  }

  // Decodes one token of a sealed or demoted block (tests and the mixed attention path).
  void DecodeToken(const uint8_t* block, int h, int slot, float* k, float* v) const {
    if (IsDemotedBlock(block)) {
      DecodeDemotedToken(demoted_, block, h, slot, k, v);
    } else {
      kernels::KvQuantDecodeToken(layout_, block, h, slot, k, v);
    }
  }

 private:
  // Attention over a table that holds demoted blocks. With AVX-512 (ActiveIsa) and a layout it
  // takes, kernels::AttendKvMixedAvx512: codes expanded in registers, online softmax per block.
  // Otherwise (and as the reference: COMPRESSD_CPU_ISA=scalar / SetIsaCap) per KV head, the
  // context's K and V are dequantized once into fp32 rows (sealed blocks with the kernels'
  // scalar decoder, demoted ones with DecodeDemotedHead, the unsealed last block from its fp16
  // staging), then each query head of the range takes a plain softmax over them.
  void AttendMixed(const float* q, const uint8_t* const* blocks, int n_ctx, float scale, float* out,
                   float* scratch, int head_begin, int head_end) const {
    const int bs = geo_.block_size, hd = geo_.head_dim;
    const int group = geo_.n_heads / geo_.n_kv_heads;
    thread_local std::vector<float> kr, vr;
    kr.resize(static_cast<size_t>(n_ctx) * hd);
    vr.resize(kr.size());
    // Where each block starts, and the staging of an unsealed last block.
    const uint16_t* tail = nullptr;
    int last = 0;
    for (int i = 0, covered = 0; covered < n_ctx; ++i) {
      last = i;
      covered += IsDemotedBlock(blocks[i]) ? 2 * bs : bs;
    }
    uint32_t state;
    std::memcpy(&state, blocks[last], 4);
    if (state != kernels::kKvQuantSealed) {
      absl::ReaderMutexLock lock(&mu_);
      auto it = stage_.find(blocks[last]);
      if (it == stage_.end()) {  // a runner bug, as in Attend
        for (int i = head_begin * hd; i < head_end * hd; ++i) out[i] = 0.0f;
        return;
      }
      tail = it->second.get();
    }
    if (mixed_avx512_ && kernels::ActiveIsa() == kernels::CpuIsa::kAvx512) {
      thread_local std::vector<uint8_t> dem;
      dem.resize(static_cast<size_t>(last) + 1);
      for (int i = 0; i <= last; ++i) dem[i] = IsDemotedBlock(blocks[i]) ? 1 : 0;
      kernels::AttendKvMixedAvx512(layout_, dem_as_layout_, demoted_.tg, geo_.n_heads, q, blocks,
                                   dem.data(), tail, n_ctx, scale, out, head_begin, head_end);
      return;
    }
    const size_t half = stage_elems_ / 2;
    for (int kvh = head_begin / group; kvh * group < head_end; ++kvh) {
      for (int i = 0, t = 0; t < n_ctx; ++i) {
        const bool demoted = IsDemotedBlock(blocks[i]);
        const int cnt = std::min(demoted ? 2 * bs : bs, n_ctx - t);
        float* kt = kr.data() + static_cast<size_t>(t) * hd;
        float* vt = vr.data() + static_cast<size_t>(t) * hd;
        if (i == last && tail != nullptr) {
          const size_t base = static_cast<size_t>(kvh) * bs * hd;
          for (size_t e = 0; e < static_cast<size_t>(cnt) * hd; ++e) {
            kt[e] = kernels::F16ToF32(tail[base + e]);
            vt[e] = kernels::F16ToF32(tail[half + base + e]);
          }
        } else if (demoted) {
          DecodeDemotedHead(demoted_, blocks[i], kvh, cnt, kt, vt);
        } else {
          DecodeBaseHead(layout_, blocks[i], kvh, cnt, kt, vt);
        }
        t += cnt;
      }
      const int h_end = std::min(head_end, (kvh + 1) * group);
      for (int h = std::max(head_begin, kvh * group); h < h_end; ++h) {
        const float* qh = q + static_cast<size_t>(h) * hd;
        // kernels::Dot / SoftmaxInPlace dispatch by CPU features (this file is built for the
        // baseline ISA).
        for (int t = 0; t < n_ctx; ++t) {
          scratch[t] = kernels::Dot(qh, kr.data() + static_cast<size_t>(t) * hd, hd) * scale;
        }
        kernels::SoftmaxInPlace(scratch, n_ctx);
        float* oh = out + static_cast<size_t>(h) * hd;
        for (int d = 0; d < hd; ++d) oh[d] = 0.0f;
        for (int t = 0; t < n_ctx; ++t) {
          const float p = scratch[t];
          const float* vt = vr.data() + static_cast<size_t>(t) * hd;
          for (int d = 0; d < hd; ++d) oh[d] += p * vt[d];
        }
      }
    }
  }

  uint16_t* Stage(const uint8_t* block) const {
    absl::MutexLock lock(&mu_);
    auto& slot = stage_[block];
    if (slot == nullptr) {
      if (!free_.empty()) {
        slot = std::move(free_.back());
        free_.pop_back();
      } else {
        slot = std::make_unique<uint16_t[]>(stage_elems_);
      }
    }
    return slot.get();
  }

  kernels::KvQuantLayout layout_;
  bool clip_;
  std::string name_;
  size_t stage_elems_ = 0;
  bool can_demote_ = false;
  bool mixed_avx512_ = false;
  DemotedLayout demoted_;
  kernels::KvQuantLayout dem_as_layout_;
  mutable absl::Mutex mu_;
  mutable absl::flat_hash_map<const uint8_t*, std::unique_ptr<uint16_t[]>> stage_;
  mutable std::vector<std::unique_ptr<uint16_t[]>> free_;
};

}  // namespace

namespace {

// Applies one '+'-component ("int4:g32", "gear:r1:o2%") to the layout. Returns false when the
// component is not of this family; sets *error when it is but an option is bad.
bool ApplyComponent(const std::string& full, const std::string& comp, const KvGeometry& g,
                    kernels::KvQuantLayout* l, bool* clip, bool* gear, absl::Status* error) {
  std::vector<std::string> parts = absl::StrSplit(comp, absl::ByAnyChar(":,"));
  int bits = 0;
  if (parts[0] == "int8") bits = 8;
  if (parts[0] == "int4") bits = 4;
  if (parts[0] == "int2") bits = 2;
  if (parts[0] == "gear") {
    *gear = true;
    // GEAR defaults (unless a base "intN" component or option says otherwise): rank 1 and
    // 2% of the block's entries as sparse outliers.
    l->rank = 1;
    l->outliers = std::max(1, g.block_size * g.head_dim / 50);
  } else if (bits == 0) {
    return false;
  } else {
    l->k_bits = l->v_bits = bits;
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    int v = 0;
    if (p == "noclip") {
      *clip = false;
      continue;
    }
    if (p.size() >= 2 && (p[0] == 'g' || p[0] == 'k' || p[0] == 'v' || p[0] == 'b' || p[0] == 'r')
        && absl::SimpleAtoi(p.substr(1), &v)) {
      if (p[0] == 'g') l->v_group = v;
      if (p[0] == 'k') l->k_bits = v;
      if (p[0] == 'v') l->v_bits = v;
      if (p[0] == 'b') l->k_bits = l->v_bits = v;
      if (p[0] == 'r') l->rank = v;
      continue;
    }
    if (p.size() >= 3 && p[0] == 'o' && p.back() == '%' &&
        absl::SimpleAtoi(p.substr(1, p.size() - 2), &v)) {
      l->outliers = g.block_size * g.head_dim * v / 100;
      continue;
    }
    if (p.size() >= 2 && p[0] == 'o' && absl::SimpleAtoi(p.substr(1), &v)) {
      l->outliers = v;
      continue;
    }
    *error = absl::InvalidArgumentError(absl::StrCat(
        "--kv-cache '", full, "': unknown option '", p, "' of '", parts[0],
        "' (gN value group, kN/vN/bN bits, rN rank, oN or oP% outliers, noclip)"));
    return true;
  }
  return true;
}

}  // namespace

std::unique_ptr<KvCodec> MakeQuantKvCodec(const std::string& name, const KvGeometry& g,
                                          absl::Status* error) {
  kernels::KvQuantLayout l;
  l.block_size = g.block_size;
  l.n_kv_heads = g.n_kv_heads;
  l.head_dim = g.head_dim;
  l.k_bits = l.v_bits = 2;  // "gear" alone: 2-bit base
  l.v_group = std::min(32, g.head_dim);
  bool clip = true, gear = false, any = false;
  std::vector<std::string> comps = absl::StrSplit(name, '+');
  std::vector<std::string> foreign;
  int n_int = 0, n_gear = 0;
  // Apply the base (intN) first so that gear options override its defaults, not vice versa.
  std::stable_sort(comps.begin(), comps.end(), [](const std::string& a, const std::string& b) {
    return absl::StartsWith(a, "int") && !absl::StartsWith(b, "int");
  });
  for (const std::string& c : comps) {
    bool is_gear = false;
    if (!ApplyComponent(name, c, g, &l, &clip, &is_gear, error)) {
      foreign.push_back(c);
      continue;
    }
    if (!error->ok()) return nullptr;
    any = true;
    (is_gear ? n_gear : n_int)++;
    gear = gear || is_gear;
  }
  if (!any) return nullptr;  // not this family
  if (!foreign.empty() || n_int > 1 || n_gear > 1) {
    *error = absl::InvalidArgumentError(absl::StrCat(
        "--kv-cache '", name, "': unsupported combination",
        foreign.empty() ? "" : absl::StrCat(" (unknown or not combinable here: '",
                                            absl::StrJoin(foreign, "', '"), "')"),
        "; quantized codecs combine as gear+intN"));
    return nullptr;
  }
  if (!l.Valid()) {
    *error = absl::InvalidArgumentError(absl::StrCat(
        "--kv-cache '", name, "': needs key/value bits in {2,4,8}, head_dim (", g.head_dim,
        ") a multiple of 8, a value group (", l.v_group, ") dividing head_dim and a multiple of ",
        l.chunk(), ", rank <= 8 and outliers <= block_size * head_dim"));
    return nullptr;
  }
  return std::make_unique<QuantKvCodec>(g, l, clip, name);
}

bool QuantKvDecodeToken(const KvCodec& codec, const uint8_t* block, int h, int slot, float* k,
                        float* v) {
  const auto* q = dynamic_cast<const QuantKvCodec*>(&codec);
  if (q == nullptr) return false;
  q->DecodeToken(block, h, slot, k, v);
  return true;
}

bool QuantKvLayoutOf(const KvCodec& codec, kernels::KvQuantLayout* layout, bool* clip_search) {
  const auto* q = dynamic_cast<const QuantKvCodec*>(&codec);
  if (q == nullptr) return false;
  *layout = q->layout();
  *clip_search = q->clip();
  return true;
}

}  // namespace compressd

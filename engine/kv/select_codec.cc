// Importance-aware KV codecs on token-selective blocks (kernels/kv_quant.h, KvSelectLayout):
//   "mikv" — MiKV-style mixed precision: in every block, the tokens that received the most
//            attention (plus attention sinks) keep hi_bits, the rest are kept at lo_bits
//            instead of being evicted.
//   "ems"  — EMS-style evict-then-merge: the most attended tokens are kept (fp16, or intN with
//            "ems+intN"), the others are evicted and merged into one slot per head per block
//            (importance-weighted average with a log-count logit bias).
// Both spend a budget of hi tokens per block over all KV heads together, split between heads
// by importance (head-wise budgets), so the block size in bytes is fixed and the block pool's
// accounting stays exact.
//
// Importance is measured, not guessed: a block is encoded only after the step that filled it
// has run its attention (SealAfterAttend), and while it is staged (fp16, the full-precision
// residual window) every query that reads it adds its softmax probabilities, over the whole
// context, to a per-token accumulator. The score of a token is its mean attention probability
// per observing query head (accumulated attention normalised by how many queries saw it, so
// early and late slots compare fairly). A block is therefore scored by the queries of its own
// tokens (local window) with probabilities normalised over the full context (global).
// Attention sinks: the first `sink` tokens of a sequence (block index 0 in Attend) are hi.
//
// Threads: as the KIVI codec (quant_codec.cc): staging buffers keyed by block pointer under a
// mutex; Attend accumulates into thread-local arrays and adds them under the mutex.
// Determinism: the calls that observe a block (the step's tokens x head ranges) finish in any
// order, and float sums depend on the order of their terms (with three or more calls). So each
// call's contribution is converted to fixed point (kAccScale = 2^44, truncated) and added as an
// integer: exact and order independent, so the scores, and with them which tokens stay hi and
// the sealed bytes, do not depend on thread timing (test: ScoresDoNotDependOnAttendOrder).
// They still depend on how the runner cuts a KV head's query heads between calls (the kernel
// sums a call's heads in float before it gets here), i.e. on the thread count, not on timing.
#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "engine/kv/codecs.h"
#include "kernels/kv_quant.h"
#include "kernels/types.h"

namespace compressd {
namespace {

// Fixed point of the accumulated attention: 2^-44 resolution (probabilities >= 2^-21 convert
// exactly, smaller ones lose less than 1e-13). A token's sum is at most the number of query
// heads that saw it (<= block_size x n_heads: 2^6 x 2^12 still fits 2^62).
constexpr double kAccScale = 0x1p44;

struct Stage {
  std::vector<uint16_t> kv;   // K [nkv][bs][hd] then V, fp16
  std::vector<int64_t> acc;   // accumulated attention probability [nkv][bs], fixed point
  std::vector<int32_t> obs;   // number of query heads that saw the token [nkv][bs]
  std::vector<uint8_t> sink;  // [bs]
};

class SelectKvCodec : public KvCodec {
 public:
  SelectKvCodec(const KvGeometry& g, const kernels::KvSelectLayout& l, bool head_wise, int sink,
                bool no_score, std::string name)
      : KvCodec(g),
        layout_(l),
        head_wise_(head_wise),
        sink_(sink),
        no_score_(no_score),
        name_(std::move(name)) {}
  std::string name() const override { return name_; }
  size_t LayerBlockBytes() const override { return layout_.BlockBytes(); }
  bool NeedsSeal() const override { return true; }
  bool SealAfterAttend() const override { return true; }
  size_t ScratchFloats(int n_ctx) const override {
    return kernels::KvSelectScratchFloats(layout_, n_ctx);
  }

  void Store(int, uint8_t* block, int slot, const float* k, const float* v) const override {
    if (slot == 0) std::memset(block, 0, kernels::kKvQuantHeader);  // not sealed
    Stage* st = GetStage(block, slot == 0);
    const int hd = geo_.head_dim, bs = geo_.block_size;
    const size_t half = st->kv.size() / 2;
    for (int h = 0; h < geo_.n_kv_heads; ++h) {
      const size_t base = (static_cast<size_t>(h) * bs + slot) * hd;
      for (int d = 0; d < hd; ++d) {
        st->kv[base + d] = kernels::F32ToF16(k[h * hd + d]);
        st->kv[half + base + d] = kernels::F32ToF16(v[h * hd + d]);
      }
    }
  }

  void Seal(int, uint8_t* block) const override {
    std::unique_ptr<Stage> st;
    {
      absl::MutexLock lock(&mu_);
      auto it = stage_.find(block);
      if (it == stage_.end()) return;
      st = std::move(it->second);
      stage_.erase(it);
    }
    std::vector<float> score(st->acc.size());
    for (size_t i = 0; i < score.size(); ++i) {
      score[i] = no_score_ ? 0.0f
                           : static_cast<float>(static_cast<double>(st->acc[i]) / kAccScale /
                                                std::max(1, st->obs[i]));
    }
    kernels::KvSelectEncodeBlock(layout_, st->kv.data(), score.data(), st->sink.data(), head_wise_,
                                 block);
    absl::MutexLock lock(&mu_);
    free_.push_back(std::move(st));
  }

  void Attend(int, const float* q, const uint8_t* const* blocks, int n_ctx, float scale, float* out,
              float* scratch, int head_begin, int head_end) const override {
    const int bs = geo_.block_size, nkv = geo_.n_kv_heads;
    const int nb = (n_ctx + bs - 1) / bs;
    thread_local std::vector<const uint16_t*> stages;
    thread_local std::vector<float*> accp;
    thread_local std::vector<Stage*> staged;
    thread_local std::vector<int> staged_index;
    thread_local std::vector<float> acc;
    stages.assign(nb, nullptr);
    accp.assign(nb, nullptr);
    staged.clear();
    staged_index.clear();
    {
      bool any = false;
      for (int b = 0; b < nb; ++b) {
        uint32_t state;
        std::memcpy(&state, blocks[b], 4);
        if (state != kernels::kKvQuantSealed) any = true;
      }
      if (any) {
        absl::ReaderMutexLock lock(&mu_);
        for (int b = 0; b < nb; ++b) {
          uint32_t state;
          std::memcpy(&state, blocks[b], 4);
          if (state == kernels::kKvQuantSealed) continue;
          auto it = stage_.find(blocks[b]);
          if (it == stage_.end()) {
            // Not sealed and never stored: a runner bug; attend to nothing.
            for (int i = head_begin * geo_.head_dim; i < head_end * geo_.head_dim; ++i) {
              out[i] = 0.0f;
            }
            return;
          }
          stages[b] = it->second->kv.data();
          staged.push_back(it->second.get());
          staged_index.push_back(b);
        }
      }
    }
    acc.assign(staged.size() * nkv * bs, 0.0f);
    for (size_t i = 0; i < staged.size(); ++i) accp[staged_index[i]] = acc.data() + i * nkv * bs;
    kernels::AttendKvSelect(layout_, geo_.n_heads, q, blocks, stages.data(), accp.data(), n_ctx,
                            scale, out, scratch, head_begin, head_end);
    if (staged.empty()) return;
    // This call's share, in fixed point (outside the lock): only the KV heads of its query
    // heads and the block's filled slots can be nonzero.
    const int group = geo_.n_heads / nkv;
    const int kv_begin = head_begin / group;
    const int kv_end = head_end > head_begin ? (head_end - 1) / group + 1 : kv_begin;
    thread_local std::vector<int64_t> fixed;
    fixed.resize(acc.size());
    for (size_t i = 0; i < staged.size(); ++i) {
      const int ntok = std::min(bs, n_ctx - staged_index[i] * bs);
      for (int kvh = kv_begin; kvh < kv_end; ++kvh) {
        const size_t row = (i * nkv + kvh) * bs;
        for (int t = 0; t < ntok; ++t) {
          fixed[row + t] = static_cast<int64_t>(static_cast<double>(acc[row + t]) * kAccScale);
        }
      }
    }
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < staged.size(); ++i) {
      Stage* st = staged[i];
      const int b = staged_index[i];
      const int ntok = std::min(bs, n_ctx - b * bs);
      for (int kvh = kv_begin; kvh < kv_end; ++kvh) {
        // Query heads of this call that belong to KV head kvh.
        const int n_q = std::min(head_end, (kvh + 1) * group) - std::max(head_begin, kvh * group);
        const size_t row = static_cast<size_t>(kvh) * bs;
        const int64_t* a = fixed.data() + i * nkv * bs + row;
        for (int t = 0; t < ntok; ++t) {
          st->obs[row + t] += n_q;
          st->acc[row + t] += a[t];
        }
      }
      if (b == 0) {
        for (int t = 0; t < std::min(sink_, ntok); ++t) st->sink[t] = 1;
      }
    }
  }

  const kernels::KvSelectLayout& layout() const { return layout_; }

 private:
  Stage* GetStage(const uint8_t* block, bool first_slot) const {
    absl::MutexLock lock(&mu_);
    auto& slot = stage_[block];
    const bool fresh = slot == nullptr;
    if (fresh) {
      if (!free_.empty()) {
        slot = std::move(free_.back());
        free_.pop_back();
      } else {
        slot = std::make_unique<Stage>();
        const size_t n = static_cast<size_t>(geo_.n_kv_heads) * geo_.block_size;
        slot->kv.resize(2 * n * geo_.head_dim);
        slot->acc.resize(n);
        slot->obs.resize(n);
        slot->sink.resize(geo_.block_size);
      }
    }
    // Scores start at zero for each fill of a block. Slot 0's Store may come after other
    // slots' Stores of the same step (threads), but always before any Attend that scores it.
    if (fresh || first_slot) {
      std::fill(slot->acc.begin(), slot->acc.end(), 0);
      std::fill(slot->obs.begin(), slot->obs.end(), 0);
      std::fill(slot->sink.begin(), slot->sink.end(), 0);
    }
    return slot.get();
  }

  kernels::KvSelectLayout layout_;
  bool head_wise_;
  int sink_;
  bool no_score_;
  std::string name_;
  mutable absl::Mutex mu_;
  mutable absl::flat_hash_map<const uint8_t*, std::unique_ptr<Stage>> stage_;
  mutable std::vector<std::unique_ptr<Stage>> free_;
};

absl::Status Bad(const std::string& full, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("--kv-cache '", full, "': ", what));
}

}  // namespace

std::unique_ptr<KvCodec> MakeSelectKvCodec(const std::string& name, const KvGeometry& g,
                                           absl::Status* error) {
  std::vector<std::string> comps = absl::StrSplit(name, '+');
  int family = 0;  // 1 mikv, 2 ems
  std::string opts_of;
  int base_bits = 0;
  std::vector<std::string> foreign, extra_opts;
  for (const std::string& c : comps) {
    std::vector<std::string> parts = absl::StrSplit(c, absl::ByAnyChar(":,"));
    if (parts[0] == "mikv" || parts[0] == "ems") {
      if (family != 0) {
        *error = Bad(name, "mikv and ems do not combine with each other");
        return nullptr;
      }
      family = parts[0] == "mikv" ? 1 : 2;
      opts_of = c;
    } else if (parts[0] == "int8" || parts[0] == "int4" || parts[0] == "int2") {
      // The precision of ems's kept tokens; options written here apply to the whole codec
      // ("ems+int4:f25" = "ems:f25+int4").
      base_bits = parts[0] == "int8" ? 8 : (parts[0] == "int4" ? 4 : 2);
      for (size_t i = 1; i < parts.size(); ++i) extra_opts.push_back(parts[i]);
    } else {
      foreign.push_back(c);
    }
  }
  if (family == 0) return nullptr;  // not this family
  if (!foreign.empty() || (family == 1 && base_bits != 0) || comps.size() > 2) {
    *error = Bad(
        name, absl::StrCat(
                  "unsupported combination",
                  foreign.empty() ? "" : absl::StrCat(" ('", absl::StrJoin(foreign, "', '"), "')"),
                  "; ems combines with int8/int4/int2 (the kept tokens' "
                  "precision); mikv takes hN/lN options instead"));
    return nullptr;
  }
  kernels::KvSelectLayout l;
  l.block_size = g.block_size;
  l.n_kv_heads = g.n_kv_heads;
  l.head_dim = g.head_dim;
  l.v_group = std::min(32, g.head_dim);
  int percent;
  if (family == 1) {
    l.hi_bits = 8;
    l.lo_bits = 2;
    percent = 20;
  } else {
    l.hi_bits = base_bits != 0 ? base_bits : 16;
    l.lo_bits = 0;
    l.merge = true;
    percent = 50;
  }
  bool head_wise = true, no_score = false;
  int sink = 4;
  std::vector<std::string> parts = absl::StrSplit(opts_of, absl::ByAnyChar(":,"));
  parts.insert(parts.end(), extra_opts.begin(), extra_opts.end());
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    int v = 0;
    if (p == "uniform") {
      head_wise = false;
    } else if (p == "noscore") {
      no_score = true;  // ablation: ignore attention, keep each head's earliest slots
    } else if (p == "nomerge" && family == 2) {
      l.merge = false;
    } else if (p.size() > 4 && p.compare(0, 4, "sink") == 0 && absl::SimpleAtoi(p.substr(4), &v) &&
               v >= 0) {
      sink = v;
    } else if (p.size() >= 2 && absl::SimpleAtoi(p.substr(1), &v) &&
               (p[0] == 'f' || p[0] == 'g' || (family == 1 && (p[0] == 'h' || p[0] == 'l')))) {
      if (p[0] == 'f') percent = v;
      if (p[0] == 'g') l.v_group = v;
      if (p[0] == 'h') l.hi_bits = v;
      if (p[0] == 'l') l.lo_bits = v;
    } else {
      *error = Bad(
          name,
          absl::StrCat("unknown option '", p, "' (",
                       family == 1 ? "hN hi bits, lN lo bits, " : "nomerge, ",
                       "fN percent of tokens kept hi, gN value group, sinkN, uniform, noscore)"));
      return nullptr;
    }
  }
  if (percent < 0 || percent > 100) {
    *error = Bad(name, "fN: percent of tokens in 0..100");
    return nullptr;
  }
  if (family == 1 && l.lo_bits == 0) {
    *error = Bad(name, "mikv keeps every token: lN must be 2, 4 or 8 (ems evicts)");
    return nullptr;
  }
  const int total = g.block_size * g.n_kv_heads;
  l.n_hi = std::clamp((total * percent + 50) / 100, 0, total);
  if (!l.Valid()) {
    *error = Bad(name, absl::StrCat("needs hi bits in {16,8,4,2}, lo bits in {2,4,8}, block "
                                    "size <= 64 (",
                                    g.block_size, "), head_dim a multiple of 8 (", g.head_dim,
                                    ") and a value group dividing it (", l.v_group, ")"));
    return nullptr;
  }
  return std::make_unique<SelectKvCodec>(g, l, head_wise, sink, no_score, name);
}

}  // namespace compressd

#include "engine/sched/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "kernels/ops.h"

namespace compressd {
namespace {

void LogSoftmax(const float* x, int32_t n, std::vector<float>* out) {
  out->resize(n);
  float mx = -std::numeric_limits<float>::infinity();
  for (int32_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double s = 0;
  for (int32_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i] - mx));
  const float lse = mx + static_cast<float>(std::log(s));
  for (int32_t i = 0; i < n; ++i) (*out)[i] = x[i] - lse;
}

std::vector<TokenLogprob> TopN(const std::vector<float>& lp, int n) {
  std::vector<int32_t> idx(lp.size());
  std::iota(idx.begin(), idx.end(), 0);
  n = std::min<int>(n, static_cast<int>(idx.size()));
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(),
                    [&](int32_t a, int32_t b) { return lp[a] > lp[b] || (lp[a] == lp[b] && a < b); });
  std::vector<TokenLogprob> out;
  for (int i = 0; i < n; ++i) out.push_back({idx[i], lp[idx[i]]});
  return out;
}

// --- Selection (KeptTokens) and drawing without sorting ------------------------------------
//
// Keys: a token's place in the order "most likely first, ties: lower id first" is given by its
// probability's bits (as an integer, a non-negative float orders like its value) then its id:
// key = (~bits << 32 | id), ascending.
//
// Exact sums: every float in [2^-29, 1] is a multiple of 2^-52, so sums of such floats below 2
// are exact in double, in any order. The reference's (and the draw's) running double sums, added
// in one order, can then be formed in any other (independent lanes, per-bucket sums) with
// bit-identical results. Every use checks the condition, and falls back to the definition (or
// to the reference) where it does not hold: a token below 2^-29 among those summed.
inline uint32_t BitsOf(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}
inline int32_t SBitsOf(float x) {
  int32_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}
inline uint64_t KeyOf(uint32_t bits, uint32_t id) {
  return (static_cast<uint64_t>(~bits) << 32) | id;
}
inline int32_t IdOf(uint64_t key) { return static_cast<int32_t>(static_cast<uint32_t>(key)); }

constexpr float kExactMin = 0x1p-29f;
constexpr uint32_t kExactLoBits = 0x31000000u;  // 2^-29
constexpr uint32_t kExactHiBits = 0x3F800000u;  // 1.0f
// 1 unless the float of these bits is 0 or in [2^-29, 1].
inline uint32_t Inexact(uint32_t bits) {
  return static_cast<uint32_t>(bits - kExactLoBits > kExactHiBits - kExactLoBits) &
         static_cast<uint32_t>(bits != 0);
}

// Whether every p[i] is 0 or in [2^-29, 1] (vectorised).
// Stops at the first 256-token block that fails (a peaked distribution's tail: early).
bool AllExact(const float* p, int32_t V) {
  for (int32_t b0 = 0; b0 < V; b0 += 256) {
    const int32_t b1 = std::min(V, b0 + 256);
    uint32_t bad = 0;
    for (int32_t i = b0; i < b1; ++i) bad += Inexact(BitsOf(p[i]));
    if (bad != 0) return false;
  }
  return true;
}

// Given the total t of weights w(0..n): u(0, t); the first j whose running double sum (in
// order) exceeds the draw (the last one if none does).
template <class W>
size_t DrawGivenTotal(size_t n, const W& w, std::mt19937_64& rng, double t) {
  std::uniform_real_distribution<double> u(0.0, t);
  const double x = u(rng);
  double c = 0;
  for (size_t j = 0; j < n; ++j) {
    c += w(j);
    if (x < c) return j;
  }
  return n - 1;
}

// The definition of a draw over weights w(0..n): their running double sum in order as the
// total, then DrawGivenTotal.
template <class W>
size_t DrawDefinition(size_t n, const W& w, std::mt19937_64& rng, double* total) {
  double t = 0;
  for (size_t j = 0; j < n; ++j) t += w(j);
  *total = t;
  return DrawGivenTotal(n, w, rng, t);
}

// DrawDefinition over listed weights, with the total summed in independent lanes when exact
// (then the running sums are the definition's too). known_total: the exact total if the caller
// has it (>= 0), else -1.
template <class W>
size_t DrawListed(size_t n, const W& w, std::mt19937_64& rng, double* total, double known_total) {
  double t = known_total;
  if (t < 0) {
    double s[4] = {0, 0, 0, 0};
    uint32_t inexact = 0;
    size_t j = 0;
    for (; j + 4 <= n; j += 4) {
      for (int l = 0; l < 4; ++l) {
        const float x = w(j + l);
        s[l] += x;
        inexact |= Inexact(BitsOf(x));
      }
    }
    for (; j < n; ++j) {
      s[0] += w(j);
      inexact |= Inexact(BitsOf(w(j)));
    }
    t = (s[0] + s[1]) + (s[2] + s[3]);
    if (inexact != 0 || !(t < 1.5)) return DrawDefinition(n, w, rng, total);
  }
  *total = t;
  return DrawGivenTotal(n, w, rng, t);
}

// The tokens a filter keeps: either listed (ids, ascending), or, when there are many, given by
// the last one kept in the key order: every token i whose probability bits (as int32) are > bb,
// or == bb with i <= ib; n of them. Sampling then need not list them. known_total: their
// probability sum when known exactly, else -1.
struct Kept {
  std::vector<int32_t> ids;
  bool by_key = false;
  int32_t bb = 0, ib = 0;
  size_t n = 0;
  double known_total = -1;
};
Kept KeptTokensImpl(const float* p, int32_t V, const SamplingParams& sp, float* pmax_out);

// -1 (all ones) if token i (probability bits `bits`) is kept, else 0. Branch-free: vectorises.
inline int32_t KeptMask(int32_t bits, int32_t i, int32_t bb, int32_t ib) {
  return -static_cast<int32_t>((bits > bb) | ((bits == bb) & (i <= ib)));
}

// Sum of the kept p[i], i in [b0, b1), in double: 8 independent lanes (vectorised).
double KeptSum(const float* p, int32_t b0, int32_t b1, int32_t bb, int32_t ib) {
  constexpr int kLanes = 8;
  double l[kLanes] = {};
  int32_t i = b0;
  for (; i + kLanes <= b1; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const int32_t bits = SBitsOf(p[i + j]);
      const int32_t kept_bits = bits & KeptMask(bits, i + j, bb, ib);  // 0.0f if not kept
      float v;
      std::memcpy(&v, &kept_bits, sizeof(v));
      l[j] += static_cast<double>(v);
    }
  }
  for (; i < b1; ++i) {
    if (KeptMask(SBitsOf(p[i]), i, bb, ib)) l[0] += p[i];
  }
  double s = 0;
  for (int j = 0; j < kLanes; ++j) s += l[j];
  return s;
}

// DrawDefinition over the kept tokens of p[0, V) in id order, for many kept tokens, without
// listing them: the total and 64-token block sums in independent lanes, then one block walked
// in order. Only when these sums are exact (exact_ok: every kept weight in [2^-29, 1]; and the
// total below 1.5): returns -1 otherwise, having drawn nothing. known_total as in DrawListed.
int32_t DrawKept(const float* p, int32_t V, int32_t bb, int32_t ib, bool exact_ok,
                 double known_total, std::mt19937_64& rng, double* total) {
  if (!exact_ok) return -1;
  constexpr int kBlock = 64;
  double t = known_total;
  if (t < 0) {
    t = 0;
    for (int32_t b0 = 0; b0 < V; b0 += kBlock) {
      t += KeptSum(p, b0, std::min(V, b0 + kBlock), bb, ib);
    }
    if (!(t < 1.5)) return -1;
  }
  *total = t;
  std::uniform_real_distribution<double> u(0.0, t);
  const double x = u(rng);
  double c = 0;
  for (int32_t b0 = 0; b0 < V; b0 += kBlock) {
    const int32_t b1 = std::min(V, b0 + kBlock);
    const double bs = KeptSum(p, b0, b1, bb, ib);
    if (x < c + bs) {
      for (int32_t i = b0; i < b1; ++i) {
        if (KeptMask(SBitsOf(p[i]), i, bb, ib)) {
          c += p[i];
          if (x < c) return i;
        }
      }
    }
    c += bs;
  }
  for (int32_t i = V - 1; i > 0; --i) {  // x == total (rounding): the last kept token
    if (KeptMask(SBitsOf(p[i]), i, bb, ib)) return i;
  }
  return 0;
}

// Ascending ids of the kept tokens (KeptMask; n of them, for a probability vector).
std::vector<int32_t> IdsUpTo(const float* p, int32_t V, int32_t bb, int32_t ib, size_t n) {
  if (n * 16 < static_cast<size_t>(V)) {  // few: a rarely taken branch
    std::vector<int32_t> kept;
    kept.reserve(n);
    for (int32_t i = 0; i < V; ++i) {
      if (KeptMask(SBitsOf(p[i]), i, bb, ib)) kept.push_back(i);
    }
    return kept;
  }
  // Many: branch-free compaction (one slot of slack at the end).
  thread_local std::vector<int32_t> buf;
  buf.resize(static_cast<size_t>(V) + 1);
  int32_t* out = buf.data();
  size_t w = 0;
  for (int32_t i = 0; i < V; ++i) {
    out[w] = i;
    w += KeptMask(SBitsOf(p[i]), i, bb, ib) & 1;
  }
  return std::vector<int32_t>(out, out + w);
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p, int32_t vocab) {
  auto bad = [](const char* field, double v, const char* range) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sampling.%s = %g is out of range; allowed %s", field, v, range));
  };
  if (!std::isfinite(p.temperature) || p.temperature < 0 || p.temperature > 100)
    return bad("temperature", p.temperature, "[0, 100]");
  if (p.top_k < 0 || p.top_k > vocab)
    return bad("top_k", p.top_k, absl::StrFormat("[0, %d]", vocab).c_str());
  if (!std::isfinite(p.top_p) || p.top_p < 0 || p.top_p > 1) return bad("top_p", p.top_p, "[0, 1]");
  if (!std::isfinite(p.min_p) || p.min_p < 0 || p.min_p > 1) return bad("min_p", p.min_p, "[0, 1]");
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty < 0 ||
      p.repetition_penalty > 10)
    return bad("repetition_penalty", p.repetition_penalty, "[0, 10]");
  if (!std::isfinite(p.presence_penalty) || std::fabs(p.presence_penalty) > 2)
    return bad("presence_penalty", p.presence_penalty, "[-2, 2]");
  if (!std::isfinite(p.frequency_penalty) || std::fabs(p.frequency_penalty) > 2)
    return bad("frequency_penalty", p.frequency_penalty, "[-2, 2]");
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params, uint64_t seed) : p_(params), rng_(seed) {}

SampleResult Sampler::Sample(float* logits, int32_t V, const std::vector<int32_t>& context,
                             const absl::flat_hash_map<int32_t, int32_t>& counts, int top_n) {
  // Penalties (repetition as in CTRL/HF over the whole context; presence/frequency as in
  // OpenAI over generated tokens).
  if (p_.repetition_penalty > 0 && p_.repetition_penalty != 1.0f) {
    absl::flat_hash_set<int32_t> seen(context.begin(), context.end());
    for (int32_t t : seen) {
      if (t < 0 || t >= V) continue;
      logits[t] = logits[t] > 0 ? logits[t] / p_.repetition_penalty
                                : logits[t] * p_.repetition_penalty;
    }
  }
  if (p_.presence_penalty != 0 || p_.frequency_penalty != 0) {
    for (const auto& [t, n] : counts) {
      if (t < 0 || t >= V) continue;
      logits[t] -= p_.presence_penalty + p_.frequency_penalty * static_cast<float>(n);
    }
  }
  SampleResult r;
  std::vector<float> lp;
  if (top_n >= 0) {
    LogSoftmax(logits, V, &lp);
    if (top_n > 0) r.top = TopN(lp, top_n);
  }
  if (p_.temperature <= 0.0f) {
    int32_t best = 0;
    for (int32_t i = 1; i < V; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    r.token = best;
    r.logprob = lp.empty() ? 0.0f : lp[best];
    return r;
  }
  // Probabilities with temperature over the whole vocabulary: one vectorised softmax (the
  // engine samples every running sequence each step, so this is paid batch-size times).
  thread_local std::vector<float> prob;
  prob.resize(V);
  const float inv_t = 1.0f / p_.temperature;
  for (int32_t i = 0; i < V; ++i) prob[i] = logits[i] * inv_t;
  kernels::SoftmaxInPlace(prob.data(), V);
  const bool filtered = (p_.top_k > 0 && p_.top_k < V) || (p_.top_p > 0 && p_.top_p < 1) ||
                        p_.min_p > 0;
  const float* pr = prob.data();
  double total = 0;
  int32_t chosen = -1;
  if (!filtered) {
    // Every token: bits > -1 holds for every non-negative float.
    chosen = DrawKept(pr, V, -1, 0, AllExact(pr, V), -1, rng_, &total);
    if (chosen < 0) {
      chosen = static_cast<int32_t>(DrawDefinition(
          static_cast<size_t>(V), [pr](size_t j) { return pr[j]; }, rng_, &total));
    }
  } else {
    float pmax;
    Kept kept = KeptTokensImpl(pr, V, p_, &pmax);
    if (kept.by_key) {
      // Every kept probability is >= the one of bits bb.
      const bool exact_ok = kept.bb >= SBitsOf(kExactMin) && pmax <= 1.0f;
      chosen = DrawKept(pr, V, kept.bb, kept.ib, exact_ok, kept.known_total, rng_, &total);
      if (chosen < 0) kept.ids = IdsUpTo(pr, V, kept.bb, kept.ib, kept.n);
    }
    if (chosen < 0) {
      const int32_t* ids = kept.ids.data();
      chosen = kept.ids[DrawListed(
          kept.ids.size(), [pr, ids](size_t j) { return pr[ids[j]]; }, rng_, &total,
          kept.known_total)];
    }
  }
  r.token = chosen;
  r.logprob = static_cast<float>(std::log(prob[chosen] / total));
  return r;
}

namespace {

// Applies top-k, then min-p, then top-p to `sorted` (most likely first) in place.
void Truncate(const float* p, int32_t V, const SamplingParams& sp, std::vector<int32_t>* sorted) {
  const size_t k = (sp.top_k > 0 && sp.top_k < V) ? static_cast<size_t>(sp.top_k) : sorted->size();
  size_t keep = std::min(k, sorted->size());
  if (sp.min_p > 0) {
    const float cut = sp.min_p * p[(*sorted)[0]];
    while (keep > 1 && p[(*sorted)[keep - 1]] < cut) --keep;
  }
  if (sp.top_p > 0 && sp.top_p < 1) {
    double c = 0;
    for (size_t i = 0; i < keep; ++i) {
      c += p[(*sorted)[i]];
      if (c >= sp.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  sorted->resize(keep);
}

}  // namespace

std::vector<int32_t> KeptTokensRef(const float* p, int32_t V, const SamplingParams& sp) {
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(),
            [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
  Truncate(p, V, sp, &idx);
  std::sort(idx.begin(), idx.end());
  return idx;
}

namespace {

// The largest p[i] (at least 0, NaN ignored), as the float maximum; on the bits (as int32 a
// non-negative float orders like its value), so that it vectorises.
float MaxOf(const float* p, int32_t V) {
  constexpr int kLanes = 16;
  constexpr int32_t kInf = 0x7F800000;
  int32_t m[kLanes] = {};
  auto lane = [](int32_t bits) { return bits > kInf ? 0 : bits; };  // NaN -> 0
  int32_t i = 0;
  for (; i + kLanes <= V; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) m[j] = std::max(m[j], lane(SBitsOf(p[i + j])));
  }
  int32_t r = 0;
  for (int j = 0; j < kLanes; ++j) r = std::max(r, m[j]);
  for (; i < V; ++i) r = std::max(r, lane(SBitsOf(p[i])));
  float f;
  std::memcpy(&f, &r, sizeof(f));
  return f;
}

// Histogram of the distance below the most likely token, d = bits(pmax) - bits(p): bucket
// d >> kShift (1/64 of an octave wide); the last bucket holds everything 32 octaves or more
// below pmax (and zeros).
constexpr int kShift = 17;
constexpr uint32_t kBuckets = 2048;
inline uint32_t BucketOf(uint32_t top, uint32_t bits) {
  return std::min((top - bits) >> kShift, kBuckets - 1);
}

struct Hist {
  uint32_t cnt[kBuckets];
  double mass[kBuckets];  // exact while every term is in [2^-29, 1] (and sums below 2)
};

template <bool kCount, bool kMass>
void BuildHist(const float* p, int32_t V, uint32_t top, Hist* h) {
  uint32_t* cnt = h->cnt;
  double* mass = h->mass;
  for (int32_t i = 0; i < V; ++i) {
    const float x = p[i];
    const uint32_t b = BucketOf(top, BitsOf(x));
    if (kCount) ++cnt[b];
    if (kMass) mass[b] += x;
  }
}

// Buckets [b_lo, b_hi] as a test on a token's bits: ((top - bits) >> kShift) - b_lo <= span
// (unsigned; the last bucket takes everything beyond).
struct BucketRange {
  uint32_t top, b_lo, span;
  BucketRange(uint32_t t, uint32_t lo, uint32_t hi)
      : top(t), b_lo(lo), span(hi == kBuckets - 1 ? ~uint32_t{0} - lo : hi - lo) {}
  bool In(uint32_t bits) const { return ((top - bits) >> kShift) - b_lo <= span; }
};

// Appends to keys the tokens of the range, 16 tokens tested at a time (vectorised), so that the
// rare hits cost the scan little.
void GatherBuckets(const float* p, int32_t V, const BucketRange& r, std::vector<uint64_t>* keys) {
  constexpr int kChunk = 16;
  int32_t i = 0;
  for (; i + kChunk <= V; i += kChunk) {
#if defined(__GNUC__)  // GCC and Clang vector extensions (SSE2 / NEON or plain code)
    typedef uint32_t U4 __attribute__((vector_size(16)));
    U4 any4 = {0, 0, 0, 0};
    for (int j = 0; j < kChunk; j += 4) {
      U4 bits;
      std::memcpy(&bits, p + i + j, sizeof(bits));
      const U4 sel = ((r.top - bits) >> kShift) - r.b_lo;
      any4 |= reinterpret_cast<U4>(sel <= r.span);
    }
    const uint32_t any = any4[0] | any4[1] | any4[2] | any4[3];
#else
    uint32_t any = 0;
    for (int j = 0; j < kChunk; ++j) any |= r.In(BitsOf(p[i + j]));
#endif
    if (any == 0) continue;
    for (int j = 0; j < kChunk; ++j) {
      const uint32_t bits = BitsOf(p[i + j]);
      if (r.In(bits)) keys->push_back(KeyOf(bits, static_cast<uint32_t>(i + j)));
    }
  }
  for (; i < V; ++i) {
    const uint32_t bits = BitsOf(p[i]);
    if (r.In(bits)) keys->push_back(KeyOf(bits, static_cast<uint32_t>(i)));
  }
}

// How many tokens lie in the range (vectorised).
size_t CountBuckets(const float* p, int32_t V, const BucketRange& r) {
  uint32_t n = 0;
  for (int32_t i = 0; i < V; ++i) n += r.In(BitsOf(p[i]));
  return n;
}

// The reference's truncation over the whole vocabulary sorted by key (the reference's order;
// integer keys stay a total order whatever the input holds, NaN included).
std::vector<int32_t> KeptBySort(const float* p, int32_t V, const SamplingParams& sp) {
  std::vector<uint64_t> keys(V);
  for (int32_t i = 0; i < V; ++i) keys[i] = KeyOf(BitsOf(p[i]), static_cast<uint32_t>(i));
  std::sort(keys.begin(), keys.end());
  size_t keep = (sp.top_k > 0 && sp.top_k < V) ? static_cast<size_t>(sp.top_k) : keys.size();
  if (sp.min_p > 0) {
    const float cut = sp.min_p * p[IdOf(keys[0])];
    while (keep > 1 && p[IdOf(keys[keep - 1])] < cut) --keep;
  }
  if (sp.top_p > 0 && sp.top_p < 1) {
    double c = 0;
    for (size_t i = 0; i < keep; ++i) {
      c += p[IdOf(keys[i])];
      if (c >= sp.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  std::vector<int32_t> ids(keep);
  for (size_t i = 0; i < keep; ++i) ids[i] = IdOf(keys[i]);
  std::sort(ids.begin(), ids.end());
  return ids;
}

Kept Listed(std::vector<int32_t> ids, double known_total = -1) {
  Kept k;
  k.ids = std::move(ids);
  k.known_total = known_total;
  return k;
}

Kept KeptTokensImpl(const float* p, int32_t V, const SamplingParams& sp, float* pmax_out) {
  // Every filter keeps a prefix of the order "most likely first, ties: lower id first": top-k
  // the first k, min-p those >= min_p * pmax, top-p the shortest prefix whose running double
  // sum (in that order) reaches top_p. So the answer is one boundary key, the tokens whose key
  // is at most it, found without sorting the vocabulary:
  //  - few candidates (peaked): the tokens >= tau (the min-p cut, else pmax / 64) are a prefix
  //    of the order; sort just them and truncate as the reference does, if the boundary
  //    provably falls inside them;
  //  - min-p alone: the tokens >= the cut, if no more than k;
  //  - otherwise (flat): one pass builds a histogram of the keys' top bits (2048 buckets of
  //    1/64 octave below pmax, with each bucket's count for top-k/min-p, and its mass for
  //    top-p); the bucket holding the boundary follows from the cumulative counts and masses,
  //    and only that bucket is sorted and walked (with the tokens above it, when few). With a
  //    limit of at most 2048 tokens (top-k), no masses: the tokens down to the limit-th are
  //    walked with the reference's own running sum.
  // Then sampling draws over the kept tokens in id order without listing them (DrawKept).
  // (Before, nth_element over every candidate, a bisection with nth_element over halving
  // ranges for top-p, and double sums in one dependent chain cost ~0.5-1 ms per token at
  // V = 49k on a flat distribution: every token is a candidate there.)
  *pmax_out = 0;
  if (V <= 0) return Kept();
  const float pmax = MaxOf(p, V);
  *pmax_out = pmax;
  const size_t k = (sp.top_k > 0 && sp.top_k < V) ? static_cast<size_t>(sp.top_k) : V;
  const bool min_p = sp.min_p > 0;
  const float min_p_cut = min_p ? sp.min_p * pmax : 0.0f;
  const bool top_p = sp.top_p > 0 && sp.top_p < 1;
  if (!top_p && !min_p && k == static_cast<size_t>(V)) {  // no filter: every token
    std::vector<int32_t> ids(V);
    std::iota(ids.begin(), ids.end(), 0);
    return Listed(std::move(ids));
  }
  thread_local std::vector<uint64_t> keys;  // scratch: reused

  // Few candidates: sort them, truncate exactly as the reference does. (Top-k alone with a
  // larger k rarely has k candidates this close to pmax: straight to the histogram.)
  if (top_p || min_p || k <= 16) {
    constexpr size_t kFew = 1024;
    const float tau = min_p ? min_p_cut : pmax / 64;
    keys.clear();
    keys.reserve(kFew);
    bool few = true;
    // 16 tokens tested at a time on their bits (vectorised; a superset: NaN passes it), then
    // the rare hits one by one.
    const uint32_t tau_bits = BitsOf(tau);
    auto take = [&](int32_t i) {
      if (!(p[i] >= tau)) return true;
      if (keys.size() == kFew) return false;
      keys.push_back(KeyOf(BitsOf(p[i]), static_cast<uint32_t>(i)));
      return true;
    };
    int32_t i = 0;
    for (; few && i + 16 <= V; i += 16) {
#if defined(__GNUC__)
      typedef uint32_t U4 __attribute__((vector_size(16)));
      U4 any4 = {0, 0, 0, 0};
      for (int j = 0; j < 16; j += 4) {
        U4 bits;
        std::memcpy(&bits, p + i + j, sizeof(bits));
        any4 |= reinterpret_cast<U4>(bits >= tau_bits);
      }
      if ((any4[0] | any4[1] | any4[2] | any4[3]) == 0) continue;
#endif
      for (int j = 0; few && j < 16; ++j) few = take(i + j);
    }
    for (; few && i < V; ++i) few = take(i);
    if (few) {
      std::sort(keys.begin(), keys.end());
      const size_t n = keys.size();
      // Position limit: top-k, then min-p (with tau the min-p cut, the candidates are exactly
      // the tokens that pass it, and the most likely one always does).
      const size_t limit = min_p ? std::max<size_t>(1, std::min(k, n)) : k;
      const size_t end = std::min(limit, n);
      size_t keep = 0;
      if (top_p) {
        double c = 0;
        for (size_t i = 0; i < end; ++i) {
          c += p[IdOf(keys[i])];
          if (c >= sp.top_p) {
            keep = i + 1;
            break;
          }
        }
      }
      if (keep == 0 && (limit <= n || n == static_cast<size_t>(V))) keep = end;
      if (keep > 0) {
        std::vector<int32_t> ids(keep);
        for (size_t i = 0; i < keep; ++i) ids[i] = IdOf(keys[i]);
        std::sort(ids.begin(), ids.end());
        return Listed(std::move(ids));
      }
      // The prefix runs past the candidates: select over the whole vocabulary.
    }
  }

  // Top-k, then min-p: the first `limit` tokens (min-p keeps at least the most likely one).
  size_t limit = k;
  if (min_p) {
    uint32_t n = 0;
    for (int32_t i = 0; i < V; ++i) n += p[i] >= min_p_cut;
    if (!top_p && n <= k) {  // min-p decides: the tokens >= the cut
      Kept r;
      r.by_key = true;
      r.bb = SBitsOf(min_p_cut);
      r.ib = std::numeric_limits<int32_t>::max();
      r.n = n;
      return r;
    }
    limit = std::max<size_t>(1, std::min<size_t>(k, n));
  }

  const uint32_t top = BitsOf(pmax);
  const bool count = limit < static_cast<size_t>(V);
  // A small limit: every token down to the limit-th's bucket is gathered and walked in order
  // with the reference's own running sum, so top-p needs no bucket masses.
  const bool by_count = count && limit <= 2048;
  const bool masses = top_p && !by_count;
  thread_local Hist hist;
  if (count) std::memset(hist.cnt, 0, sizeof(hist.cnt));
  if (masses) std::memset(hist.mass, 0, sizeof(hist.mass));
  if (count && masses) {
    BuildHist<true, true>(p, V, top, &hist);
  } else if (count) {
    BuildHist<true, false>(p, V, top, &hist);
  } else {
    BuildHist<false, true>(p, V, top, &hist);
  }
  // The bucket holding the boundary: the limit-th token, or the first to reach top_p. Ref:
  // c >= top_p with c the running double sum; here the same sums, formed bucket by bucket
  // (exact: checked below).
  size_t before = 0;  // tokens in the buckets above (when counted)
  double mass = 0;    // their mass
  uint32_t b = 0;
  for (;; ++b) {
    if ((count && before + hist.cnt[b] >= limit) || (masses && mass + hist.mass[b] >= sp.top_p) ||
        b == kBuckets - 1) {
      break;
    }
    if (count) before += hist.cnt[b];
    if (masses) mass += hist.mass[b];
  }
  if (!count) before = b == 0 ? 0 : CountBuckets(p, V, BucketRange(top, 0, b - 1));
  // Few above the boundary bucket: gather them with it and list the kept; many: gather the
  // bucket only and describe the kept by the boundary key.
  const bool list = before <= 4096;
  keys.clear();
  GatherBuckets(p, V, BucketRange(top, list ? 0 : b, b), &keys);
  if (keys.empty()) return Listed(KeptBySort(p, V, sp));  // inconsistent input (NaN)
  std::sort(keys.begin(), keys.end());
  size_t pos = list ? 0 : before;
  if (list) mass = 0;
  size_t j_end = keys.size();  // keys[0, j_end) are kept
  for (size_t j = 0; j < keys.size(); ++j) {
    ++pos;
    if (top_p) mass += p[IdOf(keys[j])];
    if (pos == limit || (top_p && mass >= sp.top_p)) {
      j_end = j + 1;
      break;
    }
  }
  // The sums are the reference's if every term is in [2^-29, 1]: the boundary token is the
  // smallest of them. (A bucket sum may be rounded only when its bucket holds a token below
  // 2^-29, so below the boundary when that holds; the crossing is then found in the bucket
  // walk, from exact sums.)
  const uint64_t last = keys[j_end - 1];
  const bool exact_sums = p[IdOf(last)] >= kExactMin && pmax <= 1.0f;
  if (!top_p || by_count || exact_sums) {
    // The kept tokens' total, in any order, if exact (by_count: the reference's sum in its
    // order, exact or not: the draw sums in id order).
    const double known = top_p && exact_sums ? mass : -1;
    if (list) {
      std::vector<int32_t> ids(j_end);
      for (size_t j = 0; j < j_end; ++j) ids[j] = IdOf(keys[j]);
      std::sort(ids.begin(), ids.end());
      return Listed(std::move(ids), known);
    }
    Kept r;
    r.by_key = true;
    r.bb = SBitsOf(p[IdOf(last)]);
    r.ib = IdOf(last);
    r.n = pos;
    r.known_total = known;
    return r;
  }
  // Rare (top_p within ~1e-4 of 1 on a peaked distribution, or not a probability vector): sort
  // everything, as the reference does.
  return Listed(KeptBySort(p, V, sp));
}

}  // namespace

std::vector<int32_t> KeptTokens(const float* p, int32_t V, const SamplingParams& sp) {
  float pmax;
  Kept r = KeptTokensImpl(p, V, sp, &pmax);
  return r.by_key ? IdsUpTo(p, V, r.bb, r.ib, r.n) : std::move(r.ids);
}

}  // namespace compressd

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
  if (!filtered) {
    double sum = 0;
    for (int32_t i = 0; i < V; ++i) sum += prob[i];
    std::uniform_real_distribution<double> u(0.0, sum);
    const double x = u(rng_);
    double c = 0;
    int32_t chosen = V - 1;
    for (int32_t i = 0; i < V; ++i) {
      c += prob[i];
      if (x < c) {
        chosen = i;
        break;
      }
    }
    r.token = chosen;
    r.logprob = static_cast<float>(std::log(prob[chosen] / sum));
    return r;
  }
  const std::vector<int32_t> kept = KeptTokens(prob.data(), V, p_);
  double total = 0;
  for (int32_t t : kept) total += prob[t];
  std::uniform_real_distribution<double> u(0.0, total);
  const double x = u(rng_);
  double c = 0;
  int32_t chosen = kept.back();
  for (int32_t t : kept) {
    c += prob[t];
    if (x < c) {
      chosen = t;
      break;
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

std::vector<int32_t> KeptTokens(const float* p, int32_t V, const SamplingParams& sp) {
  // Sort only the candidates with p >= tau. They are a prefix of the full order (every token
  // at or above tau is in, every other below it), so the truncation gives the reference's
  // answer once the kept prefix provably ends inside them: top-k is covered when there are
  // >= k candidates, min-p when tau is at most its cut, top-p when the candidates' mass
  // reaches top_p. Otherwise tau drops 64x (to 0 at the end: all tokens).
  float pmax = 0;
  for (int32_t i = 0; i < V; ++i) pmax = std::max(pmax, p[i]);
  const size_t k = (sp.top_k > 0 && sp.top_k < V) ? static_cast<size_t>(sp.top_k) : V;
  const float min_p_cut = sp.min_p > 0 ? sp.min_p * pmax : 0.0f;
  const bool top_p = sp.top_p > 0 && sp.top_p < 1;
  float tau = sp.min_p > 0 ? min_p_cut : pmax / 64;
  // Candidates as one integer key each, (probability descending, id ascending): the bits of
  // a non-negative float order like its value, so a plain integer sort (no indirect compare
  // through p[]) gives the reference's order.
  thread_local std::vector<uint64_t> keys;  // scratch: up to the vocabulary, reused
  for (;;) {
    keys.clear();
    double mass = 0;
    for (int32_t i = 0; i < V; ++i) {
      if (p[i] >= tau) {
        uint32_t bits;
        std::memcpy(&bits, &p[i], sizeof(bits));
        keys.push_back((static_cast<uint64_t>(~bits) << 32) | static_cast<uint32_t>(i));
        mass += p[i];
      }
    }
    const bool covered = keys.size() >= k || keys.size() == static_cast<size_t>(V) ||
                         (sp.min_p > 0 && tau <= min_p_cut) || (top_p && mass >= sp.top_p) ||
                         tau <= 0;
    if (covered) break;
    tau = tau > 1e-30f ? tau / 64 : 0.0f;
  }
  // The keys are a prefix of the full order; each filter keeps a shorter prefix. None needs
  // the prefix sorted, only selected: O(candidates) even when the distribution is flat.
  auto prob_of = [&](uint64_t key) { return p[static_cast<uint32_t>(key)]; };
  if (keys.size() > k) {
    std::nth_element(keys.begin(), keys.begin() + static_cast<ptrdiff_t>(k), keys.end());
    keys.resize(k);
  }
  if (sp.min_p > 0) {  // the most likely token always passes (min_p <= 1)
    keys.erase(std::remove_if(keys.begin(), keys.end(),
                              [&](uint64_t key) { return prob_of(key) < min_p_cut; }),
               keys.end());
  }
  if (top_p) {
    // Shortest prefix whose mass reaches top_p: halve the range holding the crossing with
    // nth_element until it is small, then sort just that range and walk it.
    size_t lo = 0, hi = keys.size();
    double before = 0;  // mass of keys[0, lo)
    while (hi - lo > 256) {
      const size_t mid = lo + (hi - lo) / 2;
      std::nth_element(keys.begin() + static_cast<ptrdiff_t>(lo),
                       keys.begin() + static_cast<ptrdiff_t>(mid),
                       keys.begin() + static_cast<ptrdiff_t>(hi));
      double m = 0;
      for (size_t i = lo; i < mid; ++i) m += prob_of(keys[i]);
      if (before + m >= sp.top_p) {
        hi = mid;
      } else {
        before += m;
        lo = mid;
      }
    }
    std::sort(keys.begin() + static_cast<ptrdiff_t>(lo), keys.begin() + static_cast<ptrdiff_t>(hi));
    size_t keep = hi;
    for (size_t i = lo; i < hi; ++i) {
      before += prob_of(keys[i]);
      if (before >= sp.top_p) {
        keep = i + 1;
        break;
      }
    }
    keys.resize(keep);
  }
  // Ascending ids by marking (sorting up to the whole vocabulary again would cost more).
  thread_local std::vector<uint8_t> in;
  in.assign(V, 0);
  for (uint64_t key : keys) in[static_cast<uint32_t>(key)] = 1;
  std::vector<int32_t> kept;
  kept.reserve(keys.size());
  for (int32_t i = 0; i < V; ++i) {
    if (in[i]) kept.push_back(i);
  }
  return kept;
}

}  // namespace compressd

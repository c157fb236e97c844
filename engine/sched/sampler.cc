#include "engine/sched/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"

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
  // Probabilities with temperature over the whole vocabulary (O(V)); the filters below
  // only need the head of the distribution, so sort just enough of it.
  const double inv_t = 1.0 / p_.temperature;
  float mx = logits[0];
  for (int32_t i = 1; i < V; ++i) mx = std::max(mx, logits[i]);
  std::vector<double> full(V);
  double sum = 0;
  for (int32_t i = 0; i < V; ++i) {
    full[i] = std::exp((logits[i] - mx) * inv_t);
    sum += full[i];
  }
  const int32_t k = (p_.top_k > 0 && p_.top_k < V) ? p_.top_k : V;
  const bool filtered = k < V || (p_.top_p > 0 && p_.top_p < 1) || p_.min_p > 0;
  std::vector<int32_t> idx;
  std::vector<double> prob;
  if (!filtered) {
    std::uniform_real_distribution<double> u(0.0, sum);
    const double x = u(rng_);
    double c = 0;
    int32_t chosen = V - 1;
    for (int32_t i = 0; i < V; ++i) {
      c += full[i];
      if (x < c) {
        chosen = i;
        break;
      }
    }
    r.token = chosen;
    r.logprob = static_cast<float>(std::log(full[chosen] / sum));
    return r;
  }
  auto cmp = [&](int32_t a, int32_t b) {
    return full[a] > full[b] || (full[a] == full[b] && a < b);
  };
  idx.resize(V);
  std::iota(idx.begin(), idx.end(), 0);
  int32_t head = std::min<int32_t>(k, 1024);
  for (;;) {
    std::partial_sort(idx.begin(), idx.begin() + head, idx.end(), cmp);
    double c = 0;
    for (int32_t i = 0; i < head; ++i) c += full[idx[i]] / sum;
    // Enough when the head covers top_k, or the top-p mass, or min-p's cut falls inside.
    const bool top_p_done = p_.top_p > 0 && p_.top_p < 1 && c >= p_.top_p;
    const bool min_p_done = p_.min_p > 0 && full[idx[head - 1]] < p_.min_p * full[idx[0]];
    if (head == k || top_p_done || min_p_done) break;
    head = std::min<int32_t>(k, head * 8);
  }
  idx.resize(head);
  prob.resize(head);
  for (int32_t i = 0; i < head; ++i) prob[i] = full[idx[i]] / sum;
  size_t keep = idx.size();
  if (p_.min_p > 0) {
    const double thr = p_.min_p * prob[0];
    while (keep > 1 && prob[keep - 1] < thr) --keep;
  }
  if (p_.top_p > 0 && p_.top_p < 1) {
    double c = 0;
    for (size_t i = 0; i < keep; ++i) {
      c += prob[i];
      if (c >= p_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += prob[i];
  std::uniform_real_distribution<double> u(0.0, total);
  const double x = u(rng_);
  double c = 0;
  size_t chosen = keep - 1;
  for (size_t i = 0; i < keep; ++i) {
    c += prob[i];
    if (x < c) {
      chosen = i;
      break;
    }
  }
  r.token = idx[chosen];
  r.logprob = static_cast<float>(std::log(prob[chosen] / total));
  return r;
}

}  // namespace compressd

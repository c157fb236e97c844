#include "loadtest/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace compressd::loadtest {

double RequestRecord::TpotS() const {
  if (!ok() || output_tokens < 2 || ttft_s < 0 || e2e_s < ttft_s) return -1;
  return (e2e_s - ttft_s) / static_cast<double>(output_tokens - 1);
}

bool Slo::Met(const RequestRecord& r) const {
  if (!r.ok()) return false;
  if (ttft_ms > 0 && (r.ttft_s < 0 || r.ttft_s * 1e3 > ttft_ms)) return false;
  // A one-token answer has no TPOT and cannot violate a TPOT bound.
  const double tpot = r.TpotS();
  if (tpot_ms > 0 && tpot >= 0 && tpot * 1e3 > tpot_ms) return false;
  return true;
}

namespace {

template <typename T>
double PercentileOf(const std::vector<T>& sorted, double p) {
  if (sorted.empty()) return 0;
  if (sorted.size() == 1) return sorted[0];
  p = std::clamp(p, 0.0, 100.0);
  const double pos = p / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  const double a = sorted[lo], b = sorted[hi];
  return a + (b - a) * frac;
}

template <typename T>
LatencyStats LatencyStatsOf(std::vector<T> values) {
  LatencyStats s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.count = static_cast<int64_t>(values.size());
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(s.count);
  s.p50 = PercentileOf(values, 50);
  s.p90 = PercentileOf(values, 90);
  s.p99 = PercentileOf(values, 99);
  s.max = values.back();
  return s;
}

}  // namespace

double Percentile(const std::vector<double>& sorted, double p) { return PercentileOf(sorted, p); }

LatencyStats ComputeLatencyStats(std::vector<double> values) {
  return LatencyStatsOf(std::move(values));
}

Summary Summarize(const std::vector<RequestRecord>& records, const Slo& slo, double duration_s) {
  Summary s;
  s.slo_enabled = slo.enabled();
  std::vector<double> ttft, tpot, e2e;
  std::vector<float> itl;  // the largest sample by far: one per generated token
  double first_send = 0, last_done = 0;
  bool any = false;
  int64_t good = 0;
  for (const RequestRecord& r : records) {
    ++s.requests;
    const double done = r.start_s + std::max(0.0, r.e2e_s);
    if (!any) {
      first_send = r.start_s;
      last_done = done;
      any = true;
    }
    first_send = std::min(first_send, r.start_s);
    last_done = std::max(last_done, done);
    if (!r.ok()) {
      ++s.failed;
      ++s.errors_by_code[StatusCodeName(r.status_code)];
      continue;
    }
    ++s.completed;
    s.prompt_tokens += r.prompt_tokens;
    s.output_tokens += r.output_tokens;
    if (r.ttft_s >= 0) ttft.push_back(r.ttft_s * 1e3);
    if (r.TpotS() >= 0) tpot.push_back(r.TpotS() * 1e3);
    for (float g : r.itl_s) itl.push_back(g * 1e3f);
    if (r.e2e_s >= 0) e2e.push_back(r.e2e_s * 1e3);
    if (slo.Met(r)) ++good;
  }
  s.duration_s = duration_s > 0 ? duration_s : (any ? last_done - first_send : 0);
  if (s.duration_s > 0) {
    s.request_throughput = static_cast<double>(s.completed) / s.duration_s;
    s.output_token_throughput = static_cast<double>(s.output_tokens) / s.duration_s;
    s.total_token_throughput =
        static_cast<double>(s.prompt_tokens + s.output_tokens) / s.duration_s;
    // Without an SLO every completed request counts, so goodput == request throughput.
    s.goodput = static_cast<double>(slo.enabled() ? good : s.completed) / s.duration_s;
  }
  if (s.requests > 0) {
    s.slo_attainment =
        static_cast<double>(slo.enabled() ? good : s.completed) / static_cast<double>(s.requests);
  }
  s.ttft_ms = ComputeLatencyStats(std::move(ttft));
  s.tpot_ms = ComputeLatencyStats(std::move(tpot));
  s.itl_ms = LatencyStatsOf(std::move(itl));  // float samples; sums in double
  s.e2e_ms = ComputeLatencyStats(std::move(e2e));
  return s;
}

std::string StatusCodeName(int code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  if (code >= 0 && code < static_cast<int>(sizeof(kNames) / sizeof(kNames[0]))) {
    return kNames[code];
  }
  return absl::StrCat("CODE_", code);
}

}  // namespace compressd::loadtest

#include "loadtest/compare.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace compressd::loadtest {
namespace {

struct Line {
  std::string metric;
  double a, b;
  bool higher_is_better;
};

std::vector<Line> Lines(const Summary& a, const Summary& b) {
  std::vector<Line> lines = {
      {"requests ok", double(a.completed), double(b.completed), true},
      {"requests failed", double(a.failed), double(b.failed), false},
      {"duration (s)", a.duration_s, b.duration_s, false},
      {"request throughput (req/s)", a.request_throughput, b.request_throughput, true},
      {"output tokens/s", a.output_token_throughput, b.output_token_throughput, true},
      {"total tokens/s", a.total_token_throughput, b.total_token_throughput, true},
      {"goodput (req/s)", a.goodput, b.goodput, true},
      {"SLO attainment (%)", 100 * a.slo_attainment, 100 * b.slo_attainment, true},
  };
  const std::pair<const char*, std::pair<const LatencyStats*, const LatencyStats*>> lat[] = {
      {"TTFT", {&a.ttft_ms, &b.ttft_ms}},
      {"TPOT", {&a.tpot_ms, &b.tpot_ms}},
      {"ITL", {&a.itl_ms, &b.itl_ms}},
      {"E2E", {&a.e2e_ms, &b.e2e_ms}}};
  for (const auto& [name, ab] : lat) {
    const LatencyStats& x = *ab.first;
    const LatencyStats& y = *ab.second;
    lines.push_back({absl::StrCat(name, " mean (ms)"), x.mean, y.mean, false});
    lines.push_back({absl::StrCat(name, " p50 (ms)"), x.p50, y.p50, false});
    lines.push_back({absl::StrCat(name, " p90 (ms)"), x.p90, y.p90, false});
    lines.push_back({absl::StrCat(name, " p99 (ms)"), x.p99, y.p99, false});
    lines.push_back({absl::StrCat(name, " max (ms)"), x.max, y.max, false});
  }
  return lines;
}

std::string Change(double a, double b, bool higher_is_better) {
  if (a == b) return "=";
  if (a == 0) return "n/a";
  const double pct = (b - a) / std::fabs(a) * 100.0;
  const bool better = higher_is_better ? b > a : b < a;
  return absl::StrFormat("%+.1f%% %s", pct, better ? "better" : "worse");
}

}  // namespace

std::string CompareReports(const Report& a, const Report& b, const std::string& name_a,
                           const std::string& name_b) {
  std::string out;
  const size_t n = std::min(a.runs.size(), b.runs.size());
  if (a.runs.size() != b.runs.size()) {
    absl::StrAppend(&out, "note: ", name_a, " has ", a.runs.size(), " run(s), ", name_b, " has ",
                    b.runs.size(), "; comparing the first ", n, "\n");
  }
  const int w_metric = 28;
  const int w_col =
      static_cast<int>(std::max<size_t>(14, std::max(name_a.size(), name_b.size()) + 2));
  for (size_t i = 0; i < n; ++i) {
    const RunReport& ra = a.runs[i];
    const RunReport& rb = b.runs[i];
    absl::StrAppendFormat(&out, "\n== run %d: %s vs %s ==\n", i + 1, ra.label, rb.label);
    absl::StrAppendFormat(&out, "%-*s %*s %*s  %s\n", w_metric, "metric", w_col, name_a, w_col,
                          name_b, "change");
    out += std::string(w_metric + 2 * w_col + 20, '-') + "\n";
    for (const Line& l : Lines(ra.summary, rb.summary)) {
      absl::StrAppendFormat(&out, "%-*s %*.3f %*.3f  %s\n", w_metric, l.metric, w_col, l.a, w_col,
                            l.b, Change(l.a, l.b, l.higher_is_better));
    }
  }
  return out;
}

}  // namespace compressd::loadtest

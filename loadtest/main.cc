// compressd-loadtest: see UsageText() in options.cc, or run with --help.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "loadtest/arrivals.h"
#include "loadtest/compare.h"
#include "loadtest/health.h"
#include "loadtest/options.h"
#include "loadtest/report.h"
#include "loadtest/report_html.h"
#include "loadtest/report_json.h"
#include "loadtest/runner.h"
#include "loadtest/workload.h"

namespace compressd::loadtest {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

int RunCompare(const std::vector<char*>& args) {
  if (args.size() != 3) {
    std::cerr << "usage: compressd-loadtest compare A.json B.json\n";
    return kExitUsage;
  }
  auto a = ReadReportJson(args[1], /*include_requests=*/false);
  auto b = ReadReportJson(args[2], /*include_requests=*/false);
  if (!a.ok() || !b.ok()) {
    std::cerr << "compare: " << (!a.ok() ? a.status() : b.status()).message() << "\n";
    return kExitFailed;
  }
  std::cout << CompareReports(*a, *b, args[1], args[2]);
  return kExitOk;
}

void PrintSummary(const RunReport& run) {
  const Summary& s = run.summary;
  std::printf("== %s ==\n", run.label.c_str());
  std::printf("requests %lld ok %lld failed %lld in %.2f s\n", (long long)s.requests,
              (long long)s.completed, (long long)s.failed, s.duration_s);
  std::printf("throughput %.3f req/s, %.1f output tok/s, %.1f total tok/s\n", s.request_throughput,
              s.output_token_throughput, s.total_token_throughput);
  if (s.slo_enabled) {
    std::printf("goodput %.3f req/s (%.1f%% met the SLO)\n", s.goodput, 100 * s.slo_attainment);
  }
  std::printf("%-10s %8s %10s %10s %10s %10s %10s\n", "ms", "count", "mean", "p50", "p90", "p99",
              "max");
  const std::pair<const char*, const LatencyStats*> rows[] = {
      {"TTFT", &s.ttft_ms}, {"TPOT", &s.tpot_ms}, {"ITL", &s.itl_ms}, {"E2E", &s.e2e_ms}};
  for (const auto& [name, l] : rows) {
    std::printf("%-10s %8lld %10.2f %10.2f %10.2f %10.2f %10.2f\n", name, (long long)l->count,
                l->mean, l->p50, l->p90, l->p99, l->max);
  }
  for (const auto& [code, n] : s.errors_by_code) {
    std::printf("error %s: %lld\n", code.c_str(), (long long)n);
  }
}

int RunLoadTest(const Options& o) {
  std::vector<WorkItem> base;
  if (!o.dataset.empty()) {
    auto items = LoadDataset(o.dataset, o.max_tokens > 0 ? o.max_tokens : 128);
    if (!items.ok()) {
      std::cerr << "--dataset: " << items.status().message() << "\n";
      return kExitUsage;
    }
    base = CycleTo(*items, o.num_requests);
  } else {
    base = SyntheticWorkload(o.num_requests, o.input_len, o.output_len, o.seed);
  }
  if (o.max_tokens > 0) {
    for (WorkItem& w : base) w.max_tokens = o.max_tokens;
  }

  auto channel = Connect(o.target, o.wait_ready_s, o.lb_policy);
  if (!channel.ok()) {
    std::cerr << channel.status().message() << "\n";
    return kExitFailed;
  }
  if (absl::Status s = WaitForServing(*channel, "", o.wait_ready_s); !s.ok()) {
    std::cerr << o.target << ": " << s.message() << "\n";
    return kExitFailed;
  }

  RunSpec common;
  common.duration_limit_s = o.duration_limit_s;
  common.request_timeout_s = o.request_timeout_s;
  common.ignore_eos = o.ignore_eos;
  common.temperature = o.temperature;
  common.kv_cache = o.kv_cache;
  common.seed = o.seed;

  if (o.warmup > 0) {
    // Warm-up prompts come from another seed so they do not pre-fill the prefix cache with
    // the measured prompts.
    std::vector<WorkItem> warm =
        o.dataset.empty() ? SyntheticWorkload(o.warmup, o.input_len, o.output_len, o.seed + 1)
                          : CycleTo(base, o.warmup);
    if (o.max_tokens > 0) {
      for (WorkItem& w : warm) w.max_tokens = o.max_tokens;
    }
    RunSpec spec = common;
    spec.duration_limit_s = 0;
    spec.concurrency = o.concurrency > 0 ? o.concurrency : std::min(o.warmup, 8);
    RunResult r = RunLoad(*channel, warm, spec);
    int failed = 0;
    for (const RequestRecord& rec : r.records) failed += rec.ok() ? 0 : 1;
    std::printf("warm-up: %d requests, %d failed, %.2f s\n", o.warmup, failed, r.duration_s);
  }

  struct Point {
    LoadMode mode;
    double value;
  };
  std::vector<Point> points;
  if (o.sweep.values.empty()) {
    points.push_back({o.mode, o.mode == LoadMode::kOpenLoop ? o.request_rate : o.concurrency});
  } else {
    for (double v : o.sweep.values) points.push_back({o.sweep.mode, v});
  }

  Report report;
  report.config = o.ToJson();
  bool any_ok = false;
  for (const Point& p : points) {
    RunSpec spec = common;
    RunReport run;
    if (p.mode == LoadMode::kOpenLoop) {
      const bool unlimited = !(p.value > 0) || std::isinf(p.value);
      spec.arrivals = OpenLoopArrivals(static_cast<int>(base.size()),
                                       {unlimited ? 0 : p.value, o.burstiness, o.seed});
      run.label = unlimited ? "rate=inf" : absl::StrCat("rate=", p.value);
      run.request_rate = unlimited ? 0 : p.value;
    } else {
      spec.concurrency = static_cast<int>(p.value);
      run.label = absl::StrCat("concurrency=", spec.concurrency);
      run.concurrency = spec.concurrency;
    }
    RunResult r = RunLoad(*channel, base, spec);
    run.requests = std::move(r.records);
    run.summary = Summarize(run.requests, o.slo, r.duration_s);
    if (r.not_sent > 0) {
      std::printf("%s: --duration-limit reached, %d requests not sent\n", run.label.c_str(),
                  r.not_sent);
    }
    PrintSummary(run);
    any_ok = any_ok || run.summary.completed > 0;
    report.runs.push_back(std::move(run));
  }

  if (!o.output_json.empty()) {
    if (absl::Status s = WriteReportJson(report, o.output_json); !s.ok()) {
      std::cerr << s.message() << "\n";
      return kExitFailed;
    }
    std::printf("wrote %s\n", o.output_json.c_str());
  }
  if (!o.output_html.empty()) {
    if (absl::Status s = WriteHtmlReport(report, o.output_html); !s.ok()) {
      std::cerr << s.message() << "\n";
      return kExitFailed;
    }
    std::printf("wrote %s\n", o.output_html.c_str());
  }
  if (!any_ok) {
    std::cerr << "no request succeeded\n";
    return kExitFailed;
  }
  return kExitOk;
}

}  // namespace
}  // namespace compressd::loadtest

int main(int argc, char** argv) {
  using namespace compressd::loadtest;  // NOLINT(build/namespaces): main only
  absl::SetProgramUsageMessage(UsageText());
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "loadtest/");
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  config.normalize_filename = [](absl::string_view f) { return std::string(f); };
  absl::SetFlagsUsageConfig(config);

  std::vector<std::string> normalized = NormalizeFlagNames(argc, argv);
  std::vector<char*> cargv;
  for (std::string& s : normalized) cargv.push_back(s.data());
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(cargv.size()), cargv.data());
  if (positional.size() > 1 && std::string(positional[1]) == "compare") {
    return RunCompare(std::vector<char*>(positional.begin() + 1, positional.end()));
  }
  if (positional.size() > 1) {
    std::cerr << "unexpected argument '" << positional[1] << "' (see --help)\n";
    return kExitUsage;
  }
  auto options = OptionsFromFlags();
  if (!options.ok()) {
    std::cerr << options.status().message() << "\n";
    return kExitUsage;
  }
  return RunLoadTest(*options);
}

#include "loadtest/options.h"

#include <cmath>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

ABSL_FLAG(std::string, target, "localhost:50051", "compressd gRPC endpoint, HOST:PORT.");
ABSL_FLAG(int, num_requests, 100, "Measured requests per run (warm-up not included).");
ABSL_FLAG(double, request_rate, 0,
          "Open loop: mean requests per second (Poisson when --burstiness=1). 0 or inf sends "
          "all requests at once. Exclusive with --concurrency.");
ABSL_FLAG(int, concurrency, 0,
          "Closed loop: keep this many requests in flight. Exclusive with --request-rate.");
ABSL_FLAG(double, burstiness, 1.0,
          "Gamma shape of open-loop inter-arrival times: 1 = Poisson, <1 burstier, >1 smoother.");
ABSL_FLAG(int, warmup, 0, "Requests sent (and discarded) before the measured run.");
ABSL_FLAG(double, duration_limit, 0,
          "Stop a run after this many seconds: unsent requests are dropped and in-flight ones "
          "cancelled (reported as CANCELLED). 0 = no limit.");
ABSL_FLAG(uint32_t, max_tokens, 0,
          "Generated tokens per request; overrides --output-len and the dataset. 0 = unset.");
ABSL_FLAG(std::string, input_len, "fixed:128",
          "Synthetic prompt length in words: fixed:N | uniform:LO,HI | normal:MEAN,SD.");
ABSL_FLAG(std::string, output_len, "fixed:128",
          "Synthetic max_tokens: fixed:N | uniform:LO,HI | normal:MEAN,SD.");
ABSL_FLAG(std::string, dataset, "",
          "JSONL file, one {\"prompt\": ..., \"max_tokens\": N} per line, instead of synthetic "
          "prompts. Cycled when shorter than --num-requests.");
ABSL_FLAG(uint64_t, seed, 0, "Seed of prompts, lengths and arrival times.");
ABSL_FLAG(std::string, slo, "",
          "Latency SLO for goodput, e.g. ttft:500,tpot:50 (milliseconds). Empty = none.");
ABSL_FLAG(std::string, output, "", "Write the JSON report (summary and every request) here.");
ABSL_FLAG(std::string, html, "", "Write a self-contained HTML report with SVG charts here.");
ABSL_FLAG(std::string, sweep, "",
          "Run a series: rates=1,2,4,8 (open loop) or concurrency=1,4,16 (closed loop).");
ABSL_FLAG(double, timeout, 600, "Per-request deadline in seconds.");
ABSL_FLAG(bool, ignore_eos, true,
          "Ask the server to generate past EOS so every request produces max_tokens tokens.");
ABSL_FLAG(float, temperature, 0, "Sampling temperature (0 = greedy).");
ABSL_FLAG(std::string, kv_cache, "",
          "GenerateRequest.kv_cache for every request: empty = the server's KV codec; the "
          "smaller codec of its KV pressure ladder (e.g. int4 on an int8 server) has each "
          "request's cold blocks demoted eagerly (ModelInfo.kv_cache_request_codecs).");
ABSL_FLAG(double, wait_ready, 60,
          "Seconds to wait for the target to connect and report SERVING on grpc.health.v1.");
ABSL_FLAG(std::string, lb_policy, "",
          "gRPC load-balancing policy, e.g. round_robin with --target "
          "dns:///compressd-headless:50051 to spread streams over every pod.");

namespace compressd::loadtest {
namespace {

absl::StatusOr<std::vector<double>> ParseList(absl::string_view s, absl::string_view what) {
  std::vector<double> out;
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipWhitespace())) {
    double v = 0;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(p), &v) || !(v > 0) || std::isnan(v)) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": '", p, "' is not a positive number"));
    }
    out.push_back(v);
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": empty list"));
  return out;
}

}  // namespace

absl::StatusOr<Slo> ParseSlo(absl::string_view spec) {
  Slo slo;
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(part, ':');
    double v = 0;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(kv.second), &v) || !(v > 0) || std::isinf(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--slo: '", part, "' needs a positive number of milliseconds"));
    }
    const absl::string_view key = absl::StripAsciiWhitespace(kv.first);
    if (key == "ttft") {
      slo.ttft_ms = v;
    } else if (key == "tpot") {
      slo.tpot_ms = v;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--slo: unknown bound '", key, "' (want ttft or tpot)"));
    }
  }
  return slo;
}

absl::StatusOr<Sweep> ParseSweep(absl::string_view spec) {
  std::pair<absl::string_view, absl::string_view> kv =
      absl::StrSplit(spec, absl::MaxSplits('=', 1));
  Sweep sweep;
  if (kv.first == "rates" || kv.first == "rate") {
    sweep.mode = LoadMode::kOpenLoop;
  } else if (kv.first == "concurrency") {
    sweep.mode = LoadMode::kClosedLoop;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--sweep: '", spec, "' (want rates=1,2,4 or concurrency=1,4,16)"));
  }
  auto values = ParseList(kv.second, "--sweep");
  if (!values.ok()) return values.status();
  sweep.values = *std::move(values);
  if (sweep.mode == LoadMode::kClosedLoop) {
    for (double v : sweep.values) {
      if (v != std::floor(v) || std::isinf(v)) {
        return absl::InvalidArgumentError("--sweep concurrency values must be integers");
      }
    }
  }
  return sweep;
}

std::vector<std::string> NormalizeFlagNames(int argc, char** argv) {
  std::vector<std::string> out;
  bool passthrough = false;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (i > 0 && !passthrough && a == "--") passthrough = true;
    if (i > 0 && !passthrough && a.size() > 2 && a[0] == '-') {
      const size_t name_begin = a[1] == '-' ? 2 : 1;
      const size_t name_end = std::min(a.find('='), a.size());
      for (size_t k = name_begin; k < name_end; ++k) {
        if (a[k] == '-') a[k] = '_';
      }
    }
    out.push_back(std::move(a));
  }
  return out;
}

absl::StatusOr<Options> OptionsFromFlags() {
  Options o;
  o.target = absl::GetFlag(FLAGS_target);
  if (o.target.empty()) return absl::InvalidArgumentError("--target is empty");
  o.num_requests = absl::GetFlag(FLAGS_num_requests);
  if (o.num_requests <= 0) return absl::InvalidArgumentError("--num-requests must be > 0");
  o.request_rate = absl::GetFlag(FLAGS_request_rate);
  o.concurrency = absl::GetFlag(FLAGS_concurrency);
  if (o.request_rate < 0 || std::isnan(o.request_rate)) {
    return absl::InvalidArgumentError("--request-rate must be >= 0");
  }
  if (o.concurrency < 0) return absl::InvalidArgumentError("--concurrency must be >= 0");
  if (o.request_rate > 0 && o.concurrency > 0) {
    return absl::InvalidArgumentError("--request-rate and --concurrency are exclusive");
  }
  o.mode = o.concurrency > 0 ? LoadMode::kClosedLoop : LoadMode::kOpenLoop;
  o.burstiness = absl::GetFlag(FLAGS_burstiness);
  if (!(o.burstiness > 0) || std::isinf(o.burstiness)) {
    return absl::InvalidArgumentError("--burstiness must be a positive number");
  }
  o.warmup = absl::GetFlag(FLAGS_warmup);
  if (o.warmup < 0) return absl::InvalidArgumentError("--warmup must be >= 0");
  o.duration_limit_s = absl::GetFlag(FLAGS_duration_limit);
  if (o.duration_limit_s < 0 || std::isnan(o.duration_limit_s)) {
    return absl::InvalidArgumentError("--duration-limit must be >= 0");
  }
  o.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  auto in = ParseLengthDist(absl::GetFlag(FLAGS_input_len));
  if (!in.ok())
    return absl::InvalidArgumentError(absl::StrCat("--input-len: ", in.status().message()));
  o.input_len = *in;
  auto out = ParseLengthDist(absl::GetFlag(FLAGS_output_len));
  if (!out.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--output-len: ", out.status().message()));
  }
  o.output_len = *out;
  o.dataset = absl::GetFlag(FLAGS_dataset);
  o.seed = absl::GetFlag(FLAGS_seed);
  auto slo = ParseSlo(absl::GetFlag(FLAGS_slo));
  if (!slo.ok()) return slo.status();
  o.slo = *slo;
  o.output_json = absl::GetFlag(FLAGS_output);
  o.output_html = absl::GetFlag(FLAGS_html);
  const std::string sweep = absl::GetFlag(FLAGS_sweep);
  if (!sweep.empty()) {
    auto s = ParseSweep(sweep);
    if (!s.ok()) return s.status();
    o.sweep = *s;
    if (o.request_rate > 0 || o.concurrency > 0) {
      return absl::InvalidArgumentError(
          "--sweep sets the rate or concurrency itself; drop --request-rate/--concurrency");
    }
    o.mode = o.sweep.mode;
  }
  o.request_timeout_s = absl::GetFlag(FLAGS_timeout);
  if (!(o.request_timeout_s > 0)) return absl::InvalidArgumentError("--timeout must be > 0");
  o.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  o.temperature = absl::GetFlag(FLAGS_temperature);
  o.kv_cache = absl::GetFlag(FLAGS_kv_cache);
  o.wait_ready_s = absl::GetFlag(FLAGS_wait_ready);
  if (!(o.wait_ready_s > 0)) return absl::InvalidArgumentError("--wait-ready must be > 0");
  o.lb_policy = absl::GetFlag(FLAGS_lb_policy);
  return o;
}

nlohmann::json Options::ToJson() const {
  nlohmann::json j{{"target", target},
                   {"num_requests", num_requests},
                   {"mode", mode == LoadMode::kOpenLoop ? "open-loop" : "closed-loop"},
                   {"request_rate", std::isinf(request_rate) ? 0.0 : request_rate},
                   {"concurrency", concurrency},
                   {"burstiness", burstiness},
                   {"warmup", warmup},
                   {"duration_limit_s", duration_limit_s},
                   {"max_tokens", max_tokens},
                   {"input_len", input_len.ToString()},
                   {"output_len", output_len.ToString()},
                   {"dataset", dataset},
                   {"seed", seed},
                   {"slo", {{"ttft_ms", slo.ttft_ms}, {"tpot_ms", slo.tpot_ms}}},
                   {"request_timeout_s", request_timeout_s},
                   {"ignore_eos", ignore_eos},
                   {"temperature", temperature},
                   {"kv_cache", kv_cache},
                   {"lb_policy", lb_policy}};
  if (!sweep.values.empty()) {
    j["sweep"] = {{"mode", sweep.mode == LoadMode::kOpenLoop ? "rates" : "concurrency"},
                  {"values", sweep.values}};
  }
  return j;
}

const char* UsageText() {
  return R"(compressd-loadtest: load generator and latency report for a compressd server.

Usage:
  compressd-loadtest --target HOST:PORT [load] [workload] [report]
  compressd-loadtest compare A.json B.json

Load (choose one; default sends all --num-requests at once):
  --request-rate R      open loop: requests arrive at R/s whatever the server does;
                        gaps are gamma distributed with shape --burstiness (1 = Poisson)
  --concurrency C       closed loop: keep C requests in flight
  --sweep rates=1,2,4,8 one run per rate (or concurrency=1,4,16); the report plots
                        throughput and goodput against the offered load
  --warmup N            N requests first, excluded from the statistics
  --duration-limit S    stop each run after S seconds

Workload (default: synthetic prompts of 128 words, 128 generated tokens, --seed 0):
  --input-len / --output-len   fixed:N | uniform:LO,HI | normal:MEAN,SD
  --dataset FILE.jsonl         {"prompt": "...", "max_tokens": N} per line
  --max-tokens N               force max_tokens for every request

Connection:
  --wait-ready S         wait up to S seconds for grpc.health.v1 SERVING before sending
  --lb-policy round_robin  with --target dns:///compressd-headless:50051 (Kubernetes headless
                         Service) to spread streams over all pods instead of one connection

Report:
  --slo ttft:MS,tpot:MS  goodput = requests/s that met every bound
  --output FILE.json     every request (TTFT, TPOT, inter-token gaps, E2E, tokens, status)
                         and the summary (mean/p50/p90/p99/max, throughput, errors by code)
  --html FILE.html       self-contained report with latency CDFs (and sweep charts)

Definitions: TTFT = send to first token; TPOT = (E2E - TTFT) / (output tokens - 1);
ITL = every gap between consecutive tokens (a message carrying k tokens contributes k equal
gaps); E2E = send to final status. Throughput counts successful requests over the time from
the first send to the last completion.

Examples:
  compressd-loadtest --target localhost:50051 --num-requests 200 --request-rate 4 \
      --input-len uniform:64,512 --output-len fixed:128 --slo ttft:500,tpot:50 \
      --output run.json --html run.html
  compressd-loadtest --target localhost:50051 --sweep rates=1,2,4,8 --num-requests 100 \
      --output sweep.json --html sweep.html
  compressd-loadtest compare baseline.json candidate.json
)";
}

}  // namespace compressd::loadtest

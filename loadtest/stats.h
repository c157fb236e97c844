// Per-request measurements and the run summary computed from them. Pure: no gRPC, no clock.
// Times are seconds in records and milliseconds in summaries (the unit people read).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace compressd::loadtest {

// What the runner measured for one request. A request is "ok" when the stream ended with
// gRPC status OK (code 0).
struct RequestRecord {
  int index = 0;
  double start_s = 0;         // send time, from the start of the measured run
  double ttft_s = -1;         // first message carrying tokens; -1 when none arrived
  double e2e_s = -1;          // until the stream's final status
  // Gaps between successive tokens (output_tokens - 1 entries). float: a long run keeps
  // tens of millions of them, and 24 bits of mantissa resolve nanoseconds in a second.
  std::vector<float> itl_s;
  int64_t prompt_tokens = 0;  // from the server's Usage; else the synthetic word count
  int64_t output_tokens = 0;
  int status_code = 0;        // grpc::StatusCode
  std::string error;          // status message when not ok
  std::string finish_reason;  // "stop", "length", ... from the final message

  bool ok() const { return status_code == 0; }
  // (e2e - ttft) / (output_tokens - 1); -1 when fewer than two tokens arrived.
  double TpotS() const;
};

// Latency service-level objective; 0 disables a bound.
struct Slo {
  double ttft_ms = 0;
  double tpot_ms = 0;
  bool enabled() const { return ttft_ms > 0 || tpot_ms > 0; }
  // True when an ok request meets every enabled bound.
  bool Met(const RequestRecord& r) const;
};

struct LatencyStats {
  int64_t count = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
};

struct Summary {
  int64_t requests = 0;   // measured (warm-up excluded)
  int64_t completed = 0;  // status OK
  int64_t failed = 0;
  double duration_s = 0;  // first send to last completion
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  double request_throughput = 0;       // completed requests / s
  double output_token_throughput = 0;  // generated tokens / s
  double total_token_throughput = 0;   // (prompt + generated) tokens / s
  LatencyStats ttft_ms, tpot_ms, itl_ms, e2e_ms;
  // Requests per second that completed within the SLO, and their share of all measured.
  double goodput = 0;
  double slo_attainment = 0;
  bool slo_enabled = false;
  std::map<std::string, int64_t> errors_by_code;  // gRPC code name -> count
};

// p in [0, 100] over an ascending-sorted sample, linear interpolation between closest ranks
// (numpy's default). 0 for an empty sample.
double Percentile(const std::vector<double>& sorted, double p);
// Sorts `values` and fills every field; values are taken as-is (callers convert units).
LatencyStats ComputeLatencyStats(std::vector<double> values);

// `duration_s` <= 0 derives the duration from the records (first send to last completion).
Summary Summarize(const std::vector<RequestRecord>& records, const Slo& slo, double duration_s = 0);

// "OK", "UNAVAILABLE", ... for a grpc::StatusCode value; "CODE_<n>" when unknown.
std::string StatusCodeName(int code);

}  // namespace compressd::loadtest

// Command-line options of compressd-loadtest. Flags are absl flags defined in options.cc;
// OptionsFromFlags() reads and validates them into a plain struct that the rest of the tool
// uses. Flag names are written with hyphens on the command line (--request-rate); the
// underscore spelling also works.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "loadtest/stats.h"
#include "loadtest/workload.h"
#include "nlohmann/json.hpp"

namespace compressd::loadtest {

enum class LoadMode { kOpenLoop, kClosedLoop };

struct Sweep {
  LoadMode mode = LoadMode::kOpenLoop;  // rates=... or concurrency=...
  std::vector<double> values;
};

struct Options {
  std::string target = "localhost:50051";
  int num_requests = 100;
  LoadMode mode = LoadMode::kOpenLoop;
  double request_rate = 0;  // open loop; 0 or inf = send everything at once
  int concurrency = 0;      // closed loop
  double burstiness = 1.0;
  int warmup = 0;
  double duration_limit_s = 0;  // 0 = none
  uint32_t max_tokens = 0;      // 0 = from --output-len / the dataset
  LengthDist input_len;
  LengthDist output_len;
  std::string dataset;
  uint64_t seed = 0;
  Slo slo;
  std::string output_json;
  std::string output_html;
  Sweep sweep;  // empty values = a single run
  double request_timeout_s = 600;
  bool ignore_eos = true;
  float temperature = 0;
  std::string kv_cache;  // GenerateRequest.kv_cache; "" = the server's codec
  double wait_ready_s = 60;  // connect + health SERVING
  std::string lb_policy;     // "" = gRPC default (pick_first)

  nlohmann::json ToJson() const;
};

// "ttft:500,tpot:50" (milliseconds; either part may be omitted).
absl::StatusOr<Slo> ParseSlo(absl::string_view spec);
// "rates=1,2,4,8" or "concurrency=1,4,16".
absl::StatusOr<Sweep> ParseSweep(absl::string_view spec);
// Rewrites "--foo-bar[=v]" to "--foo_bar[=v]" so absl finds flags written with hyphens.
// Arguments after a bare "--" and values are left alone.
std::vector<std::string> NormalizeFlagNames(int argc, char** argv);

// Reads the parsed absl flags. Errors name the flag.
absl::StatusOr<Options> OptionsFromFlags();

// Usage text shown by --help (before absl's list of flags).
const char* UsageText();

}  // namespace compressd::loadtest

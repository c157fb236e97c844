// The result of a load test: the configuration it ran with and one or more runs (a sweep has
// one run per request rate). Written as JSON (report_json.h) and HTML (report_html.h).
#pragma once

#include <string>
#include <vector>

#include "loadtest/stats.h"
#include "nlohmann/json.hpp"

namespace compressd::loadtest {

struct RunReport {
  std::string label;        // "rate=4", "concurrency=8", "rate=inf"
  double request_rate = 0;  // open loop: requested rate (req/s); 0 = all at once or closed loop
  int concurrency = 0;      // closed loop: requests kept in flight; 0 = open loop
  Summary summary;
  std::vector<RequestRecord> requests;
};

struct Report {
  nlohmann::json config = nlohmann::json::object();  // the options, as given
  std::vector<RunReport> runs;
  bool is_sweep() const { return runs.size() > 1; }
};

}  // namespace compressd::loadtest

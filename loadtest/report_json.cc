#include "loadtest/report_json.h"

#include <charconv>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace compressd::loadtest {
namespace {

using nlohmann::json;

json LatencyToJson(const LatencyStats& l) {
  return json{{"count", l.count}, {"mean", l.mean}, {"p50", l.p50},
              {"p90", l.p90},     {"p99", l.p99},   {"max", l.max}};
}

LatencyStats LatencyFromJson(const json& j) {
  LatencyStats l;
  l.count = j.value("count", int64_t{0});
  l.mean = j.value("mean", 0.0);
  l.p50 = j.value("p50", 0.0);
  l.p90 = j.value("p90", 0.0);
  l.p99 = j.value("p99", 0.0);
  l.max = j.value("max", 0.0);
  return l;
}

// nlohmann throws on type mismatches; no exception may leave this module, so every reader
// runs under this guard and turns a throw into INVALID_ARGUMENT.
template <typename T, typename F>
absl::StatusOr<T> Guarded(const char* what, F&& f) {
  try {
    return f();
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("bad ", what, ": ", e.what()));
  }
}

// The double nearest the shortest decimal that reads back as `f`, so 1.52e-3f is written as
// 0.00152 and not as the 17 digits of its exact binary value.
double ShortestDouble(float f) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof(buf) - 1, f);
  if (r.ec != std::errc()) return f;
  *r.ptr = '\0';
  return std::strtod(buf, nullptr);
}

// A run without its requests.
json RunHeadToJson(const RunReport& run) {
  return json{{"label", run.label},
              {"request_rate", run.request_rate},
              {"concurrency", run.concurrency},
              {"summary", SummaryToJson(run.summary)}};
}

}  // namespace

json SummaryToJson(const Summary& s) {
  json errors = json::object();
  for (const auto& [code, n] : s.errors_by_code) errors[code] = n;
  return json{{"requests", s.requests},
              {"completed", s.completed},
              {"failed", s.failed},
              {"duration_s", s.duration_s},
              {"prompt_tokens", s.prompt_tokens},
              {"output_tokens", s.output_tokens},
              {"request_throughput", s.request_throughput},
              {"output_token_throughput", s.output_token_throughput},
              {"total_token_throughput", s.total_token_throughput},
              {"ttft_ms", LatencyToJson(s.ttft_ms)},
              {"tpot_ms", LatencyToJson(s.tpot_ms)},
              {"itl_ms", LatencyToJson(s.itl_ms)},
              {"e2e_ms", LatencyToJson(s.e2e_ms)},
              {"slo_enabled", s.slo_enabled},
              {"goodput", s.goodput},
              {"slo_attainment", s.slo_attainment},
              {"errors_by_code", errors}};
}

namespace {
json ItlToJson(const std::vector<float>& itl) {
  json a = json::array();
  for (float g : itl) a.push_back(ShortestDouble(g));
  return a;
}
}  // namespace

json RecordToJson(const RequestRecord& r) {
  json j{{"index", r.index},
         {"start_s", r.start_s},
         {"ttft_s", r.ttft_s},
         {"tpot_s", r.TpotS()},
         {"e2e_s", r.e2e_s},
         {"itl_s", ItlToJson(r.itl_s)},
         {"prompt_tokens", r.prompt_tokens},
         {"output_tokens", r.output_tokens},
         {"status_code", r.status_code},
         {"status", StatusCodeName(r.status_code)}};
  if (!r.error.empty()) j["error"] = r.error;
  if (!r.finish_reason.empty()) j["finish_reason"] = r.finish_reason;
  return j;
}

json ReportToJson(const Report& report, bool include_requests) {
  json runs = json::array();
  for (const RunReport& run : report.runs) {
    json rj = RunHeadToJson(run);
    if (include_requests) {
      json reqs = json::array();
      for (const RequestRecord& r : run.requests) reqs.push_back(RecordToJson(r));
      rj["requests"] = std::move(reqs);
    }
    runs.push_back(std::move(rj));
  }
  return json{{"schema", kReportSchema}, {"config", report.config}, {"runs", std::move(runs)}};
}

absl::StatusOr<Summary> SummaryFromJson(const json& j) {
  return Guarded<Summary>("summary", [&]() -> absl::StatusOr<Summary> {
    if (!j.is_object()) return absl::InvalidArgumentError("summary is not an object");
    Summary s;
    s.requests = j.value("requests", int64_t{0});
    s.completed = j.value("completed", int64_t{0});
    s.failed = j.value("failed", int64_t{0});
    s.duration_s = j.value("duration_s", 0.0);
    s.prompt_tokens = j.value("prompt_tokens", int64_t{0});
    s.output_tokens = j.value("output_tokens", int64_t{0});
    s.request_throughput = j.value("request_throughput", 0.0);
    s.output_token_throughput = j.value("output_token_throughput", 0.0);
    s.total_token_throughput = j.value("total_token_throughput", 0.0);
    s.ttft_ms = LatencyFromJson(j.value("ttft_ms", json::object()));
    s.tpot_ms = LatencyFromJson(j.value("tpot_ms", json::object()));
    s.itl_ms = LatencyFromJson(j.value("itl_ms", json::object()));
    s.e2e_ms = LatencyFromJson(j.value("e2e_ms", json::object()));
    s.slo_enabled = j.value("slo_enabled", false);
    s.goodput = j.value("goodput", 0.0);
    s.slo_attainment = j.value("slo_attainment", 0.0);
    const json errors = j.value("errors_by_code", json::object());  // outlives the loop
    for (const auto& [code, n] : errors.items()) {
      s.errors_by_code[code] = n.get<int64_t>();
    }
    return s;
  });
}

absl::StatusOr<RequestRecord> RecordFromJson(const json& j) {
  return Guarded<RequestRecord>("request", [&]() -> absl::StatusOr<RequestRecord> {
    if (!j.is_object()) return absl::InvalidArgumentError("request is not an object");
    RequestRecord r;
    r.index = j.value("index", 0);
    r.start_s = j.value("start_s", 0.0);
    r.ttft_s = j.value("ttft_s", -1.0);
    r.e2e_s = j.value("e2e_s", -1.0);
    for (double g : j.value("itl_s", std::vector<double>{})) r.itl_s.push_back(static_cast<float>(g));
    r.prompt_tokens = j.value("prompt_tokens", int64_t{0});
    r.output_tokens = j.value("output_tokens", int64_t{0});
    r.status_code = j.value("status_code", 0);
    r.error = j.value("error", std::string());
    r.finish_reason = j.value("finish_reason", std::string());
    return r;
  });
}

absl::StatusOr<Report> ReportFromJson(const json& j) {
  return Guarded<Report>("report", [&]() -> absl::StatusOr<Report> {
    if (!j.is_object() || j.value("schema", std::string()) != kReportSchema) {
      return absl::InvalidArgumentError(
          absl::StrCat("not a compressd-loadtest report (want schema ", kReportSchema, ")"));
    }
    Report report;
    report.config = j.value("config", json::object());
    for (const json& rj : j.at("runs")) {
      RunReport run;
      run.label = rj.value("label", std::string());
      run.request_rate = rj.value("request_rate", 0.0);
      run.concurrency = rj.value("concurrency", 0);
      auto s = SummaryFromJson(rj.at("summary"));
      if (!s.ok()) return s.status();
      run.summary = *s;
      for (const json& q : rj.value("requests", json::array())) {
        auto r = RecordFromJson(q);
        if (!r.ok()) return r.status();
        run.requests.push_back(std::move(*r));
      }
      report.runs.push_back(std::move(run));
    }
    return report;
  });
}

absl::Status WriteReportJson(const Report& report, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  // Streamed, one request per line: a whole-report DOM of a long run (millions of requests,
  // each with its inter-token latencies) took gigabytes, several times the records themselves.
  out << "{\n  \"schema\": " << json(kReportSchema).dump() << ",\n  \"config\": "
      << report.config.dump() << ",\n  \"runs\": [";
  for (size_t i = 0; i < report.runs.size(); ++i) {
    const RunReport& run = report.runs[i];
    std::string head = RunHeadToJson(run).dump();
    head.pop_back();  // the closing '}': "requests" follows
    out << (i ? "," : "") << "\n    " << head << ",\"requests\":[";
    for (size_t k = 0; k < run.requests.size(); ++k) {
      out << (k ? "," : "") << "\n      " << RecordToJson(run.requests[k]).dump();
    }
    out << "\n    ]}";
  }
  out << "\n  ]\n}\n";
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("error writing ", path));
  return absl::OkStatus();
}

absl::StatusOr<Report> ReadReportJson(const std::string& path, bool include_requests) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  // Without the requests, their objects are dropped while parsing (depth 3: root, runs array,
  // run object): comparing two long runs' summaries never holds their records.
  const json::parser_callback_t skip_requests = [](int depth, json::parse_event_t event,
                                                   json& parsed) {
    return !(event == json::parse_event_t::key && depth == 3 && parsed == "requests");
  };
  json j = json::parse(in, include_requests ? nullptr : skip_requests, false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not JSON"));
  auto r = ReportFromJson(j);
  if (!r.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", r.status().message()));
  return r;
}

}  // namespace compressd::loadtest

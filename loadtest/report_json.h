// JSON form of a Report: the format `--output` writes and `compare` reads.
// Schema "compressd-loadtest/v1": {schema, config, runs: [{label, request_rate, concurrency,
// summary: {..., ttft_ms: {count, mean, p50, p90, p99, max}, ...}, requests: [...]}]}.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loadtest/report.h"
#include "nlohmann/json.hpp"

namespace compressd::loadtest {

inline constexpr char kReportSchema[] = "compressd-loadtest/v1";

nlohmann::json SummaryToJson(const Summary& s);
nlohmann::json RecordToJson(const RequestRecord& r);
nlohmann::json ReportToJson(const Report& report, bool include_requests = true);

absl::StatusOr<Summary> SummaryFromJson(const nlohmann::json& j);
absl::StatusOr<RequestRecord> RecordFromJson(const nlohmann::json& j);
absl::StatusOr<Report> ReportFromJson(const nlohmann::json& j);

// Streams: memory stays at the size of one request's JSON beyond the Report itself.
absl::Status WriteReportJson(const Report& report, const std::string& path);
// include_requests = false drops every run's "requests" while parsing (what `compare` needs).
absl::StatusOr<Report> ReadReportJson(const std::string& path, bool include_requests = true);

}  // namespace compressd::loadtest

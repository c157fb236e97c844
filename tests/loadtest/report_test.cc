#include "loadtest/report.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "loadtest/compare.h"
#include "loadtest/report_html.h"
#include "loadtest/report_json.h"

namespace compressd::loadtest {
namespace {

RequestRecord Rec(int i, double ttft, double e2e, int out, int code = 0) {
  RequestRecord r;
  r.index = i;
  r.start_s = 0.1 * i;
  r.ttft_s = ttft;
  r.e2e_s = e2e;
  r.output_tokens = out;
  r.prompt_tokens = 12;
  r.status_code = code;
  if (code != 0) r.error = "queue <full> & \"busy\"";
  for (int k = 1; k < out; ++k) r.itl_s.push_back((e2e - ttft) / (out - 1));
  r.finish_reason = code == 0 ? "length" : "";
  return r;
}

Report SampleReport(int runs) {
  Report report;
  report.config = {{"target", "localhost:50051"}, {"note", "<script>alert(1)</script>"}};
  for (int k = 0; k < runs; ++k) {
    RunReport run;
    run.request_rate = 1 << k;
    run.label = absl::StrCat("rate=", 1 << k);
    for (int i = 0; i < 40; ++i) {
      run.requests.push_back(
          Rec(i, 0.05 * (k + 1) + 0.001 * i, 1.0 + 0.01 * i, 16, i == 7 ? 8 : 0));
    }
    run.summary = Summarize(run.requests, Slo{100, 80});
    report.runs.push_back(std::move(run));
  }
  return report;
}

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/compressd_report_test_", getpid(), "_",
                      name);
}

TEST(ReportJsonTest, RoundTrips) {
  Report report = SampleReport(2);
  const std::string path = TempPath("r.json");
  ASSERT_TRUE(WriteReportJson(report, path).ok());
  auto back = ReadReportJson(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->runs.size(), 2u);
  EXPECT_EQ(back->config, report.config);
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_EQ(back->runs[k].label, report.runs[k].label);
    EXPECT_EQ(back->runs[k].request_rate, report.runs[k].request_rate);
    EXPECT_EQ(SummaryToJson(back->runs[k].summary), SummaryToJson(report.runs[k].summary));
    ASSERT_EQ(back->runs[k].requests.size(), 40u);
    EXPECT_EQ(RecordToJson(back->runs[k].requests[7]), RecordToJson(report.runs[k].requests[7]));
  }
  std::remove(path.c_str());
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The streamed writer must produce the same JSON value as the DOM form of the report.
TEST(ReportJsonTest, StreamedFileEqualsDomForm) {
  for (int runs : {0, 1, 3}) {
    Report report = SampleReport(runs);
    if (runs == 1) report.runs[0].requests.clear();  // a run with no records
    const std::string path = TempPath(absl::StrCat("s", runs, ".json"));
    ASSERT_TRUE(WriteReportJson(report, path).ok());
    const nlohmann::json parsed = nlohmann::json::parse(ReadAll(path), nullptr, false);
    ASSERT_FALSE(parsed.is_discarded()) << "runs=" << runs;
    EXPECT_EQ(parsed, ReportToJson(report)) << "runs=" << runs;
    std::remove(path.c_str());
  }
}

// `compare` reads summaries only: the requests are dropped while parsing.
TEST(ReportJsonTest, ReadsSummariesWithoutRequests) {
  Report report = SampleReport(2);
  const std::string path = TempPath("summaries.json");
  ASSERT_TRUE(WriteReportJson(report, path).ok());
  auto back = ReadReportJson(path, /*include_requests=*/false);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->runs.size(), 2u);
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_TRUE(back->runs[k].requests.empty());
    EXPECT_EQ(back->runs[k].label, report.runs[k].label);
    EXPECT_EQ(SummaryToJson(back->runs[k].summary), SummaryToJson(report.runs[k].summary));
  }
  std::remove(path.c_str());
}

// Inter-token latencies are floats; they are written as their shortest decimal, not as the
// 17 digits of the float's exact binary value, and read back to the same float.
TEST(ReportJsonTest, InterTokenLatenciesWrittenShort) {
  Report report;
  RunReport run;
  run.label = "concurrency=1";
  RequestRecord r = Rec(0, 0.01, 0.02, 1);
  r.itl_s = {1.52e-3f, 0.1f, 2.5e-5f};
  run.requests.push_back(r);
  run.summary = Summarize(run.requests, Slo{});
  report.runs.push_back(run);
  const std::string path = TempPath("itl.json");
  ASSERT_TRUE(WriteReportJson(report, path).ok());
  const std::string text = ReadAll(path);
  EXPECT_TRUE(absl::StrContains(text, "[0.00152,0.1,2.5e-05]")) << text;
  auto back = ReadReportJson(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->runs[0].requests[0].itl_s, r.itl_s);
  std::remove(path.c_str());
}

TEST(ReportJsonTest, JsonHasPerRequestAndSummaryFields) {
  nlohmann::json j = ReportToJson(SampleReport(1));
  EXPECT_EQ(j["schema"], kReportSchema);
  const nlohmann::json& run = j["runs"][0];
  for (const char* k : {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"}) {
    for (const char* s : {"mean", "p50", "p90", "p99", "max"}) {
      EXPECT_TRUE(run["summary"][k].contains(s)) << k << "." << s;
    }
  }
  for (const char* k :
       {"request_throughput", "output_token_throughput", "goodput", "errors_by_code"}) {
    EXPECT_TRUE(run["summary"].contains(k)) << k;
  }
  EXPECT_EQ(run["summary"]["errors_by_code"]["RESOURCE_EXHAUSTED"], 1);
  const nlohmann::json& r = run["requests"][0];
  for (const char* k :
       {"ttft_s", "tpot_s", "itl_s", "e2e_s", "prompt_tokens", "output_tokens", "status_code"}) {
    EXPECT_TRUE(r.contains(k)) << k;
  }
  EXPECT_EQ(r["itl_s"].size(), 15u);
}

TEST(ReportJsonTest, RejectsForeignJson) {
  EXPECT_FALSE(ReportFromJson(nlohmann::json{{"schema", "other"}}).ok());
  EXPECT_FALSE(ReportFromJson(nlohmann::json::parse(
                                  R"({"schema":"compressd-loadtest/v1","runs":[{"summary":3}]})"))
                   .ok());
  EXPECT_FALSE(ReadReportJson("/nonexistent.json").ok());
}

TEST(ReportHtmlTest, SelfContainedWithChartsAndEscaping) {
  const std::string html = RenderHtmlReport(SampleReport(3));
  EXPECT_TRUE(absl::StartsWith(html, "<!DOCTYPE html>"));
  // 4 CDFs + 3 sweep charts.
  int svgs = 0;
  for (size_t p = html.find("<svg"); p != std::string::npos; p = html.find("<svg", p + 1)) ++svgs;
  EXPECT_EQ(svgs, 7);
  EXPECT_NE(html.find("<polyline"), std::string::npos);
  EXPECT_NE(html.find("Request throughput vs rate"), std::string::npos);
  // No network resources and no scripts.
  for (const char* banned : {"<script", "http://", "https://", "<link", "@import", "src="}) {
    if (std::string(banned) == "http://") {
      // The SVG namespace URI is an identifier, not a fetch.
      std::string stripped = html;
      for (size_t p; (p = stripped.find("http://www.w3.org/2000/svg")) != std::string::npos;) {
        stripped.erase(p, 26);
      }
      EXPECT_EQ(stripped.find(banned), std::string::npos) << banned;
    } else {
      EXPECT_EQ(html.find(banned), std::string::npos) << banned;
    }
  }
  EXPECT_NE(html.find("&lt;script&gt;"), std::string::npos);  // config is escaped
}

TEST(ReportHtmlTest, SingleRunHasNoSweepCharts) {
  const std::string html = RenderHtmlReport(SampleReport(1));
  EXPECT_EQ(html.find("Request throughput vs rate"), std::string::npos);
  EXPECT_NE(html.find("Time to first token"), std::string::npos);
}

TEST(ReportHtmlTest, ChartHandlesNoData) {
  const std::string svg = SvgLineChart("empty", "x", "y", {});
  EXPECT_NE(svg.find("no data"), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
}

TEST(ReportHtmlTest, CdfIsMonotoneAndEndsAtOne) {
  std::vector<double> v;
  for (int i = 1000; i > 0; --i) v.push_back(i);
  auto pts = CdfPoints(v, 100);
  ASSERT_LE(pts.size(), 101u);
  for (size_t i = 1; i < pts.size(); ++i) {
    EXPECT_GE(pts[i].first, pts[i - 1].first);
    EXPECT_GT(pts[i].second, pts[i - 1].second);
  }
  EXPECT_EQ(pts.back().first, 1000);
  EXPECT_EQ(pts.back().second, 1.0);
  EXPECT_TRUE(CdfPoints({}).empty());
}

std::string FindChromium() {
  for (const char* c : {"chromium", "chromium-browser", "google-chrome"}) {
    const std::string cmd = absl::StrCat("command -v ", c, " >/dev/null 2>&1");
    if (std::system(cmd.c_str()) == 0) return c;
  }
  return "";
}

TEST(ReportHtmlTest, ChartsRenderInHeadlessChromium) {
  const std::string chromium = FindChromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (apt-get install chromium)";
  const std::string html_path = TempPath("report.html");
  const std::string dom_path = TempPath("dom.html");
  ASSERT_TRUE(WriteHtmlReport(SampleReport(3), html_path).ok());
  const std::string cmd =
      absl::StrCat(chromium, " --headless --no-sandbox --disable-gpu --dump-dom file://", html_path,
                   " > ", dom_path, " 2>/dev/null");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(dom_path);
  const std::string dom((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The serialized DOM comes from Chromium's parser, so these elements exist in the document.
  int svgs = 0;
  for (size_t p = dom.find("<svg"); p != std::string::npos; p = dom.find("<svg", p + 1)) ++svgs;
  EXPECT_EQ(svgs, 7) << dom.substr(0, 500);
  EXPECT_NE(dom.find("<polyline"), std::string::npos);
  EXPECT_NE(dom.find("<circle"), std::string::npos);
  std::remove(html_path.c_str());
  std::remove(dom_path.c_str());
}

TEST(CompareTest, SideBySideTable) {
  Report a = SampleReport(2);
  Report b = SampleReport(2);
  b.runs[0].summary.ttft_ms.p99 = a.runs[0].summary.ttft_ms.p99 / 2;
  const std::string table = CompareReports(a, b, "A.json", "B.json");
  EXPECT_NE(table.find("run 1: rate=1 vs rate=1"), std::string::npos) << table;
  EXPECT_NE(table.find("run 2"), std::string::npos);
  EXPECT_NE(table.find("TTFT p99 (ms)"), std::string::npos);
  EXPECT_NE(table.find("-50.0% better"), std::string::npos) << table;
  EXPECT_NE(table.find("goodput"), std::string::npos);
  Report one = SampleReport(1);
  EXPECT_NE(CompareReports(a, one, "A", "B").find("comparing the first 1"), std::string::npos);
}

}  // namespace
}  // namespace compressd::loadtest

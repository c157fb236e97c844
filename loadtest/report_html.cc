#include "loadtest/report_html.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace compressd::loadtest {
namespace {

constexpr const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                   "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};
constexpr int kNumColors = sizeof(kColors) / sizeof(kColors[0]);

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `target` ticks over span.
double NiceStep(double span, int target) {
  if (!(span > 0)) return 1;
  const double raw = span / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double n = raw / mag;
  return (n < 1.5 ? 1 : n < 3.5 ? 2 : n < 7.5 ? 5 : 10) * mag;
}

std::string Num(double v) {
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a < 1e6 && v == std::round(v)) return absl::StrFormat("%.0f", v);
  if (a >= 1e4 || a < 1e-3) return absl::StrFormat("%.3g", v);
  if (a >= 100) return absl::StrFormat("%.0f", v);
  if (a >= 10) return absl::StrFormat("%.1f", v);
  return absl::StrFormat("%.3g", v);
}

std::string Row(const std::vector<std::string>& cells, bool header = false) {
  std::string out = "<tr>";
  for (const std::string& c : cells) {
    absl::StrAppend(&out, header ? "<th>" : "<td>", HtmlEscape(c), header ? "</th>" : "</td>");
  }
  return out + "</tr>\n";
}

std::vector<double> Collect(const RunReport& run, const char* metric) {
  std::vector<double> v;
  const std::string m = metric;
  for (const RequestRecord& r : run.requests) {
    if (!r.ok()) continue;
    if (m == "ttft" && r.ttft_s >= 0) v.push_back(r.ttft_s * 1e3);
    if (m == "tpot" && r.TpotS() >= 0) v.push_back(r.TpotS() * 1e3);
    if (m == "e2e" && r.e2e_s >= 0) v.push_back(r.e2e_s * 1e3);
    if (m == "itl") {
      for (float g : r.itl_s) v.push_back(g * 1e3);
    }
  }
  return v;
}

std::string LatencyTable(const Report& report) {
  std::string out = "<table>\n";
  out += Row({"run", "metric", "count", "mean", "p50", "p90", "p99", "max"}, true);
  for (const RunReport& run : report.runs) {
    const std::pair<const char*, const LatencyStats*> rows[] = {{"TTFT (ms)", &run.summary.ttft_ms},
                                                                {"TPOT (ms)", &run.summary.tpot_ms},
                                                                {"ITL (ms)", &run.summary.itl_ms},
                                                                {"E2E (ms)", &run.summary.e2e_ms}};
    for (const auto& [name, l] : rows) {
      out += Row({run.label, name, absl::StrCat(l->count), Num(l->mean), Num(l->p50), Num(l->p90),
                  Num(l->p99), Num(l->max)});
    }
  }
  return out + "</table>\n";
}

std::string ThroughputTable(const Report& report) {
  std::string out = "<table>\n";
  out += Row({"run", "requests", "ok", "failed", "duration (s)", "req/s", "output tok/s",
              "total tok/s", "goodput (req/s)", "SLO attained", "errors"},
             true);
  for (const RunReport& run : report.runs) {
    const Summary& s = run.summary;
    std::string errors;
    for (const auto& [code, n] : s.errors_by_code) {
      absl::StrAppend(&errors, errors.empty() ? "" : ", ", code, ": ", n);
    }
    out += Row({run.label, absl::StrCat(s.requests), absl::StrCat(s.completed),
                absl::StrCat(s.failed), Num(s.duration_s), Num(s.request_throughput),
                Num(s.output_token_throughput), Num(s.total_token_throughput), Num(s.goodput),
                s.slo_enabled ? absl::StrFormat("%.1f%%", 100 * s.slo_attainment) : "no SLO",
                errors.empty() ? "none" : errors});
  }
  return out + "</table>\n";
}

}  // namespace

std::string HtmlEscape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

std::vector<std::pair<double, double>> CdfPoints(std::vector<double> values, size_t max_points) {
  std::vector<std::pair<double, double>> pts;
  if (values.empty() || max_points < 2) return pts;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  const size_t step = std::max<size_t>(1, (n + max_points - 1) / max_points);
  for (size_t i = 0; i < n; i += step) {
    pts.emplace_back(values[i], static_cast<double>(i + 1) / static_cast<double>(n));
  }
  if (pts.back().second < 1.0) pts.emplace_back(values.back(), 1.0);
  return pts;
}

std::string SvgLineChart(const std::string& title, const std::string& x_label,
                         const std::string& y_label, const std::vector<ChartSeries>& series,
                         int width, int height) {
  const double left = 64, right = 16, top = 32, bottom = 48;
  const double pw = width - left - right, ph = height - top - bottom;
  double x0 = INFINITY, x1 = -INFINITY, y0 = 0, y1 = -INFINITY;
  for (const ChartSeries& s : series) {
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  }
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"%d\" height=\"%d\" "
      "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"%s\">\n"
      "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n"
      "<text x=\"%d\" y=\"20\" text-anchor=\"middle\" font-weight=\"bold\">%s</text>\n",
      width, height, width, height, HtmlEscape(title), width, height, width / 2, HtmlEscape(title));
  if (!(x1 >= x0) || !(y1 >= y0)) {
    absl::StrAppendFormat(&svg, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">no data</text>\n",
                          width / 2, height / 2);
    return svg + "</svg>\n";
  }
  // Latencies start from 0 so charts of different runs compare at a glance.
  x0 = std::min(x0, 0.0);
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  const double xs = NiceStep(x1 - x0, 6), ys = NiceStep(y1 - y0, 5);
  x1 = std::ceil(x1 / xs) * xs;
  y1 = std::ceil(y1 / ys) * ys;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + ph - (y - y0) / (y1 - y0) * ph; };

  absl::StrAppendFormat(&svg,
                        "<g class=\"axes\" stroke=\"#333\">"
                        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/></g>\n",
                        left, top + ph, left + pw, top + ph, left, top, left, top + ph);
  svg += "<g class=\"ticks\" font-size=\"11\" fill=\"#333\">\n";
  for (double x = x0; x <= x1 + xs * 1e-6; x += xs) {
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                          px(x), top, px(x), top + ph, px(x), top + ph + 14, Num(x));
  }
  for (double y = y0; y <= y1 + ys * 1e-6; y += ys) {
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                          left, py(y), left + pw, py(y), left - 4, py(y) + 4, Num(y));
  }
  svg += "</g>\n";
  absl::StrAppendFormat(
      &svg,
      "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"12\">%s</text>"
      "<text x=\"14\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\" "
      "transform=\"rotate(-90 14 %.1f)\">%s</text>\n",
      left + pw / 2, height - 8, HtmlEscape(x_label), top + ph / 2, top + ph / 2,
      HtmlEscape(y_label));
  for (size_t i = 0; i < series.size(); ++i) {
    const ChartSeries& s = series[i];
    const char* color = kColors[i % kNumColors];
    std::string pts;
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      absl::StrAppendFormat(&pts, "%s%.1f,%.1f", pts.empty() ? "" : " ", px(x), py(y));
    }
    absl::StrAppendFormat(&svg,
                          "<polyline class=\"series\" fill=\"none\" stroke=\"%s\" "
                          "stroke-width=\"2\" points=\"%s\"><title>%s</title></polyline>\n",
                          color, pts, HtmlEscape(s.name));
    if (s.points.size() <= 32) {  // mark the points of short series (sweeps)
      for (const auto& [x, y] : s.points) {
        if (!std::isfinite(x) || !std::isfinite(y)) continue;
        absl::StrAppendFormat(&svg, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                              px(x), py(y), color);
      }
    }
    const double ly = top + 6 + 14.0 * static_cast<double>(i);
    absl::StrAppendFormat(&svg,
                          "<g class=\"legend\"><rect x=\"%.1f\" y=\"%.1f\" width=\"10\" "
                          "height=\"10\" fill=\"%s\"/><text x=\"%.1f\" y=\"%.1f\" "
                          "font-size=\"11\">%s</text></g>\n",
                          left + pw - 130, ly, color, left + pw - 116, ly + 9, HtmlEscape(s.name));
  }
  return svg + "</svg>\n";
}

std::string RenderHtmlReport(const Report& report) {
  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<title>compressd load test</title>\n<style>\n"
      "body{font-family:sans-serif;margin:24px;color:#222}"
      "table{border-collapse:collapse;margin:8px 0 24px}"
      "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}"
      "th{background:#f0f0f0}td:first-child,td:nth-child(2){text-align:left}"
      ".charts{display:flex;flex-wrap:wrap;gap:16px}"
      "pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto}\n"
      "</style>\n</head>\n<body>\n<h1>compressd load test</h1>\n";
  absl::StrAppend(&html, "<h2>Throughput</h2>\n", ThroughputTable(report));
  absl::StrAppend(&html, "<h2>Latency</h2>\n", LatencyTable(report));

  if (report.is_sweep()) {
    const bool by_rate = report.runs.front().concurrency == 0;
    ChartSeries req{"requests/s", {}}, good{"goodput req/s", {}}, tok{"output tokens/s", {}};
    ChartSeries ttft99{"TTFT p99", {}}, tpot99{"TPOT p99", {}};
    for (const RunReport& run : report.runs) {
      const double x = by_rate ? run.request_rate : run.concurrency;
      req.points.emplace_back(x, run.summary.request_throughput);
      good.points.emplace_back(x, run.summary.goodput);
      tok.points.emplace_back(x, run.summary.output_token_throughput);
      ttft99.points.emplace_back(x, run.summary.ttft_ms.p99);
      tpot99.points.emplace_back(x, run.summary.tpot_ms.p99);
    }
    const std::string x_label = by_rate ? "offered request rate (req/s)" : "concurrency";
    html += "<h2>Sweep</h2>\n<div class=\"charts\" id=\"sweep\">\n";
    html += SvgLineChart("Request throughput vs rate", x_label, "req/s", {req, good});
    html += SvgLineChart("Token throughput vs rate", x_label, "output tokens/s", {tok});
    html += SvgLineChart("p99 latency vs rate", x_label, "ms", {ttft99, tpot99});
    html += "</div>\n";
  }

  html += "<h2>Latency distributions (CDF)</h2>\n<div class=\"charts\" id=\"cdf\">\n";
  const std::pair<const char*, const char*> metrics[] = {{"ttft", "Time to first token"},
                                                         {"tpot", "Time per output token"},
                                                         {"itl", "Inter-token latency"},
                                                         {"e2e", "End-to-end latency"}};
  for (const auto& [key, title] : metrics) {
    std::vector<ChartSeries> series;
    for (const RunReport& run : report.runs) {
      series.push_back({run.label, CdfPoints(Collect(run, key))});
    }
    html += SvgLineChart(title, "ms", "cumulative fraction", series);
  }
  html += "</div>\n";
  absl::StrAppend(&html, "<h2>Configuration</h2>\n<pre>", HtmlEscape(report.config.dump(2)),
                  "</pre>\n</body>\n</html>\n");
  return html;
}

absl::Status WriteHtmlReport(const Report& report, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  out << RenderHtmlReport(report);
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("error writing ", path));
  return absl::OkStatus();
}

}  // namespace compressd::loadtest

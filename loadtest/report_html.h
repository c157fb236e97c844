// Self-contained HTML report: summary tables and inline SVG charts (latency CDFs per run; for a
// sweep, throughput and goodput against request rate). No scripts, fonts or other network
// resources, so the file can be mailed or archived as is.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "loadtest/report.h"

namespace compressd::loadtest {

struct ChartSeries {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y), drawn in the given order
};

// One SVG line chart, `width` x `height` pixels, with axes, ticks and a legend. An empty or
// degenerate series set still yields a valid <svg> with a "no data" note.
std::string SvgLineChart(const std::string& title, const std::string& x_label,
                         const std::string& y_label, const std::vector<ChartSeries>& series,
                         int width = 560, int height = 320);

// Empirical CDF points (value, fraction <= value) of `values`, at most `max_points` of them.
std::vector<std::pair<double, double>> CdfPoints(std::vector<double> values,
                                                 size_t max_points = 400);

std::string HtmlEscape(const std::string& s);
std::string RenderHtmlReport(const Report& report);
absl::Status WriteHtmlReport(const Report& report, const std::string& path);

}  // namespace compressd::loadtest

// `compressd-loadtest compare A.json B.json`: a side-by-side table of two reports' summaries,
// run by run (runs are paired by position; a sweep against a sweep compares rate by rate).
#pragma once

#include <string>

#include "loadtest/report.h"

namespace compressd::loadtest {

// Plain-text table: metric | A | B | change (B relative to A, in percent).
std::string CompareReports(const Report& a, const Report& b, const std::string& name_a,
                           const std::string& name_b);

}  // namespace compressd::loadtest

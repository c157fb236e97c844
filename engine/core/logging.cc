#include "engine/core/logging.h"

#include <cstdio>

#include "spdlog/sinks/stdout_color_sinks.h"

namespace compressd {

void InitLogging(const std::string& level) {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::stderr_color_mt("compressd");
    l->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ %v");
    return l;
  }();
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

void CheckFailed(const char* file, int line, const char* cond, const char* msg) {
  std::fprintf(stderr, "CHECK failed at %s:%d: %s %s\n", file, line, cond, msg);
  std::fflush(stderr);
  std::abort();
}

}  // namespace compressd

// Logging (spdlog, to stderr) and CHECK for invariants. CHECK is never used for input
// validation: bad input becomes an absl::Status.
#pragma once

#include <cstdlib>

#include "spdlog/spdlog.h"

namespace compressd {

// Configures the default logger to write to stderr at `level` ("debug", "info", "warn",
// "error", "off"). Safe to call more than once.
void InitLogging(const std::string& level);

[[noreturn]] void CheckFailed(const char* file, int line, const char* cond, const char* msg);

}  // namespace compressd

#define LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) ::compressd::CheckFailed(__FILE__, __LINE__, #cond, ""); \
  } while (0)
#define CHECK_MSG(cond, msg)                                                  \
  do {                                                                        \
    if (!(cond)) ::compressd::CheckFailed(__FILE__, __LINE__, #cond, (msg)); \
  } while (0)

// absl::Status helpers used at every module boundary. No exception crosses a module.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define COMPRESSD_CONCAT_INNER(a, b) a##b
#define COMPRESSD_CONCAT(a, b) COMPRESSD_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when it is not OK.
#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status _st = (expr);               \
    if (!_st.ok()) return _st;                 \
  } while (0)

// ASSIGN_OR_RETURN(auto x, MakeX()); declares/assigns x or returns the error.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL(COMPRESSD_CONCAT(_statusor_, __COUNTER__), lhs, rexpr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                          \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

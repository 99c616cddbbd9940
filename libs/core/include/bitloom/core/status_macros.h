// Early-return helpers for absl::Status and absl::StatusOr, used throughout Bitloom's libraries.
// Errors travel as values; no exception crosses a library boundary.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define BITLOOM_CONCAT_INNER_(a, b) a##b
#define BITLOOM_CONCAT_(a, b) BITLOOM_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define BITLOOM_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    if (absl::Status _bitloom_status = (expr);         \
        !_bitloom_status.ok()) [[unlikely]] {          \
      return _bitloom_status;                          \
    }                                                  \
  } while (0)

// `lhs = *expr` when `expr` (an absl::StatusOr) holds a value; otherwise returns its status.
#define BITLOOM_ASSIGN_OR_RETURN(lhs, expr) \
  BITLOOM_ASSIGN_OR_RETURN_IMPL_(BITLOOM_CONCAT_(_bitloom_statusor_, __LINE__), lhs, expr)

#define BITLOOM_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                   \
  if (!statusor.ok()) [[unlikely]] {                        \
    return std::move(statusor).status();                    \
  }                                                         \
  lhs = std::move(statusor).value()

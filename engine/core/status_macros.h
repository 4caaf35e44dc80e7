// Propagation helpers for absl::Status / absl::StatusOr (Abseil 20220623 ships none).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SY_STATUS_CONCAT_INNER(a, b) a##b
#define SY_STATUS_CONCAT(a, b) SY_STATUS_CONCAT_INNER(a, b)

#define SY_RETURN_IF_ERROR(expr)        \
  do {                                  \
    ::absl::Status sy_status_ = (expr); \
    if (!sy_status_.ok()) [[unlikely]]  \
      return sy_status_;                \
  } while (0)

#define SY_ASSIGN_OR_RETURN(lhs, expr) \
  SY_ASSIGN_OR_RETURN_IMPL(SY_STATUS_CONCAT(sy_statusor_, __LINE__), lhs, expr)

#define SY_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) [[unlikely]]                    \
    return std::move(tmp).status();              \
  lhs = std::move(tmp).value()

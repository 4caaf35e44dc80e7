// Invariant checks for programming errors. Request-caused errors are absl::Status, never these.
#pragma once

#include "absl/status/status.h"

namespace switchyard::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              const char* detail);
}  // namespace switchyard::internal

#define SY_CHECK(cond)                                                         \
  do {                                                                         \
    if (!(cond)) [[unlikely]]                                                  \
      ::switchyard::internal::CheckFailed(__FILE__, __LINE__, #cond, nullptr); \
  } while (0)

#define SY_CHECK_OK(expr)                                                       \
  do {                                                                          \
    const ::absl::Status sy_check_status_ = (expr);                             \
    if (!sy_check_status_.ok()) [[unlikely]]                                    \
      ::switchyard::internal::CheckFailed(__FILE__, __LINE__, #expr,            \
                                          sy_check_status_.ToString().c_str()); \
  } while (0)

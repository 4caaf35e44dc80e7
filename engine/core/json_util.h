// Typed access to JSON documents (nlohmann::json) with errors that name the document and key.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace switchyard {

absl::StatusOr<std::string> ReadFile(const std::string& path);

namespace json_util {

// Parses `text`; `where` names the document in error messages (e.g. "config.json").
absl::StatusOr<nlohmann::json> Parse(absl::string_view text, absl::string_view where);

absl::StatusOr<int64_t> GetInt(const nlohmann::json& j, absl::string_view key,
                               absl::string_view where);
absl::StatusOr<int64_t> GetIntOr(const nlohmann::json& j, absl::string_view key, int64_t fallback,
                                 absl::string_view where);
absl::StatusOr<double> GetNumber(const nlohmann::json& j, absl::string_view key,
                                 absl::string_view where);
absl::StatusOr<double> GetNumberOr(const nlohmann::json& j, absl::string_view key, double fallback,
                                   absl::string_view where);
absl::StatusOr<bool> GetBoolOr(const nlohmann::json& j, absl::string_view key, bool fallback,
                               absl::string_view where);
absl::StatusOr<std::string> GetString(const nlohmann::json& j, absl::string_view key,
                                      absl::string_view where);

}  // namespace json_util
}  // namespace switchyard

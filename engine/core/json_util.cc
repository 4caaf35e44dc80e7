#include "engine/core/json_util.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace switchyard {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
  return ss.str();
}

namespace json_util {
namespace {

absl::Status Missing(absl::string_view key, absl::string_view where) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": missing \"", key, "\""));
}
absl::Status WrongType(absl::string_view key, absl::string_view where, absl::string_view want) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": \"", key, "\" must be ", want));
}
const nlohmann::json* Find(const nlohmann::json& j, absl::string_view key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(std::string(key));
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

}  // namespace

absl::StatusOr<nlohmann::json> Parse(absl::string_view text, absl::string_view where) {
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": invalid JSON: ", e.what()));
  }
}

absl::StatusOr<int64_t> GetInt(const nlohmann::json& j, absl::string_view key,
                               absl::string_view where) {
  const nlohmann::json* v = Find(j, key);
  if (v == nullptr) return Missing(key, where);
  if (!v->is_number_integer()) return WrongType(key, where, "an integer");
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    return WrongType(key, where, "an integer below 2^63");
  }
  return v->get<int64_t>();
}

absl::StatusOr<int64_t> GetIntOr(const nlohmann::json& j, absl::string_view key, int64_t fallback,
                                 absl::string_view where) {
  if (Find(j, key) == nullptr) return fallback;
  return GetInt(j, key, where);
}

absl::StatusOr<double> GetNumber(const nlohmann::json& j, absl::string_view key,
                                 absl::string_view where) {
  const nlohmann::json* v = Find(j, key);
  if (v == nullptr) return Missing(key, where);
  if (!v->is_number()) return WrongType(key, where, "a number");
  return v->get<double>();
}

absl::StatusOr<double> GetNumberOr(const nlohmann::json& j, absl::string_view key, double fallback,
                                   absl::string_view where) {
  if (Find(j, key) == nullptr) return fallback;
  return GetNumber(j, key, where);
}

absl::StatusOr<bool> GetBoolOr(const nlohmann::json& j, absl::string_view key, bool fallback,
                               absl::string_view where) {
  const nlohmann::json* v = Find(j, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) return WrongType(key, where, "true or false");
  return v->get<bool>();
}

absl::StatusOr<std::string> GetString(const nlohmann::json& j, absl::string_view key,
                                      absl::string_view where) {
  const nlohmann::json* v = Find(j, key);
  if (v == nullptr) return Missing(key, where);
  if (!v->is_string()) return WrongType(key, where, "a string");
  return v->get<std::string>();
}

}  // namespace json_util
}  // namespace switchyard

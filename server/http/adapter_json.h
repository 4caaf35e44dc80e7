// The JSON of the adapter observability endpoints (GET /v1/adapters/{name}/routing and
// /v1/adapters/{name}/experts), apart from the HTTP handlers so they can be tested alone.
#pragma once

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "engine/adapters/routing_window.h"
#include "nlohmann/json.hpp"
#include "server/frontend/frontend.h"

namespace switchyard {

nlohmann::json RoutingSnapshotJson(const RoutingSnapshot& snap);
nlohmann::json ExpertReportJson(const ExpertReport& report);

// The value of `key` in the query string of `target` ("/path?a=1&b=2"), undecoded; nullopt when
// absent.
std::optional<std::string> QueryParameter(absl::string_view target, absl::string_view key);

}  // namespace switchyard

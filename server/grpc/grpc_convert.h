// Conversions between the gRPC wire messages and the frontend's API-neutral types, apart from the
// handlers (as Triton keeps grpc_utils.cc), so they can be tested and fuzzed without a server.
#pragma once

#include <optional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/frontend/frontend.h"
#include "switchyard/v1/switchyard.pb.h"

namespace switchyard {

// The wire request in API-neutral form; INVALID_ARGUMENT names the field. `deadline`: the call's.
absl::StatusOr<GenerateInput> GenerateInputFromProto(const v1::GenerateRequest& req,
                                                     std::optional<absl::Time> deadline);

void ExpertReportToProto(const ExpertReport& report, v1::GetExpertDiagnosticsResponse* out);

}  // namespace switchyard

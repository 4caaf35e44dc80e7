// switchyard-cli inspect (expert diagnostics as terminal heatmaps) and stats --compare (an
// adapter's load per expert before and after its last swap, side by side).
#pragma once

#include <string>
#include <vector>

#include "switchyard/v1/switchyard.grpc.pb.h"

namespace switchyard::client {

struct InspectOptions {
  double similarity_threshold = 0.9;
  int layer = -1;  // -1: every layer
  bool json = false;
  bool colour = false;
};

// A message as JSON with the proto's field names (snake_case, as the HTTP API's JSON).
void PrintJson(const google::protobuf::Message& m);

int Inspect(v1::Switchyard::Stub& stub, const std::string& adapter, const InspectOptions& options);

// Routing load of the version before the last swap beside the current one's (window or total).
int CompareStats(v1::Switchyard::Stub& stub, const std::string& adapter, bool total, bool json);

}  // namespace switchyard::client

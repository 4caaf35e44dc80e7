// Fuzzes the gRPC request path short of the engine: arbitrary bytes parsed as a GenerateRequest
// (as gRPC would hand them to the handler), converted (server/grpc/grpc_convert.cc), prepared by
// the frontend (chat rendering, tokenization, the adapter) and validated by the scheduler, over
// the model in SWITCHYARD_FUZZ_TOKENIZER. Beyond not crashing: every refusal is INVALID_ARGUMENT
// or NOT_FOUND (a client error), never an internal one.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "google/protobuf/stubs/logging.h"
#include "server/grpc/grpc_convert.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using namespace switchyard;
fuzz::FrontendWorld* g_world = nullptr;

void CheckClientError(const absl::Status& s, const char* stage) {
  if (s.ok() || s.code() == absl::StatusCode::kInvalidArgument ||
      s.code() == absl::StatusCode::kNotFound) {
    return;
  }
  std::fprintf(stderr, "property violated: %s refused with %s\n", stage, s.ToString().c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 is refused, and logged, by design
  g_world = fuzz::FrontendWorld::Create("chatml");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  v1::GenerateRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;  // gRPC refuses these itself
  absl::StatusOr<GenerateInput> in = GenerateInputFromProto(req, std::nullopt);
  CheckClientError(in.status(), "the conversion");
  if (!in.ok()) return 0;
  absl::StatusOr<PreparedRequest> prepared = g_world->frontend->Prepare(std::move(*in));
  CheckClientError(prepared.status(), "the frontend");
  if (!prepared.ok()) return 0;
  CheckClientError(g_world->scheduler->Validate(prepared->request).status(), "the scheduler");
  return 0;
}

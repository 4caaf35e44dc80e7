// Fuzzes the gRPC request path short of the engine: arbitrary bytes parsed as a GenerateRequest
// (as gRPC would hand them to the handler), converted (server/grpc/grpc_convert.cc), prepared by
// the frontend (chat rendering, tokenization, the adapter) and validated by the scheduler, over
// the model in SWITCHYARD_FUZZ_TOKENIZER. Beyond not crashing: every refusal is INVALID_ARGUMENT
// or NOT_FOUND (a client error), never an internal one.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "engine/adapters/registry.h"
#include "engine/engine.h"
#include "google/protobuf/stubs/logging.h"
#include "server/frontend/frontend.h"
#include "server/grpc/grpc_convert.h"
#include "server/scheduler/scheduler.h"

namespace {

using namespace switchyard;

struct World {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<AdapterRegistry> registry;
  std::unique_ptr<StepExecutor> executor;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<Frontend> frontend;
};
World* g_world = nullptr;

template <typename T>
T Must(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, v.status().ToString().c_str());
    std::abort();
  }
  return std::move(*v);
}

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
  const char* dir = std::getenv("SWITCHYARD_FUZZ_TOKENIZER");
  auto* w = new World();
  EngineOptions eo;
  eo.model_dir = dir != nullptr ? dir : "";
  eo.kv_cache_bytes = 1 << 20;
  w->engine = Must(Engine::Create(eo), "engine");
  w->tokenizer = Must(Tokenizer::Load(eo.model_dir), "tokenizer");
  AdapterRegistryOptions ro;
  ro.root = std::filesystem::temp_directory_path().string();
  Engine* e = w->engine.get();
  w->registry = std::make_unique<AdapterRegistry>(
      ro, [e](const ConfinedDir& d) { return e->LoadAdapter(d); });
  w->executor = MakeEngineExecutor(*w->engine);
  w->scheduler = Must(Scheduler::Create(w->executor.get(), w->tokenizer.get(), {}), "scheduler");
  FrontendOptions fo;
  fo.served_model_name = "tiny";
  fo.model_dir = eo.model_dir;
  fo.chat_template = "chatml";
  w->frontend = Must(Frontend::Create(w->engine.get(), w->scheduler.get(), w->registry.get(),
                                      w->tokenizer.get(), fo),
                     "frontend");
  g_world = w;
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

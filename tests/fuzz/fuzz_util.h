// A whole frontend over the model in SWITCHYARD_FUZZ_TOKENIZER, for the request parsers' targets.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "engine/adapters/registry.h"
#include "engine/engine.h"
#include "server/frontend/frontend.h"
#include "server/scheduler/scheduler.h"
#include "tests/fuzz/check.h"

namespace switchyard::fuzz {

// An engine, tokenizer, registry, scheduler (not started) and frontend over the tiny model in
// SWITCHYARD_FUZZ_TOKENIZER, served as "tiny".
struct FrontendWorld {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<AdapterRegistry> registry;
  std::unique_ptr<StepExecutor> executor;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<Frontend> frontend;

  static FrontendWorld* Create(const std::string& chat_template = "") {
    const char* dir = std::getenv("SWITCHYARD_FUZZ_TOKENIZER");
    auto* w = new FrontendWorld();
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
    fo.chat_template = chat_template;
    w->frontend = Must(Frontend::Create(w->engine.get(), w->scheduler.get(), w->registry.get(),
                                        w->tokenizer.get(), fo),
                       "frontend");
    return w;
  }
};

}  // namespace switchyard::fuzz

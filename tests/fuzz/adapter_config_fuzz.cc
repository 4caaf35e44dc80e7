// Fuzzes adapter_config.json parsing: any text is refused with a Status or gives a config whose
// values are in range (a mixture's members: folders below its own).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "engine/adapters/loader.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto c = switchyard::ParseAdapterConfig(std::string(reinterpret_cast<const char*>(data), size));
  if (!c.ok()) return 0;
  if (c->family == switchyard::AdapterConfig::Family::kMixture) {
    // A router over adapters: its members and its top-k over them, no LoRA of its own.
    const int members = static_cast<int>(c->members.size());
    if (members < 2 || members > 64 || c->router.num_experts != members || c->router.top_k < 1 ||
        c->router.top_k > members) {
      std::abort();
    }
    for (const std::string& m : c->members) {
      if (m.empty() || m.front() == '/' || m == ".." || m.starts_with("../") ||
          m.find("/../") != std::string::npos || m.ends_with("/..")) {
        std::abort();
      }
    }
    return 0;
  }
  if (c->r < 1 || c->expert_r < 1 || !(c->alpha > 0) || c->router.num_experts < 1 ||
      c->router.top_k < 1 || c->heads < 1) {
    std::abort();
  }
  return 0;
}

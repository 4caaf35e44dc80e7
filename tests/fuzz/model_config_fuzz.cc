// Fuzzes config.json parsing: any text is refused with a Status or gives a config whose derived
// values are usable.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "engine/model/config.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto c =
      switchyard::ModelConfig::FromJson(std::string(reinterpret_cast<const char*>(data), size));
  if (!c.ok()) return 0;
  if (c->head_dim <= 0 || c->num_heads % c->num_kv_heads != 0 ||
      static_cast<int64_t>(c->sliding_window.size()) != c->num_layers) {
    std::abort();
  }
  (void)c->RopeInverseFrequencies();
  return 0;
}

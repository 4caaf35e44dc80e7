// Fuzzes the restricted unpickler and the torch.save archive reader: any bytes are refused with
// a Status or give tensors of floating-point dtypes whose every byte can be read; nothing is ever
// executed. Inputs that start like a zip ("PK") go through the archive reader; anything else is
// taken as the pickle itself over a few fixed storages, so the fuzzer reaches the unpickler and
// the view checks directly instead of spending its mutations on zip headers.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include "engine/adapters/torch_checkpoint.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  static const std::map<std::string, std::string> kStorages = {{"0", std::string(64, '\1')},
                                                               {"1", std::string(256, '\2')},
                                                               {"2", std::string(4, '\3')},
                                                               {"3", std::string()}};
  auto tensors = bytes.rfind("PK", 0) == 0 ? switchyard::ReadTorchCheckpointBytes(bytes)
                                           : switchyard::ReadTorchPickle(bytes, kStorages);
  if (!tensors.ok()) return 0;
  for (const auto& t : *tensors) {
    if (t.tensor.dtype() == switchyard::DType::kI32) std::abort();
    const char* p = t.tensor.data<char>();
    volatile char sink = 0;
    for (size_t i = 0; i < t.tensor.nbytes(); i += 61) sink = sink ^ p[i];
    if (t.tensor.nbytes() > 0) sink = sink ^ p[t.tensor.nbytes() - 1];
  }
  return 0;
}

// Fuzzes the restricted unpickler and the torch.save archive reader: any bytes are refused with
// a Status or give contiguous tensors of floating-point dtypes; nothing is ever executed.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "engine/adapters/torch_checkpoint.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto tensors =
      switchyard::ReadTorchCheckpointBytes(std::string(reinterpret_cast<const char*>(data), size));
  if (!tensors.ok()) return 0;
  for (const auto& t : *tensors) {
    if (t.tensor.dtype() == switchyard::DType::kI32) std::abort();
    if (t.tensor.nbytes() > 0) {
      volatile char last = t.tensor.data<char>()[t.tensor.nbytes() - 1];
      (void)last;
    }
  }
  return 0;
}

// Reads a `torch.save` archive (the zip format of PyTorch >= 1.6) holding a dict of tensors, the
// way MoE-PEFT writes adapter_model.bin, without executing anything: a restricted unpickler that
// knows the opcodes torch.save emits and exactly these globals: collections.OrderedDict,
// torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and the float storage types
// (FloatStorage, HalfStorage, BFloat16Storage). Any other global, opcode or structure is refused
// with a Status naming it; a pickle is code and is never run.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"

namespace switchyard {

struct NamedTensor {
  std::string name;
  Tensor tensor;  // host, contiguous, F32/F16/BF16
};

absl::StatusOr<std::vector<NamedTensor>> ReadTorchCheckpoint(const std::string& path);
// The same from an archive held in memory (tests, fuzzing).
absl::StatusOr<std::vector<NamedTensor>> ReadTorchCheckpointBytes(const std::string& bytes);

}  // namespace switchyard

// Reads a `torch.save` archive (the zip format of PyTorch >= 1.6) holding a dict of tensors, the
// way MoE-PEFT writes adapter_model.bin, without executing anything: a restricted unpickler that
// knows the opcodes torch.save emits and exactly these globals: collections.OrderedDict,
// torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and the float storage types
// (FloatStorage, HalfStorage, BFloat16Storage). Any other global, opcode or structure is refused
// with a Status naming it; a pickle is code and is never run.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"

namespace switchyard {

struct NamedTensor {
  std::string name;
  Tensor tensor;  // host, contiguous, F32/F16/BF16; may share memory with other tensors
};

//
// A crafted archive cannot crash the process or make it allocate what it merely claims: sizes,
// strides and offsets are checked with overflow-checked arithmetic against the storage they view
// (zero strides only for empty tensors), an entry's declared size against what the archive can
// hold, storages are read once and shared by every view of them, and copies of strided views are
// bounded by the bytes of storage actually read (docs/adapters.md, "What the loaders check").
absl::StatusOr<std::vector<NamedTensor>> ReadTorchCheckpoint(const std::string& path);
// The same from an open file (taken over and closed); `what` names it in messages.
absl::StatusOr<std::vector<NamedTensor>> ReadTorchCheckpointFd(int fd, const std::string& what);
// The tensors of a torch.save pickle (data.pkl) over the storages given by key, as the archive
// reader does after unzipping (the fuzzer's way into the unpickler).
absl::StatusOr<std::vector<NamedTensor>> ReadTorchPickle(
    absl::string_view pickle, const std::map<std::string, std::string>& storages);
// The same from an archive held in memory (tests, fuzzing).
absl::StatusOr<std::vector<NamedTensor>> ReadTorchCheckpointBytes(const std::string& bytes);

}  // namespace switchyard

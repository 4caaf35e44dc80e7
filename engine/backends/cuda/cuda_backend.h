// The CUDA backend: the ops of engine/backends/backend.h on an NVIDIA GPU, dense GEMMs through
// cuBLAS (F32 weights: FP32 GEMM with TF32 off, the reference path; BF16/F16 weights: activations
// rounded to the weight type, F32 accumulation and output) and our own kernels for the rest
// (kernels.cu). Device memory: weights and the KV cache in allocations of their own, per-step
// tensors from the stream-ordered pool (cudaMallocAsync), never managed memory. CUDA and cuBLAS
// failures become absl::Status: at creation, on allocation and copies, and for the void ops at
// the next Synchronize.
//
// State: the ops are checked op by op against the CPU backend by tests/unit/cuda_backend_test.cc
// on a GPU; the engine's model and MoE-LoRA code still run on the CPU backend only (docs/cuda.md).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/backends/backend.h"

namespace switchyard {

// CUDA devices visible to this process (0 without a driver or a GPU).
int CudaDeviceCount();

// UNAVAILABLE when there is no such device.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device = 0);

}  // namespace switchyard

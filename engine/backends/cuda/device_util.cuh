// Device helpers shared by the CUDA backend's kernel files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "engine/backends/cuda/kernels.h"

namespace switchyard::cuda {

__device__ inline float Load(const void* p, Elem e, int64_t i) {
  switch (e) {
    case Elem::kF16:
      return __half2float(static_cast<const __half*>(p)[i]);
    case Elem::kBF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

// act: the order of switchyard::Activation (SiLU, GELU erf, GELU tanh, ReLU).
__device__ inline float Activate(int act, float x) {
  switch (act) {
    case 0:
      return x / (1.0f + expf(-x));
    case 1:
      return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case 2:
      return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    default:
      return fmaxf(x, 0.0f);
  }
}

}  // namespace switchyard::cuda

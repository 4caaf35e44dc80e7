// Large-M GEMMs through oneDNN's matmul (brgemm kernels on AVX-512), on row-major operands.
// Primitives are cached by shape. Not thread-safe: owned by one CpuBackend on the engine thread.
#pragma once

#include <cstdint>
#include <memory>

#include "engine/core/dtype.h"

namespace switchyard::cpu {

class OneDnnMatmul {
 public:
  OneDnnMatmul();
  ~OneDnnMatmul();

  // y[m, n] (+)= x[m, k] * w[n, k]^T (+ bias[n]); y has row stride ldy. x and w are both F32 or
  // both BF16; y and bias are F32.
  void Matmul(const void* x, const void* w, DType dtype, int64_t m, int64_t k, int64_t n,
              const float* bias, float* y, int64_t ldy, bool accumulate);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace switchyard::cpu

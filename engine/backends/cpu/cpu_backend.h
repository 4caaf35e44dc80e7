// The CPU backend: oneDNN for large GEMMs, our own AVX2/AVX-512 kernels for everything else.
#pragma once

#include <memory>

#include "engine/backends/backend.h"

namespace switchyard {

struct CpuBackendOptions {
  MatmulPrecision matmul_precision = MatmulPrecision::kF32;
  QuantActivations quant_activations = QuantActivations::kInt8;
};

std::unique_ptr<Backend> CreateCpuBackend(const CpuBackendOptions& options);

// Whether this CPU has BF16 dot-product instructions (AVX512-BF16 or AMX-BF16); false when
// SWITCHYARD_ISA=avx2 pins the baseline.
bool CpuHasBF16Dot();
// kAuto resolved for a CPU that has (or lacks) BF16 dot products; kF32 and kBF16 as they are.
MatmulPrecision ResolveMatmulPrecision(MatmulPrecision requested, bool bf16_dot);

}  // namespace switchyard

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

}  // namespace switchyard

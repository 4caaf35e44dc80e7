// CPU kernels over block-quantized weights (core/quant.h), rows stored as in the file: one row is
// row_bytes of consecutive blocks, rows consecutive, so a pass over a matrix is one sequential
// stream. Compiled for AVX2 (x86-64-v3), the baseline of the CPU backend.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/core/quant.h"

namespace switchyard::cpu {

struct QuantMatmulArgs {
  QuantType type;
  const uint8_t* w;  // [n, row_bytes]
  size_t row_bytes;
  int64_t cols;  // K
  const float* x;
  const int32_t* x_rows;  // optional gather: x row i is x + x_rows[i] * ldx
  int64_t ldx;
  int64_t m;
  const float* bias;  // [n] or null
  float* y;
  int64_t ldy;
  bool accumulate;
};

// y[i, r] (+)= sum_k x[i, k] * dequant(w)[r, k] (+ bias[r]) for weight rows [row_begin, row_end).
// The weights are dequantized to exactly DequantizeRow's values and multiplied in F32; the order
// of accumulation for one (i, r) does not depend on m.
void QuantMatmulRows(const QuantMatmulArgs& args, int64_t row_begin, int64_t row_end);

// DequantizeRow, vectorized (bit-identical results).
void DequantizeRowFast(QuantType type, const uint8_t* src, float* dst, int64_t cols);

}  // namespace switchyard::cpu

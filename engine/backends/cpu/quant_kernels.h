// CPU kernels over block-quantized weights (core/quant.h), rows stored as in the file: one row is
// row_bytes of consecutive blocks, rows consecutive, so a pass over a matrix is one sequential
// stream. Compiled for AVX2 (x86-64-v3), the baseline of the CPU backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/core/quant.h"

namespace switchyard::cpu {

// Activation rows quantized for the integer kernels, as llama.cpp quantizes them: per block of 32
// values an F32 scale d = max|x| / 127 and q = round-half-even(x * (1 / d)) in int8 (d = 0 and
// q = 0 for a block of zeros), and d * sum(q) per block for the formats whose blocks have a minimum
// (Q4_K, Q5_K). The products are then exact integer sums scaled in F32: results differ from
// QuantMatmulRows' F32 path by the activations' rounding (relative error about 0.4% of a block's
// largest value), not by the weights'.
struct Int8Rows {
  int64_t m = 0;
  int64_t cols = 0;                // a multiple of 32
  std::vector<int8_t> q;           // [m, cols]
  std::vector<float> d;            // [m, cols / 32]
  std::vector<float> scaled_sums;  // [m, cols / 32]
};

// Quantizes rows x + (x_rows ? x_rows[i] : i) * ldx, i < m, of `cols` values into `out`.
void QuantizeActivations(const float* x, const int32_t* x_rows, int64_t ldx, int64_t m,
                         int64_t cols, Int8Rows* out);

// Quantized matrices are kept with their rows in groups of eight, interleaved for the integer
// decode kernels. A block is cut into fields, its F16 scales (2 bytes each) and the 4-byte words
// between them; per group and block position, each field of the eight rows is stored together, row
// after row (a field at block offset o of size z for row r lands at 8 o + r z). For Q4_0 that is
// the eight scales (16 bytes), then four runs of 32 bytes where run j holds bytes 4j..4j+3 of each
// row's nibbles. One 32-byte load then gives four weights of each of the eight rows (and, in the
// high nibbles, four more), so a vector lane is a row: no per-row horizontal sums, one scale
// conversion per eight rows. The bytes are the file's, moved; rows past the last whole group stay
// as stored.
constexpr int kInterleavedRows = 8;
// The rows of a `rows`-row matrix of `type` that are interleaved (whole groups).
int64_t InterleavedRows(QuantType type, int64_t rows);
// Copies `rows` stored rows of `cols` weights from `src` to `dst`, interleaving whole groups.
void InterleaveRows(QuantType type, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst);
// Row `row` of an interleaved `rows`-row matrix `w` as the file stored it, into
// out[QuantRowBytes(type, cols)].
void StoredRow(QuantType type, const uint8_t* w, int64_t rows, int64_t row, int64_t cols,
               uint8_t* out);

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
  // When set, the activations come from here (x and x_rows are ignored) and the products are
  // integer dot products (see Int8Rows).
  const Int8Rows* xq = nullptr;
  // Rows [0, interleaved_rows) of w are interleaved groups (see InterleaveRows).
  int64_t interleaved_rows = 0;
};

// y[i, r] (+)= sum_k x[i, k] * dequant(w)[r, k] (+ bias[r]) for weight rows [row_begin, row_end).
// Without args.xq the weights are dequantized to exactly DequantizeRow's values and multiplied in
// F32; with it, see Int8Rows. Either way the order of accumulation for one (i, r) does not depend
// on m.
void QuantMatmulRows(const QuantMatmulArgs& args, int64_t row_begin, int64_t row_end);
// The integer path of QuantMatmulRows (args.xq set; quant_int8_kernels.cc).
void Int8MatmulRows(const QuantMatmulArgs& args, int64_t row_begin, int64_t row_end);

// DequantizeRow, vectorized (bit-identical results).
void DequantizeRowFast(QuantType type, const uint8_t* src, float* dst, int64_t cols);

}  // namespace switchyard::cpu

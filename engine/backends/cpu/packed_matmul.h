// Linear layers on the CPU over packed weights (packed_layout.h): our streaming kernel for the
// few-row GEMMs of decode, oneDNN on unpacked 256-row panels for prefill-sized ones.
//
// Thread-safety: one PackedMatmul per backend, driven by the engine thread; it fans work out to
// the OpenMP pool itself.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/backends/backend.h"
#include "engine/backends/cpu/kernels.h"
#include "engine/backends/cpu/onednn_matmul.h"
#include "engine/backends/cpu/quant_kernels.h"

namespace switchyard::cpu {

// Up to this many rows of x, our kernel beats oneDNN on unpacked panels (bench_kernels: 260 vs 200
// GFLOP/s at 256 rows, 215 vs 325 at 512, for BF16 and F32 weights alike).
constexpr int64_t kSmallMLimit = 256;

// Up to this many rows of x, quantized weights are multiplied block by block as stored
// (quant_kernels.h); beyond, dequantized in panels for oneDNN. With int8 activations every format
// stays on the integer kernel up to 16 rows (bench_engine, batch 16 on the 0.5B model, against
// dequantize-then-oneDNN: Q8_0 96.7 vs 79.8 tok/s and Q6_K 88.5 vs 68.6 on an earlier machine;
// with interleaved rows, on a 2-core Zen 1, Q4_0 91.2 vs 46.3 and Q4_K_M 68.8 vs 37.9-42.2).
inline int64_t QuantSmallMLimit(QuantActivations activations) {
  return activations == QuantActivations::kInt8 ? 16 : 8;
}

// Packs a row-major F32/F16/BF16 host matrix.
Weight PackWeight(const Tensor& host);
// W [rows, cols] (F32 or BF16) transposed into expand blocks (packed_layout.h).
Weight TransposeWeight(const Tensor& host);
// A copy of block-quantized rows (U8 [rows, row bytes]), each group of eight rows interleaved
// (quant_kernels.h).
Weight CopyQuantizedWeight(const Tensor& blocks, QuantType type, int64_t cols);
// Converts packed (or quantized) rows [row_begin, row_begin + rows) to row-major `out_dtype` (F32,
// or BF16 from BF16), [rows, w.cols].
void UnpackRows(const Weight& w, int64_t row_begin, int64_t rows, DType out_dtype, void* out);
// out[0, cols) = F32(w[row]).
void GatherRow(const Weight& w, int64_t row, float* out);

class PackedMatmul {
 public:
  PackedMatmul(MatmulPrecision precision, QuantActivations quant_activations)
      : precision_(precision), quant_activations_(quant_activations) {}

  // y[M, N] (+)= x[M, K] * w^T (+ bias); x and y F32 row-major.
  void Linear(const float* x, int64_t m, const Weight& w, const float* bias, float* y,
              bool accumulate);

  // Many small products in one parallel pass (our kernel; rows keep Linear's results exactly when
  // a job has at most kSmallMLimit rows, as MoE-LoRA's do).
  void Grouped(std::span<const LinearJob> jobs);

  // The two paths Linear picks between (public for bench_kernels, which measures the crossover).
  void SmallM(const float* x, int64_t m, const Weight& w, const float* bias, float* y,
              bool accumulate);
  void LargeM(const float* x, int64_t m, const Weight& w, const float* bias, float* y,
              bool accumulate);
  void LinearInto(const float* x, int64_t m, const Weight& w, const float* bias, float* y,
                  int64_t ldy, bool accumulate);
  void LargeMInto(const float* x, int64_t m, const Weight& w, const float* bias, float* y,
                  int64_t ldy, bool accumulate);
  void QuantSmallM(const float* x, const int32_t* x_rows, int64_t ldx, int64_t m, const Weight& w,
                   const float* bias, float* y, int64_t ldy, bool accumulate);

 private:
  MatmulPrecision precision_;
  QuantActivations quant_activations_;
  OneDnnMatmul onednn_;
  std::vector<float> xp_;
  std::vector<float> panel_f32_;
  std::vector<uint16_t> panel_bf16_;
  std::vector<uint16_t> x_bf16_;
  std::vector<size_t> grouped_offsets_;
  Int8Rows xq_;                       // QuantSmallM's activations, quantized
  std::vector<Int8Rows> grouped_xq_;  // Grouped's, per job
  struct Piece {
    int job;
    int64_t begin, end;
  };
  std::vector<Piece> pieces_;
};

}  // namespace switchyard::cpu

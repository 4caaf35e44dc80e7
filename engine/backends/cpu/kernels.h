// Vectorised CPU kernels, compiled once per instruction set (AVX2 baseline, AVX-512) from
// kernels_isa.cc and chosen once at start-up by cpuid. Every kernel is single-threaded: the
// callers in cpu_backend.cc split work across the OpenMP pool.
#pragma once

#include <cstdint>

#include "engine/core/activation.h"
#include "engine/core/dtype.h"

namespace switchyard::cpu {

// y[m, n] (+)= sum_k x[m, k] * w[n, k] (+ bias[n]) over the packed layout (packed_layout.h), for
// panels [panel_begin, panel_end). `xp` holds x as prepare_x wrote it.
struct PackedMatmulArgs {
  const float* xp;  // [m, padded_cols]
  int64_t m;
  const void* w;  // packed [padded_rows, padded_cols]
  DType w_dtype;
  int64_t n;            // real rows of w
  int64_t padded_cols;  // of w (and xp)
  const float* bias;    // [n] or null
  float* y;
  int64_t ldy;
  bool accumulate;
};

// y[m, n] (+)= sum_j x[m, j] * W[n, j] for the column blocks [block_begin, block_end) of an
// expand weight (packed_layout.h: W^T in blocks of kExpandBlock columns): the expand of a LoRA
// pair, a short sum (r) per output with no horizontal reduction. The per-output order of
// accumulation does not depend on m.
struct ExpandArgs {
  const float* x;
  const int32_t* x_rows;  // optional gather of x rows
  int64_t ldx;
  int64_t m;
  const void* wt;  // [blocks][r][kExpandBlock], F32 or BF16
  DType w_dtype;
  int64_t r;
  int64_t n;  // real output columns
  float* y;
  int64_t ldy;
  bool accumulate;
};

// One query token against one KV head's keys [lo, hi] (inclusive) of a paged cache whose layer
// layout is [block][kv_head][slot][head_dim].
struct AttentionTask {
  const float* q;  // [group, head_dim]: the q heads that share this kv head
  float* out;      // [group, head_dim]
  int group;
  int head_dim;
  const void* k_layer;
  const void* v_layer;
  DType kv_dtype;  // F32, BF16 or F16
  int num_kv_heads;
  int kv_head;
  int block_size;
  const int32_t* block_table;
  int64_t lo;
  int64_t hi;
  float scale;
  float* scratch;  // at least group * (hi - lo + 1) floats
};

struct KernelTable {
  const char* isa;
  // Lays out x rows [m, k] (row stride ldx; row i at x_rows[i] when x_rows is set) for
  // matmul_packed against weights of `w_dtype`: zero-padded to padded_cols and, for BF16
  // weights, even/odd columns de-interleaved per vector.
  void (*prepare_x)(DType w_dtype, const float* x, const int32_t* x_rows, int64_t m, int64_t ldx,
                    int64_t k, int64_t padded_cols, float* xp);
  void (*matmul_packed)(const PackedMatmulArgs& args, int64_t panel_begin, int64_t panel_end);
  void (*expand)(const ExpandArgs& args, int64_t block_begin, int64_t block_end);
  void (*convert_to_f32)(DType dtype, const void* src, float* dst, int64_t n);
  void (*rms_norm)(const float* x, const float* weight, float eps, float* y, int64_t d);
  // out[i] = act(gate[i]) * up[i]
  void (*gated_activation)(Activation act, const float* gate, const float* up, float* out,
                           int64_t n);
  void (*attend)(const AttentionTask& task);
  // x[i] = exp(x[i] - shift); returns the sum.
  float (*exp_shifted_sum)(float* x, int64_t n, float shift);
};

const KernelTable& Kernels();

namespace avx2 {
const KernelTable& Table();
}
namespace avx512 {
const KernelTable& Table();
}

}  // namespace switchyard::cpu

// Launchers of the CUDA backend's own kernels (kernels.cu). Pointers are device pointers; every
// launcher enqueues on `stream` and returns the launch error (cudaSuccess when queued). Semantics
// are the CPU backend's, op for op (engine/backends/backend.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace switchyard::cuda {

// Storage types of weights and tables (as DType: F32, F16, BF16).
enum class Elem { kF32, kF16, kBF16 };

cudaError_t Embedding(const void* table, Elem elem, int64_t cols, const int32_t* ids, int64_t n,
                      float* out, cudaStream_t stream);
cudaError_t RmsNorm(const float* x, const float* weight, float eps, int64_t rows, int64_t d,
                    float* out, cudaStream_t stream);
// dst[i] = elem(src[i]) for a row-major [rows, cols] block with leading dimension ld_src (dst is
// dense), gathering source rows through `rows` when it is not null.
cudaError_t ConvertRows(const float* src, int64_t ld_src, const int32_t* rows, int64_t n_rows,
                        int64_t cols, void* dst, Elem elem, cudaStream_t stream);
// y[r, :] += bias for rows r < m (leading dimension ldy).
cudaError_t AddBias(float* y, int64_t ldy, int64_t m, int64_t n, const float* bias,
                    cudaStream_t stream);
cudaError_t RopeTable(const int32_t* positions, int64_t n, const float* inv_freq, int64_t half,
                      float* cos_sin, cudaStream_t stream);
cudaError_t SplitQkvRope(const float* qkv, const float* cos_sin, int64_t tokens, int num_heads,
                         int num_kv_heads, int head_dim, float* q, float* k, float* v,
                         cudaStream_t stream);
// K and V caches are [layers, blocks, kv_heads, block_size, head_dim] F32; `layer_k` and
// `layer_v` point at the layer's first block.
cudaError_t WriteKv(const float* k, const float* v, const int32_t* slots, int64_t tokens,
                    int num_kv_heads, int block_size, int head_dim, float* layer_k, float* layer_v,
                    cudaStream_t stream);
struct AttentionArgs {
  const float* q;  // [T, heads * head_dim]
  const float* layer_k;
  const float* layer_v;
  const int32_t* positions;     // [T]
  const int32_t* token_seq;     // [T]
  const int32_t* block_tables;  // [S, max_blocks]
  int64_t max_blocks;
  int64_t tokens;
  int num_heads, num_kv_heads, head_dim, block_size, sliding_window;
  float scale;
  float* out;  // [T, heads * head_dim]
};
cudaError_t Attention(const AttentionArgs& args, cudaStream_t stream);
// act: 0 SiLU, 1 GELU (erf), 2 GELU (tanh), 3 ReLU (the order of switchyard::Activation).
cudaError_t GatedActivation(const float* gate_up, int64_t rows, int64_t f, int act, float* out,
                            cudaStream_t stream);
cudaError_t GatherRows(const float* x, int64_t d, const int32_t* rows, int64_t n, float* out,
                       cudaStream_t stream);

}  // namespace switchyard::cuda

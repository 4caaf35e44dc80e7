// The CUDA backend's own kernels: straightforward, correctness-first versions of the CPU
// backend's ops (one thread block per row or per (token, head)); cuBLAS does the GEMMs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "engine/backends/cuda/device_util.cuh"
#include "engine/backends/cuda/kernels.h"

namespace switchyard::cuda {
namespace {

constexpr int kThreads = 256;

__device__ void Store(void* p, Elem e, int64_t i, float v) {
  switch (e) {
    case Elem::kF16:
      static_cast<__half*>(p)[i] = __float2half_rn(v);
      break;
    case Elem::kBF16:
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
      break;
    default:
      static_cast<float*>(p)[i] = v;
  }
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the sum.
__device__ float BlockSum(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) total = s;
  }
  __syncthreads();
  const float out = total;
  __syncthreads();  // `total` and `partial` are reused by the next call
  return out;
}

__global__ void EmbeddingKernel(const void* table, Elem elem, int64_t cols, const int32_t* ids,
                                float* out) {
  const int64_t t = blockIdx.x;
  const int64_t row = ids[t];
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    out[t * cols + c] = Load(table, elem, row * cols + c);
  }
}

__global__ void RmsNormKernel(const float* x, const float* w, float eps, int64_t d, float* out) {
  const float* row = x + blockIdx.x * d;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) ss += row[i] * row[i];
  const float inv = rsqrtf(BlockSum(ss) / static_cast<float>(d) + eps);
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    out[blockIdx.x * d + i] = row[i] * inv * w[i];
  }
}

__global__ void ConvertRowsKernel(const float* src, int64_t ld, const int32_t* rows, int64_t cols,
                                  void* dst, Elem elem) {
  const int64_t r = blockIdx.x;
  const float* s = src + (rows != nullptr ? static_cast<int64_t>(rows[r]) : r) * ld;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) Store(dst, elem, r * cols + c, s[c]);
}

__global__ void AddBiasKernel(float* y, int64_t ldy, int64_t n, const float* bias) {
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) y[blockIdx.x * ldy + c] += bias[c];
}

__global__ void RopeTableKernel(const int32_t* pos, const float* inv_freq, int64_t half,
                                float* cos_sin) {
  const int64_t t = blockIdx.x;
  const float p = static_cast<float>(pos[t]);
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = p * inv_freq[i];
    cos_sin[t * 2 * half + i] = cosf(angle);
    cos_sin[t * 2 * half + half + i] = sinf(angle);
  }
}

__global__ void SplitQkvRopeKernel(const float* qkv, const float* cos_sin, int heads, int kv_heads,
                                   int hd, float* q, float* k, float* v) {
  const int64_t t = blockIdx.x;
  const int half = hd / 2;
  const int64_t qw = static_cast<int64_t>(heads) * hd, kvw = static_cast<int64_t>(kv_heads) * hd;
  const float* row = qkv + t * (qw + 2 * kvw);
  const float* c = cos_sin + t * hd;
  const float* s = c + half;
  // Rotate-half pairs (i, i + half) of every q and k head, then copy v.
  const int64_t pairs = static_cast<int64_t>(heads + kv_heads) * half;
  for (int64_t p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int64_t head = p / half, i = p % half;
    const bool is_q = head < heads;
    const float* x = row + head * hd;  // k heads follow the q heads in the row
    float* y = is_q ? q + t * qw + head * hd : k + t * kvw + (head - heads) * hd;
    const float a = x[i], b = x[i + half];
    y[i] = a * c[i] - b * s[i];
    y[i + half] = b * c[i] + a * s[i];
  }
  for (int64_t i = threadIdx.x; i < kvw; i += blockDim.x) v[t * kvw + i] = row[qw + kvw + i];
}

__global__ void WriteKvKernel(const float* k, const float* v, const int32_t* slots, int kv_heads,
                              int bs, int hd, float* lk, float* lv) {
  const int64_t t = blockIdx.x;
  const int64_t block = slots[t] / bs, offset = slots[t] % bs;
  const int64_t width = static_cast<int64_t>(kv_heads) * hd;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    const int64_t h = i / hd, d = i % hd;
    const int64_t dst = ((block * kv_heads + h) * bs + offset) * hd + d;
    lk[dst] = k[t * width + i];
    lv[dst] = v[t * width + i];
  }
}

// One block per (token, head), one thread per head dimension (blockDim = head_dim rounded up to
// a warp multiple): an online softmax over the token's keys, in position order.
__global__ void AttentionKernel(AttentionArgs a) {
  const int64_t t = blockIdx.x;
  const int h = blockIdx.y;
  const int d = threadIdx.x;
  const bool active = d < a.head_dim;
  const int kvh = h / (a.num_heads / a.num_kv_heads);
  const int64_t width = static_cast<int64_t>(a.num_heads) * a.head_dim;
  const float qd = active ? a.q[t * width + static_cast<int64_t>(h) * a.head_dim + d] : 0.0f;
  const int64_t hi = a.positions[t];
  const int64_t lo = a.sliding_window > 0 ? max(int64_t{0}, hi - a.sliding_window + 1) : 0;
  const int32_t* table = a.block_tables + static_cast<int64_t>(a.token_seq[t]) * a.max_blocks;
  float m = -INFINITY, l = 0, acc = 0;
  for (int64_t j = lo; j <= hi; ++j) {
    const int64_t block = table[j / a.block_size], offset = j % a.block_size;
    const int64_t base = ((block * a.num_kv_heads + kvh) * a.block_size + offset) * a.head_dim;
    const float s = BlockSum(active ? qd * a.layer_k[base + d] : 0.0f) * a.scale;
    const float m_new = fmaxf(m, s);
    const float rescale = __expf(m - m_new), p = __expf(s - m_new);
    l = l * rescale + p;
    acc = acc * rescale + (active ? p * a.layer_v[base + d] : 0.0f);
    m = m_new;
  }
  if (active) a.out[t * width + static_cast<int64_t>(h) * a.head_dim + d] = acc / l;
}

__global__ void GatedActivationKernel(const float* gate_up, int64_t f, int act, float* out) {
  const int64_t r = blockIdx.x;
  for (int64_t i = threadIdx.x; i < f; i += blockDim.x) {
    out[r * f + i] = Activate(act, gate_up[r * 2 * f + i]) * gate_up[r * 2 * f + f + i];
  }
}

__global__ void GatherRowsKernel(const float* x, int64_t d, const int32_t* rows, float* out) {
  const int64_t r = blockIdx.x;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    out[r * d + i] = x[static_cast<int64_t>(rows[r]) * d + i];
  }
}

cudaError_t Launched() { return cudaGetLastError(); }

}  // namespace

cudaError_t Embedding(const void* table, Elem elem, int64_t cols, const int32_t* ids, int64_t n,
                      float* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  EmbeddingKernel<<<n, kThreads, 0, stream>>>(table, elem, cols, ids, out);
  return Launched();
}

cudaError_t RmsNorm(const float* x, const float* weight, float eps, int64_t rows, int64_t d,
                    float* out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  RmsNormKernel<<<rows, kThreads, 0, stream>>>(x, weight, eps, d, out);
  return Launched();
}

cudaError_t ConvertRows(const float* src, int64_t ld_src, const int32_t* rows, int64_t n_rows,
                        int64_t cols, void* dst, Elem elem, cudaStream_t stream) {
  if (n_rows == 0) return cudaSuccess;
  ConvertRowsKernel<<<n_rows, kThreads, 0, stream>>>(src, ld_src, rows, cols, dst, elem);
  return Launched();
}

cudaError_t AddBias(float* y, int64_t ldy, int64_t m, int64_t n, const float* bias,
                    cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  AddBiasKernel<<<m, kThreads, 0, stream>>>(y, ldy, n, bias);
  return Launched();
}

cudaError_t RopeTable(const int32_t* positions, int64_t n, const float* inv_freq, int64_t half,
                      float* cos_sin, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  RopeTableKernel<<<n, 128, 0, stream>>>(positions, inv_freq, half, cos_sin);
  return Launched();
}

cudaError_t SplitQkvRope(const float* qkv, const float* cos_sin, int64_t tokens, int num_heads,
                         int num_kv_heads, int head_dim, float* q, float* k, float* v,
                         cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  SplitQkvRopeKernel<<<tokens, kThreads, 0, stream>>>(qkv, cos_sin, num_heads, num_kv_heads,
                                                      head_dim, q, k, v);
  return Launched();
}

cudaError_t WriteKv(const float* k, const float* v, const int32_t* slots, int64_t tokens,
                    int num_kv_heads, int block_size, int head_dim, float* layer_k, float* layer_v,
                    cudaStream_t stream) {
  if (tokens == 0) return cudaSuccess;
  WriteKvKernel<<<tokens, kThreads, 0, stream>>>(k, v, slots, num_kv_heads, block_size, head_dim,
                                                 layer_k, layer_v);
  return Launched();
}

cudaError_t Attention(const AttentionArgs& args, cudaStream_t stream) {
  if (args.tokens == 0) return cudaSuccess;
  if (args.head_dim > 1024) return cudaErrorInvalidValue;
  const int threads = (args.head_dim + 31) / 32 * 32;
  AttentionKernel<<<dim3(static_cast<unsigned>(args.tokens), static_cast<unsigned>(args.num_heads)),
                    threads, 0, stream>>>(args);
  return Launched();
}

cudaError_t GatedActivation(const float* gate_up, int64_t rows, int64_t f, int act, float* out,
                            cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  GatedActivationKernel<<<rows, kThreads, 0, stream>>>(gate_up, f, act, out);
  return Launched();
}

cudaError_t GatherRows(const float* x, int64_t d, const int32_t* rows, int64_t n, float* out,
                       cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  GatherRowsKernel<<<n, kThreads, 0, stream>>>(x, d, rows, out);
  return Launched();
}

}  // namespace switchyard::cuda

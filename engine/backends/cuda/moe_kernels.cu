// The CUDA backend's MoE-LoRA kernels: correctness-first versions of the CPU ops in
// engine/backends/cpu/moe_ops.cc (a thread per routed row for routing, a warp per output of the
// segmented products, a block per routed row for the combine). Selections follow the CPU's tie
// rules exactly (equal probabilities: the lower expert first); sums may differ from the CPU's in
// the last bits (expf, and the order of a warp's reduction).
#include <cub/device/device_radix_sort.cuh>

#include "engine/backends/cuda/device_util.cuh"
#include "engine/backends/cuda/moe_kernels.h"

namespace switchyard::cuda {
namespace {

constexpr int kThreads = 256;

// The last s in [0, n) with start[s] <= i, for non-decreasing starts (empty runs share a start:
// the last of them is the one that holds i). Units by their first row, segments by their first
// sorted position.
template <typename T>
__device__ int FindRun(const T* start, int n, int64_t i) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (static_cast<int64_t>(start[mid]) <= i) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo - 1;
}

// The largest of the probabilities not yet taken (ties: the lower expert), or -1.
__device__ int NextLargest(const float* l, float mx, float sum, int E, float scale,
                           const uint32_t* taken) {
  int best = -1;
  float best_p = 0.0f;
  for (int e = 0; e < E; ++e) {
    if (taken[e / 32] & (1u << (e % 32))) continue;
    const float p = expf(l[e] - mx) / sum * scale;
    if (best < 0 || p > best_p) {
      best = e;
      best_p = p;
    }
  }
  return best;
}

__global__ void RouteKernel(const float* logits, int64_t ld, const RouteUnit* units,
                            const int64_t* row_start, int num_units, int64_t total_rows,
                            int32_t* slot_expert, float* slot_weight, double* stats,
                            RouteGates gates) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total_rows) return;
  const int u = FindRun(row_start, num_units, i);
  const RouteUnit unit = units[u];
  const int64_t r = i - row_start[u];
  int32_t* expert = slot_expert + unit.slot_off + r * unit.slots;
  float* weight = slot_weight + unit.slot_off + r * unit.slots;
  const RouterSpec& spec = unit.spec;
  const int E = spec.num_experts;
  float gate = 1.0f;
  if (unit.gate_rows_off >= 0) {
    gate = MemberGate(unit, gates, gates.rows[unit.gate_rows_off + r / unit.gate_heads]);
    if (gate == 0.0f) {
      for (int j = 0; j < unit.slots; ++j) {
        expert[j] = -1;
        weight[j] = 0.0f;
      }
      return;
    }
  }
  if (spec.routing == Routing::kSingle) {
    expert[0] = 0;
    weight[0] = gate;
    return;
  }
  const float* l = logits + (unit.logits_row + r) * ld;
  float mx = l[0];
  for (int e = 1; e < E; ++e) mx = fmaxf(mx, l[e]);
  float sum = 0.0f;
  for (int e = 0; e < E; ++e) sum += expf(l[e] - mx);
  const auto prob = [&](int e) { return expf(l[e] - mx) / sum; };
  uint32_t taken[32] = {};  // up to 1024 experts
  int filled = 0;
  switch (spec.routing) {
    case Routing::kDense:
      for (int e = 0; e < E; ++e) {
        expert[e] = e;
        weight[e] = prob(e);
      }
      filled = E;
      break;
    case Routing::kSwitch: {
      const int best = NextLargest(l, mx, sum, E, 1.0f, taken);
      expert[0] = best;
      weight[0] = prob(best);
      filled = 1;
      break;
    }
    case Routing::kTopK:
    case Routing::kTopKRaw: {
      const int k = spec.top_k < E ? spec.top_k : E;
      float total = 0.0f;
      for (int j = 0; j < k; ++j) {
        const int e = NextLargest(l, mx, sum, E, 1.0f, taken);
        taken[e / 32] |= 1u << (e % 32);
        expert[j] = e;
        weight[j] = prob(e);
        total += weight[j];
      }
      if (spec.routing == Routing::kTopK) {
        for (int j = 0; j < k; ++j) weight[j] /= total;
      }
      filled = k;
      break;
    }
    case Routing::kTopP: {
      const float scale = spec.temperature > 0 ? 1.0f / spec.temperature : 1.0f;
      float cum = 0.0f;
      for (int j = 0; j < E; ++j) {
        const int e = NextLargest(l, mx, sum, E, 1.0f, taken);
        taken[e / 32] |= 1u << (e % 32);
        const float w = spec.temperature > 0 ? prob(e) / spec.temperature : prob(e);
        expert[j] = e;
        weight[j] = w;
        ++filled;
        cum += w;
        if (cum > spec.top_p) break;
      }
      for (int j = filled; j < E; ++j) {
        expert[j] = -1;
        weight[j] = 0.0f;
      }
      (void)scale;
      break;
    }
    default:
      break;
  }
  if (unit.stats_off >= 0) {
    double* rec = stats + unit.stats_off;
    atomicAdd(&rec[0], 1.0);
    double entropy = 0;
    for (int e = 0; e < E; ++e) {
      const float p = prob(e);
      atomicAdd(&rec[3 + e], static_cast<double>(p));
      if (p > 0) entropy -= p * log(static_cast<double>(p));
    }
    atomicAdd(&rec[1], entropy);
    const double lse = mx + log(static_cast<double>(sum));
    atomicAdd(&rec[2], lse * lse);
    for (int j = 0; j < filled; ++j) {
      atomicAdd(&rec[3 + 2 * E + expert[j]], 1.0);
      atomicAdd(&rec[3 + E + expert[j]], static_cast<double>(weight[j]));
    }
    atomicAdd(&rec[3 + 3 * E + filled], 1.0);
  }
  // Statistics keep the member's own gate weights; its output is scaled by its gate.
  if (gate != 1.0f) {
    for (int j = 0; j < filled; ++j) weight[j] *= gate;
  }
}

__global__ void SegmentKeysKernel(const int32_t* slot_expert, const RouteUnit* units,
                                  const int64_t* slot_start, int num_units, int64_t slots,
                                  int32_t num_segments, int32_t* keys, int32_t* values,
                                  int32_t* seg_count) {
  const int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (s >= slots) return;
  const int u = FindRun(slot_start, num_units, s);
  const int32_t e = slot_expert[s];
  const int32_t key = e < 0 ? num_segments : units[u].seg_base + e;
  keys[s] = key;
  values[s] = static_cast<int32_t>(s);
  if (e >= 0) atomicAdd(&seg_count[key], 1);
}

__global__ void SegmentStartsKernel(const int32_t* count, int32_t n, int32_t* seg_start) {
  if (threadIdx.x != 0) return;
  int32_t total = 0;
  seg_start[0] = 0;
  for (int32_t s = 0; s < n; ++s) {
    total += count[s];
    seg_start[s + 1] = total;
  }
}

__global__ void InvertOrderKernel(const int32_t* order, const int32_t* seg_start, int32_t n,
                                  int64_t slots, int32_t* position) {
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k >= slots || k >= seg_start[n]) return;
  position[order[k]] = static_cast<int32_t>(k);
}

__global__ void SegmentedLinearKernel(const SegmentWeight* weights, int32_t num_segments,
                                      const int32_t* seg_start, int64_t capacity, int64_t max_n,
                                      const float* x, int64_t ldx, const int32_t* order,
                                      const int32_t* slot_rows, float* y, int64_t ldy,
                                      bool accumulate) {
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const int64_t k = warp / max_n, n = warp % max_n;
  if (k >= capacity || k >= seg_start[num_segments]) return;
  const int s = FindRun(seg_start, num_segments, k);
  const SegmentWeight w = weights[s];
  if (w.data == nullptr || n >= w.rows) return;
  const int64_t row = slot_rows != nullptr ? slot_rows[order[k]] : k;
  const float* xr = x + row * ldx;
  float acc = 0.0f;
  for (int64_t j = lane; j < w.cols; j += 32) acc += xr[j] * Load(w.data, w.elem, n * w.cols + j);
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) y[k * ldy + n] = accumulate ? y[k * ldy + n] + acc : acc;
}

__global__ void GatherSortedKernel(const float* x, int64_t ldx, const int32_t* order,
                                   const int32_t* slot_rows, const int32_t* count, int64_t d,
                                   float* out) {
  const int64_t k = blockIdx.x;
  if (k >= *count) return;
  const float* src = x + static_cast<int64_t>(slot_rows[order[k]]) * ldx;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) out[k * d + c] = src[c];
}

__global__ void SegmentedGatedActivationKernel(const float* gate_up, const int32_t* seg_start,
                                               int32_t seg_begin, int32_t seg_end, int64_t f,
                                               int act, float* out) {
  const int64_t k = seg_start[seg_begin] + static_cast<int64_t>(blockIdx.x);
  if (k >= seg_start[seg_end]) return;
  for (int64_t i = threadIdx.x; i < f; i += blockDim.x) {
    out[k * f + i] = Activate(act, gate_up[k * 2 * f + i]) * gate_up[k * 2 * f + f + i];
  }
}

// A block per routed row: thread 0 orders the row's filled slots by expert, then every thread
// sums its columns in that order (the CPU's order, so the sum is the CPU's).
__global__ void CombineSlotsKernel(const float* src, int64_t lds, const int32_t* slot_expert,
                                   const float* slot_weight, const int32_t* position,
                                   const CombineUnit* units, const int64_t* row_start,
                                   int num_units, const int32_t* dst_rows, const float* bias,
                                   int mode, float* dst, int64_t ldd) {
  __shared__ int32_t idx[1024];
  __shared__ int count;
  const int64_t i = blockIdx.x;
  const int u = FindRun(row_start, num_units, i);
  const CombineUnit unit = units[u];
  const int64_t r = i - row_start[u];
  const int64_t s0 = unit.slot_off + r * unit.slots;
  if (threadIdx.x == 0) {
    int n = 0;
    for (int j = 0; j < unit.slots && j < 1024; ++j) {
      const int32_t e = slot_expert[s0 + j];
      if (e < 0) continue;
      int m = n++;
      while (m > 0 && slot_expert[idx[m - 1]] > e) {
        idx[m] = idx[m - 1];
        --m;
      }
      idx[m] = static_cast<int32_t>(s0 + j);
    }
    count = n;
  }
  __syncthreads();
  const int64_t row = unit.dst_rows_off >= 0 ? dst_rows[unit.dst_rows_off + r / unit.heads]
                                             : unit.dst_row_base + r / unit.heads;
  float* out = dst + row * ldd + unit.col + (r % unit.heads) * unit.width;
  for (int64_t c = threadIdx.x; c < unit.width; c += blockDim.x) {
    float v = 0.0f;
    if (mode == 0) {
      if (unit.keep != 0.0f) v = unit.keep == 1.0f ? out[c] : unit.keep * out[c];
      float weight_sum = 0.0f;
      for (int j = 0; j < count; ++j) {
        const float w = slot_weight[idx[j]];
        weight_sum += w;
        v += unit.scale * w * src[static_cast<int64_t>(position[idx[j]]) * lds + c];
      }
      if (bias != nullptr) v += unit.scale * (weight_sum - 1.0f) * bias[c];
    }
    out[c] = v;
  }
}

__global__ void ScatterAddRowsKernel(const float* x, int64_t ldx, int64_t width,
                                     const int32_t* dst_rows, int64_t col, float* dst,
                                     int64_t ldd) {
  const int64_t i = blockIdx.x;
  float* out = dst + static_cast<int64_t>(dst_rows[i]) * ldd + col;
  for (int64_t c = threadIdx.x; c < width; c += blockDim.x) out[c] += x[i * ldx + c];
}

int64_t Blocks(int64_t n, int64_t per_block) { return (n + per_block - 1) / per_block; }

}  // namespace

cudaError_t Route(const float* logits, int64_t ld, const RouteUnit* units, const int64_t* row_start,
                  int num_units, int64_t total_rows, int32_t* slot_expert, float* slot_weight,
                  double* stats, RouteGates gates, cudaStream_t stream) {
  if (total_rows == 0) return cudaSuccess;
  RouteKernel<<<Blocks(total_rows, 128), 128, 0, stream>>>(
      logits, ld, units, row_start, num_units, total_rows, slot_expert, slot_weight, stats, gates);
  return cudaGetLastError();
}

cudaError_t SegmentKeys(const int32_t* slot_expert, const RouteUnit* units,
                        const int64_t* slot_start, int num_units, int64_t slots,
                        int32_t num_segments, int32_t* keys, int32_t* values, int32_t* seg_count,
                        cudaStream_t stream) {
  if (slots == 0) return cudaSuccess;
  SegmentKeysKernel<<<Blocks(slots, kThreads), kThreads, 0, stream>>>(
      slot_expert, units, slot_start, num_units, slots, num_segments, keys, values, seg_count);
  return cudaGetLastError();
}

cudaError_t SortByKey(void* temp, size_t* temp_bytes, const int32_t* keys_in, int32_t* keys_out,
                      const int32_t* values_in, int32_t* values_out, int64_t n, int end_bit,
                      cudaStream_t stream) {
  return cub::DeviceRadixSort::SortPairs(temp, *temp_bytes, keys_in, keys_out, values_in,
                                         values_out, static_cast<int>(n), 0, end_bit, stream);
}

cudaError_t SegmentStarts(const int32_t* count, int32_t num_segments, int32_t* seg_start,
                          cudaStream_t stream) {
  SegmentStartsKernel<<<1, 32, 0, stream>>>(count, num_segments, seg_start);
  return cudaGetLastError();
}

cudaError_t InvertOrder(const int32_t* order, const int32_t* seg_start, int32_t num_segments,
                        int64_t slots, int32_t* position, cudaStream_t stream) {
  if (slots == 0) return cudaSuccess;
  InvertOrderKernel<<<Blocks(slots, kThreads), kThreads, 0, stream>>>(
      order, seg_start, num_segments, slots, position);
  return cudaGetLastError();
}

cudaError_t SegmentedLinear(const SegmentWeight* weights, int32_t num_segments,
                            const int32_t* seg_start, int64_t capacity, int64_t max_n,
                            const float* x, int64_t ldx, const int32_t* order,
                            const int32_t* slot_rows, float* y, int64_t ldy, bool accumulate,
                            cudaStream_t stream) {
  const int64_t warps = capacity * max_n;
  if (warps == 0) return cudaSuccess;
  SegmentedLinearKernel<<<Blocks(warps * 32, kThreads), kThreads, 0, stream>>>(
      weights, num_segments, seg_start, capacity, max_n, x, ldx, order, slot_rows, y, ldy,
      accumulate);
  return cudaGetLastError();
}

cudaError_t GatherSorted(const float* x, int64_t ldx, const int32_t* order,
                         const int32_t* slot_rows, const int32_t* count, int64_t capacity,
                         int64_t d, float* out, cudaStream_t stream) {
  if (capacity == 0) return cudaSuccess;
  GatherSortedKernel<<<capacity, kThreads, 0, stream>>>(x, ldx, order, slot_rows, count, d, out);
  return cudaGetLastError();
}

cudaError_t SegmentedGatedActivation(const float* gate_up, const int32_t* seg_start,
                                     int32_t seg_begin, int32_t seg_end, int64_t capacity,
                                     int64_t f, int act, float* out, cudaStream_t stream) {
  if (capacity == 0) return cudaSuccess;
  SegmentedGatedActivationKernel<<<capacity, kThreads, 0, stream>>>(gate_up, seg_start, seg_begin,
                                                                    seg_end, f, act, out);
  return cudaGetLastError();
}

cudaError_t CombineSlots(const float* src, int64_t lds, const int32_t* slot_expert,
                         const float* slot_weight, const int32_t* position,
                         const CombineUnit* units, const int64_t* row_start, int num_units,
                         int64_t total_rows, const int32_t* dst_rows, const float* bias, int mode,
                         float* dst, int64_t ldd, cudaStream_t stream) {
  if (total_rows == 0) return cudaSuccess;
  CombineSlotsKernel<<<total_rows, 128, 0, stream>>>(src, lds, slot_expert, slot_weight, position,
                                                     units, row_start, num_units, dst_rows, bias,
                                                     mode, dst, ldd);
  return cudaGetLastError();
}

cudaError_t ScatterAddRows(const float* x, int64_t ldx, int64_t n, int64_t width,
                           const int32_t* dst_rows, int64_t col, float* dst, int64_t ldd,
                           cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  ScatterAddRowsKernel<<<n, kThreads, 0, stream>>>(x, ldx, width, dst_rows, col, dst, ldd);
  return cudaGetLastError();
}

}  // namespace switchyard::cuda

// Launchers of the CUDA backend's MoE-LoRA kernels (moe_kernels.cu), the device side of the ops
// in backend.h's MoE-LoRA section (semantics there and in moe_ops.h). Pointers are device
// pointers, descriptor arrays included; every launcher enqueues on `stream` and returns the launch
// error. Counts that routing decides (rows per segment) are read on the device: grids are sized by
// the host-known slot capacity and threads past the count return.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "engine/backends/cuda/kernels.h"
#include "engine/backends/moe_ops.h"

namespace switchyard::cuda {

// A unit's first routed row over all units of a call, for the kernels that run a thread (or
// block) per routed row: row_start[u] for u in [0, units], on the device.
cudaError_t Route(const float* logits, int64_t ld, const RouteUnit* units, const int64_t* row_start,
                  int num_units, int64_t total_rows, int32_t* slot_expert, float* slot_weight,
                  double* stats, RouteGates gates, cudaStream_t stream);

// keys[s] = seg_base + expert of slot s, or num_segments for an empty slot; values[s] = s. Units'
// slot ranges are contiguous from slot 0 (slot_start[u], slot_start[num_units] = all slots).
cudaError_t SegmentKeys(const int32_t* slot_expert, const RouteUnit* units,
                        const int64_t* slot_start, int num_units, int64_t slots,
                        int32_t num_segments, int32_t* keys, int32_t* values, int32_t* seg_count,
                        cudaStream_t stream);
// CUB's stable radix sort of (key, value) pairs on bits [0, end_bit); with temp null, sets
// *temp_bytes to the scratch it needs.
cudaError_t SortByKey(void* temp, size_t* temp_bytes, const int32_t* keys_in, int32_t* keys_out,
                      const int32_t* values_in, int32_t* values_out, int64_t n, int end_bit,
                      cudaStream_t stream);
// seg_start[0] = 0, seg_start[s + 1] = seg_start[s] + count[s] (one block: segments are few).
cudaError_t SegmentStarts(const int32_t* count, int32_t num_segments, int32_t* seg_start,
                          cudaStream_t stream);
// position[order[k]] = k for k < seg_start[num_segments] (position pre-filled with -1).
cudaError_t InvertOrder(const int32_t* order, const int32_t* seg_start, int32_t num_segments,
                        int64_t slots, int32_t* position, cudaStream_t stream);

// One segment's weight, row-major [rows, cols] (null data: the segment is skipped).
struct SegmentWeight {
  const void* data;
  Elem elem;
  int64_t rows, cols;
};
// y[k, n] (+)= sum_j x[row(k), j] * W_s[n, j] for sorted rows k < capacity of segment s (found by
// binary search in seg_start), n < W_s.rows; row(k) = slot_rows[order[k]] or k. A warp per output.
cudaError_t SegmentedLinear(const SegmentWeight* weights, int32_t num_segments,
                            const int32_t* seg_start, int64_t capacity, int64_t max_n,
                            const float* x, int64_t ldx, const int32_t* order,
                            const int32_t* slot_rows, float* y, int64_t ldy, bool accumulate,
                            cudaStream_t stream);
cudaError_t GatherSorted(const float* x, int64_t ldx, const int32_t* order,
                         const int32_t* slot_rows, const int32_t* count, int64_t capacity,
                         int64_t d, float* out, cudaStream_t stream);
// GatedActivation of sorted rows [seg_start[seg_begin], seg_start[seg_end]).
cudaError_t SegmentedGatedActivation(const float* gate_up, const int32_t* seg_start,
                                     int32_t seg_begin, int32_t seg_end, int64_t capacity,
                                     int64_t f, int act, float* out, cudaStream_t stream);
// CombineSlots over every unit's routed rows (row_start as for Route); mode 0 add (with each unit's
// keep and scale), 1 zero; 2 zero; `bias` may be null.
cudaError_t CombineSlots(const float* src, int64_t lds, const int32_t* slot_expert,
                         const float* slot_weight, const int32_t* position,
                         const CombineUnit* units, const int64_t* row_start, int num_units,
                         int64_t total_rows, const int32_t* dst_rows, const float* bias, int mode,
                         float* dst, int64_t ldd, cudaStream_t stream);
cudaError_t ScatterAddRows(const float* x, int64_t ldx, int64_t n, int64_t width,
                           const int32_t* dst_rows, int64_t col, float* dst, int64_t ldd,
                           cudaStream_t stream);

}  // namespace switchyard::cuda

// The CPU backend's MoE-LoRA ops (backend.h, moe_ops.h): routing, the segment sort, the slot
// combine and the row movements around them. The grouped products themselves run on the CPU
// backend's matmul (SegmentJobs turns segments into its LinearJobs). Tensors are host memory.
#pragma once

#include <span>
#include <vector>

#include "engine/backends/backend.h"
#include "engine/backends/cpu/kernels.h"

namespace switchyard::cpu {

void Route(const Tensor& logits, std::span<const RouteUnit> units, Tensor& slot_expert,
           Tensor& slot_weight, Tensor* stats, const RouteGates* gates);
void SortSegments(const Tensor& slot_expert, std::span<const RouteUnit> units, int32_t num_segments,
                  Tensor& order, Tensor& position, Tensor& seg_start);
// The LinearJobs of SegmentedLinear; `rows` receives the gathered row indices the jobs point into
// (it must outlive them).
void SegmentJobs(std::span<const Weight* const> weights, const Tensor& seg_start, const Tensor& x,
                 int64_t ldx, const Tensor* order, const Tensor* slot_rows, Tensor& y, int64_t ldy,
                 bool accumulate, std::vector<int32_t>& rows, std::vector<LinearJob>& jobs);
void GatherSorted(const Tensor& x, const Tensor& order, const Tensor& slot_rows,
                  const Tensor& seg_start, Tensor& out);
void SegmentedGatedActivation(const KernelTable& kernels, const Tensor& gate_up,
                              const Tensor& seg_start, std::span<const SegmentActivation> ranges,
                              Tensor& out);
void CombineSlots(const Tensor& src, const Tensor& slot_expert, const Tensor& slot_weight,
                  const Tensor& position, std::span<const CombineUnit> units,
                  const Tensor* dst_rows, const Tensor* bias, Backend::Combine mode, Tensor& dst);
void ScatterAddRows(const Tensor& x, int64_t width, const Tensor& dst_rows, int64_t col,
                    Tensor& dst);

}  // namespace switchyard::cpu

#include "engine/backends/cpu/moe_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "engine/core/check.h"

namespace switchyard::cpu {
namespace {

// y[0, n) += w * x[0, n)
inline void Axpy(float w, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += w * x[i];
}

// One row's selection under `spec` from its probabilities; returns the slots filled.
int Select(const RouterSpec& spec, const float* probs, int32_t* expert, float* weight,
           std::vector<std::pair<float, int>>& sorted) {
  const int E = spec.num_experts;
  switch (spec.routing) {
    case Routing::kSingle:
      expert[0] = 0;
      weight[0] = 1.0f;
      return 1;
    case Routing::kDense:
      for (int e = 0; e < E; ++e) {
        expert[e] = e;
        weight[e] = probs[e];
      }
      return E;
    case Routing::kSwitch: {
      int best = 0;
      for (int e = 1; e < E; ++e) {
        if (probs[e] > probs[best]) best = e;
      }
      expert[0] = best;
      weight[0] = probs[best];
      return 1;
    }
    case Routing::kTopK:
    case Routing::kTopKRaw: {
      sorted.clear();
      for (int e = 0; e < E; ++e) sorted.emplace_back(probs[e], e);
      const int k = std::min(spec.top_k, E);
      std::partial_sort(sorted.begin(), sorted.begin() + k, sorted.end(),
                        [](const auto& a, const auto& b) {
                          return a.first > b.first || (a.first == b.first && a.second < b.second);
                        });
      float total = 0.0f;
      for (int i = 0; i < k; ++i) total += sorted[i].first;
      for (int i = 0; i < k; ++i) {
        expert[i] = sorted[i].second;
        weight[i] = spec.routing == Routing::kTopK ? sorted[i].first / total : sorted[i].first;
      }
      return k;
    }
    case Routing::kTopP: {
      // MoE-PEFT's _dynamic_top_p: a positive temperature divides the probabilities, and the
      // divided values are the weights; keep the sorted prefix up to the first cumulative sum
      // above top_p (all of them when none is).
      sorted.clear();
      for (int e = 0; e < E; ++e) {
        sorted.emplace_back(spec.temperature > 0 ? probs[e] / spec.temperature : probs[e], e);
      }
      std::stable_sort(sorted.begin(), sorted.end(),
                       [](const auto& a, const auto& b) { return a.first > b.first; });
      float cum = 0.0f;
      int keep = E;
      for (int i = 0; i < E; ++i) {
        cum += sorted[i].first;
        if (cum > spec.top_p) {
          keep = i + 1;
          break;
        }
      }
      for (int i = 0; i < E; ++i) {
        expert[i] = i < keep ? sorted[i].second : -1;
        weight[i] = i < keep ? sorted[i].first : 0.0f;
      }
      return keep;
    }
  }
  return 0;
}

}  // namespace

void Route(const Tensor& logits, std::span<const RouteUnit> units, Tensor& slot_expert,
           Tensor& slot_weight, Tensor* stats, const RouteGates* gates) {
  std::vector<float> probs;
  std::vector<std::pair<float, int>> sorted;
  const int64_t ld = logits.defined() ? logits.dim(1) : 0;
  for (const RouteUnit& u : units) {
    const int E = u.spec.num_experts;
    probs.resize(static_cast<size_t>(E));
    double* rec = u.stats_off >= 0 ? stats->data<double>() + u.stats_off : nullptr;
    for (int64_t r = 0; r < u.rows; ++r) {
      int32_t* expert = slot_expert.data<int32_t>() + u.slot_off + r * u.slots;
      float* weight = slot_weight.data<float>() + u.slot_off + r * u.slots;
      float gate = 1.0f;
      if (u.gate_rows_off >= 0) {
        gate = MemberGate(u, *gates, gates->rows[u.gate_rows_off + r / u.gate_heads]);
        if (gate == 0.0f) {
          std::fill(expert, expert + u.slots, -1);
          std::fill(weight, weight + u.slots, 0.0f);
          continue;
        }
      }
      if (u.spec.routing == Routing::kSingle) {
        Select(u.spec, nullptr, expert, weight, sorted);
        weight[0] *= gate;
        continue;
      }
      // Softmax in F32, as the reference does.
      const float* l = logits.data<float>() + (u.logits_row + r) * ld;
      float mx = l[0];
      for (int e = 1; e < E; ++e) mx = std::max(mx, l[e]);
      float sum = 0.0f;
      for (int e = 0; e < E; ++e) {
        probs[e] = std::exp(l[e] - mx);
        sum += probs[e];
      }
      for (int e = 0; e < E; ++e) probs[e] /= sum;
      const int filled = Select(u.spec, probs.data(), expert, weight, sorted);
      // Statistics keep the member's own gate weights; its output is scaled by its gate.
      const auto scale_by_gate = [&] {
        if (gate != 1.0f) {
          for (int i = 0; i < filled; ++i) weight[i] *= gate;
        }
      };
      if (rec == nullptr) {
        scale_by_gate();
        continue;
      }
      rec[0] += 1;
      double entropy = 0;
      for (int e = 0; e < E; ++e) {
        rec[3 + e] += probs[e];
        if (probs[e] > 0) entropy -= probs[e] * std::log(static_cast<double>(probs[e]));
      }
      rec[1] += entropy;
      const double lse = mx + std::log(static_cast<double>(sum));
      rec[2] += lse * lse;
      for (int i = 0; i < filled; ++i) {
        rec[3 + 2 * E + expert[i]] += 1;
        rec[3 + E + expert[i]] += weight[i];
      }
      rec[3 + 3 * E + filled] += 1;
      scale_by_gate();
    }
  }
}

void SortSegments(const Tensor& slot_expert, std::span<const RouteUnit> units, int32_t num_segments,
                  Tensor& order, Tensor& position, Tensor& seg_start) {
  // A counting sort in slot order: stable, so a segment's rows keep the order of their slots.
  int32_t* start = seg_start.data<int32_t>();
  std::fill(start, start + num_segments + 1, 0);
  const int32_t* expert = slot_expert.data<int32_t>();
  for (const RouteUnit& u : units) {
    for (int64_t s = u.slot_off; s < u.slot_off + u.rows * u.slots; ++s) {
      if (expert[s] >= 0) ++start[u.seg_base + expert[s] + 1];
    }
  }
  for (int32_t i = 0; i < num_segments; ++i) start[i + 1] += start[i];
  std::vector<int32_t> fill(start, start + num_segments);
  int32_t* ord = order.data<int32_t>();
  int32_t* pos = position.data<int32_t>();
  for (const RouteUnit& u : units) {
    for (int64_t s = u.slot_off; s < u.slot_off + u.rows * u.slots; ++s) {
      if (expert[s] < 0) {
        pos[s] = -1;
        continue;
      }
      const int32_t k = fill[u.seg_base + expert[s]]++;
      ord[k] = static_cast<int32_t>(s);
      pos[s] = k;
    }
  }
}

void SegmentJobs(std::span<const Weight* const> weights, const Tensor& seg_start, const Tensor& x,
                 int64_t ldx, const Tensor* order, const Tensor* slot_rows, Tensor& y, int64_t ldy,
                 bool accumulate, std::vector<int32_t>& rows, std::vector<LinearJob>& jobs) {
  const int32_t* start = seg_start.data<int32_t>();
  const int64_t n = static_cast<int64_t>(weights.size());
  jobs.clear();
  if (slot_rows != nullptr) {
    rows.resize(static_cast<size_t>(start[n]));
    const int32_t* ord = order->data<int32_t>();
    const int32_t* table = slot_rows->data<int32_t>();
    for (int64_t s = 0; s < n; ++s) {
      if (weights[s] == nullptr) continue;
      for (int32_t k = start[s]; k < start[s + 1]; ++k) rows[k] = table[ord[k]];
    }
  }
  for (int64_t s = 0; s < n; ++s) {
    const int64_t k0 = start[s], m = start[s + 1] - k0;
    if (weights[s] == nullptr || m == 0) continue;
    LinearJob job{weights[s], x.data<float>(), ldx, m, y.data<float>() + k0 * ldy, ldy, accumulate};
    if (slot_rows != nullptr) {
      job.x_rows = rows.data() + k0;
    } else {
      job.x = x.data<float>() + k0 * ldx;
    }
    jobs.push_back(job);
  }
}

void GatherSorted(const Tensor& x, const Tensor& order, const Tensor& slot_rows,
                  const Tensor& seg_start, Tensor& out) {
  const int64_t count = seg_start.data<int32_t>()[seg_start.numel() - 1];
  const int64_t d = out.dim(1), ldx = x.dim(1);
  SY_CHECK(d <= ldx && out.dim(0) >= count);
  const int32_t* ord = order.data<int32_t>();
  const int32_t* table = slot_rows.data<int32_t>();
#pragma omp parallel for schedule(static) if (count > 64)
  for (int64_t k = 0; k < count; ++k) {
    std::memcpy(out.data<float>() + k * d, x.data<float>() + int64_t{table[ord[k]]} * ldx,
                d * sizeof(float));
  }
}

void SegmentedGatedActivation(const KernelTable& kernels, const Tensor& gate_up,
                              const Tensor& seg_start, std::span<const SegmentActivation> ranges,
                              Tensor& out) {
  const int64_t F = out.dim(1);
  SY_CHECK(gate_up.dim(1) == 2 * F);
  const int32_t* start = seg_start.data<int32_t>();
  for (const SegmentActivation& r : ranges) {
    const int64_t k0 = start[r.seg_begin], k1 = start[r.seg_end];
#pragma omp parallel for schedule(static) if ((k1 - k0) * F > 8192)
    for (int64_t k = k0; k < k1; ++k) {
      const float* g = gate_up.data<float>() + k * 2 * F;
      kernels.gated_activation(r.act, g, g + F, out.data<float>() + k * F, F);
    }
  }
}

void CombineSlots(const Tensor& src, const Tensor& slot_expert, const Tensor& slot_weight,
                  const Tensor& position, std::span<const CombineUnit> units,
                  const Tensor* dst_rows, const Tensor* bias, Backend::Combine mode, Tensor& dst) {
  const int64_t lds = src.defined() ? src.dim(1) : 0, ldd = dst.dim(1);
  int64_t total = 0;
  for (const CombineUnit& u : units) total += u.rows;
  // (unit, row) pairs flattened, so that one parallel loop covers every unit.
  std::vector<std::pair<int32_t, int64_t>> work;
  work.reserve(static_cast<size_t>(total));
  for (int32_t i = 0; i < static_cast<int32_t>(units.size()); ++i) {
    for (int64_t r = 0; r < units[i].rows; ++r) work.emplace_back(i, r);
  }
  const int32_t* expert = slot_expert.data<int32_t>();
  const float* weight = slot_weight.data<float>();
  const int32_t* pos = position.data<int32_t>();
#pragma omp parallel for schedule(static) if (total > 8)
  for (int64_t w = 0; w < total; ++w) {
    const CombineUnit& u = units[work[w].first];
    const int64_t r = work[w].second;
    const int64_t row = u.dst_rows_off >= 0
                            ? dst_rows->data<int32_t>()[u.dst_rows_off + r / u.heads]
                            : u.dst_row_base + r / u.heads;
    float* out = dst.data<float>() + row * ldd + u.col + (r % u.heads) * u.width;
    if (mode == Backend::Combine::kZero || u.keep == 0.0f) {
      std::memset(out, 0, u.width * sizeof(float));
      if (mode == Backend::Combine::kZero) continue;
    } else if (u.keep != 1.0f) {
      for (int64_t c = 0; c < u.width; ++c) out[c] *= u.keep;
    }
    // The row's slots by ascending expert (a handful: insertion sort).
    thread_local std::vector<int32_t> idx;
    idx.resize(static_cast<size_t>(u.slots));
    int n = 0;
    const int64_t s0 = u.slot_off + r * u.slots;
    for (int j = 0; j < u.slots; ++j) {
      if (expert[s0 + j] < 0) continue;
      int i = n++;
      while (i > 0 && expert[idx[i - 1]] > expert[s0 + j]) {
        idx[i] = idx[i - 1];
        --i;
      }
      idx[i] = static_cast<int32_t>(s0 + j);
    }
    float weight_sum = 0.0f;
    for (int i = 0; i < n; ++i) {
      weight_sum += weight[idx[i]];
      Axpy(u.scale * weight[idx[i]], src.data<float>() + int64_t{pos[idx[i]]} * lds, out, u.width);
    }
    // Each expert's FFN carries the down bias: sum_e w_e b, and the base added b once.
    if (bias != nullptr) Axpy(u.scale * (weight_sum - 1.0f), bias->data<float>(), out, u.width);
  }
}

void ScatterAddRows(const Tensor& x, int64_t width, const Tensor& dst_rows, int64_t col,
                    Tensor& dst) {
  const int64_t n = x.dim(0), w = width, ldd = dst.dim(1);
  SY_CHECK(dst_rows.numel() >= n && col + w <= ldd && w <= x.dim(1));
  for (int64_t i = 0; i < n; ++i) {
    Axpy(1.0f, x.data<float>() + i * x.dim(1),
         dst.data<float>() + int64_t{dst_rows.data<int32_t>()[i]} * ldd + col, w);
  }
}

}  // namespace switchyard::cpu

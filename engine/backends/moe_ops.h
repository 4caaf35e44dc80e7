// The shapes the MoE-LoRA ops of backend.h work on (engine/adapters/moe_lora.h builds them).
//
// One routed site call of a layer has several *units* (one adapter's LoRA on one site, or one
// adapter's MixLoRA block). Each unit routes `rows` rows (tokens; MH-MoE: sub-tokens) and owns a
// fixed run of *slots*, `slots` per row (top-k: k; dense and top-p: E; switch and single: 1), that
// routing fills with (expert, weight) pairs (expert -1 in a slot top-p left empty). Because the
// slot layout depends only on the adapters, never on the routing, the host plans every buffer
// before the device has routed anything, and no step waits on the device for a count.
//
// Sorting the valid slots by segment (unit's seg_base + expert), stably, gives each (adapter,
// expert) a contiguous run of rows: the grouped LoRA products then run segment by segment, and
// each row's contributions are summed back in ascending expert order, so a token's result never
// depends on what else shares the batch.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SY_HOST_DEVICE __host__ __device__
#else
#define SY_HOST_DEVICE
#endif

namespace switchyard {

enum class Activation;  // engine/core/activation.h (kept out: CUDA files include this header)

enum class Routing {
  kSingle,   // one expert, weight 1 (plain LoRA)
  kTopK,     // top-k of the softmax, renormalised (MixLoRA, MoLA)
  kTopKRaw,  // top-k of the softmax, not renormalised (MH-MoE)
  kTopP,     // smallest prefix of the sorted softmax whose sum exceeds top_p, raw (mixlora-dynamic)
  kDense,    // every expert, softmax weights (LoRAMoE, HydraLoRA)
  kSwitch,   // top-1, weight p_max (mixlora-switch)
};

struct RouterSpec {
  Routing routing = Routing::kSingle;
  int num_experts = 1;
  int top_k = 1;
  float top_p = 1.0f;
  float temperature = 0.0f;  // top-p: divides the probabilities (MoE-PEFT's quirk); 0 = off
};

// Slots per routed row under `spec`.
inline int SlotsPerRow(const RouterSpec& spec) {
  switch (spec.routing) {
    case Routing::kTopK:
    case Routing::kTopKRaw:
      return spec.top_k < spec.num_experts ? spec.top_k : spec.num_experts;
    case Routing::kTopP:
    case Routing::kDense:
      return spec.num_experts;
    case Routing::kSingle:
    case Routing::kSwitch:
      return 1;
  }
  return 1;
}

// Doubles of one site's routing record in a step's statistics tensor, at `stats_off`:
// [tokens, entropy_sum, z_sum, prob_sum[E], gate_sum[E], selections[E], experts_per_row[E + 1]].
inline int64_t RoutingRecordSize(int num_experts) { return 3 + 4 * int64_t{num_experts} + 1; }

struct RouteUnit {
  RouterSpec spec;
  int64_t rows = 0;
  int64_t logits_row = 0;  // first row of its logits
  int64_t slot_off = 0;    // row r's slots: slot_off + r * slots ...
  int slots = 1;
  int32_t seg_base = 0;    // its segments: seg_base + expert
  int64_t stats_off = -1;  // its routing record (doubles), -1: none
  // A member of a router over adapters (docs/adapters.md "Routers over adapters"): routed row r
  // belongs to the token whose gate slots start at gates.rows[gate_rows_off + r / gate_heads];
  // its weights are scaled by the member's gate there (sum over those gate_slots slots whose
  // expert is gate_member), and a row whose gate is 0 stays empty: no slots, no statistics.
  int64_t gate_rows_off = -1;  // -1: not gated
  int gate_heads = 1;
  int gate_slots = 0;
  int32_t gate_member = 0;
};

// The gate slots a router over adapters filled (Route's output for its units) and, per token
// row of a gated unit, where that token's gate slots start (RouteUnit::gate_rows_off).
struct RouteGates {
  const int32_t* expert = nullptr;
  const float* weight = nullptr;
  const int32_t* rows = nullptr;
};

// A gated unit's gate for the token whose gate slots start at `base`.
SY_HOST_DEVICE inline float MemberGate(const RouteUnit& u, const RouteGates& g, int64_t base) {
  float gate = 0.0f;
  for (int j = 0; j < u.gate_slots; ++j) {
    if (g.expert[base + j] == u.gate_member) gate += g.weight[base + j];
  }
  return gate;
}

// Rows of a sorted segment range processed with one activation (MixLoRA groups).
struct SegmentActivation {
  int32_t seg_begin = 0, seg_end = 0;  // segments [seg_begin, seg_end)
  Activation act{};                    // SiLU
};

// How CombineSlots writes one unit's rows back.
struct CombineUnit {
  int64_t rows = 0;  // routed rows
  int64_t slot_off = 0;
  int slots = 1;
  int heads = 1;              // routed rows per destination row
  int64_t dst_rows_off = -1;  // dst row of routed row r: dst_rows[dst_rows_off + r / heads],
  int64_t dst_row_base = 0;   // or dst_row_base + r / heads when dst_rows_off < 0
  int64_t col = 0;            // head j writes columns [col + j * width, + width)
  int64_t width = 0;          // per head
  // Combine::kAdd: dst = keep * dst + scale * sum (a mixture member's weight, and for the first
  // MixLoRA member of a token, 1 - the token's MixLoRA weight: docs/adapters.md "Mixtures").
  float scale = 1.0f;
  float keep = 1.0f;
};

}  // namespace switchyard

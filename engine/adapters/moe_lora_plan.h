// The host half of MoE-LoRA: a plan built once per step from the step's adapters alone (tokens
// grouped by adapter, each layer's routing units and their slot and segment layout, the weights of
// every segment, the index lists the device needs, the routing-statistics records), before any
// routing has happened. MoeLoraExecutor (moe_lora.h) then only calls backend ops with it, so the
// same code runs on the CPU and the GPU and no step waits on the device for a count.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "engine/adapters/adapter.h"
#include "engine/adapters/routing_stats.h"
#include "engine/backends/moe_ops.h"
#include "engine/model/config.h"
#include "engine/model/layer_hooks.h"

namespace switchyard {

// The tokens that have `adapter` as member `member` of their mixture, with `weight`. Groups come
// ordered by member: a token's members then combine into its rows in mixture order, one
// CombineSlots pass per member (a pass never writes a row twice).
// A router over adapters becomes a group of its own (its routers, members as experts) and one
// gated group per member (sub = its index + 1), with the same tokens, after it.
struct PlanGroup {
  const AdapterWeights* adapter = nullptr;
  int member = 0;
  float weight = 1.0f;
  std::vector<int32_t> tokens;  // step tokens, ascending
  int64_t tokens_off = 0;       // of `tokens` in MoeLoraPlan::ints
  int stats_index = -1;         // in RoutingStats::adapters (shared by the adapter's groups)
  int sub = 0;                  // a router's member: its index + 1
  const AdapterWeights* gated_by = nullptr;  // that router
  int gate_group = -1;                       // its group
  // Combine passes go by (member, sub): no two groups of a pass share a token.
  int pass() const { return member * 128 + sub; }
};

// The routers over adapters of one layer, on the FFN input: each unit fills its tokens' gate
// slots (members as experts), which gated units read (RouteUnit::gate_rows_off).
struct GateCall {
  std::vector<int> groups;  // router groups
  std::vector<RouteUnit> route;
  int64_t rows = 0, slots = 0;
  int64_t x_src_off = 0;
  int max_e = 1;
};

// One adapter's routed LoRA on one site of a call.
struct SiteUnit {
  int group = 0;
  const RoutedLora* lora = nullptr;
  int site = 0;              // LinearSite
  int64_t col = 0, out = 0;  // output columns in y
  int64_t x_off = 0;         // first row in the gathered input (units of one group share rows,
                             // unless a head projection changes them)
  int64_t sub_off = 0;       // first routed row of the call (MH-MoE: sub-tokens)
  int64_t merge_off = -1;    // MH-MoE merge: first row in the merge buffer
};

// One AfterLinear call of one layer: every adapter's LoRA on the sites that read the same input.
struct SiteCall {
  std::vector<SiteUnit> units;
  std::vector<RouteUnit> route;            // per unit
  std::vector<CombineUnit> combine_y;      // units that add into y, by member
  std::vector<size_t> y_passes;            // end of each member's run in combine_y
  std::vector<CombineUnit> combine_merge;  // MH-MoE units with a merge projection (own rows)
  // Per segment: the expert's A (null: HydraLoRA), one list per distinct MH-MoE head count of
  // the call (the gathered input is read as [.., in / heads]).
  std::vector<std::pair<int, std::vector<const Weight*>>> shrink;
  std::vector<const Weight*> expand;         // per segment: B of experts with their own A
  std::vector<const Weight*> expand_shared;  // per segment: B of HydraLoRA experts
  int64_t in = 0;                            // input width
  int64_t rows = 0, sub_rows = 0, slots = 0, merge_rows = 0;
  int32_t segments = 0;
  int64_t x_src_off = 0;      // ints: the step token of each gathered row
  int64_t slot_xrow_off = 0;  // ints: per slot, its row of the gathered input seen as [.., in/h]
  int64_t slot_sub_off = 0;   // ints: per slot, its routed row
  int max_e = 1, rmax = 1, max_head = 0, max_merge = 0;
  int64_t omax = 1, max_out = 1;
  bool shared_a = false;  // some unit is HydraLoRA (one A shared by its experts)
};

// A group's tokens at one MixLoRA layer that share their `keep` (CombineUnit): the first MixLoRA
// member of a token scales the base activation by 1 - (its MixLoRA members' total weight).
struct MixUnit {
  int group = 0;
  const MixLoraBlock* block = nullptr;
  int64_t x_off = 0;
  float keep = 1.0f;
  std::vector<int32_t> tokens;  // step tokens, ascending
  int64_t tokens_off = 0;       // in MoeLoraPlan::ints
};

// The MixLoRA blocks of one layer.
struct MixCall {
  std::vector<MixUnit> units;  // by member
  std::vector<RouteUnit> route;
  std::vector<CombineUnit> combine_act;            // into the FFN activation
  std::vector<CombineUnit> combine_down;           // the down corrections, into y
  std::vector<size_t> passes;                      // end of each member's run of units
  std::array<std::vector<const Weight*>, 3> a, b;  // gate, up, down per segment (null: rank 0)
  std::vector<const Weight*> down_base;            // W2 per segment (the per-expert path)
  std::vector<SegmentActivation> acts;
  int64_t rows = 0, slots = 0;
  int32_t segments = 0;
  int64_t x_src_off = 0, slot_xrow_off = 0, slot_token_off = 0;
  int max_e = 1, rmax = 1;
};

struct LayerPlan {
  std::array<SiteCall, 4> calls;  // by LayerHooks::Linear
  MixCall mix;
  GateCall gate;  // runs first in the gate/up call
};

// Where a routing record lives, for copying the step's statistics back (an adapter's groups and
// units may share a site entry: their records add up).
struct StatsRecord {
  int adapter = 0;  // RoutingStats::adapters index
  int site = 0;     // index in its sites
  int64_t offset = 0;
  int num_experts = 0;
};

// Scratch sizes (elements) over every call of the step.
struct PlanCapacity {
  int64_t x = 1, logits = 1, slots = 1, segments = 2, shrink = 1, shared = 1, expand = 1;
  int64_t head = 1, merge = 1, merge_mid = 1;
  int64_t gate_up = 1, act = 1, down = 1;
  int64_t gate_slots = 1;
};

struct MoeLoraPlan {
  std::vector<PlanGroup> groups;
  std::vector<LayerPlan> layers;
  std::vector<int32_t> ints;  // every index list of the step
  std::vector<StatsRecord> records;
  int64_t stats_size = 0;  // doubles
  PlanCapacity capacity;
  bool empty() const { return groups.empty(); }
};

// The plan of a step whose token t uses the adapters members_of_token[t] (empty: none; a member
// with a null adapter is skipped). With `stats`, the routed sites get records, and
// stats->adapters their (zero) entries in the order of execution.
MoeLoraPlan BuildMoeLoraPlan(const ModelConfig& model,
                             std::span<const std::span<const AdapterMember>> members_of_token,
                             RoutingStats* stats);

}  // namespace switchyard

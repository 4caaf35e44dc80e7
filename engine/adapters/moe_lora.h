// Executes every adapter of a step inside the forward pass (LayerHooks), as backend ops only, so
// the same code runs on the CPU and on the GPU. BeginStep builds the step's plan on the host
// (moe_lora_plan.h: tokens grouped by adapter, each layer's routing units, slot and segment layout,
// index lists) and uploads its index lists once; each hook then gathers its inputs, runs routers
// as one grouped GEMM, routes (Backend::Route, statistics accumulated on the device), sorts the
// slots into (adapter, expert) segments, runs LoRA shrink and expand over the segments (the SGMV
// idea: one pass over the device, no per-adapter rerun of the model, no padding of ranks), and
// sums each row's experts back in ascending expert order, so a token's output never depends on
// what else shares the batch. EndStep copies the step's routing statistics back, once.
//
// MixLoRA: W1 x and W3 x come from the base GEMM once per token; each selected expert adds its
// rank-r corrections and activation; the frozen down projection then runs once per token on the
// gate-weighted sum of the expert activations (W2 is linear and shared), and only the rank-r down
// corrections run per (token, expert).
//
// Thread-safety: owned by the engine, used on the engine thread.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/adapters/adapter.h"
#include "engine/adapters/moe_lora_plan.h"
#include "engine/adapters/routing_stats.h"
#include "engine/backends/backend.h"
#include "engine/model/config.h"
#include "engine/model/layer_hooks.h"
#include "engine/model/weights.h"

namespace switchyard {

struct MoeLoraOptions {
  // false: MixLoRA runs the frozen down projection per (token, expert), as the reference
  // implementations do (kept for the benchmark's comparison).
  bool down_projection_once = true;
  bool record_stats = true;
  bool record_decisions = false;  // every token's selected experts (tests)
};

class MoeLoraExecutor final : public LayerHooks {
 public:
  MoeLoraExecutor(Backend& backend, const ModelConfig& model, const ModelWeights& weights,
                  MoeLoraOptions options);

  // Prepares a step: members_of_token[t] are token t's adapters with their weights (empty: the
  // base model). Returns false when no token has one (the step then needs no hooks). `stats` (may
  // be null) receives the step's routing at EndStep, with the decisions of tokens whose
  // decisions_of_token[t] is set (of all tokens with MoeLoraOptions::record_decisions). Errors:
  // device memory for the step's buffers; a weighted mixture with down_projection_once off.
  absl::StatusOr<bool> BeginStep(std::span<const std::span<const AdapterMember>> members_of_token,
                                 std::span<const uint8_t> decisions_of_token, RoutingStats* stats);
  // After the forward pass: the step's routing statistics into `stats`, and any failure of the
  // hooks (which cannot return one).
  absl::Status EndStep();

  void AfterLinear(int layer, Linear which, const Tensor& x, Tensor& y) override;
  void BeforeDown(int layer, const Tensor& x, const Tensor& gate_up, Tensor& act) override;

 private:
  // Device scratch, grown to the step's plan and reused from step to step.
  struct Buffers {
    Tensor ints;  // the plan's index lists
    Tensor stats;
    Tensor x, logits, expert, weight, order, position, seg_start;
    Tensor shrink, shared, expand, head, merge, merge_mid;
    Tensor mix_expert, mix_weight, mix_position, gate_up, act, down;
    Tensor gate_expert, gate_weight;  // routers over adapters: the layer's gate slots
  };
  absl::Status PrepareBuffers();
  absl::Status Grow(Tensor& t, DType dtype, int64_t numel);
  // A [rows, cols] view of the front of a buffer.
  static Tensor View(const Tensor& buffer, int64_t rows, int64_t cols);
  Tensor Ints(int64_t offset, int64_t count) const;

  void RunSites(int layer, const SiteCall& call, const Tensor& x, Tensor& y);
  // A call's rows of the FFN input gathered (buf_.x) and a [rows, max_e] view for their router
  // logits (buf_.logits); jobs_ cleared for the routers.
  std::pair<Tensor, Tensor> GatherFfnInput(const Tensor& x, int64_t x_src_off, int64_t rows,
                                           int max_e);
  // Routers over adapters: each fills its tokens' gate slots from the FFN input.
  void RunGates(int layer, const GateCall& call, const Tensor& x);
  void HeadProjection(const SiteCall& call, Tensor& xg);
  void RoutersAndRoute(int layer, const SiteCall& call, const Tensor& xg);
  void ShrinkExpand(const SiteCall& call, const Tensor& xg, const Tensor& expand);
  void Merge(const SiteCall& call, Tensor& merged, Tensor& y);
  void MixDown(int layer, Tensor& y);
  // Adds each member's units into dst, one CombineSlots per member (`passes`: the runs' ends).
  void CombineByMember(const Tensor& src, const Tensor& slot_expert, const Tensor& slot_weight,
                       const Tensor& position, std::span<const CombineUnit> units,
                       std::span<const size_t> passes, const Tensor* bias, Tensor& dst);
  struct DecisionUnit {
    const RouteUnit* route;
    const std::vector<int32_t>* tokens;  // the unit's step tokens
    int member, site, heads;
    int gated_member = -1;  // a router's member: its index
  };
  DecisionUnit Decision(const RouteUnit& route, const PlanGroup& g,
                        const std::vector<int32_t>& tokens, int site, int heads) const;
  // Each routed row's experts, for the tokens that asked (waits for the device: tests and
  // requests that record their routing only).
  void RecordDecisions(int layer, std::span<const DecisionUnit> units, const Tensor& slot_expert,
                       int64_t slots);

  Backend& backend_;
  const ModelConfig& model_;
  const ModelWeights& weights_;
  MoeLoraOptions options_;
  MoeLoraPlan plan_;
  Buffers buf_;
  absl::Status status_;
  RoutingStats* stats_ = nullptr;
  RoutingStats* decisions_ = nullptr;
  std::span<const uint8_t> decisions_of_token_;
  std::vector<LinearJob> jobs_;
  std::vector<const Weight*> down_base_;
  RouteGates gates_;  // over buf_.gate_expert, buf_.gate_weight and buf_.ints
  Tensor host_stats_;
};

}  // namespace switchyard

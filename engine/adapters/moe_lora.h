// Executes every adapter of a step inside the forward pass (LayerHooks): tokens are grouped by
// adapter; routers run on each site's input in F32; the selection of each routing strategy yields
// an assignment list (adapter, expert, row, weight) sorted into (adapter, expert) segments; LoRA
// shrink and expand run as grouped GEMMs over the segments (the SGMV idea: one pass over the
// device, no per-adapter rerun of the model, no padding of ranks); results are reduced per token
// in expert order, so a token's output never depends on what else shares the batch.
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
#include <vector>

#include "engine/adapters/adapter.h"
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

  // Prepares a step: adapter_of_token[t] is token t's adapter or null. Returns false when no token
  // has one (the step then needs no hooks). `stats` (may be null) receives the step's routing,
  // with the decisions of tokens whose decisions_of_token[t] is set (of all tokens with
  // MoeLoraOptions::record_decisions).
  bool BeginStep(std::span<const AdapterWeights* const> adapter_of_token,
                 std::span<const uint8_t> decisions_of_token, RoutingStats* stats);

  void AfterLinear(int layer, Linear which, const Tensor& x, Tensor& y) override;
  void BeforeDown(int layer, const Tensor& x, const Tensor& gate_up, Tensor& act) override;

 private:
  struct Group {
    const AdapterWeights* adapter;
    std::vector<int32_t> tokens;
    int stats_index = -1;
  };
  // One routed row's choice of one expert.
  struct Assignment {
    int32_t group;
    int32_t expert;
    int32_t row;    // row of the group's routed input (sub-token for MH-MoE)
    int32_t token;  // step token
    float weight;
  };

  struct SiteOutput {
    LinearSite site;
    int64_t col;  // first column of the site's output in y
    int64_t out;  // its width
  };
  // The routed LoRA of every group on `sites`, which all read x, in shared grouped passes.
  void RunSites(int layer, std::span<const SiteOutput> sites, const Tensor& x, Tensor& y);
  // Routes `rows` rows of `logits` (ld = ld) with `spec`, appending assignments and statistics.
  void Route(const RouterSpec& spec, int group, const float* logits, int64_t ld, int64_t rows,
             int heads, int layer, int site, SiteRoutingStats* stats);
  SiteRoutingStats* StatsFor(int group, int layer, int site, const RouterSpec& spec);
  // Sorts assign_ by (group, expert) into order_ and splits it into segments_.
  void SortAssignments();
  float* Scratch(std::vector<float>& buf, size_t n);

  Backend& backend_;
  const ModelConfig& model_;
  const ModelWeights& weights_;
  MoeLoraOptions options_;
  std::vector<Group> groups_;
  RoutingStats* stats_ = nullptr;
  RoutingStats* decisions_ = nullptr;
  std::span<const uint8_t> decisions_of_token_;

  std::vector<Assignment> assign_;
  std::vector<int32_t> order_;      // assignment indices sorted by (group, expert)
  std::vector<int32_t> row_start_;  // per routed row: its assignments in expert order (CSR)
  std::vector<int32_t> row_assign_;
  std::vector<int32_t> row_fill_;
  std::vector<float> xg_, logits_, shrink_, shrink2_, expand_, head_, merge_, gu_, act_;
  std::vector<float> down_delta_;       // MixLoRA: per assignment, for AfterLinear(kDown)
  std::vector<Assignment> mix_assign_;  // MixLoRA assignments of the current layer
  std::vector<int32_t> mix_row_start_, mix_row_assign_;
  std::vector<int32_t> mix_tokens_;
  std::vector<LinearJob> jobs_;
  // One adapter's LoRA on one site: its rows are the adapter's tokens (MH-MoE: h sub-token rows
  // per token); all units of the sites RunSites gets share x and run in the same passes.
  struct Unit {
    int group;
    const RoutedLora* lora;
    int64_t col, out;  // output columns in y
    int64_t x_off;     // first row in xg_ (units of one group share rows)
    int64_t sub_off;   // first routed row overall
  };
  std::vector<Unit> units_;
  struct MixActive {
    int group;
    const MixLoraBlock* block;
    int64_t x_off;
  };
  // Working lists reused from call to call (the engine thread runs hundreds of sites per step).
  std::vector<MixActive> mix_active_;
  std::vector<const MixLoraBlock*> block_of_;
  std::vector<int64_t> group_off_, merge_off_;
  std::vector<std::pair<int64_t, int64_t>> segments_;
  std::vector<int32_t> x_rows_;  // per sorted assignment: its input row (gather by index)
  std::vector<float> probs_;
  std::vector<std::pair<float, int>> sorted_;
};

}  // namespace switchyard

// What routing did, per adapter x layer x routed site x expert: the raw sums from which routing
// health (load, balance, entropy, z-loss, dead experts) is computed (docs/adapters.md,
// ARCHITECTURE.md "Routing health, defined"). The engine fills one RoutingStats per step;
// RoutingWindow (routing_window.h) merges steps into sliding-window and lifetime aggregates.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace switchyard {

// Site index: 0..6 the linears (LinearSite), 7 the MixLoRA FFN block.
constexpr int kFfnBlockSite = 7;

struct SiteRoutingStats {
  int layer = 0;
  int site = 0;
  int num_experts = 0;
  bool dense = false;                      // every expert weighted (LoRAMoE, HydraLoRA)
  int64_t tokens = 0;                      // routed rows (sub-tokens for MH-MoE)
  std::vector<int64_t> selections;         // [E]: times each expert was chosen
  std::vector<double> gate_sum;            // [E]: sum of its combine weights
  std::vector<double> prob_sum;            // [E]: sum of its full-softmax probability
  double entropy_sum = 0;                  // sum over rows of -sum p log p (nats)
  double z_sum = 0;                        // sum over rows of logsumexp(logits)^2
  std::vector<int64_t> experts_per_token;  // [E + 1]: histogram of selections per row

  // Adds `other` (same layer, site and expert count) into this.
  void Merge(const SiteRoutingStats& other);
  // Zero sums of the same shape.
  SiteRoutingStats EmptyLike() const;
};

struct AdapterRoutingStats {
  std::string adapter;
  uint64_t version = 0;
  std::vector<SiteRoutingStats> sites;
};

// One routed row's selection (recorded only with MoeLoraOptions::record_decisions; for tests).
struct RoutingDecision {
  int32_t token = 0;  // index in the step
  int16_t layer = 0;
  int8_t site = 0;
  int16_t head = 0;              // MH-MoE sub-token
  int8_t member = 0;             // the adapter's index in the token's mixture
  int8_t gated_member = -1;      // a router over adapters' member (its index); -1: the adapter
  std::vector<int16_t> experts;  // ascending
};

struct RoutingStats {
  std::vector<AdapterRoutingStats> adapters;
  std::vector<RoutingDecision> decisions;
};

// The balance figures of one site over some span of tokens (ARCHITECTURE.md's definitions).
// With c_i selections, f_i = c_i / sum c, P_i = prob_sum_i / tokens:
struct RoutingHealth {
  int64_t tokens = 0;
  std::vector<double> load;       // f_i
  std::vector<double> mean_prob;  // P_i
  std::vector<double> mean_gate;  // gate_sum_i / tokens
  // Experts never selected (for dense families: P_i < dead_probability).
  int dead_experts = 0;
  std::vector<int> dead;         // their indices
  double load_cv = 0;            // std(c) / mean(c) (population std); 0 when nothing was routed
  double balancedness = 0;       // mean(c) / max(c), 1 = balanced
  double switch_aux_loss = 0;    // E * sum f_i P_i, 1 = balanced
  double importance_loss = 0;    // CV(gate sums)^2
  double router_entropy = 0;     // mean over rows of -sum p log p, divided by log E
  double z_loss = 0;             // mean over rows of logsumexp(logits)^2
  double experts_per_token = 0;  // mean selections per row
};

RoutingHealth ComputeRoutingHealth(const SiteRoutingStats& stats, double dead_probability = 1e-3);

}  // namespace switchyard

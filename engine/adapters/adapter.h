// A loaded MoE-LoRA adapter, in the one shape every supported family maps onto:
//   * routed LoRA sites on individual linears (q, k, v, o, gate, up, down): a router on the
//     linear's input picks experts whose low-rank deltas add to the base output. Plain LoRA is
//     the one-expert case, HydraLoRA shares A across experts, MH-MoE-LoRA routes h sub-tokens of
//     each input separately.
//   * a MixLoRA FFN block: a router on the FFN input picks experts that are whole FFNs over the
//     frozen weights with LoRA on gate/up/down.
// Immutable once loaded; shared (refcounted) by every request that uses it.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/adapters/expert_diagnostics.h"
#include "engine/backends/backend.h"
#include "engine/core/activation.h"

namespace switchyard {

enum class LinearSite : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
constexpr int kNumLinearSites = 7;
absl::string_view LinearSiteName(LinearSite s);  // "q_proj", ...

absl::string_view RoutingName(Routing r);  // Routing and RouterSpec: engine/backends/moe_ops.h

// One expert's low-rank pair. `b` already carries the LoRA scaling (alpha/r or alpha/sqrt(r)).
struct LoraPair {
  Weight a;  // [r, in]
  Weight b;  // [out, r], scaled
  int rank = 0;
};

struct RoutedLora {
  RouterSpec spec;
  Weight router;                  // [E, in / heads], F32; undefined for kSingle
  std::vector<LoraPair> experts;  // HydraLoRA: every expert's `a` is the same tensor
  bool shared_a = false;
  int heads = 1;   // MH-MoE sub-tokens per input row
  LoraPair head;   // MH-MoE: x + head(x) before splitting; rank 0 when absent
  LoraPair merge;  // MH-MoE: o + merge(o) after concatenating; rank 0 when absent
};

struct MixLoraExpert {
  std::array<LoraPair, 3> lora;  // gate, up, down; rank 0 where the projection is not adapted
};

struct MixLoraBlock {
  RouterSpec spec;
  Weight router;  // [E, d]
  Activation act = Activation::kSilu;
  std::vector<MixLoraExpert> experts;
};

struct AdapterLayer {
  std::array<std::unique_ptr<RoutedLora>, kNumLinearSites> sites;
  std::unique_ptr<MixLoraBlock> ffn;
};

struct AdapterWeights;

// A router over whole adapters (the `mixture` format, docs/adapters.md "Routers over adapters"):
// per layer, a router on the FFN input picks members per token (top-k renormalised, or dense),
// whose FFN deltas (gate/up/down LoRA and MixLoRA blocks) then count with those weights. Members
// carry no attention LoRA; on a layer either every member has a MixLoRA block or none has.
struct AdapterRouter {
  RouterSpec spec;  // kTopK or kDense over the members
  std::vector<std::unique_ptr<AdapterWeights>> members;
  std::vector<Weight> routers;  // per layer, [members, d] F32; undefined where no member acts
};

struct AdapterWeights {
  std::string name;
  uint64_t version = 0;  // bumped by every load of the same name (hot swap)
  std::string family;    // "mixlora", "loramoe", "mola", "hydralora", "lora", "mhmoe-lora"
  std::string format;    // where it came from, e.g. "moe-peft .bin", "peft safetensors"
  std::vector<AdapterLayer> layers;
  size_t bytes = 0;  // device memory held
  // Computed once at load from the weights (expert_diagnostics.h); shared with the registry,
  // which keeps them while the adapter is evicted.
  std::shared_ptr<const AdapterDiagnostics> diagnostics;
  // A router over adapters (its own layers are empty); null for every other adapter.
  std::unique_ptr<AdapterRouter> router;
};

// One adapter of a token's mixture: its delta enters scaled by `weight` (docs/adapters.md,
// "Mixtures"). A plain request is the mixture {adapter, 1}.
struct AdapterMember {
  const AdapterWeights* adapter = nullptr;
  float weight = 1.0f;
};

}  // namespace switchyard

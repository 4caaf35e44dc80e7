// Reading adapters from disk: adapter_config.json plus adapter_model.safetensors or
// adapter_model.bin (torch.save, read by a restricted unpickler), or a llama.cpp LoRA as
// adapter_model.gguf alone (gguf_lora.h), in these schemes:
//   MoE-PEFT   peft_type MIXLORA (mixlora | mixlora-dynamic | mixlora-switch), LORAMOE, MOLA
//   mLoRA      legacy MixLoRA (routing_strategy "mixtral" | "switch", gate.weight, w1/w2/w3_proj)
//   PEFT       peft_type LORA: plain LoRA; with lora_nums, the HydraLoRA (shared lora_A,
//              lora_B{i}, lora_route) and official LoRAMoE (lora_A{i}, lora_B{i}, lora_route) forks
//   Switchyard peft_type MHMOE_LORA (docs/adapters.md), and MIXTURE: a router over member
//              adapters in folders below its own
// Everything is validated against the base model (layers, dimensions, ranks, expert counts,
// finite values) before the adapter exists; a bad adapter is refused with the key or tensor
// named and never half-loads.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/adapters/adapter.h"
#include "engine/adapters/torch_checkpoint.h"
#include "engine/backends/backend.h"
#include "engine/core/confined_dir.h"
#include "engine/model/config.h"

namespace switchyard {

struct AdapterConfig {
  enum class Family { kMixLora, kLoraMoe, kMola, kPeft, kMhMoeLora, kMixture };
  Family family = Family::kPeft;
  bool legacy_mlora = false;
  int r = 0;
  double alpha = 0;
  bool rslora = false;
  int expert_r = 0;  // MixLoRA experts (expert_lora overrides r/alpha/rslora)
  double expert_alpha = 0;
  bool expert_rslora = false;
  std::set<std::string> targets;  // q_proj ... down_proj
  RouterSpec router;
  std::vector<int> top_k_per_layer;  // MoLA: per-layer top-k (extension: a list in "top_k")
  std::string act_fn;                // MixLoRA; empty: the base model's
  int lora_nums = 0;                 // PEFT forks
  bool use_dora = false;             // treated as LoRA: DoRA magnitudes are not saved by MoE-PEFT
  int heads = 1;                     // MH-MoE-LoRA
  int head_rank = 0, merge_rank = 0;
  // A router over adapters (peft_type MIXTURE): the members' folders, relative to its own, below
  // it; `router` is top-k (renormalised) or dense over them.
  std::vector<std::string> members;

  // Scaling of a LoRA pair: alpha / r, or alpha / sqrt(r) with rsLoRA.
  static float Scale(double alpha, int r, bool rslora);
};

absl::StatusOr<AdapterConfig> ParseAdapterConfig(absl::string_view json);

// An adapter's files as read and checked on the host (its config and its tensors as stored),
// before any conversion or device upload: what the registry's host tier keeps so that an evicted
// adapter is rebuilt without reading its files again.
struct AdapterFiles {
  AdapterConfig config;
  std::vector<NamedTensor> tensors;
  std::string format;  // "safetensors", "torch .bin" or "gguf"
  size_t bytes = 0;    // host memory of the tensors (shared storages counted per tensor)
  // GGUF LoRA (gguf_lora.h): the file's general.architecture, checked against the base model;
  // for "llama" the q and k lora_B rows are in llama.cpp's interleaved RoPE order.
  std::string gguf_architecture;
  std::vector<std::unique_ptr<AdapterFiles>> members;  // a router over adapters' members
};

absl::StatusOr<std::unique_ptr<AdapterFiles>> ReadAdapterFiles(const ConfinedDir& dir);
// The adapter from its files, prepared on `backend` (the files are not changed). `diagnose`
// false skips the expert diagnostics (`diagnostics` stays null): a rebuild whose diagnostics the
// caller already holds.
absl::StatusOr<std::unique_ptr<AdapterWeights>> BuildAdapter(const AdapterFiles& files,
                                                             const ModelConfig& m, Backend& backend,
                                                             DType lora_dtype,
                                                             bool diagnose = true);
// Loads `dir` for base model `base` (ReadAdapterFiles then BuildAdapter), preparing the weights on
// `backend` with LoRA matrices in `lora_dtype` (F32 or BF16; routers stay F32, where routing is
// decided). Thread-safe: runs on a loader thread, never on the engine thread. Files are opened
// below `dir` only (ConfinedDir); running out of memory is RESOURCE_EXHAUSTED.
absl::StatusOr<std::unique_ptr<AdapterWeights>> LoadAdapter(const ConfinedDir& dir,
                                                            const ModelConfig& base,
                                                            Backend& backend,
                                                            DType lora_dtype = DType::kF32);
// The same for a folder path (tests, tools).
absl::StatusOr<std::unique_ptr<AdapterWeights>> LoadAdapter(const std::string& dir,
                                                            const ModelConfig& base,
                                                            Backend& backend,
                                                            DType lora_dtype = DType::kF32);

}  // namespace switchyard

// The engine facade: one model on one backend, its paged KV cache, and Step(), which runs one
// forward pass over a flat ragged batch. Knows nothing of requests, sampling or transport.
//
// Thread-safety: Step and the accessors may be called from one thread at a time (the engine
// thread). Create may run on any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/adapters/adapter.h"
#include "engine/adapters/moe_lora.h"
#include "engine/adapters/routing_stats.h"
#include "engine/adapters/routing_window.h"
#include "engine/backends/backend.h"
#include "engine/core/confined_dir.h"
#include "engine/model/config.h"
#include "engine/tokenizer/tokenizer.h"

namespace switchyard {

struct AdapterFiles;  // engine/adapters/loader.h

// Device::kCuda when this build has the CUDA backend and a GPU is visible, else Device::kCpu.
Device DefaultDevice();

// The tokenizer of a model path (a Hugging Face folder or a .gguf file).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadModelTokenizer(const std::string& model_path);

// --quantization's values: "none", "int8" (Q8_0) and "int4" (Q4_0).
absl::StatusOr<QuantType> ParseQuantization(absl::string_view name);

// --kv_cache_dtype's values: "auto" (nullopt), "f32", "bf16" and "f16".
absl::StatusOr<std::optional<DType>> ParseKvCacheDType(absl::string_view name);

// --matmul_precision's values: "f32", "bf16" and "auto".
absl::StatusOr<MatmulPrecision> ParseMatmulPrecision(absl::string_view name);

// --quantized_activations' values: "int8" and "f32".
absl::StatusOr<QuantActivations> ParseQuantActivations(absl::string_view name);

struct EngineOptions;
// Sets `options`' quantization, quantized activations and KV cache type from the values of the
// three flags (--quantization, --quantized_activations, --kv_cache_dtype).
absl::Status ParseNumerics(absl::string_view quantization, absl::string_view activations,
                           absl::string_view kv_cache_dtype, EngineOptions* options);

struct EngineOptions {
  std::string model_dir;  // a Hugging Face folder, or a .gguf file
  // Quantizes the model's dense matrices at load (Q8_0 for int8, Q4_0 for int4); kNone keeps
  // what the files hold.
  QuantType quantization = QuantType::kNone;
  Device device = Device::kCpu;
  MatmulPrecision matmul_precision = MatmulPrecision::kF32;
  QuantActivations quant_activations = QuantActivations::kInt8;
  int64_t max_batch_tokens = 2048;  // tokens of one step
  int64_t max_batch_seqs = 256;     // sequences of one step
  int64_t kv_cache_bytes = int64_t{1} << 30;
  int kv_cache_blocks = 0;  // > 0: exactly this many blocks, whatever kv_cache_bytes says
  // Element type of the KV cache (F32, BF16 or F16). nullopt: F32 for F32 models and on CUDA
  // (whose kernels read F32 only), BF16 for BF16/F16 and quantized models on the CPU.
  std::optional<DType> kv_cache_dtype;
  int block_size = 16;
  MoeLoraOptions moe_lora;
  // LoRA matrices of adapters: nullopt follows the base model (F32 for F32 weights, BF16 else),
  // as vLLM's lora_dtype "auto" does.
  std::optional<DType> adapter_dtype;
  // Aggregation of routing statistics (Engine::routing_window()).
  RoutingWindowOptions routing_window;
};

// Members of one sequence's adapter mixture, at most (RoutingDecision::member is 8 bits).
inline constexpr int kMaxMixtureMembers = 16;

// One sequence's share of a step: tokens [first_position, first_position + num_tokens) of it,
// stored contiguously in StepBatch::tokens in sequence order.
struct StepSequence {
  int64_t first_position = 0;  // tokens already in the KV cache
  int64_t num_tokens = 0;
  std::span<const int32_t> block_table;     // must cover first_position + num_tokens
  bool want_logits = false;                 // logits after its last token of this step
  const AdapterWeights* adapter = nullptr;  // null: the base model; must outlive the step
  bool record_routing = false;  // report its tokens' selected experts in StepOutput::routing
  // Several adapters with weights (or one with a scale) instead of `adapter`: each member's delta
  // weighted (docs/adapters.md "Mixtures"); at most kMaxMixtureMembers, finite weights.
  std::span<const AdapterMember> mixture = {};
};

struct StepBatch {
  std::vector<int32_t> tokens;
  std::vector<StepSequence> sequences;
};

struct StepOutput {
  // [number of sequences with want_logits, vocab] F32 host memory, in sequence order. Valid until
  // the next Step.
  Tensor logits;
  // What each adapter's routers did in this step (empty when no routed adapter ran); also merged
  // into Engine::routing_window().
  RoutingStats routing;
};

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);
  ~Engine();

  const ModelConfig& config() const;
  const EngineOptions& options() const { return options_; }
  int num_kv_blocks() const;
  int block_size() const { return options_.block_size; }
  // Bytes of weights streamed per decode step (the memory-roofline numerator).
  size_t weight_bytes() const;
  std::string Describe() const;

  // Every step's routing statistics, windowed and totalled per adapter; thread-safe to read.
  RoutingWindow& routing_window() const;

  // Engine thread only: changes how adapters run from the next step on (benchmarks compare).
  void set_moe_lora_options(const MoeLoraOptions& options);

  // Validates the batch (token ids, block tables, budgets) and runs one forward pass.
  absl::StatusOr<StepOutput> Step(const StepBatch& batch);

  // Reads and validates the adapter in `dir` against this model and prepares its weights for the
  // backend. Thread-safe, and meant for a loader thread: it runs its own work single-threaded so
  // that steps running meanwhile keep their cores.
  absl::StatusOr<std::unique_ptr<AdapterWeights>> LoadAdapter(const ConfinedDir& dir) const;
  absl::StatusOr<std::unique_ptr<AdapterWeights>> LoadAdapter(const std::string& dir) const;
  // LoadAdapter in two halves, for the registry's host tier: the files read and checked on the
  // host, and the adapter built from them on this engine's device.
  absl::StatusOr<std::unique_ptr<AdapterFiles>> ReadAdapterFiles(const ConfinedDir& dir) const;
  // diagnose false: no expert diagnostics (a rebuild whose diagnostics the caller keeps).
  absl::StatusOr<std::unique_ptr<AdapterWeights>> BuildAdapter(const AdapterFiles& files,
                                                               bool diagnose = true) const;

 private:
  explicit Engine(const EngineOptions& options);
  absl::Status Validate(const StepBatch& batch) const;
  absl::Status ValidateAdapters(const StepSequence& s, size_t i) const;

  EngineOptions options_;
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace switchyard

// The engine facade: one model on one backend, its paged KV cache, and Step(), which runs one
// forward pass over a flat ragged batch. Knows nothing of requests, sampling or transport.
//
// Thread-safety: Step and the accessors may be called from one thread at a time (the engine
// thread). Create may run on any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backends/backend.h"
#include "engine/model/config.h"

namespace switchyard {

struct EngineOptions {
  std::string model_dir;
  Device device = Device::kCpu;
  MatmulPrecision matmul_precision = MatmulPrecision::kF32;
  int64_t max_batch_tokens = 2048;  // tokens of one step
  int64_t max_batch_seqs = 256;     // sequences of one step
  int64_t kv_cache_bytes = int64_t{1} << 30;
  int block_size = 16;
};

// One sequence's share of a step: tokens [first_position, first_position + num_tokens) of it,
// stored contiguously in StepBatch::tokens in sequence order.
struct StepSequence {
  int64_t first_position = 0;  // tokens already in the KV cache
  int64_t num_tokens = 0;
  std::span<const int32_t> block_table;  // must cover first_position + num_tokens
  bool want_logits = false;              // logits after its last token of this step
};

struct StepBatch {
  std::vector<int32_t> tokens;
  std::vector<StepSequence> sequences;
};

struct StepOutput {
  // [number of sequences with want_logits, vocab] F32 host memory, in sequence order. Valid until
  // the next Step.
  Tensor logits;
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

  // Validates the batch (token ids, block tables, budgets) and runs one forward pass.
  absl::StatusOr<StepOutput> Step(const StepBatch& batch);

 private:
  explicit Engine(const EngineOptions& options);
  absl::Status Validate(const StepBatch& batch) const;

  EngineOptions options_;
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace switchyard

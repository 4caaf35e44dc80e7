// What the scheduler needs of an engine: the KV cache's shape, the batch limits and Step. The
// real engine sits behind EngineExecutor; tests drive the scheduler with a simulated one.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "engine/engine.h"

namespace switchyard {

class StepExecutor {
 public:
  virtual ~StepExecutor() = default;
  virtual int num_kv_blocks() const = 0;
  virtual int block_size() const = 0;
  // The longest sequence (prompt + output) the model takes.
  virtual int64_t max_model_len() const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int64_t max_batch_tokens() const = 0;
  virtual int64_t max_batch_seqs() const = 0;
  // Runs one step; logits rows follow the order of the sequences that want them.
  virtual absl::StatusOr<StepOutput> Step(const StepBatch& batch) = 0;
};

// The engine as a StepExecutor (not owned; must outlive it).
std::unique_ptr<StepExecutor> MakeEngineExecutor(Engine& engine);

}  // namespace switchyard

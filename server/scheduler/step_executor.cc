#include "server/scheduler/step_executor.h"

#include <algorithm>

namespace switchyard {
namespace {

class EngineExecutor final : public StepExecutor {
 public:
  explicit EngineExecutor(Engine& engine) : engine_(engine) {}

  int num_kv_blocks() const override { return engine_.num_kv_blocks(); }
  int block_size() const override { return engine_.block_size(); }
  int64_t max_model_len() const override {
    return std::min<int64_t>(engine_.config().max_position_embeddings,
                             int64_t{engine_.num_kv_blocks()} * engine_.block_size());
  }
  int32_t vocab_size() const override { return static_cast<int32_t>(engine_.config().vocab_size); }
  int64_t max_batch_tokens() const override { return engine_.options().max_batch_tokens; }
  int64_t max_batch_seqs() const override { return engine_.options().max_batch_seqs; }
  absl::StatusOr<StepOutput> Step(const StepBatch& batch) override { return engine_.Step(batch); }

 private:
  Engine& engine_;
};

}  // namespace

std::unique_ptr<StepExecutor> MakeEngineExecutor(Engine& engine) {
  return std::make_unique<EngineExecutor>(engine);
}

}  // namespace switchyard

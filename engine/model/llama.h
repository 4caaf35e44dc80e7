// The Llama-family decoder (Llama, Mistral, Qwen2) over a flat ragged batch of tokens: prefill
// chunks and decode tokens of many sequences in one call, each sequence with its own paged KV.
//
// Thread-safety: Forward is called from one thread at a time (the engine thread); the workspace
// is reused between calls.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/backends/backend.h"
#include "engine/model/config.h"
#include "engine/model/layer_hooks.h"
#include "engine/model/weights.h"

namespace switchyard {

class LlamaModel {
 public:
  // `max_tokens` bounds the tokens of one step and `max_logit_rows` the rows of logits it returns.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Create(const ModelConfig& config,
                                                            ModelWeights weights, Backend* backend,
                                                            int64_t max_tokens,
                                                            int64_t max_logit_rows);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  int64_t max_tokens() const { return max_tokens_; }
  int64_t max_logit_rows() const { return max_logit_rows_; }

  // Runs every layer over the step's tokens, writing their K and V into `cache`, then the final
  // norm and the LM head over the hidden states of `logit_rows` (token indices, I32 on the
  // device). Returns a view of the workspace: logits [rows, vocab] F32, valid until the next call.
  // `hooks` (may be null) add adapter contributions.
  absl::StatusOr<Tensor> Forward(const StepMetadata& meta, const Tensor& logit_rows, KvCache& cache,
                                 LayerHooks* hooks = nullptr);

 private:
  LlamaModel(const ModelConfig& config, ModelWeights weights, Backend* backend)
      : config_(config), weights_(std::move(weights)), backend_(backend) {}
  absl::Status AllocateWorkspace();

  ModelConfig config_;
  ModelWeights weights_;
  Backend* backend_;
  int64_t max_tokens_ = 0;
  int64_t max_logit_rows_ = 0;

  struct Workspace {
    Tensor hidden, normed, qkv, q, k, v, attn, gate_up, act, cos_sin, head_in, logits, inv_freq;
  } ws_;
};

}  // namespace switchyard

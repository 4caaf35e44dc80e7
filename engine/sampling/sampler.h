// Logits -> token, per request: penalties, temperature, top-k, top-p, min-p, seeded sampling and
// log-probabilities.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"

namespace switchyard {

struct SamplingParams {
  float temperature = 1.0f;         // 0: greedy
  float top_p = 1.0f;               // (0, 1]
  int32_t top_k = 0;                // 0 or -1: off
  float min_p = 0.0f;               // [0, 1]
  float repetition_penalty = 1.0f;  // > 0; applies to prompt and generated tokens (as vLLM)
  float presence_penalty = 0.0f;    // [-2, 2]; generated tokens (as OpenAI)
  float frequency_penalty = 0.0f;   // [-2, 2]; generated tokens (as OpenAI)
  std::optional<uint64_t> seed;     // same seed, same output
  int32_t logprobs = -1;            // -1: none; n >= 0: the chosen token's and the top n
  // OpenAI's logit_bias: added to a token's logit before sampling, after the penalties; a bias
  // of -100 bans the token, +100 all but forces it. Ids beyond the logits are ignored here (the
  // frontend refuses them).
  std::vector<std::pair<int32_t, float>> logit_bias;
  static constexpr size_t kMaxLogitBias = 1024;

  // Refuses out-of-range values with a message naming the field.
  absl::Status Validate() const;
  bool greedy() const { return temperature == 0.0f; }
};

struct SampledToken {
  int32_t token = -1;
  float logprob = 0.0f;  // log-softmax of the raw logits (before penalties and temperature)
  std::vector<std::pair<int32_t, float>> top_logprobs;
};

// Per-request sampling state. Random draws depend only on (seed, output index), so a request
// that is preempted and recomputed samples exactly what it would have.
//
// Thread-safety: one request, one thread at a time.
class Sampler {
 public:
  static constexpr int kMaxLogprobs = 20;

  Sampler(const SamplingParams& params, std::span<const int32_t> prompt, uint64_t fallback_seed);

  // Samples the next token from one row of logits and records it for the penalties. `allowed`,
  // when not empty, is a bitset over token ids (bit t of word t / 32): only those may be drawn
  // (structured output); ids past its end are not allowed. It must allow at least one id.
  SampledToken Sample(std::span<const float> logits, std::span<const uint32_t> allowed = {});
  int64_t num_sampled() const { return num_sampled_; }
  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  uint64_t seed_;
  int64_t num_sampled_ = 0;
  absl::flat_hash_set<int32_t> seen_;  // prompt and output tokens (repetition penalty)
  absl::flat_hash_map<int32_t, int32_t> output_counts_;
  std::vector<float> work_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

}  // namespace switchyard

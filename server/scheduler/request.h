// A generation request as the scheduler sees it (already tokenized, adapter resolved), and the
// events it streams back.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/adapters/adapter.h"
#include "engine/grammar/matcher.h"
#include "engine/sampling/sampler.h"

namespace switchyard {

enum class FinishReason {
  kNone,        // still running
  kStop,        // a stop token (EOS or one of stop_token_ids)
  kStopString,  // one of stop_strings appeared in the text
  kLength,      // max_tokens, or the model's context length
  kCancelled,   // Cancel() or the client went away
  kDeadline,    // the request's deadline passed
  kError,       // the step failed; RequestEvent::error says why
};
absl::string_view FinishReasonName(FinishReason r);  // "stop", "length", ...

// Token counts and times of one request.
struct RequestUsage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // prompt tokens whose K/V came from the prefix cache
  int64_t preemptions = 0;
  absl::Time arrival = absl::InfinitePast();
  absl::Time scheduled = absl::InfinitePast();    // first admitted to a step (queue time ends)
  absl::Time first_token = absl::InfinitePast();  // InfinitePast until there is one
  absl::Time finish = absl::InfinitePast();
};

// How often each expert was selected for one request's tokens (prompt and output) at one routed
// site of one layer (site numbering as SiteRoutingStats: 0..6 the linears, 7 the MixLoRA block).
struct RequestRouting {
  std::string adapter;  // of a mixture: which member routed
  int layer = 0;
  int site = 0;
  std::vector<int64_t> expert_tokens;  // MH-MoE: sub-tokens
};

// One delivery to a request's sink: the tokens sampled since the last one, the text that became
// final with them, and on the last event the finish reason and usage.
struct RequestEvent {
  uint64_t request_id = 0;
  std::vector<int32_t> tokens;
  std::string text;
  std::vector<SampledToken> logprobs;  // one per token when the request asked for logprobs
  FinishReason finish = FinishReason::kNone;
  absl::Status error;                   // with kError
  RequestUsage usage;                   // complete on the last event
  std::vector<RequestRouting> routing;  // on the last event, when the request asked
  bool finished() const { return finish != FinishReason::kNone; }
};

// Receives a request's events on the engine thread. Deliver must not block (queue and return):
// the engine thread serves every request.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
  virtual void Deliver(RequestEvent event) = 0;
};

// A mixture member's weight lies in [-kMaxMixtureWeight, kMaxMixtureWeight]: beyond it a delta
// only overflows the activations.
inline constexpr float kMaxMixtureWeight = 100.0f;

// One adapter of a request's mixture and its weight (docs/adapters.md, "Mixtures").
struct MixtureMember {
  std::shared_ptr<const AdapterWeights> adapter;
  float weight = 1.0f;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;
  std::shared_ptr<const AdapterWeights> adapter;  // null: the base model, or `mixture`
  // Instead of `adapter`: several adapters with weights, or one with a scale (at most
  // kMaxMixtureMembers and max_adapters_per_step, distinct, |weight| <= kMaxMixtureWeight).
  std::vector<MixtureMember> mixture;
  SamplingParams sampling;
  int64_t max_tokens = -1;  // -1: up to the model's context length
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  std::vector<std::string> stop_strings;
  bool include_stop_string = false;  // keep the matched stop string in the text
  bool skip_special_tokens = true;   // in the text
  bool record_routing = false;       // report the experts its tokens used (last event)
  // Structured output: tokens are sampled only from those the grammar allows; the request ends
  // (kStop) when the grammar is complete and allows nothing more, and stop tokens are allowed
  // only where it may end.
  std::shared_ptr<const grammar::CompiledGrammar> grammar;
  absl::Time deadline = absl::InfiniteFuture();
  std::shared_ptr<RequestSink> sink;
};

}  // namespace switchyard

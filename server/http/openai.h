// The OpenAI wire format, without the transport: parsing /v1/completions and
// /v1/chat/completions bodies into Frontend requests (one per choice: prompts x n), and building
// the JSON of responses, stream chunks, model lists and errors as OpenAI's (and vLLM's) clients
// expect them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/frontend/frontend.h"

namespace switchyard::openai {

enum class Endpoint { kCompletions, kChat };

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;                   // the name the client used (echoed back)
  std::vector<GenerateInput> choices;  // index = prompt * n + j
  int n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;           // completions
  int logprobs = -1;           // top alternatives per token (-1: no logprobs)
  // Chat with tools: how calls are read from the output (tool_choice "auto": the model's format;
  // "required" / a named function: the constrained output's).
  ToolCallFormat tool_format = ToolCallFormat::kNone;
  std::string tool_name;  // kNamed: the function
  bool parallel_tool_calls = true;
};

// INVALID_ARGUMENT naming the parameter for wrong types and values (unknown fields are ignored);
// NOT_FOUND for a model that is neither the served model nor a loaded adapter.
absl::StatusOr<ParsedRequest> ParseRequest(Endpoint endpoint, absl::string_view body,
                                           const Frontend& frontend);

// What one choice has produced so far.
struct ChoiceState {
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<SampledToken> logprobs;
  FinishReason finish = FinishReason::kNone;
  RequestUsage usage;
  std::string prompt_text;  // echo
  // Streamed chat with tool parsing: the parser's state and the calls already sent.
  std::shared_ptr<ToolCallStream> tool_stream;
  int tool_calls_sent = 0;
};

// "stop" or "length" for finish reasons that end a choice normally, "abort" for the others,
// null while running.
const char* FinishReasonString(FinishReason r);
nlohmann::json FinishReasonJson(FinishReason r);

// A complete (non-streaming) response.
nlohmann::json BuildResponse(const ParsedRequest& req, const std::string& id, int64_t created,
                             const std::vector<ChoiceState>& choices, const Tokenizer& tokenizer);

// One streamed chunk for choice `index`: the new text (and log-probs) of `event`; on the last
// event of the choice, its finish_reason. `first` adds the chat role (and echo text).
// `text_offset`: the length of the choice's text sent before this chunk (completions' log-probs
// give each token's offset in the whole text).
// `calls`: tool calls completed with this event (numbered from `first_call_index`); `called`:
// whether the choice has called a tool (its finish_reason is then "tool_calls").
nlohmann::json BuildChunk(const ParsedRequest& req, const std::string& id, int64_t created,
                          int index, const RequestEvent& event, bool first,
                          const std::string& echo_text, int64_t text_offset,
                          const Tokenizer& tokenizer, const std::vector<ToolCall>& calls = {},
                          int first_call_index = 0, bool called = false);

// The final usage chunk (stream_options.include_usage).
nlohmann::json BuildUsageChunk(const ParsedRequest& req, const std::string& id, int64_t created,
                               const std::vector<ChoiceState>& choices);

nlohmann::json BuildModelList(const Frontend& frontend, int64_t created);

// vLLM's /tokenize ({"prompt"} or {"messages"}, "add_special_tokens") -> {"count",
// "max_model_len", "tokens"} and /detokenize ({"tokens"}) -> {"prompt"}; errors as ParseRequest.
absl::StatusOr<nlohmann::json> Tokenize(absl::string_view body, const Frontend& frontend);
absl::StatusOr<nlohmann::json> Detokenize(absl::string_view body, const Frontend& frontend);

// The HTTP status and OpenAI error object for a failed request.
int HttpStatus(const absl::Status& status);
// `http_status` overrides the status HttpStatus would give (413 for an oversized body).
nlohmann::json ErrorBody(const absl::Status& status, int http_status = 0);

// Serialises without throwing: invalid UTF-8 (never produced on purpose) becomes U+FFFD.
std::string Dump(const nlohmann::json& j);

}  // namespace switchyard::openai

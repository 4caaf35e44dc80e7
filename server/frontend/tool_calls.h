// Tool calls in a model's output, parsed into OpenAI's tool_calls for the formats chat models
// are trained on (vLLM's parsers of the same names):
//
//   hermes       <tool_call>{"name": ..., "arguments": {...}}</tool_call>   Qwen2.5/3, Hermes
//   llama3_json  {"name": ..., "parameters": {...}} (after <|python_tag|> or as the whole
//                output; several separated by ';')                            Llama 3.1-3.3
//   mistral      [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]         Mistral v0.3, Nemo
//
// Content is the text outside the calls (null when only whitespace). Output that is not a
// well-formed call stays content: nothing the model writes is lost or fails the request.
//
// Two more formats are the server's own, for outputs written under a grammar (tool_choice
// "required" and a named function, as vLLM does them): kRequired, a JSON array of
// {"name", "parameters"}; kNamed, the arguments object of the named function.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard {

enum class ToolCallFormat { kNone, kHermes, kLlama3Json, kMistral, kRequired, kNamed };

// Whether calls in this format are the model's choice (tool_choice "auto": finish_reason
// "tool_calls") rather than forced by a grammar (finish_reason stays "stop", as OpenAI's).
inline bool ModelChoseToolCalls(ToolCallFormat f) {
  return f == ToolCallFormat::kHermes || f == ToolCallFormat::kLlama3Json ||
         f == ToolCallFormat::kMistral;
}

// "hermes", "llama3_json", "mistral", "none"; "auto" picks by the template (below).
absl::StatusOr<ToolCallFormat> ParseToolCallFormat(absl::string_view name,
                                                   absl::string_view chat_template);
// The format a chat template renders tool calls in, by its markers; kNone when it shows none.
ToolCallFormat DetectToolCallFormat(absl::string_view chat_template);
const char* ToolCallFormatName(ToolCallFormat format);

struct ToolCall {
  std::string id;  // call_... (Mistral: 9 alphanumerics, as its templates demand)
  std::string name;
  std::string arguments;  // a JSON object, serialised
};

struct ParsedToolOutput {
  std::optional<std::string> content;  // nullopt: none (only whitespace outside the calls)
  std::vector<ToolCall> calls;
};

// `function`: the function's name for kNamed.
ParsedToolOutput ParseToolCalls(ToolCallFormat format, absl::string_view text,
                                absl::string_view function = "");

// The same parse, incrementally, for streamed responses: Push returns the content that can no
// longer be part of a call and the calls completed so far; Finish flushes the rest. Concatenated,
// the pieces equal ParseToolCalls of the whole text (before the whitespace-only rule).
class ToolCallStream {
 public:
  struct Delta {
    std::string content;
    std::vector<ToolCall> calls;
  };

  explicit ToolCallStream(ToolCallFormat format, absl::string_view function = "")
      : format_(format), function_(function) {}
  Delta Push(absl::string_view text);
  Delta Finish();
  bool called() const { return called_; }

 private:
  ToolCallFormat format_;
  std::string function_;  // kNamed
  std::string pending_;   // text held back: a possible marker prefix, or an open call
  bool in_call_ = false;  // hermes: inside <tool_call>; others: buffering to the end
  size_t scanned_ = 0;    // hermes: how much of an open call was searched for its end
  bool decided_ = false;  // llama3_json: whether the output starts like a call is known
  bool called_ = false;
};

}  // namespace switchyard

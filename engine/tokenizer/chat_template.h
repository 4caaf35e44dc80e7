// A model's chat template, rendered by our Jinja engine (engine/jinja) exactly as Hugging Face's
// apply_chat_template renders it: `messages`, `tools`, `add_generation_prompt`, the special
// tokens `bos_token` / `eos_token`, and extra variables (chat_template_kwargs, e.g.
// enable_thinking). Messages are prepared as vLLM prepares them: a tool call's `arguments`
// string becomes the object templates expect, and content given as parts is joined into a
// string unless the template itself iterates over content parts.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/jinja/template.h"
#include "nlohmann/json.hpp"

namespace switchyard {

// A role and a text: what callers without tools or content parts send (gRPC, the CLI).
struct ChatMessage {
  std::string role;
  std::string content;
};

// A conversation as OpenAI's API carries it, key order kept (templates print in that order).
struct ChatInput {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;  // null: none; else an array of {"type": "function", ...}
  bool add_generation_prompt = true;
  // Leave the final message open for the model to continue (an assistant "prefill"), as
  // transformers' continue_final_message: the prompt ends where that message's content ends.
  // Exclusive with add_generation_prompt.
  bool continue_final_message = false;
  // Extra template variables (vLLM's chat_template_kwargs), e.g. {"enable_thinking": false}.
  nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object();

  static ChatInput FromMessages(std::span<const ChatMessage> messages);
};

class ChatTemplate {
 public:
  // Compiles template text; bos/eos empty: left undefined, as Hugging Face leaves tokens a
  // tokenizer does not have.
  static absl::StatusOr<ChatTemplate> Compile(absl::string_view source, absl::string_view bos_token,
                                              absl::string_view eos_token);

  // What --chat-template names: a file (read here), the template text itself (anything with a
  // Jinja tag), or "chatml" (a plain ChatML template for models that ship none).
  static absl::StatusOr<std::string> ResolveSource(absl::string_view flag_value);

  // INVALID_ARGUMENT naming the problem: a malformed conversation, a template error, or the
  // template's own raise_exception message.
  absl::StatusOr<std::string> Render(const ChatInput& input) const;

  const std::string& source() const { return source_; }
  // Whether the template iterates over message content parts (vLLM's "openai" content format).
  bool takes_content_parts() const { return takes_content_parts_; }

 private:
  ChatTemplate(jinja::Template t, std::string source, std::string bos, std::string eos);

  jinja::Template template_;
  std::string source_;
  std::string bos_, eos_;
  bool takes_content_parts_ = false;
};

}  // namespace switchyard

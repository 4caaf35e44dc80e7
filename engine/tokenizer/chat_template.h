// Chat templates: the formats in common use, rendered by built-in code rather than a Jinja
// engine. A model's template text selects its format by fingerprint (distinctive literals that
// must all be present, features that must be absent); a template that matches none is refused
// with a message naming the option that picks a format by name. Each renderer is checked against
// Hugging Face's Jinja (@huggingface/jinja) on the real templates (tests/tokenizer).
//
//   llama3   Llama 3 / 3.1 Instruct (header-per-message, <|eot_id|>)
//   chatml   ChatML; Qwen2/2.5 (their default system prompt is read from the template)
//   qwen3    Qwen3 (ChatML with <think> blocks; enable_thinking)
//   llama2   Llama 2 chat ([INST] with <<SYS>>)
//   mistral  Mistral Instruct v0.1/v0.2 ([INST] without a system role)
#pragma once

#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard {

struct ChatMessage {
  std::string role;  // system, user, assistant (tool for qwen3)
  std::string content;
};

struct ChatRenderOptions {
  bool add_generation_prompt = true;
  bool enable_thinking = true;  // qwen3
};

class ChatTemplate {
 public:
  static constexpr absl::string_view kFormats = "llama3, chatml, qwen3, llama2, mistral";

  // Recognises the format of a tokenizer_config.json chat_template.
  static absl::StatusOr<ChatTemplate> FromTemplateText(absl::string_view text,
                                                       absl::string_view bos_token,
                                                       absl::string_view eos_token);
  static absl::StatusOr<ChatTemplate> FromName(absl::string_view name, absl::string_view bos_token,
                                               absl::string_view eos_token);

  const std::string& name() const { return name_; }
  // Refuses conversations the template would refuse (roles out of order, unknown roles).
  absl::StatusOr<std::string> Render(std::span<const ChatMessage> messages,
                                     const ChatRenderOptions& options) const;

 private:
  enum class Format { kLlama3, kChatML, kQwen3, kLlama2, kMistral };
  ChatTemplate(Format f, std::string name, std::string bos, std::string eos)
      : format_(f), name_(std::move(name)), bos_(std::move(bos)), eos_(std::move(eos)) {}

  Format format_;
  std::string name_;
  std::string bos_, eos_;
  bool generation_prompt_always_ = false;  // llama3 templates that ignore add_generation_prompt
  std::string default_system_;             // chatml: the system prompt used when none is given
  bool tool_responses_ = false;            // chatml: tool messages go in a user turn (Qwen2.5)
};

}  // namespace switchyard

#include "engine/tokenizer/chat_template.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "engine/core/json_util.h"
#include "engine/core/status_macros.h"
#include "engine/jinja/py_string.h"

namespace switchyard {
namespace {

using ojson = nlohmann::ordered_json;

constexpr absl::string_view kChatML =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

// vLLM's content-format detection, by its most common signal: a loop `for x in m['content']`
// (or m.content) over a message's content.
bool IteratesContentParts(absl::string_view source) {
  const auto skip_space = [&](size_t i) {
    while (i < source.size() && absl::ascii_isspace(static_cast<unsigned char>(source[i]))) ++i;
    return i;
  };
  const auto skip_name = [&](size_t i) {
    const size_t start = i;
    while (i < source.size() &&
           (absl::ascii_isalnum(static_cast<unsigned char>(source[i])) || source[i] == '_')) {
      ++i;
    }
    return i > start ? i : absl::string_view::npos;
  };
  for (size_t at = source.find("for"); at != absl::string_view::npos;
       at = source.find("for", at + 3)) {
    if (at > 0 && (absl::ascii_isalnum(static_cast<unsigned char>(source[at - 1])) ||
                   source[at - 1] == '_')) {
      continue;
    }
    size_t i = skip_space(at + 3);
    if (i == at + 3 || (i = skip_name(i)) == absl::string_view::npos) continue;
    i = skip_space(i);
    if (source.substr(i, 2) != "in") continue;
    const size_t after_in = i + 2;
    i = skip_space(after_in);
    if (i == after_in || (i = skip_name(i)) == absl::string_view::npos) continue;
    const absl::string_view rest = source.substr(i, 12);
    if (absl::StartsWith(rest, ".content") || absl::StartsWith(rest, "['content']") ||
        absl::StartsWith(rest, "[\"content\"]")) {
      return true;
    }
  }
  return false;
}

absl::Status Bad(size_t index, absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("messages[", index, "]", field, ": ", why));
}

// Content parts [{"type": "text", "text": ...}] joined by newlines, as vLLM's "string" format.
absl::StatusOr<ojson> JoinTextParts(const ojson& parts, size_t index) {
  std::string text;
  bool first = true;
  for (const ojson& part : parts) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      return Bad(index, ".content", "only parts of type \"text\" are supported");
    }
    if (!first) text += "\n";
    first = false;
    text += part["text"].get<std::string>();
  }
  return ojson(text);
}

// A tool call's arguments as the object templates expect (OpenAI sends a JSON string).
void ParseToolCallArguments(ojson& message) {
  auto calls = message.find("tool_calls");
  if (calls == message.end() || !calls->is_array()) return;
  for (ojson& call : *calls) {
    if (!call.is_object()) continue;
    auto fn = call.find("function");
    if (fn == call.end() || !fn->is_object()) continue;
    auto args = fn->find("arguments");
    if (args == fn->end() || !args->is_string()) continue;
    ojson parsed = ojson::parse(args->get<std::string>(), nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_discarded()) *args = std::move(parsed);
  }
}

absl::StatusOr<ojson> PrepareMessages(const ojson& messages, bool content_parts) {
  if (!messages.is_array()) return absl::InvalidArgumentError("messages: must be an array");
  ojson out = ojson::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    ojson m = messages[i];
    if (!m.is_object()) return Bad(i, "", "must be an object");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) return Bad(i, ".role", "must be a string");
    auto content = m.find("content");
    if (content != m.end() && content->is_array() && !content_parts) {
      SY_ASSIGN_OR_RETURN(*content, JoinTextParts(*content, i));
    }
    ParseToolCallArguments(m);
    out.push_back(std::move(m));
  }
  return out;
}

// transformers' continue_final_message: the rendered prompt, cut right after the last place the
// final message's content appears (stripped when templates trimmed it).
absl::Status CutAfterFinalMessage(const ojson& messages, std::string* prompt) {
  if (messages.empty()) return absl::InvalidArgumentError("continue_final_message: no messages");
  const ojson& last = messages.back();
  std::string content;
  if (auto c = last.find("content"); c != last.end()) {
    if (c->is_string()) {
      content = c->get<std::string>();
    } else if (c->is_array() && !c->empty() && c->back().is_object() &&
               c->back().value("text", ojson()).is_string()) {
      content = c->back()["text"].get<std::string>();
    }
  }
  size_t at = prompt->rfind(content);
  if (at == std::string::npos) {
    content = jinja::py::Strip(content, std::nullopt, true, true);  // Python's str.strip()
    at = prompt->rfind(content);
  }
  if (at == std::string::npos) {
    return absl::InvalidArgumentError(
        "continue_final_message: the final message's content does not appear in the rendered "
        "prompt, so it cannot be continued");
  }
  prompt->resize(at + content.size());
  return absl::OkStatus();
}

}  // namespace

ChatInput ChatInput::FromMessages(std::span<const ChatMessage> messages) {
  ChatInput in;
  for (const ChatMessage& m : messages) {
    in.messages.push_back(ojson{{"role", m.role}, {"content", m.content}});
  }
  return in;
}

ChatTemplate::ChatTemplate(jinja::Template t, std::string source, std::string bos, std::string eos)
    : template_(std::move(t)),
      source_(std::move(source)),
      bos_(std::move(bos)),
      eos_(std::move(eos)),
      takes_content_parts_(IteratesContentParts(source_)) {}

absl::StatusOr<ChatTemplate> ChatTemplate::Compile(absl::string_view source,
                                                   absl::string_view bos_token,
                                                   absl::string_view eos_token) {
  if (source.empty()) return absl::InvalidArgumentError("the chat template is empty");
  SY_ASSIGN_OR_RETURN(jinja::Template t, jinja::Template::Parse(source));
  return ChatTemplate(std::move(t), std::string(source), std::string(bos_token),
                      std::string(eos_token));
}

absl::StatusOr<std::string> ChatTemplate::ResolveSource(absl::string_view flag_value) {
  if (flag_value == "chatml") return std::string(kChatML);
  if (absl::StrContains(flag_value, "{{") || absl::StrContains(flag_value, "{%")) {
    return std::string(flag_value);
  }
  absl::StatusOr<std::string> text = ReadFile(std::string(flag_value));
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--chat-template: \"", flag_value,
                     "\" is neither a readable file, a template (no {{ or {% in it), nor "
                     "\"chatml\": ",
                     text.status().message()));
  }
  return text;
}

absl::StatusOr<std::string> ChatTemplate::Render(const ChatInput& input) const {
  if (input.continue_final_message && input.add_generation_prompt) {
    return absl::InvalidArgumentError(
        "continue_final_message: cannot be combined with add_generation_prompt (set it false)");
  }
  SY_ASSIGN_OR_RETURN(ojson messages, PrepareMessages(input.messages, takes_content_parts_));
  if (!input.tools.is_null() && !input.tools.is_array()) {
    return absl::InvalidArgumentError("tools: must be an array");
  }
  if (!input.template_kwargs.is_object()) {
    return absl::InvalidArgumentError("chat_template_kwargs: must be an object");
  }
  // Hugging Face's order: special tokens, then the caller's kwargs (which may override them),
  // then the conversation itself, which kwargs may not replace.
  std::vector<std::pair<std::string, jinja::Value>> vars;
  if (!bos_.empty()) vars.emplace_back("bos_token", jinja::Value::Str(bos_));
  if (!eos_.empty()) vars.emplace_back("eos_token", jinja::Value::Str(eos_));
  for (const auto& [key, value] : input.template_kwargs.items()) {
    if (key == "messages" || key == "tools" || key == "add_generation_prompt") {
      return absl::InvalidArgumentError(absl::StrCat("chat_template_kwargs: \"", key,
                                                     "\" is set by the request itself, not here"));
    }
    SY_ASSIGN_OR_RETURN(jinja::Value v, jinja::FromJson(value));
    vars.emplace_back(key, std::move(v));
  }
  SY_ASSIGN_OR_RETURN(jinja::Value messages_value, jinja::FromJson(messages));
  vars.emplace_back("messages", std::move(messages_value));
  jinja::Value tools = jinja::Value::None();
  if (!input.tools.is_null()) {
    SY_ASSIGN_OR_RETURN(tools, jinja::FromJson(input.tools));
  }
  vars.emplace_back("tools", std::move(tools));
  vars.emplace_back("add_generation_prompt", jinja::Value::Bool(input.add_generation_prompt));
  SY_ASSIGN_OR_RETURN(std::string prompt, template_.Render(std::move(vars)));
  if (input.continue_final_message) {
    SY_RETURN_IF_ERROR(CutAfterFinalMessage(messages, &prompt));
  }
  return prompt;
}

}  // namespace switchyard

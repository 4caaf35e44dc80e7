#include "engine/tokenizer/chat_template.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace switchyard {
namespace {

// Python's str.strip() / lstrip / rstrip over ASCII whitespace and the common Unicode spaces, as
// Jinja's trim filter and .strip() see them (contents are UTF-8).
bool IsStripSpace(absl::string_view s, size_t pos, size_t* len) {
  static const absl::string_view kMulti[] = {"\u00a0", "\u1680", "\u2000", "\u2001", "\u2002",
                                             "\u2003", "\u2004", "\u2005", "\u2006", "\u2007",
                                             "\u2008", "\u2009", "\u200a", "\u2028", "\u2029",
                                             "\u202f", "\u205f", "\u3000", "\u0085"};
  const unsigned char c = static_cast<unsigned char>(s[pos]);
  if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) {
    *len = 1;
    return true;
  }
  for (absl::string_view m : kMulti) {
    if (s.substr(pos, m.size()) == m) {
      *len = m.size();
      return true;
    }
  }
  return false;
}

std::string Strip(absl::string_view s, bool left = true, bool right = true) {
  size_t b = 0, e = s.size(), len = 0;
  while (left && b < e && IsStripSpace(s, b, &len)) b += len;
  if (right) {
    while (e > b) {
      size_t start = e - 1;
      while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
      if (!IsStripSpace(s, start, &len) || start + len != e) break;
      e = start;
    }
  }
  return std::string(s.substr(b, e - b));
}

// Strips only the given character, as Python's str.strip('\n').
std::string StripChar(absl::string_view s, char c, bool left, bool right) {
  size_t b = 0, e = s.size();
  while (left && b < e && s[b] == c) ++b;
  while (right && e > b && s[e - 1] == c) --e;
  return std::string(s.substr(b, e - b));
}

absl::Status Alternate() {
  return absl::InvalidArgumentError(
      "this chat template requires roles to alternate user/assistant/user/assistant/...");
}

absl::Status UnknownRole(absl::string_view format, absl::string_view role) {
  return absl::InvalidArgumentError(
      absl::StrCat("chat template ", format, " does not accept role \"", role, "\""));
}

// Every literal must appear in the template for a fingerprint to count; each is a piece of the
// exact output our renderer writes.
bool HasAll(absl::string_view text, std::initializer_list<absl::string_view> literals) {
  for (absl::string_view l : literals) {
    if (!absl::StrContains(text, l)) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::FromName(absl::string_view name,
                                                    absl::string_view bos_token,
                                                    absl::string_view eos_token) {
  Format f;
  if (name == "llama3") {
    f = Format::kLlama3;
  } else if (name == "chatml") {
    f = Format::kChatML;
  } else if (name == "qwen3") {
    f = Format::kQwen3;
  } else if (name == "llama2") {
    f = Format::kLlama2;
  } else if (name == "mistral") {
    f = Format::kMistral;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown chat template format \"", name, "\" (known: ", kFormats, ")"));
  }
  return ChatTemplate(f, std::string(name), std::string(bos_token), std::string(eos_token));
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromTemplateText(absl::string_view text,
                                                            absl::string_view bos_token,
                                                            absl::string_view eos_token) {
  const auto refuse = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model's chat_template is not one Switchyard renders (", why,
                     "); choose a format by name with --chat-template (", kFormats, ")"));
  };
  if (text.empty()) return refuse("the tokenizer has none");
  absl::StatusOr<ChatTemplate> t = absl::InternalError("unset");
  if (absl::StrContains(text, "<|start_header_id|>")) {
    if (absl::StrContains(text, "Cutting Knowledge Date") || absl::StrContains(text, "tools")) {
      return refuse("a Llama 3.1+ template with a dated system block or tools");
    }
    if (!HasAll(text, {"<|eot_id|>", "<|end_header_id|>", "bos_token", "trim",
                       "'<|start_header_id|>assistant<|end_header_id|>"})) {
      return refuse("a Llama 3 variant");
    }
    t = FromName("llama3", bos_token, eos_token);
    t->generation_prompt_always_ = !absl::StrContains(text, "add_generation_prompt");
    return t;
  }
  if (absl::StrContains(text, "<|im_start|>")) {
    if (absl::StrContains(text, "<think>")) {
      if (!HasAll(text, {"last_query_index", "enable_thinking", "'<|im_start|>assistant\\n'",
                         "<tool_response>"})) {
        return refuse("a ChatML variant with thinking blocks");
      }
      return FromName("qwen3", bos_token, eos_token);
    }
    if (!HasAll(text, {"<|im_end|>", "'<|im_start|>' + message"})) {
      return refuse("a ChatML variant");
    }
    t = FromName("chatml", bos_token, eos_token);
    t->tool_responses_ = absl::StrContains(text, "<tool_response>");
    // Qwen2/2.5 write a default system message when the conversation brings none.
    const absl::string_view marker = "<|im_start|>system\\n";
    for (size_t pos = text.find(marker); pos != absl::string_view::npos;
         pos = text.find(marker, pos + 1)) {
      const size_t start = pos + marker.size();
      const size_t end = text.find("<|im_end|>", start);
      if (end == absl::string_view::npos) break;
      const absl::string_view literal = text.substr(start, end - start);
      if (!literal.empty() && literal.find_first_of("'\"{}+") == absl::string_view::npos) {
        t->default_system_ = std::string(literal);
        break;
      }
    }
    return t;
  }
  if (absl::StrContains(text, "[INST]")) {
    if (absl::StrContains(text, "<<SYS>>")) {
      if (!HasAll(text,
                  {"'[INST] '", "' [/INST]'", "<<SYS>>\\n", "\\n<</SYS>>\\n\\n", "eos_token"})) {
        return refuse("a Llama 2 variant");
      }
      return FromName("llama2", bos_token, eos_token);
    }
    if (!HasAll(text, {"'[INST] '", "' [/INST]'", "eos_token"}) ||
        absl::StrContains(text, "system") || absl::StrContains(text, "tools")) {
      return refuse("a Mistral variant");
    }
    return FromName("mistral", bos_token, eos_token);
  }
  return refuse("no known format matches it");
}

absl::StatusOr<std::string> ChatTemplate::Render(std::span<const ChatMessage> messages,
                                                 const ChatRenderOptions& options) const {
  std::string out;
  switch (format_) {
    case Format::kLlama3: {
      for (size_t i = 0; i < messages.size(); ++i) {
        if (i == 0) out += bos_;
        absl::StrAppend(&out, "<|start_header_id|>", messages[i].role, "<|end_header_id|>\n\n",
                        Strip(messages[i].content), "<|eot_id|>");
      }
      if (options.add_generation_prompt || generation_prompt_always_) {
        out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      }
      return out;
    }
    case Format::kChatML: {
      if (!default_system_.empty() && (messages.empty() || messages[0].role != "system")) {
        absl::StrAppend(&out, "<|im_start|>system\n", default_system_, "<|im_end|>\n");
      }
      for (size_t i = 0; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        if (tool_responses_ && m.role == "tool") {
          if (i == 0 || messages[i - 1].role != "tool") out += "<|im_start|>user";
          absl::StrAppend(&out, "\n<tool_response>\n", m.content, "\n</tool_response>");
          if (i + 1 == messages.size() || messages[i + 1].role != "tool") out += "<|im_end|>\n";
          continue;
        }
        absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
      }
      if (options.add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    }
    case Format::kQwen3: {
      const size_t n = messages.size();
      if (n > 0 && messages[0].role == "system") {
        absl::StrAppend(&out, "<|im_start|>system\n", messages[0].content, "<|im_end|>\n");
      }
      // The last user message that is not a tool response.
      size_t last_query = n == 0 ? 0 : n - 1;
      for (size_t k = n; k-- > 0;) {
        const ChatMessage& m = messages[k];
        if (m.role == "user" && !(absl::StartsWith(m.content, "<tool_response>") &&
                                  absl::EndsWith(m.content, "</tool_response>"))) {
          last_query = k;
          break;
        }
      }
      for (size_t i = 0; i < n; ++i) {
        const ChatMessage& m = messages[i];
        if (m.role == "user" || (m.role == "system" && i > 0)) {
          absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
        } else if (m.role == "assistant") {
          std::string content = m.content, reasoning;
          const size_t close = m.content.rfind("</think>");
          if (close != std::string::npos) {
            content = StripChar(m.content.substr(close + 8), '\n', true, false);
            std::string before =
                StripChar(m.content.substr(0, m.content.find("</think>")), '\n', false, true);
            const size_t open = before.rfind("<think>");
            if (open != std::string::npos) before = before.substr(open + 7);
            reasoning = StripChar(before, '\n', true, false);
          }
          const bool last = i + 1 == n;
          if (i > last_query && (last || !reasoning.empty())) {
            absl::StrAppend(&out, "<|im_start|>assistant\n<think>\n",
                            StripChar(reasoning, '\n', true, true), "\n</think>\n\n",
                            StripChar(content, '\n', true, false));
          } else {
            absl::StrAppend(&out, "<|im_start|>assistant\n", content);
          }
          out += "<|im_end|>\n";
        } else if (m.role == "tool") {
          if (i == 0 || messages[i - 1].role != "tool") out += "<|im_start|>user";
          absl::StrAppend(&out, "\n<tool_response>\n", m.content, "\n</tool_response>");
          if (i + 1 == n || messages[i + 1].role != "tool") out += "<|im_end|>\n";
        } else if (m.role != "system") {
          return UnknownRole(name_, m.role);
        }
      }
      if (options.add_generation_prompt) {
        out += "<|im_start|>assistant\n";
        if (!options.enable_thinking) out += "<think>\n\n</think>\n\n";
      }
      return out;
    }
    case Format::kLlama2: {
      std::span<const ChatMessage> loop = messages;
      const ChatMessage* system = nullptr;
      if (!messages.empty() && messages[0].role == "system") {
        system = &messages[0];
        loop = messages.subspan(1);
      }
      for (size_t i = 0; i < loop.size(); ++i) {
        if ((loop[i].role == "user") != (i % 2 == 0)) return Alternate();
        std::string content = loop[i].content;
        if (i == 0 && system != nullptr) {
          content = absl::StrCat("<<SYS>>\n", system->content, "\n<</SYS>>\n\n", content);
        }
        if (loop[i].role == "user") {
          absl::StrAppend(&out, bos_, "[INST] ", Strip(content), " [/INST]");
        } else if (loop[i].role == "assistant") {
          absl::StrAppend(&out, " ", Strip(content), " ", eos_);
        }
      }
      return out;
    }
    case Format::kMistral: {
      out += bos_;
      for (size_t i = 0; i < messages.size(); ++i) {
        if ((messages[i].role == "user") != (i % 2 == 0)) return Alternate();
        if (messages[i].role == "user") {
          absl::StrAppend(&out, "[INST] ", messages[i].content, " [/INST]");
        } else if (messages[i].role == "assistant") {
          absl::StrAppend(&out, messages[i].content, eos_);
        } else {
          return absl::InvalidArgumentError(
              "this chat template accepts only the user and assistant roles");
        }
      }
      return out;
    }
  }
  return out;
}

}  // namespace switchyard

#include "server/frontend/tool_calls.h"

#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace switchyard {
namespace {

using ojson = nlohmann::ordered_json;

constexpr absl::string_view kHermesOpen = "<tool_call>";
constexpr absl::string_view kHermesClose = "</tool_call>";
constexpr absl::string_view kMistralMarker = "[TOOL_CALLS]";
constexpr absl::string_view kPythonTag = "<|python_tag|>";

std::string RandomAlnum(int n) {
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  static thread_local std::mt19937_64 rng(std::random_device{}());
  std::string out;
  for (int i = 0; i < n; ++i) out += kChars[rng() % (sizeof(kChars) - 1)];
  return out;
}

std::string NewId(ToolCallFormat format) {
  return format == ToolCallFormat::kMistral ? RandomAlnum(9) : "call_" + RandomAlnum(24);
}

// {"name": str, "arguments"|"parameters": object} as a call; nullopt when it is not one.
std::optional<ToolCall> CallFromJson(const ojson& j, ToolCallFormat format) {
  if (!j.is_object()) return std::nullopt;
  auto name = j.find("name");
  if (name == j.end() || !name->is_string() || name->get<std::string>().empty()) {
    return std::nullopt;
  }
  auto args = j.find("arguments");
  if (args == j.end()) args = j.find("parameters");
  ojson arguments = args == j.end() ? ojson::object() : *args;
  if (arguments.is_string()) {
    // Some models write the arguments as a JSON string, as the API carries them.
    arguments = ojson::parse(arguments.get<std::string>(), nullptr, false);
  }
  if (!arguments.is_object()) return std::nullopt;
  return ToolCall{NewId(format), name->get<std::string>(),
                  arguments.dump(-1, ' ', false, ojson::error_handler_t::replace)};
}

ojson ParseJson(absl::string_view text) {
  return ojson::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
}

// Calls from one JSON value: an object, or an array of objects (all must be calls).
std::optional<std::vector<ToolCall>> CallsFromJsonText(absl::string_view text,
                                                       ToolCallFormat format) {
  const ojson j = ParseJson(absl::StripAsciiWhitespace(text));
  if (j.is_discarded()) return std::nullopt;
  std::vector<ToolCall> calls;
  const auto add = [&](const ojson& item) {
    std::optional<ToolCall> c = CallFromJson(item, format);
    if (!c) return false;
    calls.push_back(std::move(*c));
    return true;
  };
  if (j.is_array()) {
    if (j.empty()) return std::nullopt;
    for (const ojson& item : j) {
      if (!add(item)) return std::nullopt;
    }
  } else if (!add(j)) {
    return std::nullopt;
  }
  return calls;
}

// The end (one past) of the JSON object starting at text[0] == '{', by brace depth outside
// strings; npos when it does not close. Linear, so splitting a long output costs one pass.
size_t ObjectEnd(absl::string_view text) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if ((c == '}' || c == ']') && --depth == 0) {
      return i + 1;
    }
  }
  return absl::string_view::npos;
}

// Llama 3.x: after an optional <|python_tag|>, one or more call objects separated by ';'.
std::optional<std::vector<ToolCall>> Llama3Calls(absl::string_view text) {
  absl::string_view body = absl::StripLeadingAsciiWhitespace(text);
  absl::ConsumePrefix(&body, kPythonTag);
  body = absl::StripAsciiWhitespace(body);
  std::vector<ToolCall> calls;
  while (!body.empty()) {
    if (body[0] != '{') return std::nullopt;
    const size_t end = ObjectEnd(body);
    if (end == absl::string_view::npos) return std::nullopt;
    std::optional<std::vector<ToolCall>> one =
        CallsFromJsonText(body.substr(0, end), ToolCallFormat::kLlama3Json);
    if (!one || one->size() != 1) return std::nullopt;
    calls.push_back(std::move(one->front()));
    body = absl::StripLeadingAsciiWhitespace(body.substr(end));
    if (body.empty()) break;
    if (!absl::ConsumePrefix(&body, ";")) return std::nullopt;
    body = absl::StripLeadingAsciiWhitespace(body);
  }
  if (calls.empty()) return std::nullopt;
  return calls;
}

// The length of the longest suffix of `text` that is a proper prefix of `marker`.
size_t MarkerPrefixAtEnd(absl::string_view text, absl::string_view marker) {
  for (size_t n = std::min(text.size(), marker.size() - 1); n > 0; --n) {
    if (absl::EndsWith(text, marker.substr(0, n))) return n;
  }
  return 0;
}

}  // namespace

ToolCallFormat DetectToolCallFormat(absl::string_view chat_template) {
  if (absl::StrContains(chat_template, kHermesOpen)) return ToolCallFormat::kHermes;
  if (absl::StrContains(chat_template, kMistralMarker)) return ToolCallFormat::kMistral;
  if (absl::StrContains(chat_template, "<|start_header_id|>") &&
      (absl::StrContains(chat_template, kPythonTag) ||
       absl::StrContains(chat_template, "\"parameters\": "))) {
    return ToolCallFormat::kLlama3Json;
  }
  return ToolCallFormat::kNone;
}

absl::StatusOr<ToolCallFormat> ParseToolCallFormat(absl::string_view name,
                                                   absl::string_view chat_template) {
  if (name == "auto") return DetectToolCallFormat(chat_template);
  if (name == "hermes") return ToolCallFormat::kHermes;
  if (name == "llama3_json") return ToolCallFormat::kLlama3Json;
  if (name == "mistral") return ToolCallFormat::kMistral;
  if (name == "none") return ToolCallFormat::kNone;
  return absl::InvalidArgumentError(absl::StrCat(
      "--tool-call-parser: \"", name, "\" is not one of auto, hermes, llama3_json, mistral, none"));
}

const char* ToolCallFormatName(ToolCallFormat format) {
  switch (format) {
    case ToolCallFormat::kHermes:
      return "hermes";
    case ToolCallFormat::kLlama3Json:
      return "llama3_json";
    case ToolCallFormat::kMistral:
      return "mistral";
    case ToolCallFormat::kRequired:
      return "required";
    case ToolCallFormat::kNamed:
      return "named";
    case ToolCallFormat::kNone:
      break;
  }
  return "none";
}

ParsedToolOutput ParseToolCalls(ToolCallFormat format, absl::string_view text,
                                absl::string_view function) {
  ToolCallStream stream(format, function);
  ToolCallStream::Delta a = stream.Push(text);
  ToolCallStream::Delta b = stream.Finish();
  ParsedToolOutput out;
  std::string content = a.content + b.content;
  out.calls = std::move(a.calls);
  out.calls.insert(out.calls.end(), b.calls.begin(), b.calls.end());
  if (out.calls.empty() || !absl::StripAsciiWhitespace(content).empty()) {
    out.content = std::move(content);
  }
  return out;
}

ToolCallStream::Delta ToolCallStream::Push(absl::string_view text) {
  Delta d;
  absl::StrAppend(&pending_, text);
  switch (format_) {
    case ToolCallFormat::kNone:
      d.content = std::move(pending_);
      pending_.clear();
      return d;
    case ToolCallFormat::kLlama3Json: {
      if (!decided_) {
        absl::string_view head = absl::StripLeadingAsciiWhitespace(pending_);
        if (head.empty()) return d;
        const bool tag_prefix = absl::StartsWith(kPythonTag, head.substr(0, kPythonTag.size()));
        in_call_ = absl::StartsWith(head, "{") || tag_prefix;
        if (tag_prefix && head.size() < kPythonTag.size()) return d;  // undecided yet
        decided_ = true;
      }
      if (!in_call_) {
        d.content = std::move(pending_);
        pending_.clear();
      }
      return d;  // a call: held to the end
    }
    case ToolCallFormat::kMistral: {
      if (in_call_) return d;
      const size_t at = pending_.find(kMistralMarker.data(), 0, kMistralMarker.size());
      if (at != std::string::npos) {
        d.content = pending_.substr(0, at);
        pending_.erase(0, at + kMistralMarker.size());
        in_call_ = true;
        return d;
      }
      const size_t keep = MarkerPrefixAtEnd(pending_, kMistralMarker);
      d.content = pending_.substr(0, pending_.size() - keep);
      pending_.erase(0, pending_.size() - keep);
      return d;
    }
    case ToolCallFormat::kRequired:
    case ToolCallFormat::kNamed:
      in_call_ = true;  // the whole output is the call(s)
      return d;
    case ToolCallFormat::kHermes:
      break;
  }
  while (true) {
    if (!in_call_) {
      const size_t at = pending_.find(kHermesOpen.data(), 0, kHermesOpen.size());
      if (at == std::string::npos) {
        const size_t keep = MarkerPrefixAtEnd(pending_, kHermesOpen);
        absl::StrAppend(&d.content, pending_.substr(0, pending_.size() - keep));
        pending_.erase(0, pending_.size() - keep);
        return d;
      }
      absl::StrAppend(&d.content, pending_.substr(0, at));
      pending_.erase(0, at);
      in_call_ = true;
    }
    // Resume the search for the closing tag where the last push left it (a long call arrives in
    // many pushes).
    const size_t from = scanned_ > kHermesClose.size() ? scanned_ - kHermesClose.size() : 0;
    const size_t close = pending_.find(kHermesClose.data(), from, kHermesClose.size());
    if (close == std::string::npos) {
      scanned_ = pending_.size();
      return d;
    }
    scanned_ = 0;
    const absl::string_view body =
        absl::string_view(pending_).substr(kHermesOpen.size(), close - kHermesOpen.size());
    std::optional<std::vector<ToolCall>> calls = CallsFromJsonText(body, format_);
    if (calls && calls->size() == 1) {
      d.calls.push_back(std::move(calls->front()));
      called_ = true;
    } else {
      absl::StrAppend(&d.content, pending_.substr(0, close + kHermesClose.size()));
    }
    pending_.erase(0, close + kHermesClose.size());
    in_call_ = false;
  }
}

ToolCallStream::Delta ToolCallStream::Finish() {
  Delta d;
  std::string rest = std::move(pending_);
  pending_.clear();
  if (!in_call_) {
    d.content = std::move(rest);
    return d;
  }
  std::optional<std::vector<ToolCall>> calls;
  switch (format_) {
    case ToolCallFormat::kLlama3Json:
      calls = Llama3Calls(rest);
      break;
    case ToolCallFormat::kMistral:
      calls = CallsFromJsonText(rest, format_);
      if (!calls) d.content = std::string(kMistralMarker);
      break;
    case ToolCallFormat::kRequired:
      calls = CallsFromJsonText(rest, format_);
      break;
    case ToolCallFormat::kNamed: {
      const ojson arguments = ParseJson(rest);
      if (arguments.is_object()) {
        calls = std::vector<ToolCall>{
            {NewId(format_), function_,
             arguments.dump(-1, ' ', false, ojson::error_handler_t::replace)}};
      }
      break;
    }
    default:
      break;  // hermes: an unclosed <tool_call> stays text
  }
  if (calls) {
    d.calls = std::move(*calls);
    called_ = true;
  } else {
    absl::StrAppend(&d.content, rest);
  }
  return d;
}

}  // namespace switchyard

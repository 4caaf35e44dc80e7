// Fuzzes the tool-call parsers with arbitrary model output: the first byte picks the format and
// where the stream is cut, the rest is the text. Beyond not crashing: pushed in pieces (at the
// chosen cut, then byte by byte), the parse equals the parse of the whole text; every call has a
// name and JSON-object arguments; text is never invented (the content is at most the input).
#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "server/frontend/tool_calls.h"
#include "tests/fuzz/check.h"

namespace {

using switchyard::ParsedToolOutput;
using switchyard::ToolCall;
using switchyard::ToolCallFormat;
using switchyard::ToolCallStream;
using switchyard::fuzz::Check;

struct Collected {
  std::string content;
  std::vector<ToolCall> calls;
};

Collected Stream(ToolCallFormat f, const std::vector<std::string>& pieces) {
  ToolCallStream s(f, "fn");
  Collected out;
  const auto take = [&](ToolCallStream::Delta d) {
    out.content += d.content;
    out.calls.insert(out.calls.end(), d.calls.begin(), d.calls.end());
  };
  for (const std::string& p : pieces) take(s.Push(p));
  take(s.Finish());
  return out;
}

void CheckSame(const Collected& a, const ParsedToolOutput& whole) {
  Check(a.calls.size() == whole.calls.size(), "streamed and whole parses find the same calls");
  for (size_t i = 0; i < a.calls.size(); ++i) {
    Check(a.calls[i].name == whole.calls[i].name, "same call names");
    Check(a.calls[i].arguments == whole.calls[i].arguments, "same call arguments");
  }
  if (whole.content) Check(a.content == *whole.content, "same content");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static constexpr ToolCallFormat kFormats[] = {
      ToolCallFormat::kHermes, ToolCallFormat::kLlama3Json, ToolCallFormat::kMistral,
      ToolCallFormat::kNone,   ToolCallFormat::kRequired,   ToolCallFormat::kNamed};
  const ToolCallFormat f = kFormats[data[0] % 6];
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const ParsedToolOutput whole = switchyard::ParseToolCalls(f, text, "fn");
  for (const ToolCall& c : whole.calls) {
    Check(!c.name.empty(), "a call has a name");
    const nlohmann::json args = nlohmann::json::parse(c.arguments, nullptr, false);
    Check(args.is_object(), "a call's arguments are a JSON object");
  }
  if (whole.content) Check(whole.content->size() <= text.size() + 16, "no text invented");
  const size_t cut = text.empty() ? 0 : (data[0] / 6) % (text.size() + 1);
  CheckSame(Stream(f, {text.substr(0, cut), text.substr(cut)}), whole);
  if (text.size() <= 4096) {
    std::vector<std::string> bytes;
    for (char c : text) bytes.emplace_back(1, c);
    CheckSame(Stream(f, bytes), whole);
  }
  return 0;
}

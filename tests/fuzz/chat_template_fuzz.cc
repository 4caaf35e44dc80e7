// Fuzzes the Jinja engine with arbitrary template text (what a model folder's chat_template or
// --chat-template hands us) and renders a conversation with tools through it. Beyond not
// crashing, hanging or exhausting memory: a template parses or is refused as INVALID_ARGUMENT;
// a render succeeds or is refused as INVALID_ARGUMENT (the engine's limits keep both bounded).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/tokenizer/chat_template.h"
#include "tests/fuzz/check.h"

namespace {
using switchyard::fuzz::Check;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto t = switchyard::ChatTemplate::Compile(text, "<s>", "</s>");
  if (!t.ok()) {
    Check(t.status().code() == absl::StatusCode::kInvalidArgument, "refused as INVALID_ARGUMENT");
    return 0;
  }
  switchyard::ChatInput chat = switchyard::ChatInput::FromMessages(
      std::vector<switchyard::ChatMessage>{{"system", "Be brief."},
                                           {"user", text.substr(0, 64)},
                                           {"assistant", "Yes."},
                                           {"user", "?"}});
  chat.tools = nlohmann::ordered_json::parse(
      R"([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])");
  for (bool gen : {true, false}) {
    chat.add_generation_prompt = gen;
    chat.template_kwargs = {{"enable_thinking", gen}};
    auto r = t->Render(chat);
    Check(r.ok() || r.status().code() == absl::StatusCode::kInvalidArgument,
          "renders or refuses as INVALID_ARGUMENT");
  }
  return 0;
}

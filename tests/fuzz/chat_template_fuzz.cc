// Fuzzes the chat-template recogniser with arbitrary template text (what a model folder's
// tokenizer_config.json carries) and renders a conversation with whatever it recognises. Beyond
// not crashing: a template is recognised or refused with INVALID_ARGUMENT; a recognised one
// renders a well-formed conversation, or refuses it with INVALID_ARGUMENT.
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
  auto t = switchyard::ChatTemplate::FromTemplateText(text, "<s>", "</s>");
  if (!t.ok()) {
    Check(t.status().code() == absl::StatusCode::kInvalidArgument, "refused as INVALID_ARGUMENT");
    return 0;
  }
  const std::vector<switchyard::ChatMessage> chat = {
      {"system", "Be brief."}, {"user", text.substr(0, 64)}, {"assistant", "Yes."}, {"user", "?"}};
  for (bool gen : {true, false}) {
    auto r = t->Render(chat, {.add_generation_prompt = gen, .enable_thinking = gen});
    Check(r.ok() || r.status().code() == absl::StatusCode::kInvalidArgument,
          "renders or refuses as INVALID_ARGUMENT");
  }
  return 0;
}

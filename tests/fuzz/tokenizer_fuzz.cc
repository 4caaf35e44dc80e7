// Fuzzes encode and decode of the tokenizer in SWITCHYARD_FUZZ_TOKENIZER (a folder with
// tokenizer.json; the demo model's by default in ctest). Properties, beyond not crashing:
// invalid UTF-8 is refused; valid text survives encode then decode (the demo tokenizer is
// byte-level with no normalizer and no clean-up); streamed decode equals the full decode and
// every delta is valid UTF-8, for arbitrary id sequences too.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "tests/fuzz/check.h"

namespace {
std::unique_ptr<switchyard::Tokenizer> g_tokenizer;

using switchyard::fuzz::Check;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("SWITCHYARD_FUZZ_TOKENIZER");
  auto tok = switchyard::Tokenizer::Load(dir != nullptr ? dir : "");
  if (!tok.ok()) {
    std::fprintf(stderr, "SWITCHYARD_FUZZ_TOKENIZER: %s\n", tok.status().ToString().c_str());
    std::abort();
  }
  g_tokenizer = std::move(*tok);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using switchyard::utf8::FirstInvalid;
  const switchyard::Tokenizer& tok = *g_tokenizer;
  const std::string text(reinterpret_cast<const char*>(data), size);
  const bool valid = FirstInvalid(text) == std::string::npos;
  auto ids = tok.Encode(text, {.add_special_tokens = false});
  Check(ids.ok() == valid, "Encode accepts exactly the valid UTF-8");
  if (ids.ok()) Check(tok.Decode(*ids) == text, "decode(encode(text)) == text");

  // The same bytes as a sequence of ids, some out of range.
  std::vector<int32_t> seq;
  for (size_t i = 0; i + 2 <= size; i += 2) {
    seq.push_back(static_cast<int32_t>((data[i] | (data[i + 1] << 8)) % (tok.vocab_size() + 16)));
  }
  for (bool skip : {false, true}) {
    std::string streamed;
    switchyard::DecodeStream s = tok.NewDecodeStream(skip);
    for (int32_t id : seq) {
      std::string delta;
      s.Push(id, &delta);
      Check(FirstInvalid(delta) == std::string::npos, "stream deltas are valid UTF-8");
      streamed += delta;
    }
    s.Finish(&streamed);
    Check(streamed == tok.Decode(seq, skip), "streamed decode == full decode");
  }
  return 0;
}

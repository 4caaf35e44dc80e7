// Fuzzes the tokenizer loader: tokenizer.json (first input byte even) or tokenizer_config.json
// (odd, beside the tokenizer.json of the model in SWITCHYARD_FUZZ_TOKENIZER), the rest of the
// input being the file. Beyond not crashing: a file is loaded or refused with INVALID_ARGUMENT
// (UNIMPLEMENTED for a well-formed component we do not support);
// a loaded tokenizer encodes and decodes text without failing on valid UTF-8.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "engine/tokenizer/tokenizer.h"
#include "tests/fuzz/check.h"

namespace {
std::string g_tokenizer_json;

using switchyard::fuzz::Check;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("SWITCHYARD_FUZZ_TOKENIZER");
  std::ifstream in(std::string(dir != nullptr ? dir : ".") + "/tokenizer.json");
  std::stringstream ss;
  ss << in.rdbuf();
  g_tokenizer_json = ss.str();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string file(reinterpret_cast<const char*>(data) + 1, size - 1);
  const bool config = data[0] & 1;
  auto tokenizer = config ? switchyard::Tokenizer::FromJson(g_tokenizer_json, file)
                          : switchyard::Tokenizer::FromJson(file, "");
  if (!tokenizer.ok()) {
    const absl::StatusCode code = tokenizer.status().code();
    Check(code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kUnimplemented,
          "a bad file is INVALID_ARGUMENT (UNIMPLEMENTED for a component we do not support)");
    return 0;
  }
  auto ids = (*tokenizer)->Encode("Hello, wörld! 123 <s> \xf0\x9f\x98\x80");
  Check(ids.ok(), "valid UTF-8 encodes");
  (void)(*tokenizer)->Decode(*ids);
  return 0;
}

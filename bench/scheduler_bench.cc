// Continuous against static batching on the real CPU engine: one Poisson arrival trace (mixed
// prompt and output lengths, requests spread over 8 adapters) replayed in real time through the
// scheduler, once with continuous batching and once with static batching (a batch is formed, run
// to completion, then the next), alternating, `reps` times each. Prints throughput, time to first
// token and inter-token latency (p50/p99, medians over the repetitions).
//
//   bench_scheduler --model DIR --adapters DIR1,...,DIR8 [--requests 64] [--rate 5] [--reps 3]

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/stats.h"
#include "engine/engine.h"
#include "nlohmann/json.hpp"
#include "server/scheduler/scheduler.h"

ABSL_FLAG(std::string, model, "", "base model folder");
ABSL_FLAG(std::string, adapters, "", "comma-separated adapter folders (requests spread over them)");
ABSL_FLAG(int, requests, 64, "requests in the trace");
ABSL_FLAG(double, rate, 5.0, "mean arrivals per second (Poisson)");
ABSL_FLAG(int, min_prompt, 16, "shortest prompt");
ABSL_FLAG(int, max_prompt, 128, "longest prompt");
ABSL_FLAG(int, min_output, 8, "shortest output (log-uniform between min and max)");
ABSL_FLAG(int, max_output, 256, "longest output");
ABSL_FLAG(int, reps, 3, "repetitions of each mode (alternating)");
ABSL_FLAG(int, max_batch_seqs, 32, "sequences per step");
ABSL_FLAG(int, max_batch_tokens, 256, "tokens per step (chunked prefill)");
ABSL_FLAG(uint64_t, seed, 7, "trace seed");
ABSL_FLAG(bool, json, false, "print JSON");

namespace switchyard::bench {
namespace {

struct TraceEntry {
  absl::Duration arrival;
  std::vector<int32_t> prompt;
  int64_t output;
  int adapter;  // index into the loaded adapters
};

std::vector<TraceEntry> MakeTrace(int n, double rate, int32_t vocab, int num_adapters) {
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  std::exponential_distribution<double> gap(rate);
  std::uniform_int_distribution<int> prompt_len(absl::GetFlag(FLAGS_min_prompt),
                                                absl::GetFlag(FLAGS_max_prompt));
  std::uniform_real_distribution<double> log_out(std::log(absl::GetFlag(FLAGS_min_output)),
                                                 std::log(absl::GetFlag(FLAGS_max_output)));
  std::vector<TraceEntry> trace;
  double t = 0;
  for (int i = 0; i < n; ++i) {
    TraceEntry e;
    e.arrival = absl::Seconds(t);
    t += gap(rng);
    e.prompt.resize(static_cast<size_t>(prompt_len(rng)));
    for (int32_t& tok : e.prompt) tok = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
    e.output = static_cast<int64_t>(std::lround(std::exp(log_out(rng))));
    e.adapter = static_cast<int>(rng() % static_cast<uint64_t>(num_adapters));
    trace.push_back(std::move(e));
  }
  return trace;
}

// Times of one request's events, taken on the engine thread as they are delivered.
class TimingSink final : public RequestSink {
 public:
  explicit TimingSink(std::atomic<int>* done) : done_(done) {}
  void Deliver(RequestEvent e) override {
    const absl::Time now = absl::Now();
    for (size_t i = 0; i < e.tokens.size(); ++i) times.push_back(now);
    if (e.finished()) {
      reason = e.finish;
      ++*done_;
    }
  }
  absl::Time submitted;
  std::vector<absl::Time> times;
  FinishReason reason = FinishReason::kNone;

 private:
  std::atomic<int>* done_;
};

struct RunResult {
  double throughput = 0;  // generated tokens per second, first arrival to last finish
  double ttft_p50 = 0, ttft_p99 = 0, itl_p50 = 0, itl_p99 = 0;  // seconds
  double mean_batch = 0;                                        // sequences per step
  double preemptions = 0;
};

RunResult Replay(Engine& engine, StepExecutor& executor,
                 const std::vector<std::shared_ptr<const AdapterWeights>>& adapters,
                 const std::vector<TraceEntry>& trace, bool static_batching) {
  SchedulerOptions options;
  options.max_batch_seqs = absl::GetFlag(FLAGS_max_batch_seqs);
  options.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  options.max_adapters_per_step = 8;
  options.static_batching = static_batching;
  options.prefix_caching = false;  // random prompts share nothing; keep the modes comparable
  auto scheduler = Scheduler::Create(&executor, nullptr, options);
  SY_CHECK_OK(scheduler.status());
  std::atomic<int64_t> steps{0}, seqs{0};
  (*scheduler)->set_step_observer([&](const StepRecord& r) {
    ++steps;
    seqs += r.sequences;
  });
  (*scheduler)->Start();

  std::atomic<int> done{0};
  std::vector<std::shared_ptr<TimingSink>> sinks;
  const absl::Time start = absl::Now();
  for (const TraceEntry& e : trace) {
    absl::SleepFor(start + e.arrival - absl::Now());
    auto sink = std::make_shared<TimingSink>(&done);
    sink->submitted = absl::Now();
    sinks.push_back(sink);
    GenerationRequest r;
    r.prompt = e.prompt;
    r.adapter = adapters[e.adapter];
    r.max_tokens = e.output;
    r.ignore_eos = true;
    r.sampling.temperature = 0;
    r.sink = sink;
    SY_CHECK_OK((*scheduler)->Submit(std::move(r)).status());
  }
  while (done.load() < static_cast<int>(trace.size())) absl::SleepFor(absl::Milliseconds(5));
  const SchedulerStats stats = (*scheduler)->stats();
  (*scheduler)->Shutdown(absl::ZeroDuration());

  RunResult r;
  std::vector<double> ttft, itl;
  int64_t tokens = 0;
  absl::Time last = start;
  for (const auto& s : sinks) {
    SY_CHECK(s->reason == FinishReason::kLength);
    tokens += static_cast<int64_t>(s->times.size());
    ttft.push_back(absl::ToDoubleSeconds(s->times.front() - s->submitted));
    for (size_t i = 1; i < s->times.size(); ++i) {
      itl.push_back(absl::ToDoubleSeconds(s->times[i] - s->times[i - 1]));
    }
    last = std::max(last, s->times.back());
  }
  r.throughput = static_cast<double>(tokens) / absl::ToDoubleSeconds(last - start);
  r.ttft_p50 = Percentile(ttft, 0.5);
  r.ttft_p99 = Percentile(ttft, 0.99);
  r.itl_p50 = Percentile(itl, 0.5);
  r.itl_p99 = Percentile(itl, 0.99);
  r.mean_batch = steps > 0 ? static_cast<double>(seqs) / static_cast<double>(steps) : 0;
  r.preemptions = static_cast<double>(stats.preemptions);
  return r;
}

int Main() {
  EngineOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.max_batch_seqs = absl::GetFlag(FLAGS_max_batch_seqs);
  options.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  auto engine_or = Engine::Create(options);
  if (!engine_or.ok()) {
    std::fprintf(stderr, "%s\n", engine_or.status().ToString().c_str());
    return 1;
  }
  Engine& engine = **engine_or;
  std::vector<std::shared_ptr<const AdapterWeights>> adapters;
  for (absl::string_view dir :
       absl::StrSplit(absl::GetFlag(FLAGS_adapters), ',', absl::SkipEmpty())) {
    auto a = engine.LoadAdapter(std::string(dir));
    if (!a.ok()) {
      std::fprintf(stderr, "%s: %s\n", std::string(dir).c_str(), a.status().ToString().c_str());
      return 1;
    }
    (*a)->name = std::string(dir);
    adapters.push_back(std::move(*a));
  }
  if (adapters.empty()) adapters.push_back(nullptr);
  const std::unique_ptr<StepExecutor> executor = MakeEngineExecutor(engine);
  const std::vector<TraceEntry> trace = MakeTrace(
      absl::GetFlag(FLAGS_requests), absl::GetFlag(FLAGS_rate),
      static_cast<int32_t>(engine.config().vocab_size), static_cast<int>(adapters.size()));
  int64_t prompt_tokens = 0, output_tokens = 0;
  for (const TraceEntry& e : trace) {
    prompt_tokens += static_cast<int64_t>(e.prompt.size());
    output_tokens += e.output;
  }

  std::vector<RunResult> runs[2];  // 0: continuous, 1: static
  for (int rep = 0; rep < absl::GetFlag(FLAGS_reps); ++rep) {
    for (int mode = 0; mode < 2; ++mode) {
      runs[mode].push_back(Replay(engine, *executor, adapters, trace, mode == 1));
    }
  }
  const auto med = [&](int mode, double RunResult::*field) {
    std::vector<double> v;
    for (const RunResult& r : runs[mode]) v.push_back(r.*field);
    return Median(v);
  };
  nlohmann::json out;
  out["engine"] = engine.Describe();
  out["trace"] = {{"requests", trace.size()},
                  {"rate_per_s", absl::GetFlag(FLAGS_rate)},
                  {"prompt_tokens", prompt_tokens},
                  {"output_tokens", output_tokens},
                  {"adapters", adapters.size()}};
  const char* names[2] = {"continuous", "static"};
  for (int mode = 0; mode < 2; ++mode) {
    out[names[mode]] = {{"throughput_tok_s", med(mode, &RunResult::throughput)},
                        {"ttft_p50_s", med(mode, &RunResult::ttft_p50)},
                        {"ttft_p99_s", med(mode, &RunResult::ttft_p99)},
                        {"itl_p50_s", med(mode, &RunResult::itl_p50)},
                        {"itl_p99_s", med(mode, &RunResult::itl_p99)},
                        {"mean_batch", med(mode, &RunResult::mean_batch)},
                        {"preemptions", med(mode, &RunResult::preemptions)}};
  }
  std::vector<double> ratios;
  for (size_t i = 0; i < runs[0].size(); ++i) {
    ratios.push_back(runs[0][i].throughput / runs[1][i].throughput);
  }
  out["throughput_ratio"] = Median(ratios);
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("%s\n", out["engine"].get<std::string>().c_str());
  std::printf(
      "trace: %zu requests, Poisson %.1f/s, %lld prompt + %lld output tokens, %zu adapters;"
      " medians of %d repetitions\n\n",
      trace.size(), absl::GetFlag(FLAGS_rate), static_cast<long long>(prompt_tokens),
      static_cast<long long>(output_tokens), adapters.size(), absl::GetFlag(FLAGS_reps));
  std::printf("  %-11s %10s %10s %10s %10s %10s %8s\n", "mode", "tok/s", "TTFT p50", "TTFT p99",
              "ITL p50", "ITL p99", "batch");
  for (int mode = 0; mode < 2; ++mode) {
    const nlohmann::json& m = out[names[mode]];
    std::printf("  %-11s %10.1f %9.2fs %9.2fs %8.0fms %8.0fms %8.1f\n", names[mode],
                m["throughput_tok_s"].get<double>(), m["ttft_p50_s"].get<double>(),
                m["ttft_p99_s"].get<double>(), m["itl_p50_s"].get<double>() * 1e3,
                m["itl_p99_s"].get<double>() * 1e3, m["mean_batch"].get<double>());
  }
  std::printf("\n  continuous/static throughput %.2f (per-repetition ratios, median)\n",
              out["throughput_ratio"].get<double>());
  return 0;
}

}  // namespace
}  // namespace switchyard::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return switchyard::bench::Main();
}

// The cost of metrics: one closed workload (requests over several adapters, every routed site
// recording statistics) stepped to the end with metrics off and on, alternating. "On" is what
// switchyard-server does: the step observer, the per-request hook, and a scraper rendering the
// whole exposition (routing windows included) every 250 ms, four times more often than a
// Prometheus at 1 s would. Prints the median step time of each mode and the difference, and the
// time the engine thread spends inside the metrics hooks per step (the direct measure).
//
//   bench_metrics --model DIR --adapters DIR,DIR,... [--requests 64] [--output 64] [--reps 5]
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "bench/stats.h"
#include "engine/core/log.h"
#include "engine/engine.h"
#include "server/metrics/metrics.h"
#include "server/scheduler/scheduler.h"

ABSL_FLAG(std::string, model, "", "base model folder");
ABSL_FLAG(std::string, adapters, "", "comma-separated adapter folders (one parent folder)");
ABSL_FLAG(int, requests, 64, "requests per run, spread over the adapters");
ABSL_FLAG(int, prompt, 64, "prompt tokens");
ABSL_FLAG(int, output, 64, "output tokens");
ABSL_FLAG(int, reps, 5, "runs of each mode (alternating)");
ABSL_FLAG(int, max_batch_seqs, 32, "sequences per step");

namespace switchyard {
namespace {

// Engine-thread time spent in the metrics hooks, and scraper time spent rendering.
struct HookTime {
  absl::Duration hooks, render;
  int64_t steps = 0, renders = 0;
};

class HookSink final : public RequestSink {
 public:
  HookSink(Metrics* metrics, std::string adapter, HookTime* time)
      : metrics_(metrics), adapter_(adapter), time_(time) {}
  void Deliver(RequestEvent e) override {
    if (!e.finished() || metrics_ == nullptr) return;
    const absl::Time start = absl::Now();
    metrics_->OnRequestFinished(adapter_, e);
    time_->hooks += absl::Now() - start;
  }

 private:
  Metrics* const metrics_;
  const std::string adapter_;
  HookTime* const time_;
};

int Main() {
  EngineOptions eo;
  eo.model_dir = absl::GetFlag(FLAGS_model);
  eo.max_batch_seqs = absl::GetFlag(FLAGS_max_batch_seqs);
  auto engine = Engine::Create(eo);
  SY_CHECK_OK(engine.status());
  std::vector<std::string> dirs = absl::StrSplit(absl::GetFlag(FLAGS_adapters), ',');
  SY_CHECK(!dirs.empty() && !dirs[0].empty());
  AdapterRegistryOptions ro;
  ro.root = std::filesystem::path(dirs[0]).parent_path().string();
  Engine* e = engine->get();
  AdapterRegistry registry(ro, [e](const ConfinedDir& dir) { return e->LoadAdapter(dir); });
  std::vector<std::string> names;
  for (const std::string& d : dirs) {
    names.push_back(std::filesystem::path(d).filename().string());
    SY_CHECK_OK(registry.Load(names.back(), names.back(), false).status());
  }
  std::unique_ptr<StepExecutor> executor = MakeEngineExecutor(**engine);
  const int32_t vocab = static_cast<int32_t>((*engine)->config().vocab_size);

  HookTime time;
  const auto run = [&](bool with_metrics) {
    SchedulerOptions so;
    so.max_batch_seqs = absl::GetFlag(FLAGS_max_batch_seqs);
    so.prefix_caching = false;
    auto scheduler = Scheduler::Create(executor.get(), nullptr, so);
    SY_CHECK_OK(scheduler.status());
    std::unique_ptr<Metrics> metrics;
    std::atomic<bool> stop{false};
    std::thread scraper;
    if (with_metrics) {
      MetricsOptions mo;
      mo.model_name = "bench";
      metrics =
          std::make_unique<Metrics>(scheduler->get(), &registry, &(*engine)->routing_window(), mo);
      scraper = std::thread([&] {
        size_t bytes = 0;
        while (!stop) {
          const absl::Time start = absl::Now();
          bytes += metrics->Render().size();
          time.render += absl::Now() - start;
          ++time.renders;
          absl::SleepFor(absl::Milliseconds(250));
        }
        SY_CHECK(bytes > 0);
      });
    }
    std::vector<double> step_ms;
    (*scheduler)->set_step_observer([&](const StepRecord& r) {
      step_ms.push_back(absl::ToDoubleMilliseconds(r.step_time));
      if (!metrics) return;
      const absl::Time start = absl::Now();
      metrics->OnStep(r);
      time.hooks += absl::Now() - start;
      ++time.steps;
    });
    std::mt19937 rng(1);
    for (int i = 0; i < absl::GetFlag(FLAGS_requests); ++i) {
      GenerationRequest r;
      for (int t = 0; t < absl::GetFlag(FLAGS_prompt); ++t) r.prompt.push_back(rng() % vocab);
      const std::string& name = names[i % names.size()];
      r.adapter = *registry.Acquire(name);
      r.max_tokens = absl::GetFlag(FLAGS_output);
      r.ignore_eos = true;
      r.sampling.temperature = 0;
      r.sink = std::make_shared<HookSink>(metrics.get(), name, &time);
      SY_CHECK_OK((*scheduler)->Submit(std::move(r)).status());
    }
    while ((*scheduler)->HasWork()) (*scheduler)->Step();
    stop = true;
    if (scraper.joinable()) scraper.join();
    return bench::Median(step_ms);
  };

  run(false);  // warm-up
  std::vector<double> off, on;
  for (int i = 0; i < absl::GetFlag(FLAGS_reps); ++i) {
    off.push_back(run(false));
    on.push_back(run(true));
  }
  const double a = bench::Median(off), b = bench::Median(on);
  std::printf("%d requests x %d output tokens over %zu adapters, %d runs each\n",
              absl::GetFlag(FLAGS_requests), absl::GetFlag(FLAGS_output), names.size(),
              absl::GetFlag(FLAGS_reps));
  std::printf("median step time: metrics off %.3f ms, on %.3f ms: %+.2f%%\n", a, b,
              100.0 * (b - a) / a);
  // The difference above is within run-to-run noise on a busy 2-core machine; the direct
  // measure of what metrics add to the engine thread is the time inside the hooks.
  const double hook_us = absl::ToDoubleMicroseconds(time.hooks) / std::max<int64_t>(1, time.steps);
  std::printf(
      "engine thread inside the metrics hooks: %.2f us per step (%.3f%% of a %.3f ms step)\n",
      hook_us, 100.0 * hook_us / (1000.0 * b), b);
  std::printf("one scrape (Render, on the scraper's thread): %.2f ms\n",
              absl::ToDoubleMilliseconds(time.render) / std::max<int64_t>(1, time.renders));
  return 0;
}

}  // namespace
}  // namespace switchyard

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return switchyard::Main();
}

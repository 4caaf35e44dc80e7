// MoE-LoRA serving cost on the CPU engine, in one run:
//   decode step time for a batch of sequences: (a) all base, (b) all one adapter, (c) every
//   sequence a different adapter; the naive MixLoRA variant (the frozen down projection per
//   (token, expert), as the reference implementations run it) beside ours; routing statistics
//   on and off; (g) every sequence a different mixture of two adapters, (h) every sequence the same
//   mixture of two (docs/adapters.md "Mixtures"), against (c) and (b); with --router, (i) every
//   sequence a router over adapters against (j) every sequence its first member alone;
//   adapter load time and bandwidth;
//   p50/p99 step time while an adapter loads on a background thread, against the same steps
//   without it.
// Scenarios alternate round by round; figures are medians over the rounds.
//
//   bench_adapters --model DIR --adapters DIR1,DIR2,... [--batch 32] [--steps 8] [--rounds 5]

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "bench/stats.h"
#include "engine/core/threads.h"
#include "engine/engine.h"
#include "engine/kv/block_pool.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "", "base model folder or .gguf file");
ABSL_FLAG(std::string, quantization, "none", "none, int8 or int4: quantize the base at load");
ABSL_FLAG(std::string, adapters, "", "comma-separated adapter folders (one per sequence for (c))");
ABSL_FLAG(int, batch, 32, "sequences per step");
ABSL_FLAG(int, steps, 8, "timed decode steps per scenario and round");
ABSL_FLAG(int, rounds, 5, "rounds (scenarios alternate within each)");
ABSL_FLAG(bool, json, false, "print JSON");
ABSL_FLAG(std::string, only, "",
          "run only these scenarios (letters of a..j), e.g. \"ab\"; skips the "
          "loading measurement");

ABSL_FLAG(std::string, device, "cpu", "cpu or cuda");
ABSL_FLAG(std::string, router, "",
          "a router over adapters' folder (the mixture format): scenarios (i), every sequence "
          "using it, and (j), every sequence using its first member alone");

namespace switchyard::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Sequence i's adapters: a mixture (one member at weight 1: that adapter; none: the base).
using Mixtures = std::vector<std::vector<AdapterMember>>;

// Step times of `steps` decode steps after a 16-token prefill, sequence i using adapters[i].
std::vector<double> DecodeSteps(Engine& engine, const Mixtures& adapters, int steps) {
  BlockPool pool(engine.num_kv_blocks());
  const int n = static_cast<int>(adapters.size());
  std::vector<std::vector<int32_t>> blocks(n);
  std::vector<int64_t> len(n, 16);
  StepBatch prefill;
  for (int i = 0; i < n; ++i) {
    SY_CHECK(pool.Allocate((16 + steps + 15) / 16 + 1, &blocks[i]));
    for (int t = 0; t < 16; ++t) prefill.tokens.push_back((i * 31 + t * 7) % 500 + 1);
    prefill.sequences.push_back({0, 16, blocks[i], true, nullptr, false, adapters[i]});
  }
  SY_CHECK_OK(engine.Step(prefill).status());
  std::vector<double> times;
  for (int s = 0; s < steps; ++s) {
    StepBatch step;
    for (int i = 0; i < n; ++i) {
      step.tokens.push_back((s * 13 + i) % 500 + 1);
      step.sequences.push_back({len[i], 1, blocks[i], true, nullptr, false, adapters[i]});
      ++len[i];
    }
    const auto t0 = Clock::now();
    SY_CHECK_OK(engine.Step(step).status());
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return times;
}

int Main() {
  EngineOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.max_batch_seqs = std::max(64, absl::GetFlag(FLAGS_batch));
  options.kv_cache_bytes = int64_t{512} << 20;
  options.device = absl::GetFlag(FLAGS_device) == "cuda" ? Device::kCuda : Device::kCpu;
  auto quantization = ParseQuantization(absl::GetFlag(FLAGS_quantization));
  if (!quantization.ok()) {
    std::fprintf(stderr, "%s\n", quantization.status().ToString().c_str());
    return 1;
  }
  options.quantization = *quantization;
  auto engine_or = Engine::Create(options);
  if (!engine_or.ok()) {
    std::fprintf(stderr, "%s\n", engine_or.status().ToString().c_str());
    return 1;
  }
  Engine& engine = **engine_or;
  const std::vector<std::string> dirs =
      absl::StrSplit(absl::GetFlag(FLAGS_adapters), ',', absl::SkipEmpty());
  if (dirs.empty()) {
    std::fprintf(stderr, "--adapters names no folder\n");
    return 1;
  }
  std::vector<std::unique_ptr<AdapterWeights>> loaded;
  std::vector<double> load_seconds;
  for (const std::string& d : dirs) {
    const auto t0 = Clock::now();
    auto a = engine.LoadAdapter(d);
    load_seconds.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    if (!a.ok()) {
      std::fprintf(stderr, "%s: %s\n", d.c_str(), a.status().ToString().c_str());
      return 1;
    }
    (*a)->name = d;
    loaded.push_back(std::move(*a));
  }
  const int batch = absl::GetFlag(FLAGS_batch), steps = absl::GetFlag(FLAGS_steps);
  const auto member = [&](size_t i, float w) {
    return AdapterMember{loaded[i % loaded.size()].get(), w};
  };
  Mixtures none(batch), one(batch, {member(0, 1.0f)}), many, mixed,
      mixed_one(batch, {member(0, 0.5f), member(1, 0.5f)});
  for (int i = 0; i < batch; ++i) {
    many.push_back({member(i, 1.0f)});
    // Each sequence its own pair of adapters, weighted (g); every sequence one pair (h).
    mixed.push_back({member(i, 0.6f), member(i + 1, 0.4f)});
  }

  std::unique_ptr<AdapterWeights> router;
  Mixtures routed, member_alone;
  if (!absl::GetFlag(FLAGS_router).empty()) {
    auto r = engine.LoadAdapter(absl::GetFlag(FLAGS_router));
    if (!r.ok() || (*r)->router == nullptr) {
      std::fprintf(stderr, "--router: %s\n",
                   r.ok() ? "not a router over adapters" : r.status().ToString().c_str());
      return 1;
    }
    router = std::move(*r);
    routed.assign(batch, {{router.get(), 1.0f}});
    member_alone.assign(batch, {{router->router->members[0].get(), 1.0f}});
  }

  struct Scenario {
    const char* name;
    const Mixtures* adapters;
    MoeLoraOptions options;
  };
  MoeLoraOptions ours, naive, no_stats;
  naive.down_projection_once = false;
  no_stats.record_stats = false;
  const std::vector<Scenario> scenarios = {
      {"a: all base", &none, ours},
      {"b: all one adapter", &one, ours},
      {"c: distinct adapters", &many, ours},
      {"b, naive down projection", &one, naive},
      {"c, naive down projection", &many, naive},
      {"c, routing stats off", &many, no_stats},
      {"g: distinct 2-adapter mixtures", &mixed, ours},
      {"h: one 2-adapter mixture", &mixed_one, ours},
      {"i: router over adapters", &routed, ours},
      {"j: the router's first member", &member_alone, ours},
  };
  std::vector<std::vector<double>> medians(scenarios.size());
  const std::string only = absl::GetFlag(FLAGS_only);
  for (int r = 0; r < absl::GetFlag(FLAGS_rounds); ++r) {
    for (size_t s = 0; s < scenarios.size(); ++s) {
      if (!only.empty() && only.find(static_cast<char>('a' + s)) == std::string::npos) continue;
      if (scenarios[s].adapters->empty()) continue;  // (i), (j) without --router
      engine.set_moe_lora_options(scenarios[s].options);
      medians[s].push_back(Median(DecodeSteps(engine, *scenarios[s].adapters, steps)));
    }
  }
  engine.set_moe_lora_options(ours);

  // Steps of (c) while a background thread loads adapters, against the same steps without.
  std::vector<double> quiet, loading;
  for (int r = 0; only.empty() && r < absl::GetFlag(FLAGS_rounds); ++r) {
    auto q = DecodeSteps(engine, many, steps * 2);
    quiet.insert(quiet.end(), q.begin(), q.end());
    std::atomic<bool> stop{false};
    std::thread loader([&] {
      LowerThreadPriority();
      while (!stop.load()) SY_CHECK_OK(engine.LoadAdapter(dirs[0]).status());
    });
    auto l = DecodeSteps(engine, many, steps * 2);
    stop = true;
    loader.join();
    loading.insert(loading.end(), l.begin(), l.end());
  }

  // Figures of scenarios that did not run (--only) are left out.
  const auto ms = [&](size_t s) { return medians[s].empty() ? 0.0 : Median(medians[s]) * 1e3; };
  nlohmann::json out;
  out["engine"] = engine.Describe();
  out["batch"] = batch;
  out["adapter_bytes"] = loaded[0]->bytes;
  out["adapter_family"] = loaded[0]->family;
  out["distinct_adapters"] = std::min<size_t>(loaded.size(), batch);
  for (size_t s = 0; s < scenarios.size(); ++s) {
    if (ms(s) > 0) out["step_ms"][scenarios[s].name] = ms(s);
  }
  const struct {
    const char* name;
    size_t num, den;
  } ratios[] = {{"(b)/(a)", 1, 0},         {"(c)/(b)", 2, 1},          {"naive/ours (b)", 3, 1},
                {"naive/ours (c)", 4, 2},  {"stats on/off (c)", 2, 5}, {"mixtures (g)/(c)", 6, 2},
                {"mixture (h)/(b)", 7, 1}, {"router (i)/(j)", 8, 9}};
  for (const auto& r : ratios) {
    if (ms(r.num) > 0 && ms(r.den) > 0) out["ratios"][r.name] = ms(r.num) / ms(r.den);
  }
  if (!quiet.empty()) {
    out["adapter_load_seconds"] = Median(load_seconds);
    out["quiet_p50_ms"] = Percentile(quiet, 0.5) * 1e3;
    out["quiet_p99_ms"] = Percentile(quiet, 0.99) * 1e3;
    out["loading_p50_ms"] = Percentile(loading, 0.5) * 1e3;
    out["loading_p99_ms"] = Percentile(loading, 0.99) * 1e3;
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("%s\n", out["engine"].get<std::string>().c_str());
  std::printf("batch %d, %s adapters of %.1f MB, %zu distinct in (c); medians of %d rounds\n\n",
              batch, loaded[0]->family.c_str(), loaded[0]->bytes / 1e6,
              out["distinct_adapters"].get<size_t>(), absl::GetFlag(FLAGS_rounds));
  for (size_t s = 0; s < scenarios.size(); ++s) {
    if (ms(s) > 0) std::printf("  %-32s %8.1f ms/step\n", scenarios[s].name, ms(s));
  }
  std::printf("\n");
  for (const auto& [name, value] : out["ratios"].items()) {
    std::printf("  %-18s %.3f\n", name.c_str(), value.get<double>());
  }
  if (!quiet.empty()) {
    std::printf("  adapter load: %.2f s for %.1f MB (%.0f MB/s)\n", Median(load_seconds),
                loaded[0]->bytes / 1e6, loaded[0]->bytes / 1e6 / Median(load_seconds));
    std::printf(
        "  step time (c): p50 %.1f / p99 %.1f ms quiet, p50 %.1f / p99 %.1f ms while "
        "loading (p99 %+.1f%%)\n",
        out["quiet_p50_ms"].get<double>(), out["quiet_p99_ms"].get<double>(),
        out["loading_p50_ms"].get<double>(), out["loading_p99_ms"].get<double>(),
        100 * (out["loading_p99_ms"].get<double>() / out["quiet_p99_ms"].get<double>() - 1));
  }
  return 0;
}

}  // namespace
}  // namespace switchyard::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return switchyard::bench::Main();
}

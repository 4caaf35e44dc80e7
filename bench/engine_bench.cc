// Engine speed on synthetic models: batch-1 and batch-16 decode, 512-token prefill, with the
// machine's read bandwidth and FMA peaks measured in the same run. Prints a table (or --json).
//
//   bench_engine --models build/bench/models/llama-0.5b-bf16,build/bench/models/llama-0.5b-f32
//   bench_engine --models M,M@int8,M@int4,build/bench/gguf/llama-0.5b-q4_k_m.gguf

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "bench/ceilings.h"
#include "bench/model_spec.h"
#include "bench/stats.h"
#include "engine/core/threads.h"
#include "engine/engine.h"
#include "engine/kv/block_pool.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, models, "",
          "comma-separated models: folders or .gguf files; FOLDER@int8 or FOLDER@int4 quantizes "
          "at load");
ABSL_FLAG(int, decode_steps, 32, "timed decode steps per measurement");
ABSL_FLAG(int, prefill_tokens, 512, "prompt length of the prefill measurement");
ABSL_FLAG(int, batch, 16, "sequences of the batched decode measurement");
ABSL_FLAG(bool, json, false, "print JSON instead of a table");
ABSL_FLAG(std::string, precision, "f32",
          "matmul precision for BF16 and quantized weights: f32, bf16 or auto");

ABSL_FLAG(std::string, device, "cpu", "cpu or cuda");
ABSL_FLAG(double, hbm_gbs, 4800,
          "with --device=cuda: the GPU's memory bandwidth (GB/s) the batch-1 roofline uses "
          "(H200: 4800, H100 SXM: 3350)");

namespace switchyard::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Seq {
  std::vector<int32_t> blocks;
  int64_t len = 0;
};

// Times decode steps of `batch` sequences that each start with a 16-token prompt.
double DecodeStepSeconds(Engine& engine, int batch, int steps) {
  BlockPool pool(engine.num_kv_blocks());
  const int64_t max_len = 16 + steps + 8;
  std::vector<Seq> seqs(static_cast<size_t>(batch));
  StepBatch prefill;
  for (int i = 0; i < batch; ++i) {
    SY_CHECK(
        pool.Allocate(static_cast<int>((max_len + engine.block_size() - 1) / engine.block_size()),
                      &seqs[i].blocks));
    for (int t = 0; t < 16; ++t) prefill.tokens.push_back((i * 31 + t * 7) % 500 + 1);
    prefill.sequences.push_back({0, 16, seqs[i].blocks, true});
    seqs[i].len = 16;
  }
  SY_CHECK_OK(engine.Step(prefill).status());
  std::vector<double> times;
  for (int s = 0; s < steps + 4; ++s) {
    StepBatch step;
    for (int i = 0; i < batch; ++i) {
      step.tokens.push_back((s * 13 + i) % 500 + 1);
      step.sequences.push_back({seqs[i].len, 1, seqs[i].blocks, true});
      seqs[i].len += 1;
    }
    const auto t0 = Clock::now();
    SY_CHECK_OK(engine.Step(step).status());
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (s >= 4) times.push_back(dt);  // the first steps warm caches and oneDNN
  }
  return Median(times);
}

double PrefillSeconds(Engine& engine, int tokens) {
  BlockPool pool(engine.num_kv_blocks());
  std::vector<int32_t> blocks;
  SY_CHECK(pool.Allocate((tokens + engine.block_size() - 1) / engine.block_size(), &blocks));
  StepBatch batch;
  for (int t = 0; t < tokens; ++t) batch.tokens.push_back((t * 7) % 500 + 1);
  batch.sequences.push_back({0, tokens, blocks, true});
  std::vector<double> times;
  for (int r = 0; r < 4; ++r) {
    const auto t0 = Clock::now();
    SY_CHECK_OK(engine.Step(batch).status());
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (r > 0) times.push_back(dt);
  }
  return Median(times);
}

int Main() {
  const int threads = ComputeThreads();
  nlohmann::json results = nlohmann::json::array();
  const std::vector<std::string> dirs =
      absl::StrSplit(absl::GetFlag(FLAGS_models), ',', absl::SkipEmpty());
  double first_b1 = 0;
  for (const std::string& spec : dirs) {
    EngineOptions options;
    if (absl::Status s = ApplyModelSpec(spec, &options); !s.ok()) {
      std::fprintf(stderr, "%s: %s\n", spec.c_str(), s.ToString().c_str());
      return 1;
    }
    const std::string& dir = options.model_dir;
    options.max_batch_tokens = std::max(1024, absl::GetFlag(FLAGS_prefill_tokens));
    options.max_batch_seqs = 64;
    options.kv_cache_bytes = int64_t{1} << 30;
    options.device = absl::GetFlag(FLAGS_device) == "cuda" ? Device::kCuda : Device::kCpu;
    absl::StatusOr<MatmulPrecision> precision =
        ParseMatmulPrecision(absl::GetFlag(FLAGS_precision));
    if (!precision.ok()) {
      std::fprintf(stderr, "%s\n", precision.status().ToString().c_str());
      return 1;
    }
    options.matmul_precision = *precision;
    auto engine_or = Engine::Create(options);
    if (!engine_or.ok()) {
      std::fprintf(stderr, "%s: %s\n", dir.c_str(), engine_or.status().ToString().c_str());
      return 1;
    }
    Engine& engine = **engine_or;
    const ModelConfig& c = engine.config();
    const int steps = absl::GetFlag(FLAGS_decode_steps);
    const double bw_before = MeasureReadBandwidth();
    const double b1 = DecodeStepSeconds(engine, 1, steps);
    const double bw_after = MeasureReadBandwidth();
    const int batch = absl::GetFlag(FLAGS_batch);
    const double bn = DecodeStepSeconds(engine, batch, steps);
    const int P = absl::GetFlag(FLAGS_prefill_tokens);
    // Peaks are upper bounds: a low reading means the shared host took a core for a while, so
    // the higher of the readings around the measurement is the better estimate.
    double fma_peak = MeasureF32FmaPeak(), bf16_peak = MeasureBf16DotPeak();
    const double prefill = PrefillSeconds(engine, P);
    fma_peak = std::max(fma_peak, MeasureF32FmaPeak());
    bf16_peak = std::max(bf16_peak, MeasureBf16DotPeak());

    // The higher reading: the machine could read that fast, so the fraction is a lower bound. On a
    // GPU the weights stream from HBM: its datasheet bandwidth.
    const double bw = options.device == Device::kCuda ? absl::GetFlag(FLAGS_hbm_gbs) * 1e9
                                                      : std::max(bw_before, bw_after);
    const double bytes = static_cast<double>(engine.weight_bytes());
    const double roofline_s = bytes / bw;
    // Matmul FLOPs per token (projections and head) plus causal attention over the prompt.
    const double d = c.hidden_size, hd = c.head_dim, F = c.intermediate_size;
    const double proj = d * hd * (c.num_heads * 2 + c.num_kv_heads * 2) + 3 * d * F;
    const double matmul_flops = 2.0 * (c.num_layers * proj + c.vocab_size * d / P);
    const double attn_flops = 4.0 * c.num_layers * c.num_heads * hd * (P + 1) / 2.0;
    const double prefill_flops = (matmul_flops + attn_flops) * P;

    nlohmann::json r;
    r["model"] = spec;
    if (first_b1 == 0) first_b1 = b1;
    r["decode_b1_speedup_vs_first"] = first_b1 / b1;
    r["engine"] = engine.Describe();
    r["threads"] = threads;
    r["weight_bytes"] = bytes;
    r["read_bandwidth_gbs"] = {bw_before / 1e9, bw_after / 1e9};
    r["f32_fma_peak_gflops"] = fma_peak / 1e9;
    r["bf16_dot_peak_gflops"] = bf16_peak / 1e9;
    r["decode_b1_tok_s"] = 1.0 / b1;
    r["decode_b1_roofline_tok_s"] = 1.0 / roofline_s;
    r["decode_b1_roofline_fraction"] = roofline_s / b1;
    r["decode_batch"] = batch;
    r["decode_batch_tok_s"] = batch / bn;
    r["prefill_tokens"] = P;
    r["prefill_tok_s"] = P / prefill;
    r["prefill_gflops"] = prefill_flops / prefill / 1e9;
    r["prefill_fraction_of_f32_peak"] = prefill_flops / prefill / fma_peak;
    r["prefill_fraction_of_bf16_peak"] = bf16_peak > 0 ? prefill_flops / prefill / bf16_peak : 0.0;
    results.push_back(r);
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", results.dump(2).c_str());
    return 0;
  }
  for (const auto& r : results) {
    std::printf("\n%s\n  %s\n", r["model"].get<std::string>().c_str(),
                r["engine"].get<std::string>().c_str());
    std::printf("  ceilings: F32 FMA peak %.0f GFLOP/s, BF16 dot peak %.0f GFLOP/s\n",
                r["f32_fma_peak_gflops"].get<double>(), r["bf16_dot_peak_gflops"].get<double>());
    std::printf("  read bandwidth (before / after decode)  %6.1f / %.1f GB/s\n",
                r["read_bandwidth_gbs"][0].get<double>(), r["read_bandwidth_gbs"][1].get<double>());
    std::printf("  %-38s %8.1f tok/s  (%.2f of the %.1f tok/s roofline)\n", "decode, batch 1",
                r["decode_b1_tok_s"].get<double>(), r["decode_b1_roofline_fraction"].get<double>(),
                r["decode_b1_roofline_tok_s"].get<double>());
    std::printf("  %-38s %8.2fx\n", "decode, batch 1, speed vs the first model",
                r["decode_b1_speedup_vs_first"].get<double>());
    std::printf("  %-38s %8.1f tok/s\n",
                ("decode, batch " + std::to_string(r["decode_batch"].get<int>())).c_str(),
                r["decode_batch_tok_s"].get<double>());
    std::printf("  %-38s %8.1f tok/s  (%.0f GFLOP/s: %.2f of F32 peak, %.2f of BF16 peak)\n",
                ("prefill, " + std::to_string(r["prefill_tokens"].get<int>()) + " tokens").c_str(),
                r["prefill_tok_s"].get<double>(), r["prefill_gflops"].get<double>(),
                r["prefill_fraction_of_f32_peak"].get<double>(),
                r["prefill_fraction_of_bf16_peak"].get<double>());
  }
  return 0;
}

}  // namespace
}  // namespace switchyard::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return switchyard::bench::Main();
}

// What quantization costs in accuracy: each model against an unquantized reference, teacher-forced
// over the same token stream (the tokenized corpus), both engines stepping in lockstep. Per model:
// the mean KL divergence of the next-token distribution, KL(reference || model), its 99th
// percentile, and how often the two agree on the most likely token. Prints a table (or --json).
//
//   bench_quant_accuracy --reference build/bench/models/llama-0.5b-bf16
//     --models M@int8,M@int4,build/bench/gguf/llama-0.5b-q8_0.gguf

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "bench/model_spec.h"
#include "engine/core/json_util.h"
#include "engine/core/status_macros.h"
#include "engine/engine.h"
#include "engine/kv/block_pool.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, reference, "", "the unquantized model (folder)");
ABSL_FLAG(std::string, models, "",
          "comma-separated models to compare: .gguf files, or FOLDER@int8 / FOLDER@int4");
ABSL_FLAG(std::string, text, "tools/modelgen/corpus.txt", "text whose tokens are the positions");
ABSL_FLAG(int, sequences, 16, "sequences decoded side by side");
ABSL_FLAG(int, positions, 128, "positions per sequence");
ABSL_FLAG(bool, json, false, "print JSON instead of a table");

namespace switchyard::bench {
namespace {

absl::StatusOr<std::unique_ptr<Engine>> Open(const std::string& spec, int sequences, int positions,
                                             bool reference) {
  EngineOptions options;
  // The reference keeps K and V in F32; the models get what the server would give them (BF16 for
  // quantized weights unless the spec says @kv=...).
  if (reference) options.kv_cache_dtype = DType::kF32;
  SY_RETURN_IF_ERROR(ApplyModelSpec(spec, &options));
  options.max_batch_seqs = sequences;
  options.max_batch_tokens = std::max(sequences, 64);
  options.kv_cache_blocks = sequences * ((positions + 15) / 16 + 1);
  return Engine::Create(options);
}

// Log-probabilities of a row of logits, in double.
void LogSoftmax(const float* logits, int64_t n, std::vector<double>* out) {
  out->resize(n);
  const double mx = *std::max_element(logits, logits + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(logits[i] - mx);
  const double lse = mx + std::log(sum);
  for (int64_t i = 0; i < n; ++i) (*out)[i] = logits[i] - lse;
}

struct Lockstep {
  Engine* engine;
  BlockPool pool;
  std::vector<std::vector<int32_t>> blocks;
  explicit Lockstep(Engine* e, int sequences, int positions) : engine(e), pool(e->num_kv_blocks()) {
    blocks.resize(sequences);
    const int per = (positions + e->block_size() - 1) / e->block_size();
    for (auto& b : blocks) SY_CHECK(pool.Allocate(per, &b));
  }
  absl::StatusOr<Tensor> Step(const std::vector<std::vector<int32_t>>& tokens, int t) {
    StepBatch batch;
    for (size_t s = 0; s < tokens.size(); ++s) {
      batch.tokens.push_back(tokens[s][t]);
      batch.sequences.push_back({t, 1, blocks[s], true});
    }
    SY_ASSIGN_OR_RETURN(StepOutput out, engine->Step(batch));
    return out.logits;
  }
};

int Main() {
  const int S = absl::GetFlag(FLAGS_sequences), P = absl::GetFlag(FLAGS_positions);
  const std::string ref_spec = absl::GetFlag(FLAGS_reference);
  auto tokenizer = LoadModelTokenizer(ref_spec);
  auto text = ReadFile(absl::GetFlag(FLAGS_text));
  if (!tokenizer.ok() || !text.ok()) {
    std::fprintf(stderr, "cannot read the tokenizer or the text\n");
    return 1;
  }
  std::vector<int32_t> stream = *(*tokenizer)->Encode(*text, {.add_special_tokens = false});
  std::vector<std::vector<int32_t>> tokens(S);
  for (int s = 0; s < S; ++s) {
    for (int t = 0; t < P; ++t) tokens[s].push_back(stream[(s * P + t) % stream.size()]);
  }
  auto reference = Open(ref_spec, S, P, /*reference=*/true);
  if (!reference.ok()) {
    std::fprintf(stderr, "%s\n", reference.status().ToString().c_str());
    return 1;
  }
  nlohmann::json results = nlohmann::json::array();
  const std::vector<std::string> specs =
      absl::StrSplit(absl::GetFlag(FLAGS_models), ',', absl::SkipEmpty());
  for (const std::string& spec : specs) {
    auto model = Open(spec, S, P, /*reference=*/false);
    if (!model.ok()) {
      std::fprintf(stderr, "%s: %s\n", spec.c_str(), model.status().ToString().c_str());
      return 1;
    }
    Lockstep ref(reference->get(), S, P), cand(model->get(), S, P);
    const int64_t V = (*reference)->config().vocab_size;
    std::vector<double> kl, lp_ref, lp_cand;
    int64_t agree = 0;
    for (int t = 0; t < P; ++t) {
      auto a = ref.Step(tokens, t);
      SY_CHECK_OK(a.status());
      const Tensor ref_logits = *a;
      std::vector<float> ref_copy(ref_logits.data<float>(), ref_logits.data<float>() + S * V);
      auto b = cand.Step(tokens, t);
      SY_CHECK_OK(b.status());
      for (int s = 0; s < S; ++s) {
        const float* x = ref_copy.data() + s * V;
        const float* y = b->data<float>() + s * V;
        LogSoftmax(x, V, &lp_ref);
        LogSoftmax(y, V, &lp_cand);
        double d = 0;
        for (int64_t i = 0; i < V; ++i) d += std::exp(lp_ref[i]) * (lp_ref[i] - lp_cand[i]);
        kl.push_back(d);
        agree += (std::max_element(x, x + V) - x) == (std::max_element(y, y + V) - y);
      }
    }
    std::vector<double> sorted = kl;
    std::sort(sorted.begin(), sorted.end());
    double mean = 0;
    for (double d : kl) mean += d / kl.size();
    nlohmann::json r;
    r["model"] = spec;
    r["engine"] = (*model)->Describe();
    r["weight_mb"] = (*model)->weight_bytes() / 1e6;
    r["positions"] = kl.size();
    r["mean_kl"] = mean;
    r["p99_kl"] = sorted[static_cast<size_t>(0.99 * (sorted.size() - 1))];
    r["top1_agreement"] = static_cast<double>(agree) / kl.size();
    results.push_back(r);
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", results.dump(2).c_str());
    return 0;
  }
  std::printf("reference: %s (%s)\n", ref_spec.c_str(), (*reference)->Describe().c_str());
  std::printf("%-48s %10s %10s %10s %8s %9s\n", "model", "weights MB", "mean KL", "p99 KL", "top-1",
              "positions");
  for (const auto& r : results) {
    std::printf("%-48s %10.1f %10.5f %10.5f %8.4f %9d\n", r["model"].get<std::string>().c_str(),
                r["weight_mb"].get<double>(), r["mean_kl"].get<double>(), r["p99_kl"].get<double>(),
                r["top1_agreement"].get<double>(), r["positions"].get<int>());
  }
  return 0;
}

}  // namespace
}  // namespace switchyard::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return switchyard::bench::Main();
}

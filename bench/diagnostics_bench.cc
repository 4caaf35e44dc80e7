// Cost of the expert diagnostics computed at adapter load (engine/adapters/expert_diagnostics.h):
// one site of E experts of rank r on an [in -> out] projection, at the shapes adapters have.
// An adapter's extra load time is about (sites) x (time per site).
//
//   bench_expert_diagnostics [--benchmark_min_time=0.2]
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/adapters/expert_diagnostics.h"

namespace switchyard {
namespace {

Tensor Random(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  Tensor t = Tensor::Empty(DType::kF32, {rows, cols});
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal(rng);
  return t;
}

// Args: experts, rank, in, out.
void BM_DiagnoseSite(benchmark::State& state) {
  const int E = static_cast<int>(state.range(0)), r = static_cast<int>(state.range(1));
  const int64_t in = state.range(2), out = state.range(3);
  std::mt19937 rng(1);
  std::vector<HostLora> experts;
  for (int e = 0; e < E; ++e) experts.push_back({Random(r, in, rng), Random(out, r, rng)});
  const Tensor router = Random(E, in, rng);
  for (auto _ : state) {
    SiteDiagnostics d = DiagnoseSite(0, "up_proj", experts, router);
    benchmark::DoNotOptimize(d.similarity.data());
  }
  state.counters["factor_MB"] = double(E) * r * (in + out) * 4 / 1e6;
}
BENCHMARK(BM_DiagnoseSite)
    ->ArgNames({"E", "r", "in", "out"})
    ->Args({8, 16, 896, 4864})    // Qwen2-0.5B FFN, MixLoRA 8 x r16
    ->Args({8, 16, 4096, 14336})  // Llama-3-8B FFN
    ->Args({8, 64, 4096, 14336})  // the same at rank 64
    ->Args({64, 8, 2048, 1408})   // many small experts
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace switchyard

BENCHMARK_MAIN();

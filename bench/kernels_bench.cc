// Micro-benchmarks of the CPU matmul paths on the 0.5B benchmark model's shapes: our packed
// streaming kernel (SmallM) against oneDNN on unpacked panels (LargeM), over M. The weights cycle
// through copies larger than the caches, as a decode step's do. Finds kSmallMLimit.
//
//   bench_kernels [--benchmark_filter=...]

#include <vector>

#include "benchmark/benchmark.h"
#include "engine/backends/cpu/packed_matmul.h"

namespace switchyard::cpu {
namespace {

constexpr int kCopies = 8;

struct Problem {
  int64_t m, n, k;
  Tensor x, y;
  std::vector<Weight> w;
  Problem(int64_t m_, int64_t n_, int64_t k_, DType dt) : m(m_), n(n_), k(k_) {
    x = Tensor::Empty(DType::kF32, {m, k});
    y = Tensor::Empty(DType::kF32, {m, n});
    for (int64_t i = 0; i < m * k; ++i) x.data<float>()[i] = static_cast<float>(i % 7) * 0.1f;
    Tensor host = Tensor::Empty(dt, {n, k});
    for (int64_t i = 0; i < n * k; ++i) {
      const float v = static_cast<float>(i % 5) * 0.01f;
      if (dt == DType::kF32) {
        host.data<float>()[i] = v;
      } else {
        host.data<uint16_t>()[i] = F32ToBF16(v);
      }
    }
    for (int c = 0; c < kCopies; ++c) w.push_back(PackWeight(host));
  }
};

void Run(benchmark::State& state, bool small) {
  const DType dt = state.range(3) ? DType::kBF16 : DType::kF32;
  Problem p(state.range(0), state.range(1), state.range(2), dt);
  PackedMatmul mm(state.range(4) ? MatmulPrecision::kBF16 : MatmulPrecision::kF32,
                  QuantActivations::kF32);
  int i = 0;
  for (auto _ : state) {
    const Weight& w = p.w[i++ % kCopies];
    if (small) {
      mm.SmallM(p.x.data<float>(), p.m, w, nullptr, p.y.data<float>(), false);
    } else {
      mm.LargeM(p.x.data<float>(), p.m, w, nullptr, p.y.data<float>(), false);
    }
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(p.w[0].bytes()),
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * p.m * p.n * p.k * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void BM_PackedKernel(benchmark::State& state) { Run(state, true); }
void BM_OneDnnPanels(benchmark::State& state) { Run(state, false); }

void Shapes(benchmark::internal::Benchmark* b) {
  for (int bf16 : {1, 0}) {
    for (int64_t m : {1, 2, 4, 8, 16, 32, 64, 128, 256, 512}) {
      for (auto [n, k] : {std::pair<int64_t, int64_t>{8192, 1536}, {1536, 4096}}) {
        b->Args({m, n, k, bf16, 0});
      }
    }
  }
}

BENCHMARK(BM_PackedKernel)
    ->ArgNames({"m", "n", "k", "bf16", "bf16math"})
    ->Apply(Shapes)
    ->UseRealTime();
BENCHMARK(BM_OneDnnPanels)
    ->ArgNames({"m", "n", "k", "bf16", "bf16math"})
    ->Apply(Shapes)
    ->Args({512, 8192, 1536, 1, 1})
    ->UseRealTime();

}  // namespace
}  // namespace switchyard::cpu

BENCHMARK_MAIN();

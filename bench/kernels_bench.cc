// Micro-benchmarks of the CPU matmul paths on the 0.5B benchmark model's shapes: our packed
// streaming kernel (SmallM) against oneDNN on unpacked panels (LargeM), over M. The weights cycle
// through copies larger than the caches, as a decode step's do. Finds kSmallMLimit.
// BM_QuantDecode: the quantized decode kernels on one L2-resident matrix (1536 x 1536), so the
// figure is the kernel's arithmetic rate, not the machine's memory bandwidth.
//
//   bench_kernels [--benchmark_filter=...]

#include <cstring>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/backends/cpu/packed_matmul.h"
#include "engine/core/quant.h"

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

// Random blocks with finite F16 scales (every other byte as it comes).
Weight RandomQuantized(QuantType type, int64_t n, int64_t k) {
  const QuantTraits t = Traits(type);
  Tensor blocks = Tensor::Empty(DType::kU8, {n, static_cast<int64_t>(QuantRowBytes(type, k))});
  uint32_t state = 12345;
  for (int64_t i = 0; i < blocks.numel(); ++i) {
    state = state * 1664525u + 1013904223u;
    blocks.data<uint8_t>()[i] = static_cast<uint8_t>(state >> 24);
  }
  std::vector<int> halves = {0};
  if (type == QuantType::kQ4_K || type == QuantType::kQ5_K) halves = {0, 2};
  if (type == QuantType::kQ6_K) halves = {208};
  for (int64_t off = 0; off < blocks.numel(); off += t.bytes) {
    for (int h : halves) {
      const uint16_t v = F32ToF16(0.01f);
      std::memcpy(blocks.data<uint8_t>() + off + h, &v, 2);
    }
  }
  return CopyQuantizedWeight(blocks, type, k);
}

void BM_QuantDecode(benchmark::State& state) {
  constexpr QuantType kTypes[] = {QuantType::kQ8_0, QuantType::kQ4_0, QuantType::kQ4_K,
                                  QuantType::kQ5_K, QuantType::kQ6_K};
  const QuantType type = kTypes[state.range(0)];
  const int64_t m = state.range(1), n = 1536, k = 1536;
  const Weight w = RandomQuantized(type, n, k);
  Problem p(m, n, k, DType::kF32);
  PackedMatmul mm(MatmulPrecision::kF32,
                  state.range(2) ? QuantActivations::kInt8 : QuantActivations::kF32);
  for (auto _ : state) {
    mm.QuantSmallM(p.x.data<float>(), nullptr, k, m, w, nullptr, p.y.data<float>(), n, false);
  }
  state.SetLabel(std::string(Traits(type).name));
  state.counters["GMAC/s"] =
      benchmark::Counter(1e-9 * m * n * k, benchmark::Counter::kIsIterationInvariantRate);
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
BENCHMARK(BM_QuantDecode)
    ->ArgNames({"type", "m", "int8"})
    ->ArgsProduct({{0, 1, 2, 3, 4}, {1, 4}, {0, 1}})
    ->UseRealTime();
BENCHMARK(BM_OneDnnPanels)
    ->ArgNames({"m", "n", "k", "bf16", "bf16math"})
    ->Apply(Shapes)
    ->Args({512, 8192, 1536, 1, 1})
    ->UseRealTime();

}  // namespace
}  // namespace switchyard::cpu

BENCHMARK_MAIN();

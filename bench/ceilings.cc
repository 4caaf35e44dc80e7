#include "bench/ceilings.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/core/threads.h"

namespace switchyard::bench {
namespace {

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

__attribute__((target("avx2,fma"))) float ReadSum(const float* p, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}

// 12 independent accumulator chains hide the FMA latency.
__attribute__((target("avx512f"))) float FmaLoop512(int64_t iters) {
  __m512 a[12];
  const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-7f);
  for (auto& v : a) v = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < iters; ++i) {
    for (auto& v : a) v = _mm512_fmadd_ps(v, x, y);
  }
  __m512 s = a[0];
  for (int k = 1; k < 12; ++k) s = _mm512_add_ps(s, a[k]);
  return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) float FmaLoop256(int64_t iters) {
  __m256 a[12];
  const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-7f);
  for (auto& v : a) v = _mm256_set1_ps(1.0f);
  for (int64_t i = 0; i < iters; ++i) {
    for (auto& v : a) v = _mm256_fmadd_ps(v, x, y);
  }
  __m256 s = a[0];
  for (int k = 1; k < 12; ++k) s = _mm256_add_ps(s, a[k]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0];
}

__attribute__((target("avx512f,avx512bf16"))) float Bf16Loop(int64_t iters) {
  __m512 a[12];
  const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3380);
  for (auto& v : a) v = _mm512_setzero_ps();
  for (int64_t i = 0; i < iters; ++i) {
    for (auto& v : a) v = _mm512_dpbf16_ps(v, x, y);
  }
  __m512 s = a[0];
  for (int k = 1; k < 12; ++k) s = _mm512_add_ps(s, a[k]);
  return _mm512_reduce_add_ps(s);
}

template <typename F>
double PeakOf(F loop, double flops_per_iter) {
  const int threads = ComputeThreads();
  const int64_t iters = 20'000'000;
  double best = 0;
  volatile float sink = 0;
  for (int r = 0; r < 5; ++r) {
    auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    { sink = sink + loop(iters); }
    auto t1 = std::chrono::steady_clock::now();
    best = std::max(best, flops_per_iter * iters * threads / Seconds(t0, t1));
  }
  return best;
}

}  // namespace

double MeasureReadBandwidth(size_t bytes, int repeats) {
  const size_t n = bytes / sizeof(float);
  float* buf = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
  const int threads = ComputeThreads();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < n; ++i) buf[i] = 1.0f;
  std::vector<double> rates;
  volatile float sink = 0;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const size_t per = (n / nt) / 32 * 32;
      sink = sink + ReadSum(buf + per * t, per);
    }
    auto t1 = std::chrono::steady_clock::now();
    rates.push_back(static_cast<double>(bytes) / Seconds(t0, t1));
  }
  std::free(buf);
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

double MeasureF32FmaPeak() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return PeakOf(FmaLoop512, 12 * 16 * 2);
  return PeakOf(FmaLoop256, 12 * 8 * 2);
}

double MeasureBf16DotPeak() {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512bf16")) return 0;
  return PeakOf(Bf16Loop, 12 * 32 * 2);
}

}  // namespace switchyard::bench

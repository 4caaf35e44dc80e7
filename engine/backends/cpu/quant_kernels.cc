// Compiled with -march=x86-64-v3. Each format has a block walker that produces its weights eight
// at a time as F32 vectors, in the format's own arithmetic (so the values are DequantizeRow's, bit
// for bit); the dequantizer stores them, the matmul multiplies them into accumulators in
// registers without a round trip through memory.

#include "engine/backends/cpu/quant_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/core/check.h"

namespace switchyard::cpu {
namespace {

inline float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// Eight bytes as eight F32 values (signed or unsigned).
inline __m256 SignedBytes(const uint8_t* p) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline __m256 Ints(__m128i bytes8) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes8)); }

// The block walkers: f(v, w) receives vector v (weights [8v, 8v + 8) of the block).

template <class F>
inline void WalkQ8_0(const uint8_t* b, F&& f) {
  const __m256 d = _mm256_set1_ps(Half(b));
  for (int v = 0; v < 4; ++v) f(v, _mm256_mul_ps(d, SignedBytes(b + 2 + 8 * v)));
}

template <class F>
inline void WalkQ4_0(const uint8_t* b, F&& f) {
  const __m256 d = _mm256_set1_ps(Half(b));
  const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
  const __m128i mask = _mm_set1_epi8(0xF), eight = _mm_set1_epi8(8);
  const __m128i lo = _mm_sub_epi8(_mm_and_si128(qs, mask), eight);
  const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(qs, 4), mask), eight);
  auto cvt = [](__m128i q) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)); };
  f(0, _mm256_mul_ps(cvt(lo), d));
  f(1, _mm256_mul_ps(cvt(_mm_srli_si128(lo, 8)), d));
  f(2, _mm256_mul_ps(cvt(hi), d));
  f(3, _mm256_mul_ps(cvt(_mm_srli_si128(hi, 8)), d));
}

// Q4_K and Q5_K share the scales; `qh` (Q5_K's fifth bits) is null for Q4_K. The eight
// sub-blocks' scales and mins are converted in one vector each (a scalar int-to-float per
// sub-block stalled on its false register dependency).
template <class F>
inline void WalkKAffine(const uint8_t* b, const uint8_t* qh, const uint8_t* ql, F&& f) {
  alignas(32) int32_t sc_i[8], m_i[8];
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    KQuantScaleMin(j, b + 4, &sc, &m);
    sc_i[j] = sc;
    m_i[j] = m;
  }
  alignas(32) float scales[8], mins[8];
  _mm256_store_ps(
      scales,
      _mm256_mul_ps(_mm256_set1_ps(Half(b)),
                    _mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(sc_i)))));
  _mm256_store_ps(
      mins,
      _mm256_mul_ps(_mm256_set1_ps(Half(b + 2)),
                    _mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(m_i)))));
  const __m128i mask = _mm_set1_epi8(0xF);
  for (int pair = 0; pair < 4; ++pair) {
    for (int part = 0; part < 2; ++part) {
      const __m128i bytes =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(ql + 32 * pair + 16 * part));
      for (int half = 0; half < 2; ++half) {
        const int sub = 2 * pair + half;
        const __m256 scale = _mm256_set1_ps(scales[sub]), min = _mm256_set1_ps(mins[sub]);
        __m128i q =
            half == 0 ? _mm_and_si128(bytes, mask) : _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
        if (qh != nullptr) {
          const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qh + 16 * part));
          const __m128i bit = _mm_set1_epi8(static_cast<char>(1 << sub));
          const __m128i set = _mm_cmpeq_epi8(_mm_and_si128(h, bit), bit);
          q = _mm_or_si128(q, _mm_and_si128(set, _mm_set1_epi8(16)));
        }
        const int v = 4 * sub + 2 * part;
        f(v, _mm256_fmsub_ps(scale, Ints(q), min));
        f(v + 1, _mm256_fmsub_ps(scale, Ints(_mm_srli_si128(q, 8)), min));
      }
    }
  }
}

template <class F>
inline void WalkQ4_K(const uint8_t* b, F&& f) {
  WalkKAffine(b, nullptr, b + 16, f);
}

template <class F>
inline void WalkQ5_K(const uint8_t* b, F&& f) {
  WalkKAffine(b, b + 16, b + 48, f);
}

template <class F>
inline void WalkQ6_K(const uint8_t* b, F&& f) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  alignas(32) float scales[16];
  const __m256 d = _mm256_set1_ps(Half(b + 208));
  for (int h = 0; h < 2; ++h) {
    const __m128i s8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc + 8 * h));
    _mm256_store_ps(scales + 8 * h, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(s8))));
  }
  const __m128i mask = _mm_set1_epi8(0xF), three = _mm_set1_epi8(3), bias = _mm_set1_epi8(32);
  for (int half = 0; half < 2; ++half) {
    // Quarter j of this half's 128 weights: low nibbles of ql[0..32) / ql[32..64) (j = 0, 1) or
    // high nibbles (j = 2, 3), with bits 2j..2j+1 of qh as the top two bits.
    for (int j = 0; j < 4; ++j) {
      for (int part = 0; part < 2; ++part) {
        const int l0 = 16 * part;
        __m128i lo =
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(ql + 64 * half + (j & 1) * 32 + l0));
        lo = j < 2 ? _mm_and_si128(lo, mask) : _mm_and_si128(_mm_srli_epi16(lo, 4), mask);
        __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qh + 32 * half + l0));
        hi = _mm_and_si128(_mm_srl_epi16(hi, _mm_cvtsi32_si128(2 * j)), three);
        const __m128i q = _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), bias);
        const __m256 scale = _mm256_set1_ps(scales[8 * half + 2 * j + part]);
        const int v = 16 * half + 4 * j + 2 * part;
        f(v, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
        f(v + 1,
          _mm256_mul_ps(scale, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)))));
      }
    }
  }
}

template <class Walk>
void DequantizeWith(Walk walk, const uint8_t* src, float* dst, int64_t blocks, int values,
                    int bytes) {
  for (int64_t i = 0; i < blocks; ++i) {
    float* out = dst + i * values;
    walk(src + i * bytes, [&](int v, __m256 w) { _mm256_storeu_ps(out + 8 * v, w); });
  }
}

constexpr int kPrefetchBytes = 1024;

inline float HSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// MT rows of x against RB weight rows, four accumulators each (FMA latency needs independent
// chains to keep both ports busy). Each block is dequantized into a small buffer first: the
// walkers produce vectors in loops the compiler does not always unroll, and accumulating inside
// them would index the accumulators dynamically (through memory); the buffer stays in L1.
template <int RB, int MT, class Walk>
inline void Tile(const QuantMatmulArgs& a, Walk walk, int values, int bytes, int64_t r0,
                 const float* const* xr) {
  alignas(32) float wbuf[RB][256];
  __m256 acc[RB][MT][4];
  for (auto& r : acc)
    for (auto& m : r)
      for (auto& v : m) v = _mm256_setzero_ps();
  const int64_t blocks = a.cols / values;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    for (int rb = 0; rb < RB; ++rb) {
      float* out = wbuf[rb];
      // The hardware prefetchers do not run far enough ahead of a stream read this slowly
      // (measured: 4 GB/s without, see docs/quantization.md): ask for the bytes a few blocks on.
      // Every cache line of the block a few blocks on (a K-quant block spans three or four).
      const uint8_t* b = a.w + (r0 + rb) * a.row_bytes + blk * bytes;
      for (int off = 0; off < bytes; off += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(b) + kPrefetchBytes + off, _MM_HINT_T0);
      }
      walk(b, [out](int v, __m256 w) { _mm256_store_ps(out + 8 * v, w); });
    }
    for (int v = 0; v < values / 8; v += 4) {
      for (int u = 0; u < 4; ++u) {
        __m256 x[MT];
        for (int m = 0; m < MT; ++m) x[m] = _mm256_loadu_ps(xr[m] + blk * values + 8 * (v + u));
        for (int rb = 0; rb < RB; ++rb) {
          const __m256 w = _mm256_load_ps(wbuf[rb] + 8 * (v + u));
          for (int m = 0; m < MT; ++m) acc[rb][m][u] = _mm256_fmadd_ps(w, x[m], acc[rb][m][u]);
        }
      }
    }
  }
  for (int rb = 0; rb < RB; ++rb) {
    for (int m = 0; m < MT; ++m) {
      const __m256 sum = _mm256_add_ps(_mm256_add_ps(acc[rb][m][0], acc[rb][m][1]),
                                       _mm256_add_ps(acc[rb][m][2], acc[rb][m][3]));
      float s = HSum(sum);
      const int64_t row = r0 + rb;
      if (a.bias != nullptr) s += a.bias[row];
      float* out = a.y + m * a.ldy + row;
      *out = a.accumulate ? *out + s : s;
    }
  }
}

template <class Walk>
void MatmulWith(const QuantMatmulArgs& a, Walk walk, int64_t row_begin, int64_t row_end) {
  const QuantTraits t = Traits(a.type);
  for (int64_t m0 = 0; m0 < a.m; m0 += 2) {
    const int mt = a.m - m0 >= 2 ? 2 : 1;
    const float* xr[2];
    for (int i = 0; i < mt; ++i) {
      const int64_t row = m0 + i;
      xr[i] = a.x + (a.x_rows != nullptr ? a.x_rows[row] : row) * a.ldx;
    }
    QuantMatmulArgs sub = a;
    sub.y = a.y + m0 * a.ldy;
    int64_t r = row_begin;
    if (mt == 1) {
      for (; r + 2 <= row_end; r += 2) Tile<2, 1>(sub, walk, t.values, t.bytes, r, xr);
      for (; r < row_end; ++r) Tile<1, 1>(sub, walk, t.values, t.bytes, r, xr);
    } else {
      for (; r < row_end; ++r) Tile<1, 2>(sub, walk, t.values, t.bytes, r, xr);
    }
  }
}

// Calls fn(walker) with the walker of `type`.
template <class Fn>
void WithWalker(QuantType type, Fn&& fn) {
  switch (type) {
    case QuantType::kQ8_0:
      return fn([](const uint8_t* b, auto&& f) { WalkQ8_0(b, f); });
    case QuantType::kQ4_0:
      return fn([](const uint8_t* b, auto&& f) { WalkQ4_0(b, f); });
    case QuantType::kQ4_K:
      return fn([](const uint8_t* b, auto&& f) { WalkQ4_K(b, f); });
    case QuantType::kQ5_K:
      return fn([](const uint8_t* b, auto&& f) { WalkQ5_K(b, f); });
    case QuantType::kQ6_K:
      return fn([](const uint8_t* b, auto&& f) { WalkQ6_K(b, f); });
    case QuantType::kNone:
      break;
  }
  SY_CHECK(false);
}

}  // namespace

void QuantMatmulRows(const QuantMatmulArgs& args, int64_t row_begin, int64_t row_end) {
  if (args.xq != nullptr) return Int8MatmulRows(args, row_begin, row_end);
  WithWalker(args.type, [&](auto walk) {
    // Interleaved groups are put back as stored, a group at a time, for the F32 walkers.
    const int64_t grouped = std::clamp(args.interleaved_rows, row_begin, row_end);
    thread_local std::vector<uint8_t> stored;  // reused across calls: this runs per row piece
    for (int64_t r0 = row_begin; r0 < grouped;) {
      const int64_t r1 = std::min(grouped, (r0 / kInterleavedRows + 1) * kInterleavedRows);
      stored.resize((r1 - r0) * args.row_bytes);
      for (int64_t r = r0; r < r1; ++r) {
        StoredRow(args.type, args.w, args.interleaved_rows, r, args.cols,
                  stored.data() + (r - r0) * args.row_bytes);
      }
      QuantMatmulArgs rows = args;
      rows.w = stored.data();
      rows.bias = args.bias != nullptr ? args.bias + r0 : nullptr;
      rows.y = args.y + r0;
      MatmulWith(rows, walk, 0, r1 - r0);
      r0 = r1;
    }
    MatmulWith(args, walk, grouped, row_end);
  });
}

void DequantizeRowFast(QuantType type, const uint8_t* src, float* dst, int64_t cols) {
  const QuantTraits t = Traits(type);
  WithWalker(
      type, [&](auto walk) { DequantizeWith(walk, src, dst, cols / t.values, t.values, t.bytes); });
}

}  // namespace switchyard::cpu

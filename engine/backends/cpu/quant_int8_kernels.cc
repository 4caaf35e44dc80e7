// The integer path of QuantMatmulRows (x86-64-v3): activations quantized to int8 per block of 32
// (Int8Rows) against the weights' small integers with `vpmaddubsw`, which multiplies unsigned by
// signed bytes and adds pairs into int16. A block's products are exact integers; only the
// per-block scales are applied in F32. Signed weights go through the sign trick (|w| times x with
// w's sign), the K-quants' per-sub-block scales through `vpmaddwd` against the scale in int16.
//
// Bounds (no int16 saturation): |w| <= 128 and |x| <= 127 give pairs of at most 32,512; Q5_K's
// 31 * 127 * 2 = 7,874 times a 6-bit scale and Q6_K's 32 * 127 * 2 times an int8 scale stay far
// inside int32.

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/backends/cpu/quant_kernels.h"
#include "engine/core/check.h"

namespace switchyard::cpu {
namespace {

constexpr int kBlock = 32;
constexpr int kPrefetchBytes = 1024;
constexpr int kMaxTileRows = 4;

inline float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline __m256i Load32(const void* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

inline float HSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Products of signed bytes w and x, pairs added and then multiplied by the int16 `scale` lanes
// and added again: eight int32 sums of four products each.
inline __m256i DotSigned(__m256i w, __m256i x, __m256i scale) {
  const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
  return _mm256_madd_epi16(pairs, scale);
}

// As DotSigned for unsigned w (0..31).
inline __m256i DotUnsigned(__m256i w, __m256i x, __m256i scale) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), scale);
}

// One activation row of Int8Rows.
struct ActRow {
  const int8_t* q;
  const float* d;
  const float* scaled_sums;
};

inline ActRow ActRowOf(const Int8Rows& xq, int64_t i) {
  const int64_t blocks = xq.cols / kBlock;
  return {xq.q.data() + i * xq.cols, xq.d.data() + i * blocks, xq.scaled_sums.data() + i * blocks};
}

// What a weight row's blocks add up to for MT activation rows: acc[m] (sums still to be reduced
// across lanes), minus min[m] (the K-quants' minimums) and minus 8 * offset[m] (Q4_0's).
template <int MT>
struct Sums {
  __m256 acc[MT];
  __m256 min[MT];
  float offset[MT];
};

// acc += products (exact int32 sums) * factor (the block's weight scale times its activation
// scale).
inline void AddScaled(__m256i products, float factor, __m256& acc) {
  acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(products), _mm256_set1_ps(factor), acc);
}

// Signed weights w (32, one activation block's worth) with int16 `scale` lanes and weight scale d
// against activation block xb of MT rows.
template <int MT>
inline void AddSignedBlock(__m256i w, __m256i scale, float d, int64_t xb, const ActRow* x,
                           Sums<MT>& s) {
  for (int m = 0; m < MT; ++m) {
    AddScaled(DotSigned(w, Load32(x[m].q + kBlock * xb), scale), d * x[m].d[xb], s.acc[m]);
  }
}

// The formats: kBytes per block of kValues weights, and Block<MT>, which adds one weight block
// times MT activation rows into Sums.

struct Q8_0 {
  static constexpr int kBytes = 34;
  template <int MT>
  static void Block(const uint8_t* b, int64_t blk, const ActRow* x, Sums<MT>& s) {
    const float d = Half(b);
    const __m256i w = Load32(b + 2);
    AddSignedBlock(w, _mm256_set1_epi16(1), d, blk, x, s);
  }
};

// Q4_0's weights d * (q - 8) are multiplied as the stored q (0..15, no sign trick: three fewer
// vector operations a block, the kernel being bound by their count) and the 8 * d * sum(x) they
// add is taken off at the end: offset gathers d * d_x * sum(q_x) a block, in scalar arithmetic.
struct Q4_0 {
  static constexpr int kBytes = 18;
  template <int MT>
  static void Block(const uint8_t* b, int64_t blk, const ActRow* x, Sums<MT>& s) {
    const float d = Half(b);
    const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
    const __m128i mask = _mm_set1_epi8(0xF);
    // Low nibbles are weights 0..15, high nibbles 16..31.
    const __m256i w =
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), mask), _mm_and_si128(qs, mask));
    const __m256i ones = _mm256_set1_epi16(1);
    for (int m = 0; m < MT; ++m) {
      const __m256i p = DotUnsigned(w, Load32(x[m].q + kBlock * blk), ones);
      AddScaled(p, d * x[m].d[blk], s.acc[m]);
      s.offset[m] += d * x[m].scaled_sums[blk];
    }
  }
};

// The eight 6-bit scales and mins of a Q4_K/Q5_K super-block (KQuantScaleMin's values, all at
// once): bytes 0-3 and 4-7 of the 12 hold scales and mins 0-3 in their low six bits and, in their
// top two, the top bits of scales and mins 4-7, whose low four bits are the nibbles of bytes 8-11.
inline void KScalesAndMins(const uint8_t* s, uint8_t* scales, uint8_t* mins) {
  uint32_t w0, w1, w2;
  std::memcpy(&w0, s, 4);
  std::memcpy(&w1, s + 4, 4);
  std::memcpy(&w2, s + 8, 4);
  constexpr uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
  const uint32_t words[4] = {w0 & kLow6, (w2 & kLow4) | (((w0 >> 6) & kLow2) << 4), w1 & kLow6,
                             ((w2 >> 4) & kLow4) | (((w1 >> 6) & kLow2) << 4)};
  std::memcpy(scales, words, 8);
  std::memcpy(mins, words + 2, 8);
}

// Eight unsigned bytes as F32 times `scale`.
inline __m256 ScaledBytes(const uint8_t* p, float scale) {
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_mul_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)));
}

// Q4_K and Q5_K (qh, the fifth bits, null for Q4_K): 8 sub-blocks of 32 weights, each
// d * sc * q - dmin * mn, so a sub-block's product is d * sc * sum(q x) - dmin * mn * sum(x).
// The eight factors d * d_x of a row's sub-blocks are formed in one vector and each sub-block takes
// its lane (a scalar multiply and broadcast per sub-block and row cost more); the 6-bit scale
// stays in the integer product. (Folding it into the factor instead, d * sc * d_x, is as exact
// but rounds differently: it moved test_gguf.py's int8-activation logits away from the reference
// by up to 6e-4 of their scale in 3 of 8 cases, jumps rather than drift, where this order stays
// within 2e-6; why that order is so much more sensitive was not pinned down.)
template <int MT>
inline void BlockKAffine(const uint8_t* b, const uint8_t* qh, const uint8_t* ql, int64_t blk,
                         const ActRow* x, Sums<MT>& s) {
  alignas(8) uint8_t scale_bytes[8], min_bytes[8];
  KScalesAndMins(b + 4, scale_bytes, min_bytes);
  const __m256 d = _mm256_set1_ps(Half(b));
  const __m256 mins = ScaledBytes(min_bytes, Half(b + 2));
  __m256 factors[MT];
  for (int m = 0; m < MT; ++m) {
    s.min[m] = _mm256_fmadd_ps(mins, _mm256_loadu_ps(x[m].scaled_sums + 8 * blk), s.min[m]);
    factors[m] = _mm256_mul_ps(d, _mm256_loadu_ps(x[m].d + 8 * blk));
  }
  const __m256i mask = _mm256_set1_epi8(0xF);
  const __m256i high = qh != nullptr ? Load32(qh) : _mm256_setzero_si256();
  for (int pair = 0; pair < 4; ++pair) {
    const __m256i bytes = Load32(ql + 32 * pair);
    for (int half = 0; half < 2; ++half) {
      const int sub = 2 * pair + half;
      __m256i q = half == 0 ? _mm256_and_si256(bytes, mask)
                            : _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask);
      if (qh != nullptr) {
        const __m256i bit = _mm256_set1_epi8(static_cast<char>(1 << sub));
        const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(high, bit), bit);
        q = _mm256_or_si256(q, _mm256_and_si256(set, _mm256_set1_epi8(16)));
      }
      const __m256i scale = _mm256_set1_epi16(scale_bytes[sub]);
      const __m256i lane = _mm256_set1_epi32(sub);
      const int64_t xb = 8 * blk + sub;
      for (int m = 0; m < MT; ++m) {
        const __m256i p = DotUnsigned(q, Load32(x[m].q + kBlock * xb), scale);
        s.acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                   _mm256_permutevar8x32_ps(factors[m], lane), s.acc[m]);
      }
    }
  }
}

struct Q4_K {
  static constexpr int kBytes = 144;
  template <int MT>
  static void Block(const uint8_t* b, int64_t blk, const ActRow* x, Sums<MT>& s) {
    BlockKAffine<MT>(b, nullptr, b + 16, blk, x, s);
  }
};

struct Q5_K {
  static constexpr int kBytes = 176;
  template <int MT>
  static void Block(const uint8_t* b, int64_t blk, const ActRow* x, Sums<MT>& s) {
    BlockKAffine<MT>(b, b + 16, b + 48, blk, x, s);
  }
};

// Q6_K: 16 sub-blocks of 16 weights d * sc * (q - 32), q six bits (low four in ql, top two in qh),
// sc int8.
template <int MT>
inline void BlockQ6_K(const uint8_t* b, int64_t blk, const ActRow* x, Sums<MT>& s) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = Half(b + 208);
  const __m256i mask = _mm256_set1_epi8(0xF), three = _mm256_set1_epi8(3);
  const __m256i bias = _mm256_set1_epi8(32);
  for (int half = 0; half < 2; ++half) {
    const __m256i high_bits = Load32(qh + 32 * half);
    // Quarter j holds weights 128 half + 32 j + [0, 32): nibbles of ql (low for j < 2), bits
    // 2j..2j+1 of qh.
    for (int j = 0; j < 4; ++j) {
      __m256i lo = Load32(ql + 64 * half + (j & 1) * 32);
      lo = j < 2 ? _mm256_and_si256(lo, mask) : _mm256_and_si256(_mm256_srli_epi16(lo, 4), mask);
      const __m256i hi =
          _mm256_and_si256(_mm256_srl_epi16(high_bits, _mm_cvtsi32_si128(2 * j)), three);
      const __m256i w = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), bias);
      const int s0 = 8 * half + 2 * j;
      const __m256i scale = _mm256_set_m128i(_mm_set1_epi16(sc[s0 + 1]), _mm_set1_epi16(sc[s0]));
      AddSignedBlock(w, scale, d, 8 * blk + 4 * half + j, x, s);
    }
  }
}

struct Q6_K {
  static constexpr int kBytes = 210;
  template <int MT>
  static void Block(const uint8_t* b, int64_t blk, const ActRow* x, Sums<MT>& s) {
    BlockQ6_K<MT>(b, blk, x, s);
  }
};

// One weight row against MT activation rows.
template <int MT, class Format>
inline void Row(const QuantMatmulArgs& a, int64_t blocks, int64_t row, const ActRow* x,
                int64_t m0) {
  Sums<MT> s;
  for (int m = 0; m < MT; ++m) {
    s.acc[m] = s.min[m] = _mm256_setzero_ps();
    s.offset[m] = 0.0f;
  }
  const uint8_t* w = a.w + row * a.row_bytes;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const uint8_t* b = w + blk * Format::kBytes;
    // As in the F32 path: the hardware prefetchers fall behind this stream (docs/quantization.md).
    // Prefetches at most 64 bytes apart reach every cache line.
    for (int off = 0; off < Format::kBytes; off += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(b) + kPrefetchBytes + off, _MM_HINT_T0);
    }
    Format::template Block<MT>(b, blk, x, s);
  }
  for (int m = 0; m < MT; ++m) {
    float sum = HSum(_mm256_sub_ps(s.acc[m], s.min[m])) - 8.0f * s.offset[m];
    if (a.bias != nullptr) sum += a.bias[row];
    float* out = a.y + (m0 + m) * a.ldy + row;
    *out = a.accumulate ? *out + sum : sum;
  }
}

template <int MT, class Format>
void Rows(const QuantMatmulArgs& a, int64_t row_begin, int64_t row_end, int64_t m0) {
  ActRow x[MT];
  for (int m = 0; m < MT; ++m) x[m] = ActRowOf(*a.xq, m0 + m);
  const QuantTraits traits = Traits(a.type);
  SY_CHECK(traits.bytes == Format::kBytes);
  const int64_t blocks = a.cols / traits.values;
  for (int64_t r = row_begin; r < row_end; ++r) Row<MT, Format>(a, blocks, r, x, m0);
}

// The interleaved formats (quant_kernels.h): a group of eight weight rows against MT activation
// rows, out[m] lane r being row r's sum.

// Four activation bytes from q, in every lane.
inline __m256i Broadcast4(const int8_t* q) {
  int32_t v;
  std::memcpy(&v, q, 4);
  return _mm256_set1_epi32(v);
}

inline __m256 GroupScales(const uint8_t* b) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b)));
}

template <int Bytes>
inline void PrefetchGroupBlock(const uint8_t* b) {
  for (int off = 0; off < Bytes; off += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(b) + kPrefetchBytes + off, _MM_HINT_T0);
  }
}

// Q8_0: per block eight runs, each `vpmaddubsw` of |w| by x with w's sign (pairs of up to
// 2 * 128 * 127 = 32,512, so each is widened by `vpmaddwd` before the next is added).
template <int MT>
inline void GroupQ8_0(const uint8_t* g, int64_t blocks, const ActRow* x, __m256* out) {
  constexpr int kGroupBlockBytes = kInterleavedRows * Q8_0::kBytes;
  __m256 acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const uint8_t* b = g + blk * kGroupBlockBytes;
    PrefetchGroupBlock<kGroupBlockBytes>(b);
    const __m256 d = GroupScales(b);
    __m256i sums[MT];
    for (int m = 0; m < MT; ++m) sums[m] = _mm256_setzero_si256();
    for (int run = 0; run < 8; ++run) {
      const __m256i w = Load32(b + 2 * kInterleavedRows + 32 * run);  // weights 4 run .. + 3
      const __m256i magnitude = _mm256_abs_epi8(w);
      for (int m = 0; m < MT; ++m) {
        const __m256i xs = _mm256_sign_epi8(Broadcast4(x[m].q + kBlock * blk + 4 * run), w);
        sums[m] =
            _mm256_add_epi32(sums[m], _mm256_madd_epi16(_mm256_maddubs_epi16(magnitude, xs), ones));
      }
    }
    for (int m = 0; m < MT; ++m) {
      acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[m]),
                               _mm256_mul_ps(d, _mm256_set1_ps(x[m].d[blk])), acc[m]);
    }
  }
  for (int m = 0; m < MT; ++m) out[m] = acc[m];
}

// Q4_0: per block eight `vpmaddubsw` of the nibbles (unsigned, as in Q4_0::Block) by four
// activation bytes add up in int16 (at most 8 * 2 * 15 * 127 = 30,480: no overflow) and one
// `vpmaddwd` widens them.
template <int MT>
inline void GroupQ4_0(const uint8_t* g, int64_t blocks, const ActRow* x, __m256* out) {
  constexpr int kGroupBlockBytes = kInterleavedRows * Q4_0::kBytes;
  __m256 acc[MT], offset[MT];
  for (int m = 0; m < MT; ++m) acc[m] = offset[m] = _mm256_setzero_ps();
  const __m256i mask = _mm256_set1_epi8(0xF);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const uint8_t* b = g + blk * kGroupBlockBytes;
    PrefetchGroupBlock<kGroupBlockBytes>(b);
    const __m256 d = GroupScales(b);
    __m256i sums[MT];
    for (int m = 0; m < MT; ++m) sums[m] = _mm256_setzero_si256();
    for (int run = 0; run < 4; ++run) {
      const __m256i v = Load32(b + 2 * kInterleavedRows + 32 * run);
      const __m256i low = _mm256_and_si256(v, mask);  // weights 4 run .. 4 run + 3
      const __m256i high = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);  // 16 further on
      for (int m = 0; m < MT; ++m) {
        const int8_t* q = x[m].q + kBlock * blk + 4 * run;
        sums[m] = _mm256_add_epi16(sums[m], _mm256_maddubs_epi16(low, Broadcast4(q)));
        sums[m] = _mm256_add_epi16(sums[m], _mm256_maddubs_epi16(high, Broadcast4(q + 16)));
      }
    }
    for (int m = 0; m < MT; ++m) {
      const __m256 products = _mm256_cvtepi32_ps(_mm256_madd_epi16(sums[m], ones));
      acc[m] = _mm256_fmadd_ps(products, _mm256_mul_ps(d, _mm256_set1_ps(x[m].d[blk])), acc[m]);
      offset[m] = _mm256_fmadd_ps(d, _mm256_set1_ps(x[m].scaled_sums[blk]), offset[m]);
    }
  }
  for (int m = 0; m < MT; ++m) out[m] = _mm256_fnmadd_ps(_mm256_set1_ps(8.0f), offset[m], acc[m]);
}

// Byte `byte` (0..3) of every 32-bit lane of v, as an int32.
inline __m256i LaneByte(__m256i v, int byte) {
  return _mm256_and_si256(_mm256_srl_epi32(v, _mm_cvtsi32_si128(8 * byte)),
                          _mm256_set1_epi32(0xFF));
}

// Sub-block `sub`'s 6-bit scale of each row (lane), in both int16 halves of the lane.
inline __m256i ScalePairs(const __m256i* scales, int sub) {
  const __m256i sc = LaneByte(scales[sub / 4], sub % 4);
  return _mm256_or_si256(sc, _mm256_slli_epi32(sc, 16));
}

// 16 in the bytes of h whose bit `bit` is set (Q5_K's fifth bit of those weights), else 0.
inline __m256i FifthBit(__m256i h, int bit) {
  const __m256i mask = _mm256_set1_epi8(static_cast<char>(1 << bit));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, mask), mask), _mm256_set1_epi8(16));
}

// Q4_K: the eight rows' d and dmin are two vectors and their 12 scale bytes three vectors of
// words (word k of each row), from which KScalesAndMins' arithmetic yields, lane by lane, every
// row's eight 6-bit scales and mins at once. Per pair of sub-blocks, eight runs hold four weights
// of each row in their low nibbles (sub-block 2p) and four in their high ones (2p + 1); a
// sub-block's eight `vpmaddubsw` add up in int16 (at most 30,480), and `vpmaddwd` against the
// rows' scales (both int16 halves of lane r hold row r's) widens them, the 6-bit scale staying
// in the integer product as in BlockKAffine.
//
// Q5_K (kFifthBit) as Q4_K with its fifth bits: the eight words of qh (bit s of byte i: weight 32 s
// + i) come before the runs, and as a weight can reach 31, a sub-block's sums are widened every
// four runs (4 * 2 * 31 * 127 = 31,496 fits int16, eight would not).
template <int MT, bool kFifthBit>
inline void GroupKAffine(const uint8_t* g, int64_t blocks, const ActRow* x, __m256* out) {
  constexpr int kBlockBytes = kFifthBit ? Q5_K::kBytes : Q4_K::kBytes;
  constexpr int kGroupBlockBytes = kInterleavedRows * kBlockBytes;
  constexpr int kHigh = 128;  // Q5_K's qh words: after 32 bytes of d/dmin and 96 of scale words
  constexpr int kRuns = kFifthBit ? kHigh + 8 * 32 : 128;
  __m256 acc[MT], min[MT];
  for (int m = 0; m < MT; ++m) acc[m] = min[m] = _mm256_setzero_ps();
  const __m256i mask = _mm256_set1_epi8(0xF);
  const __m256i low6 = _mm256_set1_epi8(0x3f), low4 = _mm256_set1_epi8(0xf);
  const __m256i low2 = _mm256_set1_epi8(0x3);
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const uint8_t* b = g + blk * kGroupBlockBytes;
    PrefetchGroupBlock<kGroupBlockBytes>(b);
    const __m256 d = GroupScales(b);
    const __m256 dmin = GroupScales(b + 16);
    const __m256i w0 = Load32(b + 32), w1 = Load32(b + 64), w2 = Load32(b + 96);
    const __m256i top0 = _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(w0, 6), low2), 4);
    const __m256i top1 = _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(w1, 6), low2), 4);
    const __m256i scales[2] = {_mm256_and_si256(w0, low6),
                               _mm256_or_si256(_mm256_and_si256(w2, low4), top0)};
    const __m256i mins[2] = {
        _mm256_and_si256(w1, low6),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(w2, 4), low4), top1)};
    for (int pair = 0; pair < 4; ++pair) {
      // sums[half][m] in int16, widened into wide[half][m] every four runs.
      __m256i sums[2][MT], wide[2][MT];
      for (int m = 0; m < MT; ++m) {
        sums[0][m] = sums[1][m] = wide[0][m] = wide[1][m] = _mm256_setzero_si256();
      }
      const __m256i sc16[2] = {ScalePairs(scales, 2 * pair), ScalePairs(scales, 2 * pair + 1)};
      for (int run = 0; run < 8; ++run) {
        const __m256i v = Load32(b + kRuns + 32 * (8 * pair + run));
        __m256i low = _mm256_and_si256(v, mask);
        __m256i high = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
        if constexpr (kFifthBit) {
          const __m256i h = Load32(b + kHigh + 32 * run);
          low = _mm256_or_si256(low, FifthBit(h, 2 * pair));
          high = _mm256_or_si256(high, FifthBit(h, 2 * pair + 1));
        }
        for (int m = 0; m < MT; ++m) {
          const int8_t* q = x[m].q + 8 * kBlock * blk + 64 * pair + 4 * run;
          sums[0][m] = _mm256_add_epi16(sums[0][m], _mm256_maddubs_epi16(low, Broadcast4(q)));
          sums[1][m] =
              _mm256_add_epi16(sums[1][m], _mm256_maddubs_epi16(high, Broadcast4(q + kBlock)));
        }
        if (run % 4 == 3 && (kFifthBit || run == 7)) {
          for (int half = 0; half < 2; ++half) {
            for (int m = 0; m < MT; ++m) {
              wide[half][m] =
                  _mm256_add_epi32(wide[half][m], _mm256_madd_epi16(sums[half][m], sc16[half]));
              sums[half][m] = _mm256_setzero_si256();
            }
          }
        }
      }
      for (int half = 0; half < 2; ++half) {
        const int sub = 2 * pair + half;
        const __m256 mn = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(LaneByte(mins[sub / 4], sub % 4)));
        const int64_t xb = 8 * blk + sub;
        for (int m = 0; m < MT; ++m) {
          const __m256 products = _mm256_cvtepi32_ps(wide[half][m]);
          acc[m] = _mm256_fmadd_ps(products, _mm256_mul_ps(d, _mm256_set1_ps(x[m].d[xb])), acc[m]);
          min[m] = _mm256_fmadd_ps(mn, _mm256_set1_ps(x[m].scaled_sums[xb]), min[m]);
        }
      }
    }
  }
  for (int m = 0; m < MT; ++m) out[m] = _mm256_sub_ps(acc[m], min[m]);
}

// Q6_K: per half of the block and run r, two words of ql (A: bytes 4r.., B: 32 on) and one of qh
// (H) give four weights of each row in each of the four streams k (weights 128 h + 32 k + 4 r..):
// low/high nibbles of A/B with two bits of H each, minus 32. Sub-block pairs (16 + 16 weights)
// share one activation block: their `vpmaddubsw` (pairs of at most 2 * 32 * 127) add up four at a
// time in int16 (at most 32,512), `vpmaddwd` against the rows' int8 scales widens each, and the
// pair is summed in int32 before its one conversion.
template <int MT>
inline void GroupQ6_K(const uint8_t* g, int64_t blocks, const ActRow* x, __m256* out) {
  constexpr int kGroupBlockBytes = kInterleavedRows * Q6_K::kBytes;
  constexpr int kQh = 32 * 32, kScales = 48 * 32, kD = 208 * kInterleavedRows;  // field offsets
  __m256 acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = _mm256_setzero_ps();
  const __m256i mask = _mm256_set1_epi8(0xF), three = _mm256_set1_epi8(3);
  const __m256i bias = _mm256_set1_epi8(32);
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const uint8_t* b = g + blk * kGroupBlockBytes;
    PrefetchGroupBlock<kGroupBlockBytes>(b);
    const __m256 d = GroupScales(b + kD);
    for (int half = 0; half < 2; ++half) {
      // sums[k][s][m]: stream k, sub-block s (runs 0-3, 4-7).
      __m256i sums[4][2][MT];
      for (auto& k : sums)
        for (auto& sub : k)
          for (int m = 0; m < MT; ++m) sub[m] = _mm256_setzero_si256();
      for (int run = 0; run < 8; ++run) {
        const __m256i a = Load32(b + 32 * (16 * half + run));
        const __m256i bw = Load32(b + 32 * (16 * half + 8 + run));
        const __m256i h = Load32(b + kQh + 32 * (8 * half + run));
        const __m256i low[4] = {_mm256_and_si256(a, mask), _mm256_and_si256(bw, mask),
                                _mm256_and_si256(_mm256_srli_epi16(a, 4), mask),
                                _mm256_and_si256(_mm256_srli_epi16(bw, 4), mask)};
        for (int k = 0; k < 4; ++k) {
          const __m256i top =
              _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * k)), three);
          const __m256i w =
              _mm256_sub_epi8(_mm256_or_si256(low[k], _mm256_slli_epi16(top, 4)), bias);
          const __m256i magnitude = _mm256_abs_epi8(w);
          for (int m = 0; m < MT; ++m) {
            const int8_t* q = x[m].q + 8 * kBlock * blk + 128 * half + 32 * k + 4 * run;
            const __m256i xs = _mm256_sign_epi8(Broadcast4(q), w);
            sums[k][run / 4][m] =
                _mm256_add_epi16(sums[k][run / 4][m], _mm256_maddubs_epi16(magnitude, xs));
          }
        }
      }
      for (int k = 0; k < 4; ++k) {
        __m256i scale[2];
        for (int sub = 0; sub < 2; ++sub) {
          const int s = 8 * half + 2 * k + sub;  // the scale's index in the block
          const __m256i word = Load32(b + kScales + 32 * (s / 4));
          const __m256i sc =
              _mm256_srai_epi32(_mm256_sll_epi32(word, _mm_cvtsi32_si128(24 - 8 * (s % 4))), 24);
          scale[sub] = _mm256_blend_epi16(sc, _mm256_slli_epi32(sc, 16), 0xAA);
        }
        const int64_t xb = 8 * blk + 4 * half + k;
        for (int m = 0; m < MT; ++m) {
          const __m256i products = _mm256_add_epi32(_mm256_madd_epi16(sums[k][0][m], scale[0]),
                                                    _mm256_madd_epi16(sums[k][1][m], scale[1]));
          acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(products),
                                   _mm256_mul_ps(d, _mm256_set1_ps(x[m].d[xb])), acc[m]);
        }
      }
    }
  }
  for (int m = 0; m < MT; ++m) out[m] = acc[m];
}

// Rows [row_begin, row_end) of interleaved groups: whole groups are multiplied, the range's rows
// written.
template <int MT>
void GroupRows(const QuantMatmulArgs& a, int64_t row_begin, int64_t row_end, int64_t m0) {
  SY_CHECK(a.type != QuantType::kNone);
  ActRow x[MT];
  for (int m = 0; m < MT; ++m) x[m] = ActRowOf(*a.xq, m0 + m);
  const int64_t blocks = a.cols / Traits(a.type).values;
  for (int64_t g = row_begin / kInterleavedRows * kInterleavedRows; g < row_end;
       g += kInterleavedRows) {
    __m256 sums[MT];
    const uint8_t* group = a.w + g * a.row_bytes;
    if (a.type == QuantType::kQ8_0) {
      GroupQ8_0<MT>(group, blocks, x, sums);
    } else if (a.type == QuantType::kQ4_0) {
      GroupQ4_0<MT>(group, blocks, x, sums);
    } else if (a.type == QuantType::kQ4_K) {
      GroupKAffine<MT, false>(group, blocks, x, sums);
    } else if (a.type == QuantType::kQ5_K) {
      GroupKAffine<MT, true>(group, blocks, x, sums);
    } else {
      GroupQ6_K<MT>(group, blocks, x, sums);
    }
    for (int m = 0; m < MT; ++m) {
      alignas(32) float lanes[kInterleavedRows];
      _mm256_store_ps(lanes, sums[m]);
      for (int64_t r = std::max(g, row_begin); r < std::min(g + kInterleavedRows, row_end); ++r) {
        float sum = lanes[r - g];
        if (a.bias != nullptr) sum += a.bias[r];
        float* out = a.y + (m0 + m) * a.ldy + r;
        *out = a.accumulate ? *out + sum : sum;
      }
    }
  }
}

template <int MT>
void TileRows(const QuantMatmulArgs& a, int64_t row_begin, int64_t row_end, int64_t m0) {
  const int64_t grouped = std::clamp(a.interleaved_rows, row_begin, row_end);
  if (grouped > row_begin) {
    GroupRows<MT>(a, row_begin, grouped, m0);
    row_begin = grouped;
  }
  if (row_begin == row_end) return;
  switch (a.type) {
    case QuantType::kQ8_0:
      return Rows<MT, Q8_0>(a, row_begin, row_end, m0);
    case QuantType::kQ4_0:
      return Rows<MT, Q4_0>(a, row_begin, row_end, m0);
    case QuantType::kQ4_K:
      return Rows<MT, Q4_K>(a, row_begin, row_end, m0);
    case QuantType::kQ5_K:
      return Rows<MT, Q5_K>(a, row_begin, row_end, m0);
    case QuantType::kQ6_K:
      return Rows<MT, Q6_K>(a, row_begin, row_end, m0);
    case QuantType::kNone:
      break;
  }
  SY_CHECK(false);
}

void QuantizeRow(const float* x, int64_t cols, int8_t* q, float* d, float* scaled_sums) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < cols / kBlock; ++b) {
    const float* xb = x + kBlock * b;
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(xb + 8 * i);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_bit, v[i]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float max_abs = _mm_cvtss_f32(m4);
    const float scale = max_abs / 127.0f;
    const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
    // Round half to even (the default rounding mode), as the scalar reference's nearbyint.
    __m256i i32[4];
    for (int i = 0; i < 4; ++i) {
      i32[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], _mm256_set1_ps(inverse)));
    }
    // Pack to bytes; the packs interleave 128-bit lanes, the permute puts them back in order.
    const __m256i i16a = _mm256_packs_epi32(i32[0], i32[1]);
    const __m256i i16b = _mm256_packs_epi32(i32[2], i32[3]);
    __m256i i8 = _mm256_packs_epi16(i16a, i16b);
    i8 = _mm256_permutevar8x32_epi32(i8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + kBlock * b), i8);
    const __m256i sums =
        _mm256_add_epi32(_mm256_add_epi32(i32[0], i32[1]), _mm256_add_epi32(i32[2], i32[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
    d[b] = scale;
    scaled_sums[b] = scale * static_cast<float>(_mm_cvtsi128_si32(s4));
  }
}

}  // namespace

void QuantizeActivations(const float* x, const int32_t* x_rows, int64_t ldx, int64_t m,
                         int64_t cols, Int8Rows* out) {
  SY_CHECK(cols % kBlock == 0);
  out->m = m;
  out->cols = cols;
  out->q.resize(static_cast<size_t>(m * cols));
  out->d.resize(static_cast<size_t>(m * cols / kBlock));
  out->scaled_sums.resize(out->d.size());
  for (int64_t i = 0; i < m; ++i) {
    const float* row = x + (x_rows != nullptr ? x_rows[i] : i) * ldx;
    QuantizeRow(row, cols, out->q.data() + i * cols, out->d.data() + i * (cols / kBlock),
                out->scaled_sums.data() + i * (cols / kBlock));
  }
}

void Int8MatmulRows(const QuantMatmulArgs& a, int64_t row_begin, int64_t row_end) {
  SY_CHECK(a.xq != nullptr && a.xq->m == a.m && a.xq->cols == a.cols);
  int64_t m0 = 0;
  for (; a.m - m0 >= kMaxTileRows; m0 += kMaxTileRows) {
    TileRows<kMaxTileRows>(a, row_begin, row_end, m0);
  }
  switch (a.m - m0) {
    case 3:
      return TileRows<3>(a, row_begin, row_end, m0);
    case 2:
      return TileRows<2>(a, row_begin, row_end, m0);
    case 1:
      return TileRows<1>(a, row_begin, row_end, m0);
    default:
      return;
  }
}

}  // namespace switchyard::cpu

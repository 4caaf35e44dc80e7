// Kernel bodies, compiled twice: with -march=x86-64-v3 into namespace avx2 and with
// -march=x86-64-v4 into namespace avx512 (SY_ISA names the namespace). GCC vector extensions keep
// one source for both widths.
//
// This file must not odr-use inline functions or templates from shared headers: an out-of-line
// copy compiled here with AVX-512 could be the one the linker keeps for the whole program. Helpers
// live in an anonymous namespace.

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "engine/backends/cpu/kernels.h"
#include "engine/backends/cpu/packed_layout.h"

#ifndef SY_ISA
#error "SY_ISA must name the instruction-set namespace"
#endif

namespace switchyard::cpu::SY_ISA {
namespace {

#if defined(__AVX512F__)
constexpr int L = 16;  // floats per vector
#else
constexpr int L = 8;
#endif

typedef float VF __attribute__((vector_size(L * 4)));
typedef float VFu __attribute__((vector_size(L * 4), aligned(4), may_alias));
typedef int32_t VI __attribute__((vector_size(L * 4)));
typedef uint32_t VU __attribute__((vector_size(L * 4)));
typedef uint16_t VHu __attribute__((vector_size(L * 2), aligned(2), may_alias));
typedef uint32_t VUu __attribute__((vector_size(L * 4), aligned(4), may_alias));

inline VF Splat(float v) { return VF{} + v; }
inline VF LoadF(const float* p) { return *reinterpret_cast<const VFu*>(p); }
inline void StoreF(float* p, VF v) { *reinterpret_cast<VFu*>(p) = v; }

inline float HSum(VF v) {
  float s = 0.f;
  for (int i = 0; i < L; ++i) s += v[i];
  return s;
}
inline float HMax(VF v) {
  float m = v[0];
  for (int i = 1; i < L; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

inline float Bf16Scalar(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline float F16Scalar(uint16_t v) { return _cvtsh_ss(v); }

// Weight types over 64-byte row chunks (packed_layout.h). Load() turns one row chunk into kV
// vectors that multiply the matching kV vectors of the prepared x chunk.
struct F32Weights {
  static constexpr int kChunk = 16;
  static constexpr int kV = kChunk / L;
  static void Load(const char* p, VF* out) {
    for (int j = 0; j < kV; ++j) out[j] = LoadF(reinterpret_cast<const float*>(p) + j * L);
  }
};
// A 32-bit lane holding two BF16 values is the odd one as F32 when masked and the even one when
// shifted left: two cheap ops per L values instead of a widening convert, and exact. prepare_x
// de-interleaves x to match.
struct BF16Weights {
  static constexpr int kChunk = 32;
  static constexpr int kV = kChunk / L;
  static void Load(const char* p, VF* out) {
    for (int j = 0; j < kV / 2; ++j) {
      const VU u = *reinterpret_cast<const VUu*>(p + j * 4 * L);
      out[2 * j] = __builtin_bit_cast(VF, u << 16);
      out[2 * j + 1] = __builtin_bit_cast(VF, u & 0xFFFF0000u);
    }
  }
};
struct F16Weights {
  static constexpr int kChunk = 32;
  static constexpr int kV = kChunk / L;
  static void Load(const char* p, VF* out) {
    for (int j = 0; j < kV; ++j) {
#if defined(__AVX512F__)
      __m512 v = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + j * 32)));
#else
      __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + j * 16)));
#endif
      out[j] = __builtin_bit_cast(VF, v);
    }
  }
};

inline VF LoadBF16(const uint16_t* p) {
  VHu h = *reinterpret_cast<const VHu*>(p);
  VU u = __builtin_convertvector(h, VU) << 16;
  return __builtin_bit_cast(VF, u);
}
inline VF LoadF16(const uint16_t* p) {
#if defined(__AVX512F__)
  __m512 v = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#else
  __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#endif
  return __builtin_bit_cast(VF, v);
}

// exp(x) for a vector: Cody-Waite range reduction and the Cephes expf polynomial (about 1 ulp).
inline VF ExpV(VF x) {
  const VF hi = Splat(88.3762626647949f), lo = Splat(-87.3365447505531f);
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  const VF magic = Splat(12582912.0f);  // 1.5 * 2^23: adding and subtracting rounds to nearest
  VF n = (x * Splat(1.44269504088896341f) + magic) - magic;
  VF r = x - n * Splat(0.693359375f);
  r = r - n * Splat(-2.12194440e-4f);
  VF p = Splat(1.9875691500e-4f);
  p = p * r + Splat(1.3981999507e-3f);
  p = p * r + Splat(8.3334519073e-3f);
  p = p * r + Splat(4.1665795894e-2f);
  p = p * r + Splat(1.6666665459e-1f);
  p = p * r + Splat(5.0000001201e-1f);
  p = p * (r * r) + r + Splat(1.0f);
  VI e = (__builtin_convertvector(n, VI) + 127) << 23;
  return p * __builtin_bit_cast(VF, e);
}

inline float ExpScalar(float x) { return __builtin_expf(x); }

// ---------------------------------------------------------------------------------------------
// Small-M matmul over packed weights: every panel streams from memory once per call and meets up
// to kMaxRowsM rows of x at a time. The order of accumulation for one (m, n) does not depend on
// M, so a row's result is the same whatever else shares the batch.

#if defined(__AVX512F__)
constexpr int kMaxRowsM = 4;
constexpr int RowsPerPass(int mt) { return 16 / mt; }
#else
constexpr int kMaxRowsM = 1;
constexpr int RowsPerPass(int) { return 8; }
#endif

template <class W, int MT, int RB>
inline void PackedTile(const PackedMatmulArgs& a, const char* panel, int64_t panel_index, int rb,
                       int64_t m0) {
  constexpr int V = W::kV;
  const int64_t chunks = a.padded_cols / W::kChunk;
  VF acc[MT][RB];
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < RB; ++r) acc[m][r] = VF{};
  for (int64_t c = 0; c < chunks; ++c) {
    const char* chunk = panel + (c * kPanelRows + rb) * kChunkBytes;
    VF xv[MT][V];
    for (int m = 0; m < MT; ++m) {
      const float* xrow = a.xp + (m0 + m) * a.padded_cols + c * W::kChunk;
      for (int j = 0; j < V; ++j) xv[m][j] = LoadF(xrow + j * L);
    }
    for (int r = 0; r < RB; ++r) {
      VF wv[V];
      W::Load(chunk + r * kChunkBytes, wv);
      for (int m = 0; m < MT; ++m)
        for (int j = 0; j < V; ++j) acc[m][r] += wv[j] * xv[m][j];
    }
  }
  for (int m = 0; m < MT; ++m) {
    float* yrow = a.y + (m0 + m) * a.ldy;
    for (int r = 0; r < RB; ++r) {
      const int64_t row = panel_index * kPanelRows + rb + r;
      if (row >= a.n) break;
      float s = HSum(acc[m][r]);
      if (a.bias != nullptr) s += a.bias[row];
      if (a.accumulate) {
        yrow[row] += s;
      } else {
        yrow[row] = s;
      }
    }
  }
}

template <class W, int MT>
inline void PackedPanelRows(const PackedMatmulArgs& a, const char* panel, int64_t p, int64_t m0) {
  constexpr int RB = RowsPerPass(MT);
  for (int rb = 0; rb < kPanelRows; rb += RB) PackedTile<W, MT, RB>(a, panel, p, rb, m0);
}

template <class W>
void MatmulPackedImpl(const PackedMatmulArgs& a, int64_t panel_begin, int64_t panel_end) {
  const size_t panel_bytes =
      static_cast<size_t>(kPanelRows) * a.padded_cols * (kChunkBytes / W::kChunk);
  for (int64_t p = panel_begin; p < panel_end; ++p) {
    const char* panel = static_cast<const char*>(a.w) + p * panel_bytes;
    int64_t m0 = 0;
    for (; m0 + kMaxRowsM <= a.m; m0 += kMaxRowsM) PackedPanelRows<W, kMaxRowsM>(a, panel, p, m0);
    if constexpr (kMaxRowsM > 2) {
      for (; m0 + 2 <= a.m; m0 += 2) PackedPanelRows<W, 2>(a, panel, p, m0);
    }
    for (; m0 < a.m; ++m0) PackedPanelRows<W, 1>(a, panel, p, m0);
  }
}

void MatmulPacked(const PackedMatmulArgs& a, int64_t panel_begin, int64_t panel_end) {
  switch (a.w_dtype) {
    case DType::kF32:
      MatmulPackedImpl<F32Weights>(a, panel_begin, panel_end);
      return;
    case DType::kBF16:
      MatmulPackedImpl<BF16Weights>(a, panel_begin, panel_end);
      return;
    case DType::kF16:
      MatmulPackedImpl<F16Weights>(a, panel_begin, panel_end);
      return;
    case DType::kI32:
    case DType::kF64:
    case DType::kU8:
      break;
  }
  __builtin_trap();
}

void PrepareX(DType w_dtype, const float* x, const int32_t* x_rows, int64_t m, int64_t ldx,
              int64_t k, int64_t padded_cols, float* xp) {
  for (int64_t i = 0; i < m; ++i) {
    const float* src = x + (x_rows != nullptr ? x_rows[i] : i) * ldx;
    float* dst = xp + i * padded_cols;
    if (w_dtype == DType::kBF16) {
      // Per group of 2L columns: L even columns, then L odd ones (see BF16Weights).
      for (int64_t g = 0; g < padded_cols; g += 2 * L) {
        for (int j = 0; j < L; ++j) {
          const int64_t e = g + 2 * j, o = e + 1;
          dst[g + j] = e < k ? src[e] : 0.0f;
          dst[g + L + j] = o < k ? src[o] : 0.0f;
        }
      }
    } else {
      std::memcpy(dst, src, static_cast<size_t>(k) * sizeof(float));
      std::memset(dst + k, 0, static_cast<size_t>(padded_cols - k) * sizeof(float));
    }
  }
}

// One block of expand columns for every row, from F32 weights `wb` (BF16 blocks are widened
// once per block by Expand, then every row reads F32 from L1).
void ExpandBlock(const ExpandArgs& a, const float* wb, int64_t b) {
  constexpr int kVecs = kExpandBlock / L;
  const int64_t n0 = b * kExpandBlock;
  const int64_t width = a.n - n0 < kExpandBlock ? a.n - n0 : kExpandBlock;
  for (int64_t i = 0; i < a.m; ++i) {
    float* y = a.y + i * a.ldy + n0;
    const float* x = a.x + (a.x_rows != nullptr ? a.x_rows[i] : i) * a.ldx;
    VF acc[kVecs];
    if (width == kExpandBlock && a.accumulate) {
      for (int v = 0; v < kVecs; ++v) acc[v] = LoadF(y + v * L);
    } else if (a.accumulate) {
      float tmp[kExpandBlock] = {};
      for (int64_t c = 0; c < width; ++c) tmp[c] = y[c];
      for (int v = 0; v < kVecs; ++v) acc[v] = LoadF(tmp + v * L);
    } else {
      for (int v = 0; v < kVecs; ++v) acc[v] = VF{};
    }
    for (int64_t j = 0; j < a.r; ++j) {
      const VF xv = Splat(x[j]);
      const float* w = wb + j * kExpandBlock;
      for (int v = 0; v < kVecs; ++v) acc[v] += xv * LoadF(w + v * L);
    }
    if (width == kExpandBlock) {
      for (int v = 0; v < kVecs; ++v) StoreF(y + v * L, acc[v]);
    } else {
      float tmp[kExpandBlock];
      for (int v = 0; v < kVecs; ++v) StoreF(tmp + v * L, acc[v]);
      for (int64_t c = 0; c < width; ++c) y[c] = tmp[c];
    }
  }
}

// One row against a BF16 block, widening as it goes (the same accumulation order as
// ExpandBlock, so the result does not depend on how many rows share the block).
void ExpandBlockBf16(const ExpandArgs& a, const uint16_t* wb, int64_t b) {
  constexpr int kVecs = kExpandBlock / L;
  const int64_t n0 = b * kExpandBlock;
  const int64_t width = a.n - n0 < kExpandBlock ? a.n - n0 : kExpandBlock;
  float* y = a.y + n0;
  const float* x = a.x + (a.x_rows != nullptr ? a.x_rows[0] : 0) * a.ldx;
  float tmp[kExpandBlock] = {};
  if (a.accumulate) {
    for (int64_t c = 0; c < width; ++c) tmp[c] = y[c];
  }
  VF acc[kVecs];
  for (int v = 0; v < kVecs; ++v) acc[v] = LoadF(tmp + v * L);
  for (int64_t j = 0; j < a.r; ++j) {
    const VF xv = Splat(x[j]);
    const uint16_t* w = wb + j * kExpandBlock;
    for (int v = 0; v < kVecs; ++v) acc[v] += xv * LoadBF16(w + v * L);
  }
  for (int v = 0; v < kVecs; ++v) StoreF(tmp + v * L, acc[v]);
  for (int64_t c = 0; c < width; ++c) y[c] = tmp[c];
}

void Expand(const ExpandArgs& a, int64_t block_begin, int64_t block_end) {
  alignas(64) float widened[kExpandBlock * 256];  // BF16 blocks up to rank 256
  for (int64_t b = block_begin; b < block_end; ++b) {
    if (a.w_dtype == DType::kBF16 && a.m == 1) {
      ExpandBlockBf16(a, static_cast<const uint16_t*>(a.wt) + b * a.r * kExpandBlock, b);
    } else if (a.w_dtype == DType::kBF16) {
      // Several rows share the block: widen it once.
      const uint16_t* src = static_cast<const uint16_t*>(a.wt) + b * a.r * kExpandBlock;
      for (int64_t i = 0; i < a.r * kExpandBlock; i += L) StoreF(widened + i, LoadBF16(src + i));
      ExpandBlock(a, widened, b);
    } else {
      ExpandBlock(a, static_cast<const float*>(a.wt) + b * a.r * kExpandBlock, b);
    }
  }
}

void ConvertToF32(DType dtype, const void* src, float* dst, int64_t n) {
  int64_t i = 0;
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::kBF16:
      for (; i + L <= n; i += L) StoreF(dst + i, LoadBF16(static_cast<const uint16_t*>(src) + i));
      for (; i < n; ++i) dst[i] = Bf16Scalar(static_cast<const uint16_t*>(src)[i]);
      return;
    case DType::kF16:
      for (; i + L <= n; i += L) StoreF(dst + i, LoadF16(static_cast<const uint16_t*>(src) + i));
      for (; i < n; ++i) dst[i] = F16Scalar(static_cast<const uint16_t*>(src)[i]);
      return;
    case DType::kI32:
      for (; i < n; ++i) dst[i] = static_cast<float>(static_cast<const int32_t*>(src)[i]);
      return;
    case DType::kF64:
      for (; i < n; ++i) dst[i] = static_cast<float>(static_cast<const double*>(src)[i]);
      return;
    case DType::kU8:
      for (; i < n; ++i) dst[i] = static_cast<float>(static_cast<const uint8_t*>(src)[i]);
      return;
  }
}

// Hugging Face LlamaRMSNorm in F32: y = w * (x * rsqrt(mean(x^2) + eps)).
void RmsNorm(const float* x, const float* weight, float eps, float* y, int64_t d) {
  VF acc = VF{};
  int64_t i = 0;
  for (; i + L <= d; i += L) {
    const VF v = LoadF(x + i);
    acc += v * v;
  }
  float ss = HSum(acc);
  for (; i < d; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / __builtin_sqrtf(ss / static_cast<float>(d) + eps);
  i = 0;
  const VF vinv = Splat(inv);
  for (; i + L <= d; i += L) StoreF(y + i, LoadF(weight + i) * (LoadF(x + i) * vinv));
  for (; i < d; ++i) y[i] = weight[i] * (x[i] * inv);
}

void GatedActivation(Activation act, const float* gate, const float* up, float* out, int64_t n) {
  int64_t i = 0;
  switch (act) {
    case Activation::kSilu:
      for (; i + L <= n; i += L) {
        const VF g = LoadF(gate + i);
        StoreF(out + i, g / (Splat(1.0f) + ExpV(-g)) * LoadF(up + i));
      }
      for (; i < n; ++i) out[i] = gate[i] / (1.0f + ExpScalar(-gate[i])) * up[i];
      return;
    case Activation::kRelu:
      for (; i < n; ++i) out[i] = (gate[i] > 0.f ? gate[i] : 0.f) * up[i];
      return;
    case Activation::kGeluErf:
      for (; i < n; ++i) {
        const float g = gate[i];
        out[i] = 0.5f * g * (1.0f + __builtin_erff(g * 0.70710678118654752f)) * up[i];
      }
      return;
    case Activation::kGeluTanh:
      for (; i < n; ++i) {
        const float g = gate[i];
        const float inner = 0.79788456080286536f * (g + 0.044715f * g * g * g);
        out[i] = 0.5f * g * (1.0f + __builtin_tanhf(inner)) * up[i];
      }
      return;
  }
}

float ExpShiftedSum(float* x, int64_t n, float shift) {
  VF acc = VF{};
  const VF vs = Splat(shift);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const VF e = ExpV(LoadF(x + i) - vs);
    StoreF(x + i, e);
    acc += e;
  }
  float s = HSum(acc);
  for (; i < n; ++i) {
    x[i] = ExpScalar(x[i] - shift);
    s += x[i];
  }
  return s;
}

// Rows of the KV cache in each of its element types: L values as a vector, or one as a float.
struct F32Row {
  using T = float;
  static VF Load(const float* p) { return LoadF(p); }
  static float Scalar(const float* p) { return *p; }
};
struct BF16Row {
  using T = uint16_t;
  static VF Load(const uint16_t* p) { return LoadBF16(p); }
  static float Scalar(const uint16_t* p) { return Bf16Scalar(*p); }
};
struct F16Row {
  using T = uint16_t;
  static VF Load(const uint16_t* p) { return LoadF16(p); }
  static float Scalar(const uint16_t* p) { return F16Scalar(*p); }
};

template <class Row>
inline float Dot(const float* a, const typename Row::T* b, int d) {
  VF acc = VF{};
  int i = 0;
  for (; i + L <= d; i += L) acc += LoadF(a + i) * Row::Load(b + i);
  float s = HSum(acc);
  for (; i < d; ++i) s += a[i] * Row::Scalar(b + i);
  return s;
}

template <class Row>
inline void Axpy(float alpha, const typename Row::T* x, float* y, int d) {
  const VF va = Splat(alpha);
  int i = 0;
  for (; i + L <= d; i += L) StoreF(y + i, LoadF(y + i) + va * Row::Load(x + i));
  for (; i < d; ++i) y[i] += alpha * Row::Scalar(x + i);
}

// Calls fn(j, pointer to row j) for every key position j in [lo, hi], walking the block table of
// a [block][kv_head][slot][head_dim] layer one block-run at a time.
template <typename T, typename Fn>
inline void ForEachCachedRow(const AttentionTask& t, const T* layer, Fn fn) {
  const int bs = t.block_size;
  for (int64_t j = t.lo; j <= t.hi;) {
    const int slot = static_cast<int>(j % bs);
    const int64_t count = (bs - slot) < (t.hi - j + 1) ? (bs - slot) : (t.hi - j + 1);
    const size_t base =
        ((static_cast<size_t>(t.block_table[j / bs]) * t.num_kv_heads + t.kv_head) * bs + slot) *
        static_cast<size_t>(t.head_dim);
    for (int64_t c = 0; c < count; ++c) fn(j + c, layer + base + c * t.head_dim);
    j += count;
  }
}

// Softmax attention of one query token's q-head group over keys [lo, hi] of its sequence, with K
// and V rows of type Row (converted to F32 as they are loaded).
template <class Row>
void AttendRows(const AttentionTask& t) {
  using T = typename Row::T;
  const int G = t.group;
  const int hd = t.head_dim;
  const int64_t n = t.hi - t.lo + 1;
  float* scores = t.scratch;  // [G][n]

  ForEachCachedRow(t, static_cast<const T*>(t.k_layer), [&](int64_t j, const T* k) {
    for (int g = 0; g < G; ++g) {
      scores[g * n + (j - t.lo)] = Dot<Row>(t.q + g * hd, k, hd) * t.scale;
    }
  });

  for (int g = 0; g < G; ++g) {
    float* s = scores + g * n;
    VF vmax = Splat(-INFINITY);
    int64_t i = 0;
    for (; i + L <= n; i += L) {
      const VF v = LoadF(s + i);
      vmax = v > vmax ? v : vmax;
    }
    float mx = HMax(vmax);
    for (; i < n; ++i) mx = s[i] > mx ? s[i] : mx;
    const float inv = 1.0f / ExpShiftedSum(s, n, mx);
    const VF vinv = Splat(inv);
    i = 0;
    for (; i + L <= n; i += L) StoreF(s + i, LoadF(s + i) * vinv);
    for (; i < n; ++i) s[i] *= inv;
  }

  std::memset(t.out, 0, sizeof(float) * static_cast<size_t>(G) * hd);
  ForEachCachedRow(t, static_cast<const T*>(t.v_layer), [&](int64_t j, const T* v) {
    for (int g = 0; g < G; ++g) Axpy<Row>(scores[g * n + (j - t.lo)], v, t.out + g * hd, hd);
  });
}

void Attend(const AttentionTask& t) {
  switch (t.kv_dtype) {
    case DType::kBF16:
      return AttendRows<BF16Row>(t);
    case DType::kF16:
      return AttendRows<F16Row>(t);
    default:
      return AttendRows<F32Row>(t);
  }
}

#define SY_STRINGIFY_INNER(x) #x
#define SY_STRINGIFY(x) SY_STRINGIFY_INNER(x)

const KernelTable kTable = {
    .isa = SY_STRINGIFY(SY_ISA),
    .prepare_x = &PrepareX,
    .matmul_packed = &MatmulPacked,
    .expand = &Expand,
    .convert_to_f32 = &ConvertToF32,
    .rms_norm = &RmsNorm,
    .gated_activation = &GatedActivation,
    .attend = &Attend,
    .exp_shifted_sum = &ExpShiftedSum,
};

}  // namespace

const KernelTable& Table() { return kTable; }

}  // namespace switchyard::cpu::SY_ISA

#include "engine/core/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "engine/core/check.h"
#include "engine/core/dtype.h"

namespace switchyard {
namespace {

constexpr int kSuperBlock = 256;

float HalfAt(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return F16ToF32(h);
}

void StoreHalf(uint8_t* p, float f) {
  const uint16_t h = F32ToF16(f);
  std::memcpy(p, &h, 2);
}

// Q8_0: F16 d, 32 x int8. w = d * q.
void DequantizeQ8_0(const uint8_t* b, float* y) {
  const float d = HalfAt(b);
  const auto* q = reinterpret_cast<const int8_t*>(b + 2);
  for (int i = 0; i < 32; ++i) y[i] = d * static_cast<float>(q[i]);
}

// Q4_0: F16 d, 16 bytes; byte j holds weight j (low nibble) and j + 16 (high). w = d * (q - 8).
void DequantizeQ4_0(const uint8_t* b, float* y) {
  const float d = HalfAt(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((qs[j] & 0xF) - 8) * d;
    y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

}  // namespace

namespace {

// Q4_K: F16 d, F16 dmin, 12 scale bytes, 128 bytes of nibbles. Eight sub-blocks of 32; sub-block
// pair (2i, 2i+1) takes the low and high nibbles of bytes [32i, 32i + 32). w = d*sc*q - dmin*m.
void DequantizeQ4_K(const uint8_t* b, float* y) {
  const float d = HalfAt(b), dmin = HalfAt(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int pair = 0; pair < 4; ++pair) {
    uint8_t sc, m;
    KQuantScaleMin(2 * pair, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    KQuantScaleMin(2 * pair + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) y[l] = d1 * static_cast<float>(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) y[32 + l] = d2 * static_cast<float>(q[l] >> 4) - m2;
    q += 32;
    y += 64;
  }
}

// Q5_K: as Q4_K plus 32 bytes of fifth bits (qh): sub-block s takes bit s of each qh byte.
void DequantizeQ5_K(const uint8_t* b, float* y) {
  const float d = HalfAt(b), dmin = HalfAt(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  for (int pair = 0; pair < 4; ++pair) {
    uint8_t sc, m;
    KQuantScaleMin(2 * pair, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    KQuantScaleMin(2 * pair + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    const int lo_bit = 2 * pair, hi_bit = 2 * pair + 1;
    for (int l = 0; l < 32; ++l) {
      y[l] = d1 * static_cast<float>((ql[l] & 0xF) + (((qh[l] >> lo_bit) & 1) << 4)) - m1;
    }
    for (int l = 0; l < 32; ++l) {
      y[32 + l] = d2 * static_cast<float>((ql[l] >> 4) + (((qh[l] >> hi_bit) & 1) << 4)) - m2;
    }
    ql += 32;
    y += 64;
  }
}

// Q6_K: 128 bytes of low nibbles (ql), 64 bytes of high 2-bit pairs (qh), 16 int8 scales (one per
// 16 weights), F16 d at the end. w = d * scale * (q - 32).
void DequantizeQ6_K(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = HalfAt(b + 208);
  for (int half = 0; half < 2; ++half) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * sc[is] * static_cast<float>(q1);
      y[l + 32] = d * sc[is + 2] * static_cast<float>(q2);
      y[l + 64] = d * sc[is + 4] * static_cast<float>(q3);
      y[l + 96] = d * sc[is + 6] * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

// llama.cpp's reference quantizers, step for step (the scale's reciprocal is taken before the
// scale is rounded to F16; values round half away from zero), so files agree bit for bit.
void QuantizeQ8_0(const float* x, uint8_t* b) {
  float amax = 0;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  StoreHalf(b, d);
  auto* q = reinterpret_cast<int8_t*>(b + 2);
  for (int i = 0; i < 32; ++i) q[i] = static_cast<int8_t>(std::round(x[i] * id));
}

// The value of largest magnitude maps to -8 (the 4-bit range is [-8, 7]).
void QuantizeQ4_0(const float* x, uint8_t* b) {
  float amax = 0, max = 0;
  for (int i = 0; i < 32; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  const float d = max / -8.0f;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  StoreHalf(b, d);
  uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    const int lo = std::min(15, static_cast<int>(x[j] * id + 8.5f));
    const int hi = std::min(15, static_cast<int>(x[j + 16] * id + 8.5f));
    qs[j] = static_cast<uint8_t>(lo | (hi << 4));
  }
}

}  // namespace

QuantTraits Traits(QuantType type) {
  switch (type) {
    case QuantType::kNone:
      return {1, 0, "none"};
    case QuantType::kQ8_0:
      return {32, 34, "Q8_0"};
    case QuantType::kQ4_0:
      return {32, 18, "Q4_0"};
    case QuantType::kQ4_K:
      return {kSuperBlock, 144, "Q4_K"};
    case QuantType::kQ5_K:
      return {kSuperBlock, 176, "Q5_K"};
    case QuantType::kQ6_K:
      return {kSuperBlock, 210, "Q6_K"};
  }
  return {1, 0, "?"};
}

size_t QuantRowBytes(QuantType type, int64_t cols) {
  const QuantTraits t = Traits(type);
  return static_cast<size_t>(cols / t.values) * t.bytes;
}

absl::StatusOr<QuantType> ParseQuantType(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  for (QuantType t :
       {QuantType::kQ8_0, QuantType::kQ4_0, QuantType::kQ4_K, QuantType::kQ5_K, QuantType::kQ6_K}) {
    if (absl::AsciiStrToLower(Traits(t).name) == lower) return t;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown quantization type \"", name,
                                                 "\" (known: Q8_0, Q4_0, Q4_K, Q5_K, Q6_K)"));
}

void DequantizeRow(QuantType type, const uint8_t* src, float* dst, int64_t cols) {
  const QuantTraits t = Traits(type);
  SY_CHECK(type != QuantType::kNone && cols % t.values == 0);
  void (*block)(const uint8_t*, float*) = nullptr;
  switch (type) {
    case QuantType::kQ8_0:
      block = DequantizeQ8_0;
      break;
    case QuantType::kQ4_0:
      block = DequantizeQ4_0;
      break;
    case QuantType::kQ4_K:
      block = DequantizeQ4_K;
      break;
    case QuantType::kQ5_K:
      block = DequantizeQ5_K;
      break;
    case QuantType::kQ6_K:
      block = DequantizeQ6_K;
      break;
    case QuantType::kNone:
      return;
  }
  for (int64_t i = 0; i < cols / t.values; ++i) block(src + i * t.bytes, dst + i * t.values);
}

bool CanQuantize(QuantType type) { return type == QuantType::kQ8_0 || type == QuantType::kQ4_0; }

void QuantizeRow(QuantType type, const float* src, uint8_t* dst, int64_t cols) {
  SY_CHECK(CanQuantize(type) && cols % 32 == 0);
  for (int64_t i = 0; i < cols / 32; ++i) {
    if (type == QuantType::kQ8_0) {
      QuantizeQ8_0(src + i * 32, dst + i * 34);
    } else {
      QuantizeQ4_0(src + i * 32, dst + i * 18);
    }
  }
}

}  // namespace switchyard

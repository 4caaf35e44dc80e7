// Element types and the scalar conversions between them.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard {

// kF64 holds accumulators (routing statistics), never weights or activations; kU8 holds raw
// bytes (block-quantized weights, see quant.h).
enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kF64, kU8 };

constexpr size_t SizeOf(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kF64:
      return 8;
    case DType::kU8:
      return 1;
  }
  return 0;
}

absl::string_view DTypeName(DType t);

// Parses the dtype names used by safetensors ("F32", "F16", "BF16", "I32").
absl::StatusOr<DType> ParseSafetensorsDType(absl::string_view name);

inline float BF16ToF32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, as torch does; NaN stays NaN (quiet).
inline uint16_t F32ToBF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float F16ToF32(uint16_t v) { return _cvtsh_ss(v); }
inline uint16_t F32ToF16(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

// Converts n elements of `src` (of type `t`) to float.
void ConvertToF32(DType t, const void* src, float* dst, size_t n);

// Converts n floats to `t` (F32, BF16 or F16; rounding to nearest even).
void ConvertFromF32(DType t, const float* src, void* dst, size_t n);

}  // namespace switchyard

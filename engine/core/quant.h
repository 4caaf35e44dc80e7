// Block-quantized weight formats, as llama.cpp's GGUF files store them. A quantized matrix is a
// sequence of rows, each a whole number of blocks; a block holds `values` weights in `bytes`
// bytes. Dequantization is defined by the formats (the scalar functions here are the reference
// every kernel is checked against) and is exact in F32: a block's scales are F16 values times
// small integers, so d * scale * q never rounds, and the CPU kernels reproduce these values bit
// for bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard {

enum class QuantType : uint8_t { kNone, kQ8_0, kQ4_0, kQ4_K, kQ5_K, kQ6_K };

struct QuantTraits {
  int values;  // weights per block
  int bytes;   // bytes per block
  absl::string_view name;
};

QuantTraits Traits(QuantType type);

// Bytes of one row of `cols` weights; `cols` must be a multiple of the block size.
size_t QuantRowBytes(QuantType type, int64_t cols);

// Parses "q8_0", "Q4_K", ... (case-insensitive).
absl::StatusOr<QuantType> ParseQuantType(absl::string_view name);

// Reference dequantization of `cols` weights (one or more whole blocks) into F32.
void DequantizeRow(QuantType type, const uint8_t* src, float* dst, int64_t cols);

// In-situ quantization of F32 rows (`cols` a multiple of the block size): Q8_0 (symmetric, one
// F16 scale per 32 weights) and Q4_0 (symmetric 4-bit, one F16 scale per 32 weights), the
// formats of llama.cpp's reference quantizers, so that a quantized safetensors model and a GGUF
// file share kernels.
void QuantizeRow(QuantType type, const float* src, uint8_t* dst, int64_t cols);
bool CanQuantize(QuantType type);

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K super-block's 12 scale bytes.
// Inline: the kernels call it per 32 weights.
inline void KQuantScaleMin(int j, const uint8_t* s, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = s[j] & 63;
    *min = s[j + 4] & 63;
  } else {
    *scale = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

}  // namespace switchyard

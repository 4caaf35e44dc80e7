// The interleaved layout of quant_kernels.h: a permutation of the file's bytes, so both directions
// are plain copies.

#include <cstring>

#include "engine/backends/cpu/quant_kernels.h"
#include "engine/core/check.h"

namespace switchyard::cpu {
namespace {

constexpr int kScaleBytes = 2;  // the F16 scale that opens a Q8_0 or Q4_0 block
constexpr int kRunBytes = 4;    // bytes of one row in a run of the group

// Where a group block holds row `lane`'s scale and byte `i` of its quantized values.
constexpr int ScaleOffset(int lane) { return kScaleBytes * lane; }
constexpr int ValueOffset(int lane, int i) {
  return kScaleBytes * kInterleavedRows + (i / kRunBytes) * kRunBytes * kInterleavedRows +
         kRunBytes * lane + i % kRunBytes;
}

}  // namespace

int64_t InterleavedRows(QuantType type, int64_t rows) {
  if (type != QuantType::kQ8_0 && type != QuantType::kQ4_0) return 0;
  return rows / kInterleavedRows * kInterleavedRows;
}

void InterleaveRows(QuantType type, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst) {
  const QuantTraits t = Traits(type);
  const size_t row_bytes = QuantRowBytes(type, cols);
  const int64_t grouped = InterleavedRows(type, rows), blocks = cols / t.values;
  for (int64_t g = 0; g < grouped; g += kInterleavedRows) {
    uint8_t* out = dst + g * row_bytes;
    for (int64_t blk = 0; blk < blocks; ++blk, out += kInterleavedRows * t.bytes) {
      for (int lane = 0; lane < kInterleavedRows; ++lane) {
        const uint8_t* b = src + (g + lane) * row_bytes + blk * t.bytes;
        std::memcpy(out + ScaleOffset(lane), b, kScaleBytes);
        for (int i = 0; i < t.bytes - kScaleBytes; i += kRunBytes) {
          std::memcpy(out + ValueOffset(lane, i), b + kScaleBytes + i, kRunBytes);
        }
      }
    }
  }
  std::memcpy(dst + grouped * row_bytes, src + grouped * row_bytes, (rows - grouped) * row_bytes);
}

void StoredRow(QuantType type, const uint8_t* w, int64_t rows, int64_t row, int64_t cols,
               uint8_t* out) {
  SY_CHECK(row >= 0 && row < rows);
  const QuantTraits t = Traits(type);
  const size_t row_bytes = QuantRowBytes(type, cols);
  if (row >= InterleavedRows(type, rows)) {
    std::memcpy(out, w + row * row_bytes, row_bytes);
    return;
  }
  const int lane = static_cast<int>(row % kInterleavedRows);
  const uint8_t* group = w + (row - lane) * row_bytes;
  for (int64_t blk = 0; blk < cols / t.values; ++blk, out += t.bytes) {
    const uint8_t* in = group + blk * kInterleavedRows * t.bytes;
    std::memcpy(out, in + ScaleOffset(lane), kScaleBytes);
    for (int i = 0; i < t.bytes - kScaleBytes; i += kRunBytes) {
      std::memcpy(out + kScaleBytes + i, in + ValueOffset(lane, i), kRunBytes);
    }
  }
}

}  // namespace switchyard::cpu

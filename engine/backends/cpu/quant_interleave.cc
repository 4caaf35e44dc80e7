// The interleaved Q4_0 layout of quant_kernels.h: a permutation of the file's bytes, so both
// directions are plain copies.

#include <cstring>

#include "engine/backends/cpu/quant_kernels.h"
#include "engine/core/check.h"

namespace switchyard::cpu {
namespace {

constexpr int kBlockBytes = 18;  // F16 scale, 16 bytes of nibbles
constexpr int kNibbleBytes = 16;
constexpr int kRunBytes = 4;  // bytes of one row in a run of the group

// Offset of row `lane`'s scale and of its nibble byte `i` in an interleaved group block.
constexpr int ScaleOffset(int lane) { return 2 * lane; }
constexpr int NibbleOffset(int lane, int i) {
  return 2 * kInterleavedRows + (i / kRunBytes) * kRunBytes * kInterleavedRows + kRunBytes * lane +
         i % kRunBytes;
}

}  // namespace

void InterleaveQ4_0(const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst) {
  const size_t row_bytes = QuantRowBytes(QuantType::kQ4_0, cols);
  const int64_t grouped = InterleavedQ4_0Rows(rows), blocks = cols / 32;
  for (int64_t g = 0; g < grouped; g += kInterleavedRows) {
    uint8_t* out = dst + g * row_bytes;
    for (int64_t blk = 0; blk < blocks; ++blk, out += kInterleavedRows * kBlockBytes) {
      for (int lane = 0; lane < kInterleavedRows; ++lane) {
        const uint8_t* b = src + (g + lane) * row_bytes + blk * kBlockBytes;
        std::memcpy(out + ScaleOffset(lane), b, 2);
        for (int i = 0; i < kNibbleBytes; i += kRunBytes) {
          std::memcpy(out + NibbleOffset(lane, i), b + 2 + i, kRunBytes);
        }
      }
    }
  }
  std::memcpy(dst + grouped * row_bytes, src + grouped * row_bytes, (rows - grouped) * row_bytes);
}

void StoredQ4_0Row(const uint8_t* w, int64_t rows, int64_t row, int64_t cols, uint8_t* out) {
  SY_CHECK(row >= 0 && row < rows);
  const size_t row_bytes = QuantRowBytes(QuantType::kQ4_0, cols);
  if (row >= InterleavedQ4_0Rows(rows)) {
    std::memcpy(out, w + row * row_bytes, row_bytes);
    return;
  }
  const int lane = static_cast<int>(row % kInterleavedRows);
  const uint8_t* group = w + (row - lane) * row_bytes;
  for (int64_t blk = 0; blk < cols / 32; ++blk, out += kBlockBytes) {
    const uint8_t* in = group + blk * kInterleavedRows * kBlockBytes;
    std::memcpy(out, in + ScaleOffset(lane), 2);
    for (int i = 0; i < kNibbleBytes; i += kRunBytes) {
      std::memcpy(out + 2 + i, in + NibbleOffset(lane, i), kRunBytes);
    }
  }
}

}  // namespace switchyard::cpu

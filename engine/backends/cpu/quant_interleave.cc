// The interleaved layout of quant_kernels.h: a permutation of the file's bytes, so both directions
// are plain copies.

#include <cstring>

#include "engine/backends/cpu/quant_kernels.h"
#include "engine/core/check.h"

namespace switchyard::cpu {
namespace {

// A block is cut into fields: its F16 scales (2 bytes each; leading, or for Q6_K trailing) and
// 4-byte words between. An interleaved group block stores each field of the eight rows together,
// row after row, so a field at block offset o of size z for row `lane` lands at
// kInterleavedRows * o + lane * z.
struct Fields {
  int leading_halves;
  int words;
  int trailing_halves;
  int bytes() const { return 2 * (leading_halves + trailing_halves) + 4 * words; }
};

Fields FieldsOf(QuantType type) {
  switch (type) {
    case QuantType::kQ8_0:
      return {1, 8, 0};
    case QuantType::kQ4_0:
      return {1, 4, 0};
    case QuantType::kQ4_K:
      return {2, 35, 0};
    case QuantType::kQ5_K:
      return {2, 43, 0};
    case QuantType::kQ6_K:
      return {0, 52, 1};
    default:
      return {0, 0, 0};
  }
}

// Calls copy(group offset, block offset, size) for every field of row `lane`.
template <class Copy>
void ForEachField(const Fields& f, int lane, Copy&& copy) {
  constexpr int kHalf = 2, kWord = 4;
  int o = 0;
  auto field = [&](int size) {
    copy(kInterleavedRows * o + lane * size, o, size);
    o += size;
  };
  for (int i = 0; i < f.leading_halves; ++i) field(kHalf);
  for (int i = 0; i < f.words; ++i) field(kWord);
  for (int i = 0; i < f.trailing_halves; ++i) field(kHalf);
}

}  // namespace

int64_t InterleavedRows(QuantType type, int64_t rows) {
  if (FieldsOf(type).bytes() == 0) return 0;
  return rows / kInterleavedRows * kInterleavedRows;
}

void InterleaveRows(QuantType type, const uint8_t* src, int64_t rows, int64_t cols, uint8_t* dst) {
  const QuantTraits t = Traits(type);
  const Fields fields = FieldsOf(type);
  const size_t row_bytes = QuantRowBytes(type, cols);
  const int64_t grouped = InterleavedRows(type, rows), blocks = cols / t.values;
  SY_CHECK(grouped == 0 || fields.bytes() == t.bytes);
  for (int64_t g = 0; g < grouped; g += kInterleavedRows) {
    uint8_t* out = dst + g * row_bytes;
    for (int64_t blk = 0; blk < blocks; ++blk, out += kInterleavedRows * t.bytes) {
      for (int lane = 0; lane < kInterleavedRows; ++lane) {
        const uint8_t* b = src + (g + lane) * row_bytes + blk * t.bytes;
        ForEachField(fields, lane, [&](int at, int o, int z) { std::memcpy(out + at, b + o, z); });
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
  const Fields fields = FieldsOf(type);
  const int lane = static_cast<int>(row % kInterleavedRows);
  const uint8_t* group = w + (row - lane) * row_bytes;
  for (int64_t blk = 0; blk < cols / t.values; ++blk, out += t.bytes) {
    const uint8_t* in = group + blk * kInterleavedRows * t.bytes;
    ForEachField(fields, lane, [&](int at, int o, int z) { std::memcpy(out + o, in + at, z); });
  }
}

}  // namespace switchyard::cpu

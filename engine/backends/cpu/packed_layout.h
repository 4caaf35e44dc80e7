// The CPU backend's weight layout. Rows are grouped in panels of 16; within a panel, each row's
// columns are cut into 64-byte chunks (16 F32 or 32 BF16/F16 values), and a panel stores chunk 0
// of its 16 rows, then chunk 1 of its 16 rows, and so on:
//   element (r, c) -> ((r / 16) * (padded_cols / C) + c / C) * 16 * C + (r % 16) * C + c % C
// Rows are padded to a multiple of 16 and columns to a multiple of C with zeros.
//
// Why: a decode step multiplies one (or a few) activation rows by every weight row, so it is
// bound by how fast weights stream from memory. Reading 16 rows chunk by chunk is one sequential
// stream, which the hardware prefetchers follow; 16 separate rows of 3 KB each are 16 short
// streams that restart all the time (measured: 0.87 vs 0.55 of a plain read on this machine, see
// docs/performance.md).
#pragma once

#include <cstdint>

#include "engine/core/dtype.h"

namespace switchyard::cpu {

constexpr int64_t kPanelRows = 16;
constexpr int64_t kChunkBytes = 64;

constexpr int64_t ChunkElements(DType t) { return kChunkBytes / static_cast<int64_t>(SizeOf(t)); }
constexpr int64_t PaddedRows(int64_t rows) {
  return (rows + kPanelRows - 1) / kPanelRows * kPanelRows;
}
constexpr int64_t PaddedCols(int64_t cols, DType t) {
  return (cols + ChunkElements(t) - 1) / ChunkElements(t) * ChunkElements(t);
}
constexpr int64_t PackedOffset(int64_t r, int64_t c, int64_t padded_cols, DType t) {
  const int64_t C = ChunkElements(t);
  return ((r / kPanelRows) * (padded_cols / C) + c / C) * kPanelRows * C + (r % kPanelRows) * C +
         c % C;
}

// Expand weights (WeightUse::kExpand, LoRA B [out, r]) are kept transposed in blocks of
// kExpandBlock output columns: block b holds W^T[0..r)[b * kExpandBlock ...) contiguously, so one
// block is one sequential read of r * kExpandBlock values. Columns are padded with zeros.
constexpr int64_t kExpandBlock = 128;
constexpr int64_t ExpandBlocks(int64_t out) { return (out + kExpandBlock - 1) / kExpandBlock; }

}  // namespace switchyard::cpu

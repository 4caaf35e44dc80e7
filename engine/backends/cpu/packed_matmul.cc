#include "engine/backends/cpu/packed_matmul.h"

#include <algorithm>
#include <cstring>

#include "engine/backends/cpu/packed_layout.h"
#include "engine/backends/cpu/quant_kernels.h"
#include "engine/core/threads.h"

namespace switchyard::cpu {
namespace {

// Rows of weights unpacked per oneDNN call: large enough for oneDNN's blocking, small enough to
// stay in L2/L3.
constexpr int64_t kUnpackRows = 256;

}  // namespace

Weight PackWeight(const Tensor& host) {
  SY_CHECK(host.rank() == 2 && host.dtype() != DType::kI32);
  Weight w;
  w.rows = host.dim(0);
  w.cols = host.dim(1);
  w.dtype = host.dtype();
  const int64_t pr = PaddedRows(w.rows), pc = PaddedCols(w.cols, w.dtype);
  const int64_t C = ChunkElements(w.dtype);
  const size_t elem = SizeOf(w.dtype);
  w.data = Tensor::Empty(w.dtype, {pr, pc});
  char* dst = w.data.data<char>();
  const char* src = host.data<char>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < pr; ++r) {
    for (int64_t c = 0; c < pc; c += C) {
      char* out = dst + PackedOffset(r, c, pc, w.dtype) * elem;
      const int64_t n = r < w.rows ? std::min(C, w.cols - c) : 0;
      if (n > 0) std::memcpy(out, src + (r * w.cols + c) * elem, n * elem);
      std::memset(out + std::max<int64_t>(n, 0) * elem, 0, (C - std::max<int64_t>(n, 0)) * elem);
    }
  }
  return w;
}

Weight TransposeWeight(const Tensor& host) {
  Weight w;
  w.rows = host.dim(0);
  w.cols = host.dim(1);
  w.dtype = host.dtype();
  w.use = WeightUse::kExpand;
  // [blocks][r][kExpandBlock], zero-padded.
  const int64_t blocks = ExpandBlocks(w.rows);
  const size_t elem = SizeOf(w.dtype);
  w.data = Tensor::Zeros(w.dtype, {blocks * w.cols, kExpandBlock});
  const char* src = host.data<char>();
  char* dst = w.data.data<char>();
  for (int64_t o = 0; o < w.rows; ++o) {
    const int64_t b = o / kExpandBlock, c = o % kExpandBlock;
    for (int64_t j = 0; j < w.cols; ++j) {
      std::memcpy(dst + ((b * w.cols + j) * kExpandBlock + c) * elem, src + (o * w.cols + j) * elem,
                  elem);
    }
  }
  return w;
}

Weight CopyQuantizedWeight(const Tensor& blocks, QuantType type, int64_t cols) {
  Weight w;
  w.rows = blocks.dim(0);
  w.cols = cols;
  w.dtype = DType::kU8;
  w.quant = type;
  w.data = Tensor::Empty(DType::kU8, blocks.shape());
  w.interleaved_rows = InterleavedRows(type, w.rows);
  InterleaveRows(type, blocks.data<uint8_t>(), w.rows, cols, w.data.data<uint8_t>());
  return w;
}

namespace {

// Row `row` of a quantized weight dequantized to F32; `stored` (row bytes) is scratch for a row
// that has to be put back as the file stored it first.
void DequantizeWeightRow(const Weight& w, int64_t row, std::vector<uint8_t>& stored, float* out) {
  const size_t row_bytes = static_cast<size_t>(w.data.dim(1));
  const uint8_t* src = w.data.data<uint8_t>() + row * row_bytes;
  if (row < w.interleaved_rows) {
    stored.resize(row_bytes);
    StoredRow(w.quant, w.data.data<uint8_t>(), w.rows, row, w.cols, stored.data());
    src = stored.data();
  }
  DequantizeRowFast(w.quant, src, out, w.cols);
}

void UnpackQuantizedRows(const Weight& w, int64_t row_begin, int64_t rows, DType out_dtype,
                         void* out) {
#pragma omp parallel
  {
    std::vector<float> f32(out_dtype == DType::kF32 ? 0 : static_cast<size_t>(w.cols));
    std::vector<uint8_t> stored;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < rows; ++i) {
      float* dst = out_dtype == DType::kF32 ? static_cast<float*>(out) + i * w.cols : f32.data();
      DequantizeWeightRow(w, row_begin + i, stored, dst);
      if (out_dtype == DType::kBF16) {
        uint16_t* o = static_cast<uint16_t*>(out) + i * w.cols;
        for (int64_t c = 0; c < w.cols; ++c) o[c] = F32ToBF16(dst[c]);
      }
    }
  }
}

}  // namespace

void UnpackRows(const Weight& w, int64_t row_begin, int64_t rows, DType out_dtype, void* out) {
  if (w.quant != QuantType::kNone) {
    SY_CHECK(out_dtype == DType::kF32 || out_dtype == DType::kBF16);
    UnpackQuantizedRows(w, row_begin, rows, out_dtype, out);
    return;
  }
  SY_CHECK(out_dtype == DType::kF32 || out_dtype == w.dtype);
  const int64_t pc = PaddedCols(w.cols, w.dtype), C = ChunkElements(w.dtype);
  const size_t elem = SizeOf(w.dtype);
  const KernelTable& k = Kernels();
  const char* src = w.data.data<char>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t r = row_begin + i;
    for (int64_t c = 0; c < w.cols; c += C) {
      const char* chunk = src + PackedOffset(r, c, pc, w.dtype) * elem;
      const int64_t n = std::min(C, w.cols - c);
      if (out_dtype == w.dtype) {
        std::memcpy(static_cast<char*>(out) + (i * w.cols + c) * elem, chunk, n * elem);
      } else {
        k.convert_to_f32(w.dtype, chunk, static_cast<float*>(out) + i * w.cols + c, n);
      }
    }
  }
}

void GatherRow(const Weight& w, int64_t row, float* out) {
  SY_CHECK(w.parts.empty());  // stacks are fused projections, never tables
  if (w.quant != QuantType::kNone) {
    thread_local std::vector<uint8_t> stored;  // embedding lookups: a row per token
    DequantizeWeightRow(w, row, stored, out);
    return;
  }
  const int64_t pc = PaddedCols(w.cols, w.dtype), C = ChunkElements(w.dtype);
  const size_t elem = SizeOf(w.dtype);
  const KernelTable& k = Kernels();
  for (int64_t c = 0; c < w.cols; c += C) {
    k.convert_to_f32(w.dtype, w.data.data<char>() + PackedOffset(row, c, pc, w.dtype) * elem,
                     out + c, std::min(C, w.cols - c));
  }
}

void PackedMatmul::Linear(const float* x, int64_t m, const Weight& w, const float* bias, float* y,
                          bool accumulate) {
  if (m == 0) return;
  LinearInto(x, m, w, bias, y, w.rows, accumulate);
}

void PackedMatmul::LinearInto(const float* x, int64_t m, const Weight& w, const float* bias,
                              float* y, int64_t ldy, bool accumulate) {
  if (!w.parts.empty()) {
    int64_t r0 = 0;
    for (const Weight& part : w.parts) {
      LinearInto(x, m, part, bias != nullptr ? bias + r0 : nullptr, y + r0, ldy, accumulate);
      r0 += part.rows;
    }
  } else if (w.quant != QuantType::kNone && m <= QuantSmallMLimit(quant_activations_)) {
    QuantSmallM(x, nullptr, w.cols, m, w, bias, y, ldy, accumulate);
  } else if (w.quant == QuantType::kNone && m <= kSmallMLimit) {
    SY_CHECK(ldy == w.rows);
    SmallM(x, m, w, bias, y, accumulate);
  } else {
    LargeMInto(x, m, w, bias, y, ldy, accumulate);
  }
}

void PackedMatmul::SmallM(const float* x, int64_t m, const Weight& w, const float* bias, float* y,
                          bool accumulate) {
  const KernelTable& k = Kernels();
  const int64_t pc = PaddedCols(w.cols, w.dtype);
  xp_.resize(static_cast<size_t>(m * pc));
  k.prepare_x(w.dtype, x, nullptr, m, w.cols, w.cols, pc, xp_.data());
  const PackedMatmulArgs args{xp_.data(), m, w.data.raw(), w.dtype,   w.rows, pc,
                              bias,       y, w.rows,       accumulate};
  const int64_t panels = PaddedRows(w.rows) / kPanelRows;
  const int threads = m * w.rows * w.cols < (1 << 16) ? 1 : ComputeThreads();
  // Several pieces per thread, taken dynamically: the threads' share of memory bandwidth is not
  // equal on a shared host, and a static split leaves the fast one waiting.
  const int64_t piece = std::max<int64_t>(1, panels / (threads * 8));
  const int64_t pieces = (panels + piece - 1) / piece;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t i = 0; i < pieces; ++i) {
    k.matmul_packed(args, i * piece, std::min(panels, (i + 1) * piece));
  }
}

void PackedMatmul::QuantSmallM(const float* x, const int32_t* x_rows, int64_t ldx, int64_t m,
                               const Weight& w, const float* bias, float* y, int64_t ldy,
                               bool accumulate) {
  QuantMatmulArgs args{w.quant,
                       w.data.data<uint8_t>(),
                       static_cast<size_t>(w.data.dim(1)),
                       w.cols,
                       x,
                       x_rows,
                       ldx,
                       m,
                       bias,
                       y,
                       ldy,
                       accumulate};
  args.interleaved_rows = w.interleaved_rows;
  if (quant_activations_ == QuantActivations::kInt8) {
    QuantizeActivations(x, x_rows, ldx, m, w.cols, &xq_);
    args.xq = &xq_;
  }
  const int threads = m * w.rows * w.cols < (1 << 16) ? 1 : ComputeThreads();
  // Pieces of 16 rows handed out dynamically, as SmallM does with panels.
  constexpr int64_t kRows = 16;
  const int64_t pieces = (w.rows + kRows - 1) / kRows;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
  for (int64_t i = 0; i < pieces; ++i) {
    QuantMatmulRows(args, i * kRows, std::min(w.rows, (i + 1) * kRows));
  }
}

void PackedMatmul::Grouped(std::span<const LinearJob> jobs) {
  const KernelTable& k = Kernels();
  grouped_offsets_.resize(jobs.size() + 1);
  size_t total = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    grouped_offsets_[j] = total;
    if (jobs[j].w->use == WeightUse::kExpand || jobs[j].w->quant != QuantType::kNone) continue;
    total += static_cast<size_t>(jobs[j].m * PaddedCols(jobs[j].w->cols, jobs[j].w->dtype));
  }
  xp_.resize(std::max<size_t>(total, 1));
  const bool int8_activations = quant_activations_ == QuantActivations::kInt8;
  if (int8_activations && grouped_xq_.size() < jobs.size()) grouped_xq_.resize(jobs.size());
  const int64_t n = static_cast<int64_t>(jobs.size());
  // Laying out x is a copy: worth threads only when there is a lot of it.
#pragma omp parallel for schedule(dynamic, 1) if (n > 1 && total > (1 << 18))
  for (int64_t j = 0; j < n; ++j) {
    const LinearJob& job = jobs[j];
    if (job.m > 0 && job.w->quant != QuantType::kNone && int8_activations) {
      QuantizeActivations(job.x, job.x_rows, job.ldx, job.m, job.w->cols, &grouped_xq_[j]);
    }
    if (job.m == 0 || job.w->use == WeightUse::kExpand || job.w->quant != QuantType::kNone) {
      continue;
    }
    k.prepare_x(job.w->dtype, job.x, job.x_rows, job.m, job.ldx, job.w->cols,
                PaddedCols(job.w->cols, job.w->dtype), xp_.data() + grouped_offsets_[j]);
  }
  // Pieces of about kPieceWork multiply-adds: a segment of one row (a decode token of its own
  // adapter) is tiny, and scheduling each 128-column block of it separately costs more than the
  // arithmetic.
  constexpr int64_t kPieceWork = 1 << 16;
  pieces_.clear();
  int64_t work = 0;
  for (int j = 0; j < static_cast<int>(jobs.size()); ++j) {
    const LinearJob& job = jobs[j];
    if (job.m == 0) continue;
    if (job.w->quant != QuantType::kNone) {
      int64_t per = std::max<int64_t>(1, kPieceWork / (job.m * job.w->cols));
      // Whole interleaved groups: a piece that split one would multiply the group twice.
      if (job.w->interleaved_rows > 0)
        per = (per + kInterleavedRows - 1) / kInterleavedRows * kInterleavedRows;
      for (int64_t r = 0; r < job.w->rows; r += per)
        pieces_.push_back({j, r, std::min(job.w->rows, r + per)});
    } else if (job.w->use == WeightUse::kExpand) {
      const int64_t blocks = ExpandBlocks(job.w->rows);
      const int64_t per = std::max<int64_t>(1, kPieceWork / (job.m * kExpandBlock * job.w->cols));
      for (int64_t b = 0; b < blocks; b += per)
        pieces_.push_back({j, b, std::min(blocks, b + per)});
    } else {
      const int64_t panels = PaddedRows(job.w->rows) / kPanelRows;
      const int64_t per = std::max<int64_t>(
          1, kPieceWork / (job.m * kPanelRows * std::max<int64_t>(job.w->cols, 1)));
      for (int64_t p = 0; p < panels; p += per)
        pieces_.push_back({j, p, std::min(panels, p + per)});
    }
    work += job.m * job.w->rows * job.w->cols;
  }
  const int64_t count = static_cast<int64_t>(pieces_.size());
  const int threads = work < (1 << 16) ? 1 : ComputeThreads();
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t i = 0; i < count; ++i) {
    const Piece& piece = pieces_[i];
    const LinearJob& job = jobs[piece.job];
    if (job.w->quant != QuantType::kNone) {
      QuantMatmulRows(
          {job.w->quant, job.w->data.data<uint8_t>(), static_cast<size_t>(job.w->data.dim(1)),
           job.w->cols, job.x, job.x_rows, job.ldx, job.m, nullptr, job.y, job.ldy, job.accumulate,
           int8_activations ? &grouped_xq_[piece.job] : nullptr, job.w->interleaved_rows},
          piece.begin, piece.end);
      continue;
    }
    if (job.w->use == WeightUse::kExpand) {
      k.expand({job.x, job.x_rows, job.ldx, job.m, job.w->data.raw(), job.w->dtype, job.w->cols,
                job.w->rows, job.y, job.ldy, job.accumulate},
               piece.begin, piece.end);
      continue;
    }
    const PackedMatmulArgs args{xp_.data() + grouped_offsets_[piece.job],
                                job.m,
                                job.w->data.raw(),
                                job.w->dtype,
                                job.w->rows,
                                PaddedCols(job.w->cols, job.w->dtype),
                                nullptr,
                                job.y,
                                job.ldy,
                                job.accumulate};
    k.matmul_packed(args, piece.begin, piece.end);
  }
}

void PackedMatmul::LargeM(const float* x, int64_t m, const Weight& w, const float* bias, float* y,
                          bool accumulate) {
  LargeMInto(x, m, w, bias, y, w.rows, accumulate);
}

void PackedMatmul::LargeMInto(const float* x, int64_t m, const Weight& w, const float* bias,
                              float* y, int64_t ldy, bool accumulate) {
  const bool bf16_math = precision_ == MatmulPrecision::kBF16 &&
                         (w.dtype == DType::kBF16 || w.quant != QuantType::kNone);
  const int64_t K = w.cols;
  if (bf16_math) {
    x_bf16_.resize(static_cast<size_t>(m * K));
    uint16_t* xb = x_bf16_.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m * K; ++i) xb[i] = F32ToBF16(x[i]);
  }
  for (int64_t n0 = 0; n0 < w.rows; n0 += kUnpackRows) {
    const int64_t rows = std::min(kUnpackRows, w.rows - n0);
    const float* b = bias != nullptr ? bias + n0 : nullptr;
    if (bf16_math) {
      panel_bf16_.resize(static_cast<size_t>(rows * K));
      UnpackRows(w, n0, rows, DType::kBF16, panel_bf16_.data());
      onednn_.Matmul(x_bf16_.data(), panel_bf16_.data(), DType::kBF16, m, K, rows, b, y + n0, ldy,
                     accumulate);
    } else {
      panel_f32_.resize(static_cast<size_t>(rows * K));
      UnpackRows(w, n0, rows, DType::kF32, panel_f32_.data());
      onednn_.Matmul(x, panel_f32_.data(), DType::kF32, m, K, rows, b, y + n0, ldy, accumulate);
    }
  }
}

}  // namespace switchyard::cpu

// The op interface every engine backend implements (CPU now, CUDA behind the same interface).
// Model code is written against this interface only. Tensors passed to a backend live on its
// device. Ops check shapes with SY_CHECK: a mismatch is a bug in the caller, never a request error.
//
// Thread-safety: a backend is driven by one thread at a time (the engine thread).
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backends/moe_ops.h"
#include "engine/core/activation.h"
#include "engine/core/quant.h"
#include "engine/core/tensor.h"

namespace switchyard {

// How the CPU backend runs large-M GEMMs against BF16 and quantized weights (F32 weights always
// take F32 math). kF32 converts weight panels to F32 and keeps activations in F32 (matches an F32
// reference); kBF16 rounds activations to BF16 and uses the BF16 dot-product units (about twice
// the FLOP rate, ~3 significant digits); kAuto is kBF16 on a CPU with BF16 dot-product
// instructions (AVX512-BF16 or AMX-BF16) and kF32 elsewhere, where oneDNN would emulate them.
enum class MatmulPrecision { kF32, kBF16, kAuto };

// How the CPU backend multiplies block-quantized weights by activations in decode-sized products.
// kInt8 quantizes each activation row to int8 per block of 32 values and multiplies with integer
// dot products, as llama.cpp does (about twice the speed; the activations' rounding adds an error
// of the order of the weights' own); kF32 multiplies the dequantized weights by F32 activations
// (equal to a product of the dequantized weights up to F32 rounding).
enum class QuantActivations { kF32, kInt8 };

// Paged KV cache of one model: K and V of shape [layers, blocks, kv_heads, block_size, head_dim].
struct KvCacheSpec {
  int num_layers = 0;
  int num_blocks = 0;
  int block_size = 16;
  int num_kv_heads = 0;
  int head_dim = 0;
  DType dtype = DType::kF32;  // F32, BF16 or F16; K and V are stored rounded to it
};

struct KvCache {
  KvCacheSpec spec;
  Tensor k;
  Tensor v;
};

// A weight matrix [rows, cols] prepared by a backend for its kernels: the layout of `data` is the
// backend's business (the CPU packs rows into 16-row panels; see cpu/packed_matmul.h).
// How a weight will be used, which decides its layout on the device.
enum class WeightUse {
  kDefault,  // y = x W^T with a long inner dimension (base linears, routers, LoRA shrink)
  kExpand,   // few columns (LoRA B: [out, r]): kept transposed, applied as sum_j x_j W[:, j]
};

struct Weight {
  int64_t rows = 0;
  int64_t cols = 0;
  DType dtype = DType::kF32;           // U8 when quantized
  QuantType quant = QuantType::kNone;  // set: `data` holds rows of blocks (core/quant.h)
  // The CPU backend's quantized weights: rows [0, interleaved_rows) of `data` are interleaved in
  // groups for its decode kernels (cpu/quant_kernels.h); the rest as stored.
  int64_t interleaved_rows = 0;
  WeightUse use = WeightUse::kDefault;
  Tensor data;
  // A stack of row blocks in different quantized formats (q/k/v or gate/up fused from a file that
  // stores them differently, as llama.cpp's Q4_K_M does): rows are the parts' rows in order, and
  // `data` is undefined.
  std::vector<Weight> parts;
  bool defined() const { return data.defined() || !parts.empty(); }
  size_t bytes() const {
    size_t n = data.defined() ? data.nbytes() : 0;
    for (const Weight& p : parts) n += p.bytes();
    return n;
  }
};

// One of many independent products of GroupedLinear: y[m, N] (+)= x[m, K] * w^T, x and y F32
// with leading dimensions ldx and ldy (device pointers).
struct LinearJob {
  const Weight* w;
  const float* x;
  int64_t ldx;
  int64_t m;
  float* y;
  int64_t ldy;
  bool accumulate;
  const int32_t* x_rows = nullptr;  // when set, x row i is x + x_rows[i] * ldx (a gather)
};

// Per-step token metadata, on the backend's device. All I32.
struct StepMetadata {
  int64_t num_tokens = 0;
  int64_t num_seqs = 0;
  Tensor token_ids;     // [T]
  Tensor positions;     // [T]
  Tensor slot_mapping;  // [T]: block_id * block_size + offset of the token's KV slot
  Tensor token_seq;     // [T]: index of the token's sequence
  Tensor block_tables;  // [S, max_blocks]
};

struct AttentionParams {
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  float scale = 1.0f;
  int sliding_window = 0;  // 0: full causal attention
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;
  virtual std::string Describe() const = 0;

  // Memory. Allocate leaves contents uninitialised.
  virtual absl::StatusOr<Tensor> Allocate(DType dtype, const Shape& shape) = 0;
  // Returns a device tensor with the contents of a host tensor (may alias it on the CPU).
  virtual absl::StatusOr<Tensor> Upload(const Tensor& host) = 0;
  // Prepares a host matrix [rows, cols] (F32, F16 or BF16) for Linear, GroupedLinear and
  // Embedding. kExpand weights must be F32 or BF16 and serve GroupedLinear only.
  virtual absl::StatusOr<Weight> PrepareWeight(const Tensor& host,
                                               WeightUse use = WeightUse::kDefault) = 0;
  // Prepares a block-quantized host matrix (`blocks`: U8 [rows, row bytes] of `type`, `cols`
  // weights per row) for Linear, GroupedLinear and Embedding, keeping the blocks' values
  // exactly. UNIMPLEMENTED on a backend without kernels for `type`.
  virtual absl::StatusOr<Weight> PrepareQuantizedWeight(const Tensor& blocks, QuantType type,
                                                        int64_t cols) = 0;
  virtual absl::Status CopyToHost(const Tensor& src, Tensor& host) = 0;
  virtual absl::StatusOr<KvCache> AllocateKvCache(const KvCacheSpec& spec) = 0;
  // Moves prepared weights into one allocation (on the CPU: transparent huge pages), so that a
  // set read together, such as one adapter's matrices, streams without page-boundary stalls.
  virtual absl::Status Consolidate(std::span<Weight* const> weights) = 0;
  // Makes host-built step metadata visible to the device.
  virtual absl::StatusOr<StepMetadata> UploadMetadata(const StepMetadata& host) = 0;
  // Waits for queued work; reports asynchronous failures.
  virtual absl::Status Synchronize() = 0;

  // out[t] = F32(table[ids[t]])
  virtual void Embedding(const Weight& table, const Tensor& ids, Tensor& out) = 0;
  // out[t] = RMSNorm(x[t]) * weight, in F32.
  virtual void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) = 0;
  // y[M, N] (+)= x[M, K] * w[N, K]^T (+ bias[N]); x and y F32, w F32/F16/BF16.
  virtual void Linear(const Tensor& x, const Weight& w, const Tensor* bias, Tensor& y,
                      bool accumulate) = 0;
  // Every job's product, in one pass over the device (the grouped GEMM behind MoE-LoRA: routers,
  // LoRA shrink and expand of each (adapter, expert) segment). A job's rows come out exactly as
  // Linear would compute them.
  virtual void GroupedLinear(std::span<const LinearJob> jobs) = 0;
  // cos_sin[t] = [cos(pos_t * inv_freq), sin(pos_t * inv_freq)]: [T, head_dim], F32. Computed once
  // per step and shared by all layers.
  virtual void RopeTable(const Tensor& positions, const Tensor& inv_freq, Tensor& cos_sin) = 0;
  // Splits fused qkv rows [T, (heads + 2 kv_heads) * head_dim] into q, k and v, applying
  // rotate-half RoPE (Hugging Face convention) to q and k.
  virtual void SplitQkvRope(const Tensor& qkv, const Tensor& cos_sin, int num_heads,
                            int num_kv_heads, Tensor& q, Tensor& k, Tensor& v) = 0;
  // Stores k and v rows [T, kv_heads * head_dim] of `layer` into their slots.
  virtual void WriteKv(const Tensor& k, const Tensor& v, const StepMetadata& meta, int layer,
                       KvCache& cache) = 0;
  // Causal (optionally windowed) attention of every token over its sequence's cached keys.
  virtual void Attention(const Tensor& q, const StepMetadata& meta, int layer, const KvCache& cache,
                         const AttentionParams& params, Tensor& out) = 0;
  // out[t, :F] = act(gate_up[t, :F]) * gate_up[t, F:]
  virtual void GatedActivation(const Tensor& gate_up, Activation act, Tensor& out) = 0;
  // out[i] = x[rows[i]]
  virtual void GatherRows(const Tensor& x, const Tensor& rows, Tensor& out) = 0;
  // Every element of t set to zero.
  virtual void ZeroFill(Tensor& t) = 0;

  // -- MoE-LoRA (the slot and segment layout: moe_ops.h) --

  // Routes every unit's rows: softmax of logits[logits_row + r, :E] in F32, the unit's selection
  // into its slots (slot_expert I32, slot_weight F32; expert -1 in a slot left empty), and where
  // stats_off >= 0 the row's sums added to its record in `stats` (F64; may be null when no unit
  // has a record). A slot's selections come in the rule's order (top-k: by falling probability).
  // Gated units (RouteUnit::gate_rows_off >= 0) read `gates` (device memory; may be null when no
  // unit is gated).
  virtual void Route(const Tensor& logits, std::span<const RouteUnit> units, Tensor& slot_expert,
                     Tensor& slot_weight, Tensor* stats, const RouteGates* gates) = 0;
  // Sorts the filled slots of `units` by segment (seg_base + expert), stably: order[k] is the slot
  // at sorted position k, position[slot] its sorted position (-1 for an empty slot), seg_start[s]
  // the first position of segment s, with seg_start[num_segments] the number of filled slots.
  virtual void SortSegments(const Tensor& slot_expert, std::span<const RouteUnit> units,
                            int32_t num_segments, Tensor& order, Tensor& position,
                            Tensor& seg_start) = 0;
  // For every sorted position k of each segment s whose weights[s] is set:
  // y[k, :N] (+)= x[row(k), :K] * W^T, row(k) = slot_rows[order[k]] when slot_rows is given, else
  // k; x and y F32 with leading dimensions ldx and ldy. Rows of other segments are left alone.
  virtual void SegmentedLinear(std::span<const Weight* const> weights, const Tensor& seg_start,
                               const Tensor& x, int64_t ldx, const Tensor* order,
                               const Tensor* slot_rows, Tensor& y, int64_t ldy,
                               bool accumulate) = 0;
  // out[k] = x[slot_rows[order[k]], :out.dim(1)] for the sorted positions k < seg_start's last.
  virtual void GatherSorted(const Tensor& x, const Tensor& order, const Tensor& slot_rows,
                            const Tensor& seg_start, Tensor& out) = 0;
  // GatedActivation of the sorted rows of each range's segments (gate_up [k, 2F] -> out [k, F]).
  virtual void SegmentedGatedActivation(const Tensor& gate_up, const Tensor& seg_start,
                                        std::span<const SegmentActivation> ranges, Tensor& out) = 0;
  enum class Combine { kAdd, kZero };
  // For every routed row r of every unit: the destination (row, columns) of CombineUnit becomes
  // keep * itself + scale * the sum over the row's filled slots, by ascending expert, of
  // weight * src[position[slot], :width] (keep 0: the old value is not read); with `bias`, also
  // + scale * (sum of the weights - 1) * bias. kZero sets it to zero. src [A, >= width] F32. No
  // two units may share a destination row (their order would be undefined): callers split them.
  virtual void CombineSlots(const Tensor& src, const Tensor& slot_expert, const Tensor& slot_weight,
                            const Tensor& position, std::span<const CombineUnit> units,
                            const Tensor* dst_rows, const Tensor* bias, Combine mode,
                            Tensor& dst) = 0;
  // dst[dst_rows[i], col : col + width] += x[i, :width] for every row i of x.
  virtual void ScatterAddRows(const Tensor& x, int64_t width, const Tensor& dst_rows, int64_t col,
                              Tensor& dst) = 0;
};

}  // namespace switchyard

#include "engine/backends/cpu/cpu_backend.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/backends/cpu/kernels.h"
#include "engine/backends/cpu/moe_ops.h"
#include "engine/backends/cpu/packed_matmul.h"
#include "engine/core/threads.h"

namespace switchyard {
namespace {

CpuBackendOptions Resolved(CpuBackendOptions options) {
  options.matmul_precision = ResolveMatmulPrecision(options.matmul_precision, CpuHasBF16Dot());
  return options;
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuBackendOptions& options)
      : options_(Resolved(options)),
        kernels_(cpu::Kernels()),
        threads_(ComputeThreads()),
        matmul_(options_.matmul_precision, options_.quant_activations) {}

  Device device() const override { return Device::kCpu; }

  std::string Describe() const override {
    return absl::StrFormat(
        "cpu (%s kernels, %d threads, %s matmul, %s activations for quantized weights)",
        kernels_.isa, threads_, options_.matmul_precision == MatmulPrecision::kF32 ? "f32" : "bf16",
        options_.quant_activations == QuantActivations::kInt8 ? "int8" : "f32");
  }

  absl::StatusOr<Tensor> Allocate(DType dtype, const Shape& shape) override {
    return Tensor::Empty(dtype, shape);
  }

  absl::StatusOr<Tensor> Upload(const Tensor& host) override { return host; }

  absl::StatusOr<Weight> PrepareWeight(const Tensor& host, WeightUse use) override {
    if (host.rank() != 2 || host.dtype() == DType::kI32 || host.dtype() == DType::kF64) {
      return absl::InvalidArgumentError("a weight must be a floating-point matrix");
    }
    if (use == WeightUse::kExpand) {
      if (host.dtype() != DType::kF32 && host.dtype() != DType::kBF16) {
        return absl::InvalidArgumentError("expand weights must be F32 or BF16");
      }
      return cpu::TransposeWeight(host);
    }
    return cpu::PackWeight(host);
  }

  absl::StatusOr<Weight> PrepareQuantizedWeight(const Tensor& blocks, QuantType type,
                                                int64_t cols) override {
    if (type == QuantType::kNone || blocks.dtype() != DType::kU8 || blocks.rank() != 2 ||
        cols <= 0 || cols % Traits(type).values != 0 ||
        static_cast<size_t>(blocks.dim(1)) != QuantRowBytes(type, cols)) {
      return absl::InvalidArgumentError(absl::StrCat("a ", Traits(type).name, " weight of ", cols,
                                                     " columns must be U8 rows of whole blocks"));
    }
    return cpu::CopyQuantizedWeight(blocks, type, cols);
  }

  absl::Status CopyToHost(const Tensor& src, Tensor& host) override {
    SY_CHECK(src.nbytes() == host.nbytes());
    if (src.raw() != host.raw()) std::memcpy(host.raw(), src.raw(), src.nbytes());
    return absl::OkStatus();
  }

  absl::StatusOr<KvCache> AllocateKvCache(const KvCacheSpec& spec) override {
    if (spec.dtype != DType::kF32 && spec.dtype != DType::kBF16 && spec.dtype != DType::kF16) {
      return absl::InvalidArgumentError(
          absl::StrCat("the KV cache holds F32, BF16 or F16, not ", DTypeName(spec.dtype)));
    }
    KvCache cache;
    cache.spec = spec;
    const Shape shape = {spec.num_layers, spec.num_blocks, spec.num_kv_heads, spec.block_size,
                         spec.head_dim};
    // Zeroed so that never-written slots hold finite values (they are never read, but this keeps
    // tools like valgrind quiet and makes stale reads visible as zeros rather than garbage).
    cache.k = Tensor::Zeros(spec.dtype, shape);
    cache.v = Tensor::Zeros(spec.dtype, shape);
    return cache;
  }

  absl::Status Consolidate(std::span<Weight* const> weights) override {
    size_t total = 0;
    for (const Weight* w : weights) total += (w->data.nbytes() + 63) / 64 * 64;
    if (total == 0) return absl::OkStatus();
    Tensor arena = Tensor::Empty(DType::kF32, {static_cast<int64_t>((total + 3) / 4)});
    char* base = arena.data<char>();
    auto owner = std::make_shared<Tensor>(arena);
    size_t offset = 0;
    for (Weight* w : weights) {
      std::memcpy(base + offset, w->data.raw(), w->data.nbytes());
      w->data = Tensor::Wrap(base + offset, w->data.dtype(), w->data.shape(), owner);
      offset += (w->data.nbytes() + 63) / 64 * 64;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<StepMetadata> UploadMetadata(const StepMetadata& host) override { return host; }

  absl::Status Synchronize() override { return absl::OkStatus(); }

  void Embedding(const Weight& table, const Tensor& ids, Tensor& out) override {
    const int64_t T = ids.numel();
    SY_CHECK(out.dim(0) == T && out.dim(1) == table.cols && ids.dtype() == DType::kI32);
    const int32_t* id = ids.data<int32_t>();
#pragma omp parallel for schedule(static) if (T > 1)
    for (int64_t t = 0; t < T; ++t) {
      cpu::GatherRow(table, id[t], out.data<float>() + t * table.cols);
    }
  }

  void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    const int64_t T = x.dim(0), d = x.dim(1);
    SY_CHECK(weight.numel() == d && out.dim(0) == T && out.dim(1) == d);
#pragma omp parallel for schedule(static) if (T > 4)
    for (int64_t t = 0; t < T; ++t) {
      kernels_.rms_norm(x.data<float>() + t * d, weight.data<float>(), eps,
                        out.data<float>() + t * d, d);
    }
  }

  void Linear(const Tensor& x, const Weight& w, const Tensor* bias, Tensor& y,
              bool accumulate) override {
    SY_CHECK(x.dim(1) == w.cols && y.dim(0) == x.dim(0) && y.dim(1) == w.rows);
    SY_CHECK(bias == nullptr || bias->numel() == w.rows);
    matmul_.Linear(x.data<float>(), x.dim(0), w, bias != nullptr ? bias->data<float>() : nullptr,
                   y.data<float>(), accumulate);
  }

  void GroupedLinear(std::span<const LinearJob> jobs) override { matmul_.Grouped(jobs); }

  void RopeTable(const Tensor& positions, const Tensor& inv_freq, Tensor& cos_sin) override {
    const int64_t T = positions.numel(), half = inv_freq.numel();
    SY_CHECK(cos_sin.dim(0) == T && cos_sin.dim(1) == 2 * half);
    const int32_t* pos = positions.data<int32_t>();
    const float* freq = inv_freq.data<float>();
#pragma omp parallel for schedule(static) if (T > 16)
    for (int64_t t = 0; t < T; ++t) {
      float* row = cos_sin.data<float>() + t * 2 * half;
      const float p = static_cast<float>(pos[t]);
      for (int64_t i = 0; i < half; ++i) {
        const float angle = p * freq[i];  // F32 product, as Hugging Face computes it
        row[i] = std::cos(angle);
        row[half + i] = std::sin(angle);
      }
    }
  }

  void SplitQkvRope(const Tensor& qkv, const Tensor& cos_sin, int num_heads, int num_kv_heads,
                    Tensor& q, Tensor& k, Tensor& v) override {
    const int64_t T = qkv.dim(0);
    const int64_t hd = cos_sin.dim(1), half = hd / 2;
    const int64_t qw = num_heads * hd, kvw = num_kv_heads * hd;
    SY_CHECK(qkv.dim(1) == qw + 2 * kvw && cos_sin.dim(0) == T);
    SY_CHECK(q.dim(1) == qw && k.dim(1) == kvw && v.dim(1) == kvw);
#pragma omp parallel for schedule(static) if (T > 4)
    for (int64_t t = 0; t < T; ++t) {
      const float* row = qkv.data<float>() + t * qkv.dim(1);
      const float* c = cos_sin.data<float>() + t * hd;
      const float* s = c + half;
      const auto rotate = [&](const float* src, float* dst, int heads) {
        for (int h = 0; h < heads; ++h) {
          const float* x = src + h * hd;
          float* y = dst + h * hd;
          for (int64_t i = 0; i < half; ++i) {
            y[i] = x[i] * c[i] - x[i + half] * s[i];
            y[i + half] = x[i + half] * c[i] + x[i] * s[i];
          }
        }
      };
      rotate(row, q.data<float>() + t * qw, num_heads);
      rotate(row + qw, k.data<float>() + t * kvw, num_kv_heads);
      std::memcpy(v.data<float>() + t * kvw, row + qw + kvw, kvw * sizeof(float));
    }
  }

  void WriteKv(const Tensor& k, const Tensor& v, const StepMetadata& meta, int layer,
               KvCache& cache) override {
    const KvCacheSpec& sp = cache.spec;
    const int64_t T = meta.num_tokens, hd = sp.head_dim, nkv = sp.num_kv_heads;
    SY_CHECK(k.dim(0) == T && k.dim(1) == nkv * hd && v.dim(1) == nkv * hd);
    const int32_t* slots = meta.slot_mapping.data<int32_t>();
    const size_t esize = SizeOf(sp.dtype);
    const size_t layer_stride = static_cast<size_t>(sp.num_blocks) * nkv * sp.block_size * hd;
    char* kl = cache.k.data<char>() + layer * layer_stride * esize;
    char* vl = cache.v.data<char>() + layer * layer_stride * esize;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t block = slots[t] / sp.block_size, offset = slots[t] % sp.block_size;
      for (int64_t h = 0; h < nkv; ++h) {
        const size_t dst = ((block * nkv + h) * sp.block_size + offset) * hd * esize;
        ConvertFromF32(sp.dtype, k.data<float>() + t * nkv * hd + h * hd, kl + dst, hd);
        ConvertFromF32(sp.dtype, v.data<float>() + t * nkv * hd + h * hd, vl + dst, hd);
      }
    }
  }

  void Attention(const Tensor& q, const StepMetadata& meta, int layer, const KvCache& cache,
                 const AttentionParams& p, Tensor& out) override {
    const KvCacheSpec& sp = cache.spec;
    const int64_t T = meta.num_tokens;
    const int G = p.num_heads / p.num_kv_heads, hd = p.head_dim;
    SY_CHECK(q.dim(0) == T && q.dim(1) == p.num_heads * hd && out.dim(1) == q.dim(1));
    const size_t layer_stride =
        static_cast<size_t>(sp.num_blocks) * sp.num_kv_heads * sp.block_size * hd;
    const size_t esize = SizeOf(sp.dtype);
    const char* kl = cache.k.data<char>() + layer * layer_stride * esize;
    const char* vl = cache.v.data<char>() + layer * layer_stride * esize;
    const int32_t* pos = meta.positions.data<int32_t>();
    const int32_t* seq = meta.token_seq.data<int32_t>();
    const int64_t max_blocks = meta.block_tables.dim(1);
    const int32_t* tables = meta.block_tables.data<int32_t>();
    const int64_t tasks = T * p.num_kv_heads;
#pragma omp parallel
    {
      static thread_local std::vector<float> scratch;
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < tasks; ++task) {
        const int64_t t = task / p.num_kv_heads;
        const int h = static_cast<int>(task % p.num_kv_heads);
        const int64_t hi = pos[t];
        const int64_t lo =
            p.sliding_window > 0 ? std::max<int64_t>(0, hi - p.sliding_window + 1) : 0;
        const size_t need = static_cast<size_t>(G) * (hi - lo + 1);
        if (scratch.size() < need) scratch.resize(need);
        cpu::AttentionTask task_args{
            q.data<float>() + t * q.dim(1) + h * G * hd,
            out.data<float>() + t * out.dim(1) + h * G * hd,
            G,
            hd,
            kl,
            vl,
            sp.dtype,
            sp.num_kv_heads,
            h,
            sp.block_size,
            tables + seq[t] * max_blocks,
            lo,
            hi,
            p.scale,
            scratch.data(),
        };
        kernels_.attend(task_args);
      }
    }
  }

  void GatedActivation(const Tensor& gate_up, Activation act, Tensor& out) override {
    const int64_t T = gate_up.dim(0), F = out.dim(1);
    SY_CHECK(gate_up.dim(1) == 2 * F && out.dim(0) == T);
#pragma omp parallel for schedule(static) if (T * F > 8192)
    for (int64_t t = 0; t < T; ++t) {
      const float* g = gate_up.data<float>() + t * 2 * F;
      kernels_.gated_activation(act, g, g + F, out.data<float>() + t * F, F);
    }
  }

  void ZeroFill(Tensor& t) override { std::memset(t.raw(), 0, t.nbytes()); }

  void Route(const Tensor& logits, std::span<const RouteUnit> units, Tensor& slot_expert,
             Tensor& slot_weight, Tensor* stats, const RouteGates* gates) override {
    cpu::Route(logits, units, slot_expert, slot_weight, stats, gates);
  }

  void SortSegments(const Tensor& slot_expert, std::span<const RouteUnit> units,
                    int32_t num_segments, Tensor& order, Tensor& position,
                    Tensor& seg_start) override {
    cpu::SortSegments(slot_expert, units, num_segments, order, position, seg_start);
  }

  void SegmentedLinear(std::span<const Weight* const> weights, const Tensor& seg_start,
                       const Tensor& x, int64_t ldx, const Tensor* order, const Tensor* slot_rows,
                       Tensor& y, int64_t ldy, bool accumulate) override {
    cpu::SegmentJobs(weights, seg_start, x, ldx, order, slot_rows, y, ldy, accumulate,
                     segment_rows_, segment_jobs_);
    if (!segment_jobs_.empty()) matmul_.Grouped(segment_jobs_);
  }

  void GatherSorted(const Tensor& x, const Tensor& order, const Tensor& slot_rows,
                    const Tensor& seg_start, Tensor& out) override {
    cpu::GatherSorted(x, order, slot_rows, seg_start, out);
  }

  void SegmentedGatedActivation(const Tensor& gate_up, const Tensor& seg_start,
                                std::span<const SegmentActivation> ranges, Tensor& out) override {
    cpu::SegmentedGatedActivation(kernels_, gate_up, seg_start, ranges, out);
  }

  void CombineSlots(const Tensor& src, const Tensor& slot_expert, const Tensor& slot_weight,
                    const Tensor& position, std::span<const CombineUnit> units,
                    const Tensor* dst_rows, const Tensor* bias, Combine mode,
                    Tensor& dst) override {
    cpu::CombineSlots(src, slot_expert, slot_weight, position, units, dst_rows, bias, mode, dst);
  }

  void ScatterAddRows(const Tensor& x, int64_t width, const Tensor& dst_rows, int64_t col,
                      Tensor& dst) override {
    cpu::ScatterAddRows(x, width, dst_rows, col, dst);
  }

  void GatherRows(const Tensor& x, const Tensor& rows, Tensor& out) override {
    const int64_t R = rows.numel(), d = x.dim(1);
    SY_CHECK(out.dim(0) == R && out.dim(1) == d && x.dtype() == DType::kF32);
    for (int64_t i = 0; i < R; ++i) {
      std::memcpy(out.data<float>() + i * d, x.data<float>() + rows.data<int32_t>()[i] * d,
                  d * sizeof(float));
    }
  }

 private:
  std::vector<int32_t> segment_rows_;  // SegmentedLinear's gathered rows, reused
  std::vector<LinearJob> segment_jobs_;
  CpuBackendOptions options_;
  const cpu::KernelTable& kernels_;
  int threads_;
  cpu::PackedMatmul matmul_;
};

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(const CpuBackendOptions& options) {
  return std::make_unique<CpuBackend>(options);
}

bool CpuHasBF16Dot() {
  // Every CPU with AMX-BF16 (Sapphire Rapids on) also has AVX512-BF16.
  const char* force = std::getenv("SWITCHYARD_ISA");
  if (force != nullptr && std::strcmp(force, "avx2") == 0) return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
}

MatmulPrecision ResolveMatmulPrecision(MatmulPrecision requested, bool bf16_dot) {
  if (requested != MatmulPrecision::kAuto) return requested;
  return bf16_dot ? MatmulPrecision::kBF16 : MatmulPrecision::kF32;
}

}  // namespace switchyard

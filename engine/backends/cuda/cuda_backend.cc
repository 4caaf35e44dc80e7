#include "engine/backends/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/backends/cuda/kernels.h"
#include "engine/backends/cuda/moe_kernels.h"
#include "engine/core/status_macros.h"

namespace switchyard {
namespace {

absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

absl::Status CublasStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cublasGetStatusName(s), " (", cublasGetStatusString(s), ")"));
}

// For calls that return a Status: return the failure.
#define SY_CUDA_RETURN_IF_ERROR(call) SY_RETURN_IF_ERROR(CudaStatus((call), #call))

cuda::Elem ElemOf(DType d) {
  switch (d) {
    case DType::kF16:
      return cuda::Elem::kF16;
    case DType::kBF16:
      return cuda::Elem::kBF16;
    default:
      return cuda::Elem::kF32;
  }
}

cudaDataType_t CudaTypeOf(DType d) {
  switch (d) {
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kBF16:
      return CUDA_R_16BF;
    default:
      return CUDA_R_32F;
  }
}

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<Backend>> Create(int device) {
    if (device < 0 || device >= CudaDeviceCount()) {
      return absl::UnavailableError(
          absl::StrCat("no CUDA device ", device, " (", CudaDeviceCount(), " visible)"));
    }
    auto b = std::unique_ptr<CudaBackend>(new CudaBackend(device));
    SY_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
    SY_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&b->props_, device));
    SY_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&b->stream_, cudaStreamNonBlocking));
    SY_RETURN_IF_ERROR(CublasStatus(cublasCreate(&b->cublas_), "cublasCreate"));
    SY_RETURN_IF_ERROR(CublasStatus(cublasSetStream(b->cublas_, b->stream_), "cublasSetStream"));
    // The F32 path is the reference: no TF32 rounding behind our back.
    SY_RETURN_IF_ERROR(
        CublasStatus(cublasSetMathMode(b->cublas_, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode"));
    return std::unique_ptr<Backend>(std::move(b));
  }

  ~CudaBackend() override {
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    if (workspace_ != nullptr) cudaFree(workspace_);
    if (cublas_ != nullptr) cublasDestroy(cublas_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  Device device() const override { return Device::kCuda; }

  std::string Describe() const override {
    return absl::StrFormat("cuda (%s, sm_%d%d, %.1f GiB, cuBLAS)", props_.name, props_.major,
                           props_.minor, static_cast<double>(props_.totalGlobalMem) / (1 << 30));
  }

  absl::StatusOr<Tensor> Allocate(DType dtype, const Shape& shape) override {
    const size_t bytes = static_cast<size_t>(NumElements(shape)) * SizeOf(dtype);
    void* p = nullptr;
    if (bytes > 0) SY_CUDA_RETURN_IF_ERROR(cudaMallocAsync(&p, bytes, stream_));
    cudaStream_t stream = stream_;
    std::shared_ptr<const void> owner(p, [stream](const void* q) {
      if (q != nullptr) cudaFreeAsync(const_cast<void*>(q), stream);
    });
    return Tensor::Wrap(p, dtype, shape, std::move(owner), Device::kCuda);
  }

  absl::StatusOr<Tensor> Upload(const Tensor& host) override { return UploadTo(host, false); }

  absl::StatusOr<Tensor> UploadTo(const Tensor& host, bool lasting) {
    SY_CHECK(host.device() == Device::kCpu);
    SY_ASSIGN_OR_RETURN(Tensor t, lasting ? AllocateLasting(host.dtype(), host.shape())
                                          : Allocate(host.dtype(), host.shape()));
    SY_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(t.raw(), host.raw(), host.nbytes(), cudaMemcpyHostToDevice, stream_));
    SY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));  // `host` may go away
    return t;
  }

  absl::StatusOr<Weight> PrepareWeight(const Tensor& host, WeightUse use) override {
    if (host.rank() != 2 || host.dtype() == DType::kI32 || host.dtype() == DType::kF64) {
      return absl::InvalidArgumentError("a weight must be a floating-point matrix");
    }
    if (use == WeightUse::kExpand && host.dtype() != DType::kF32 && host.dtype() != DType::kBF16) {
      return absl::InvalidArgumentError("expand weights must be F32 or BF16");
    }
    // Row-major [rows, cols] in the stored type for every use: cuBLAS reads it transposed.
    Weight w;
    w.rows = host.dim(0);
    w.cols = host.dim(1);
    w.dtype = host.dtype();
    w.use = use;
    SY_ASSIGN_OR_RETURN(w.data, UploadTo(host, true));
    return w;
  }

  absl::StatusOr<Weight> PrepareQuantizedWeight(const Tensor&, QuantType type, int64_t) override {
    return absl::UnimplementedError(
        absl::StrCat(Traits(type).name,
                     " weights run on the CPU backend only; the CUDA backend takes F32, F16 and "
                     "BF16 models (docs/quantization.md)"));
  }

  absl::Status CopyToHost(const Tensor& src, Tensor& host) override {
    SY_CHECK(src.nbytes() == host.nbytes() && host.device() == Device::kCpu);
    SY_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(host.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToHost, stream_));
    return Synchronize();
  }

  absl::StatusOr<KvCache> AllocateKvCache(const KvCacheSpec& spec) override {
    if (spec.dtype != DType::kF32) {
      return absl::UnimplementedError(absl::StrCat("the CUDA backend's KV cache is F32 only, not ",
                                                   DTypeName(spec.dtype),
                                                   " (--kv_cache_dtype f32 or auto)"));
    }
    KvCache cache;
    cache.spec = spec;
    const Shape shape = {spec.num_layers, spec.num_blocks, spec.num_kv_heads, spec.block_size,
                         spec.head_dim};
    SY_ASSIGN_OR_RETURN(cache.k, AllocateLasting(DType::kF32, shape));
    SY_ASSIGN_OR_RETURN(cache.v, AllocateLasting(DType::kF32, shape));
    SY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(cache.k.raw(), 0, cache.k.nbytes(), stream_));
    SY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(cache.v.raw(), 0, cache.v.nbytes(), stream_));
    return cache;
  }

  absl::Status Consolidate(std::span<Weight* const> weights) override {
    size_t total = 0;
    for (const Weight* w : weights) total += (w->data.nbytes() + 255) / 256 * 256;
    if (total == 0) return absl::OkStatus();
    SY_ASSIGN_OR_RETURN(Tensor arena,
                        AllocateLasting(DType::kF32, {static_cast<int64_t>(total / 4)}));
    auto owner = std::make_shared<Tensor>(arena);
    size_t offset = 0;
    for (Weight* w : weights) {
      char* dst = arena.data<char>() + offset;
      SY_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(dst, w->data.raw(), w->data.nbytes(), cudaMemcpyDeviceToDevice, stream_));
      w->data = Tensor::Wrap(dst, w->data.dtype(), w->data.shape(), owner, Device::kCuda);
      offset += (w->data.nbytes() + 255) / 256 * 256;
    }
    return Synchronize();
  }

  absl::StatusOr<StepMetadata> UploadMetadata(const StepMetadata& host) override {
    StepMetadata d;
    d.num_tokens = host.num_tokens;
    d.num_seqs = host.num_seqs;
    for (auto [src, dst] : {std::pair{&host.token_ids, &d.token_ids},
                            {&host.positions, &d.positions},
                            {&host.slot_mapping, &d.slot_mapping},
                            {&host.token_seq, &d.token_seq},
                            {&host.block_tables, &d.block_tables}}) {
      if (!src->defined()) continue;
      SY_ASSIGN_OR_RETURN(*dst, Allocate(src->dtype(), src->shape()));
      SY_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(dst->raw(), src->raw(), src->nbytes(), cudaMemcpyHostToDevice, stream_));
    }
    // The host tensors may be reused by the caller as soon as this returns.
    SY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return d;
  }

  absl::Status Synchronize() override {
    Note(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    std::lock_guard<std::mutex> lock(mu_);
    absl::Status s = error_;
    error_ = absl::OkStatus();
    return s;
  }

  void Embedding(const Weight& table, const Tensor& ids, Tensor& out) override {
    const int64_t T = ids.numel();
    SY_CHECK(out.dim(0) == T && out.dim(1) == table.cols && ids.dtype() == DType::kI32);
    Note(cuda::Embedding(table.data.raw(), ElemOf(table.dtype), table.cols, ids.data<int32_t>(), T,
                         out.data<float>(), stream_),
         "Embedding");
  }

  void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    const int64_t T = x.dim(0), d = x.dim(1);
    SY_CHECK(weight.numel() == d && out.dim(0) == T && out.dim(1) == d);
    Note(
        cuda::RmsNorm(x.data<float>(), weight.data<float>(), eps, T, d, out.data<float>(), stream_),
        "RmsNorm");
  }

  void Linear(const Tensor& x, const Weight& w, const Tensor* bias, Tensor& y,
              bool accumulate) override {
    SY_CHECK(x.dim(1) == w.cols && y.dim(0) == x.dim(0) && y.dim(1) == w.rows);
    SY_CHECK(bias == nullptr || bias->numel() == w.rows);
    Gemm(w, x.data<float>(), x.dim(1), nullptr, x.dim(0), y.data<float>(), y.dim(1), accumulate);
    if (bias != nullptr) {
      Note(cuda::AddBias(y.data<float>(), y.dim(1), y.dim(0), w.rows, bias->data<float>(), stream_),
           "AddBias");
    }
  }

  void GroupedLinear(std::span<const LinearJob> jobs) override {
    // One cuBLAS call per job for now; a grouped kernel (SGMV-style) is the planned replacement.
    for (const LinearJob& j : jobs) {
      Gemm(*j.w, j.x, j.ldx, j.x_rows, j.m, j.y, j.ldy, j.accumulate);
    }
  }

  void RopeTable(const Tensor& positions, const Tensor& inv_freq, Tensor& cos_sin) override {
    const int64_t T = positions.numel(), half = inv_freq.numel();
    SY_CHECK(cos_sin.dim(0) == T && cos_sin.dim(1) == 2 * half);
    Note(cuda::RopeTable(positions.data<int32_t>(), T, inv_freq.data<float>(), half,
                         cos_sin.data<float>(), stream_),
         "RopeTable");
  }

  void SplitQkvRope(const Tensor& qkv, const Tensor& cos_sin, int num_heads, int num_kv_heads,
                    Tensor& q, Tensor& k, Tensor& v) override {
    const int64_t T = qkv.dim(0), hd = cos_sin.dim(1);
    SY_CHECK(qkv.dim(1) == (num_heads + 2 * num_kv_heads) * hd && cos_sin.dim(0) == T);
    Note(cuda::SplitQkvRope(qkv.data<float>(), cos_sin.data<float>(), T, num_heads, num_kv_heads,
                            static_cast<int>(hd), q.data<float>(), k.data<float>(), v.data<float>(),
                            stream_),
         "SplitQkvRope");
  }

  void WriteKv(const Tensor& k, const Tensor& v, const StepMetadata& meta, int layer,
               KvCache& cache) override {
    const KvCacheSpec& sp = cache.spec;
    SY_CHECK(k.dim(0) == meta.num_tokens && k.dim(1) == sp.num_kv_heads * sp.head_dim);
    const size_t stride = LayerStride(sp);
    Note(cuda::WriteKv(k.data<float>(), v.data<float>(), meta.slot_mapping.data<int32_t>(),
                       meta.num_tokens, sp.num_kv_heads, sp.block_size, sp.head_dim,
                       cache.k.data<float>() + layer * stride,
                       cache.v.data<float>() + layer * stride, stream_),
         "WriteKv");
  }

  void Attention(const Tensor& q, const StepMetadata& meta, int layer, const KvCache& cache,
                 const AttentionParams& p, Tensor& out) override {
    const KvCacheSpec& sp = cache.spec;
    SY_CHECK(q.dim(0) == meta.num_tokens && q.dim(1) == p.num_heads * p.head_dim);
    const size_t stride = LayerStride(sp);
    cuda::AttentionArgs a;
    a.q = q.data<float>();
    a.layer_k = cache.k.data<float>() + layer * stride;
    a.layer_v = cache.v.data<float>() + layer * stride;
    a.positions = meta.positions.data<int32_t>();
    a.token_seq = meta.token_seq.data<int32_t>();
    a.block_tables = meta.block_tables.data<int32_t>();
    a.max_blocks = meta.block_tables.dim(1);
    a.tokens = meta.num_tokens;
    a.num_heads = p.num_heads;
    a.num_kv_heads = p.num_kv_heads;
    a.head_dim = p.head_dim;
    a.block_size = sp.block_size;
    a.sliding_window = p.sliding_window;
    a.scale = p.scale;
    a.out = out.data<float>();
    Note(cuda::Attention(a, stream_), "Attention");
  }

  void GatedActivation(const Tensor& gate_up, Activation act, Tensor& out) override {
    const int64_t T = gate_up.dim(0), F = out.dim(1);
    SY_CHECK(gate_up.dim(1) == 2 * F && out.dim(0) == T);
    Note(cuda::GatedActivation(gate_up.data<float>(), T, F, static_cast<int>(act),
                               out.data<float>(), stream_),
         "GatedActivation");
  }

  void ZeroFill(Tensor& t) override {
    Note(cudaMemsetAsync(t.raw(), 0, t.nbytes(), stream_), "cudaMemsetAsync");
  }

  void Route(const Tensor& logits, std::span<const RouteUnit> units, Tensor& slot_expert,
             Tensor& slot_weight, Tensor* stats, const RouteGates* gates) override {
    const std::vector<int64_t> starts = RowStarts(units);
    absl::StatusOr<Tensor> du = UploadSpan(units), ds = UploadSpan(std::span(starts));
    if (!NoteStatus(du.status()) || !NoteStatus(ds.status())) return;
    Note(
        cuda::Route(logits.data<float>(), logits.dim(1), du->data<RouteUnit>(), ds->data<int64_t>(),
                    static_cast<int>(units.size()), starts.back(), slot_expert.data<int32_t>(),
                    slot_weight.data<float>(), stats != nullptr ? stats->data<double>() : nullptr,
                    gates != nullptr ? *gates : RouteGates{}, stream_),
        "Route");
  }

  void SortSegments(const Tensor& slot_expert, std::span<const RouteUnit> units,
                    int32_t num_segments, Tensor& order, Tensor& position,
                    Tensor& seg_start) override {
    std::vector<int64_t> starts(units.size() + 1, 0);
    for (size_t u = 0; u < units.size(); ++u) {
      starts[u + 1] = starts[u] + units[u].rows * units[u].slots;
    }
    const int64_t slots = starts.back();
    absl::StatusOr<Tensor> du = UploadSpan(units), ds = UploadSpan(std::span(starts));
    absl::StatusOr<Tensor> keys = Allocate(DType::kI32, {2 * slots + 1}),
                           values = Allocate(DType::kI32, {slots + 1}),
                           count = Allocate(DType::kI32, {num_segments + 1});
    for (const absl::Status& st :
         {du.status(), ds.status(), keys.status(), values.status(), count.status()}) {
      if (!NoteStatus(st)) return;
    }
    int32_t* k = keys->data<int32_t>();
    Note(cudaMemsetAsync(count->raw(), 0, count->nbytes(), stream_), "cudaMemsetAsync");
    Note(cuda::SegmentKeys(slot_expert.data<int32_t>(), du->data<RouteUnit>(), ds->data<int64_t>(),
                           static_cast<int>(units.size()), slots, num_segments, k,
                           values->data<int32_t>(), count->data<int32_t>(), stream_),
         "SegmentKeys");
    int end_bit = 1;
    while ((int64_t{1} << end_bit) <= num_segments) ++end_bit;
    size_t temp_bytes = 0;
    Note(cuda::SortByKey(nullptr, &temp_bytes, k, k + slots, values->data<int32_t>(),
                         order.data<int32_t>(), slots, end_bit, stream_),
         "SortByKey");
    absl::StatusOr<Tensor> temp = Allocate(DType::kI32, {static_cast<int64_t>(temp_bytes / 4 + 1)});
    if (!NoteStatus(temp.status())) return;
    Note(cuda::SortByKey(temp->raw(), &temp_bytes, k, k + slots, values->data<int32_t>(),
                         order.data<int32_t>(), slots, end_bit, stream_),
         "SortByKey");
    Note(cuda::SegmentStarts(count->data<int32_t>(), num_segments, seg_start.data<int32_t>(),
                             stream_),
         "SegmentStarts");
    Note(cudaMemsetAsync(position.raw(), 0xff, slots * sizeof(int32_t), stream_),
         "cudaMemsetAsync");
    Note(cuda::InvertOrder(order.data<int32_t>(), seg_start.data<int32_t>(), num_segments, slots,
                           position.data<int32_t>(), stream_),
         "InvertOrder");
  }

  void SegmentedLinear(std::span<const Weight* const> weights, const Tensor& seg_start,
                       const Tensor& x, int64_t ldx, const Tensor* order, const Tensor* slot_rows,
                       Tensor& y, int64_t ldy, bool accumulate) override {
    std::vector<cuda::SegmentWeight> table(weights.size());
    int64_t max_n = 0;
    for (size_t s = 0; s < weights.size(); ++s) {
      const Weight* w = weights[s];
      table[s] = w == nullptr
                     ? cuda::SegmentWeight{nullptr, cuda::Elem::kF32, 0, 0}
                     : cuda::SegmentWeight{w->data.raw(), ElemOf(w->dtype), w->rows, w->cols};
      if (w != nullptr) max_n = std::max(max_n, w->rows);
    }
    if (max_n == 0) return;
    absl::StatusOr<Tensor> dt = UploadSpan(std::span<const cuda::SegmentWeight>(table));
    if (!NoteStatus(dt.status())) return;
    // Rows: at most the slots of the layout (order's length; y's rows otherwise, y possibly
    // starting at a column offset).
    const int64_t capacity = order != nullptr ? order->numel() : (y.numel() + ldy - 1) / ldy;
    Note(
        cuda::SegmentedLinear(dt->data<cuda::SegmentWeight>(), static_cast<int32_t>(weights.size()),
                              seg_start.data<int32_t>(), capacity, max_n, x.data<float>(), ldx,
                              order != nullptr ? order->data<int32_t>() : nullptr,
                              slot_rows != nullptr ? slot_rows->data<int32_t>() : nullptr,
                              y.data<float>(), ldy, accumulate, stream_),
        "SegmentedLinear");
  }

  void GatherSorted(const Tensor& x, const Tensor& order, const Tensor& slot_rows,
                    const Tensor& seg_start, Tensor& out) override {
    Note(cuda::GatherSorted(x.data<float>(), x.dim(1), order.data<int32_t>(),
                            slot_rows.data<int32_t>(),
                            seg_start.data<int32_t>() + seg_start.numel() - 1, out.dim(0),
                            out.dim(1), out.data<float>(), stream_),
         "GatherSorted");
  }

  void SegmentedGatedActivation(const Tensor& gate_up, const Tensor& seg_start,
                                std::span<const SegmentActivation> ranges, Tensor& out) override {
    for (const SegmentActivation& r : ranges) {
      Note(cuda::SegmentedGatedActivation(gate_up.data<float>(), seg_start.data<int32_t>(),
                                          r.seg_begin, r.seg_end, out.dim(0), out.dim(1),
                                          static_cast<int>(r.act), out.data<float>(), stream_),
           "SegmentedGatedActivation");
    }
  }

  void CombineSlots(const Tensor& src, const Tensor& slot_expert, const Tensor& slot_weight,
                    const Tensor& position, std::span<const CombineUnit> units,
                    const Tensor* dst_rows, const Tensor* bias, Combine mode,
                    Tensor& dst) override {
    const std::vector<int64_t> starts = RowStarts(units);
    absl::StatusOr<Tensor> du = UploadSpan(units), ds = UploadSpan(std::span(starts));
    if (!NoteStatus(du.status()) || !NoteStatus(ds.status())) return;
    Note(cuda::CombineSlots(src.data<float>(), src.dim(1), slot_expert.data<int32_t>(),
                            slot_weight.data<float>(), position.data<int32_t>(),
                            du->data<CombineUnit>(), ds->data<int64_t>(),
                            static_cast<int>(units.size()), starts.back(),
                            dst_rows != nullptr ? dst_rows->data<int32_t>() : nullptr,
                            bias != nullptr ? bias->data<float>() : nullptr, static_cast<int>(mode),
                            dst.data<float>(), dst.dim(1), stream_),
         "CombineSlots");
  }

  void ScatterAddRows(const Tensor& x, int64_t width, const Tensor& dst_rows, int64_t col,
                      Tensor& dst) override {
    Note(cuda::ScatterAddRows(x.data<float>(), x.dim(1), x.dim(0), width, dst_rows.data<int32_t>(),
                              col, dst.data<float>(), dst.dim(1), stream_),
         "ScatterAddRows");
  }

  void GatherRows(const Tensor& x, const Tensor& rows, Tensor& out) override {
    const int64_t R = rows.numel(), d = x.dim(1);
    SY_CHECK(out.dim(0) == R && out.dim(1) == d && x.dtype() == DType::kF32);
    Note(cuda::GatherRows(x.data<float>(), d, rows.data<int32_t>(), R, out.data<float>(), stream_),
         "GatherRows");
  }

 private:
  explicit CudaBackend(int device) : device_(device) {}

  static size_t LayerStride(const KvCacheSpec& sp) {
    return static_cast<size_t>(sp.num_blocks) * sp.num_kv_heads * sp.block_size * sp.head_dim;
  }

  // Memory that lives as long as its tensor (weights, the KV cache): cudaMalloc, not the pool.
  absl::StatusOr<Tensor> AllocateLasting(DType dtype, const Shape& shape) {
    const size_t bytes = static_cast<size_t>(NumElements(shape)) * SizeOf(dtype);
    void* p = nullptr;
    if (bytes > 0) SY_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, bytes));
    std::shared_ptr<const void> owner(p, [](const void* q) {
      if (q != nullptr) cudaFree(const_cast<void*>(q));
    });
    return Tensor::Wrap(p, dtype, shape, std::move(owner), Device::kCuda);
  }

  // The first routed row of each unit, and their total last.
  template <typename Unit>
  static std::vector<int64_t> RowStarts(std::span<const Unit> units) {
    std::vector<int64_t> starts(units.size() + 1, 0);
    for (size_t u = 0; u < units.size(); ++u) starts[u + 1] = starts[u] + units[u].rows;
    return starts;
  }

  // A host array of descriptors on the device, for the ops enqueued next (stream-ordered; the
  // host copy may go once this returns).
  template <typename T>
  absl::StatusOr<Tensor> UploadSpan(std::span<const T> host) {
    const int64_t words = static_cast<int64_t>((host.size_bytes() + 7) / 8) * 2 + 2;
    SY_ASSIGN_OR_RETURN(Tensor t, Allocate(DType::kI32, {words}));
    if (!host.empty()) {
      SY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(t.raw(), host.data(), host.size_bytes(),
                                              cudaMemcpyHostToDevice, stream_));
    }
    return t;
  }
  template <typename T>
  absl::StatusOr<Tensor> UploadSpan(std::span<T> host) {
    return UploadSpan(std::span<const T>(host));
  }

  // Records a failed Status of a void op like Note; returns whether `s` was OK.
  bool NoteStatus(const absl::Status& s) {
    if (s.ok()) return true;
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = s;
    return false;
  }

  // Records the first failure of a void op; Synchronize reports it.
  void Note(cudaError_t e, const char* what) {
    if (e == cudaSuccess) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = CudaStatus(e, what);
  }
  void Note(cublasStatus_t s, const char* what) {
    if (s == CUBLAS_STATUS_SUCCESS) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = CublasStatus(s, what);
  }

  // Device scratch of at least `bytes`, reused across ops (ordered on the one stream).
  void* Workspace(size_t bytes) {
    if (bytes > workspace_bytes_) {
      if (workspace_ != nullptr) {
        Note(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
        cudaFree(workspace_);
        workspace_ = nullptr;
      }
      workspace_bytes_ = std::max(bytes, workspace_bytes_ * 2);
      if (cudaError_t e = cudaMalloc(&workspace_, workspace_bytes_); e != cudaSuccess) {
        workspace_bytes_ = 0;
        Note(e, "cudaMalloc (workspace)");
        return nullptr;
      }
    }
    return workspace_;
  }

  // y[m, N] (+)= x[m, K] * w^T with row-major x (ldx; rows gathered through x_rows when set) and
  // y (ldy). In cuBLAS's column-major terms: Y^T[N, m] = W^T' X^T with W read transposed.
  void Gemm(const Weight& w, const float* x, int64_t ldx, const int32_t* x_rows, int64_t m,
            float* y, int64_t ldy, bool accumulate) {
    if (m == 0) return;
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    const int N = static_cast<int>(w.rows), K = static_cast<int>(w.cols), M = static_cast<int>(m);
    if (w.dtype == DType::kF32 && x_rows == nullptr) {
      Note(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, w.data.data<float>(), K,
                       x, static_cast<int>(ldx), &beta, y, static_cast<int>(ldy)),
           "cublasSgemm");
      return;
    }
    // Gather and/or round the activations to the weight's type, densely packed.
    void* xs = Workspace(static_cast<size_t>(m) * K * SizeOf(w.dtype));
    if (xs == nullptr) return;
    Note(cuda::ConvertRows(x, ldx, x_rows, m, K, xs, ElemOf(w.dtype), stream_), "ConvertRows");
    const cudaDataType_t type = CudaTypeOf(w.dtype);
    Note(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, w.data.raw(), type, K, xs,
                      type, K, &beta, y, CUDA_R_32F, static_cast<int>(ldy), CUBLAS_COMPUTE_32F,
                      CUBLAS_GEMM_DEFAULT),
         "cublasGemmEx");
  }

  const int device_;
  cudaDeviceProp props_{};
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::mutex mu_;
  absl::Status error_;
};

}  // namespace

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: not an error to keep
    return 0;
  }
  return n;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device) {
  return CudaBackend::Create(device);
}

}  // namespace switchyard

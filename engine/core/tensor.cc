#include "engine/core/tensor.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace switchyard {

absl::string_view DeviceName(Device d) { return d == Device::kCpu ? "cpu" : "cuda"; }

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

namespace {

// Host memory for `bytes`, or null when it cannot be had.
std::shared_ptr<void> Allocate(size_t bytes) {
  // Round up so aligned_alloc's size is a multiple of the alignment, and never ask for 0 bytes.
  // Large buffers (weights, KV cache, workspaces) are streamed: align them to 2 MB and ask for
  // transparent huge pages, so that streaming reads are not split at every 4 KB page (where TLB
  // misses stall and hardware prefetchers stop).
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t align = bytes >= kHuge ? kHuge : 64;
  const size_t rounded = (bytes + align - 1) / align * align + align;
  if (bytes > SIZE_MAX / 2) return nullptr;
  void* p = std::aligned_alloc(align, rounded);
  if (p == nullptr) return nullptr;
  if (align == kHuge) madvise(p, rounded, MADV_HUGEPAGE);
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

// Bytes of `shape` in `dtype`, or nullopt when negative or past 2^62.
std::optional<size_t> CheckedBytes(DType dtype, const Shape& shape) {
  int64_t n = SizeOf(dtype);
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n) || n > (int64_t{1} << 62)) return std::nullopt;
  }
  return static_cast<size_t>(n);
}

}  // namespace

Tensor Tensor::Empty(DType dtype, Shape shape) {
  const std::optional<size_t> bytes = CheckedBytes(dtype, shape);
  SY_CHECK(bytes.has_value());
  std::shared_ptr<void> owner = Allocate(*bytes);
  SY_CHECK(owner != nullptr);
  void* p = owner.get();
  return Wrap(p, dtype, std::move(shape), std::move(owner));
}

absl::StatusOr<Tensor> Tensor::TryEmpty(DType dtype, Shape shape) {
  const std::optional<size_t> bytes = CheckedBytes(dtype, shape);
  if (!bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("a tensor of shape ", ShapeString(shape), " is too large"));
  }
  std::shared_ptr<void> owner = Allocate(*bytes);
  if (owner == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate ", *bytes, " bytes for a tensor of shape ", ShapeString(shape)));
  }
  void* p = owner.get();
  return Wrap(p, dtype, std::move(shape), std::move(owner));
}

Tensor Tensor::Zeros(DType dtype, Shape shape) {
  Tensor t = Empty(dtype, std::move(shape));
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::Wrap(void* data, DType dtype, Shape shape, std::shared_ptr<const void> owner,
                    Device device) {
  Tensor t;
  t.defined_ = true;
  t.dtype_ = dtype;
  t.device_ = device;
  t.shape_ = std::move(shape);
  t.data_ = data;
  t.owner_ = std::move(owner);
  return t;
}

Tensor Tensor::Rows(int64_t begin, int64_t count) const {
  SY_CHECK(rank() >= 1 && begin >= 0 && count >= 0 && begin + count <= shape_[0]);
  Tensor t = *this;
  t.shape_[0] = count;
  const int64_t row = shape_[0] == 0 ? 0 : numel() / shape_[0];
  t.data_ = static_cast<char*>(data_) + static_cast<size_t>(begin * row) * SizeOf(dtype_);
  return t;
}

Tensor Tensor::Reshaped(Shape shape) const {
  SY_CHECK(NumElements(shape) == numel());
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

}  // namespace switchyard

// A typed, shaped view of contiguous memory on one device. Copying a Tensor copies the view and
// shares the storage (reference counted); the storage lives while any view of it does.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "engine/core/check.h"
#include "engine/core/dtype.h"

namespace switchyard {

enum class Device : uint8_t { kCpu, kCuda };

absl::string_view DeviceName(Device d);

using Shape = absl::InlinedVector<int64_t, 4>;

int64_t NumElements(const Shape& shape);
std::string ShapeString(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;

  // Host memory, 64-byte aligned. Empty leaves the contents uninitialised.
  static Tensor Empty(DType dtype, Shape shape);
  static Tensor Zeros(DType dtype, Shape shape);
  // Empty for sizes that come from a file or a client: RESOURCE_EXHAUSTED when the memory cannot
  // be had (or the size overflows), where Empty would abort.
  static absl::StatusOr<Tensor> TryEmpty(DType dtype, Shape shape);
  // Wraps memory kept alive by `owner` (may be null for memory that outlives the tensor).
  static Tensor Wrap(void* data, DType dtype, Shape shape, std::shared_ptr<const void> owner,
                     Device device = Device::kCpu);

  bool defined() const { return defined_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const { return NumElements(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * SizeOf(dtype_); }

  void* raw() const { return data_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(data_);
  }

  // View of rows [begin, begin + count) along dimension 0.
  Tensor Rows(int64_t begin, int64_t count) const;
  // Same storage, new shape with the same number of elements.
  Tensor Reshaped(Shape shape) const;

 private:
  bool defined_ = false;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
  Shape shape_;
  void* data_ = nullptr;
  std::shared_ptr<const void> owner_;
};

}  // namespace switchyard

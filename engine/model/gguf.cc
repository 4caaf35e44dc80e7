#include "engine/model/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"

namespace switchyard {
namespace gguf_internal {

// Reads little-endian values from the file image, never past its end.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t offset() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  template <typename T>
  absl::StatusOr<T> Read(absl::string_view what) {
    if (left() < sizeof(T)) return Truncated(what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  absl::StatusOr<std::string> String(absl::string_view what, uint64_t max_bytes) {
    SY_ASSIGN_OR_RETURN(const uint64_t n, Read<uint64_t>(what));
    if (n > max_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " claims ", n, " bytes (at most ", max_bytes, ")"));
    }
    if (n > left()) return Truncated(what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }

 private:
  absl::Status Truncated(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("file ends inside ", what, " at byte ", pos_));
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace gguf_internal

namespace {

using gguf_internal::Cursor;

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read little-endian
constexpr size_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;
// Bounds on what a file may claim before we allocate for it (every count is also checked
// against the bytes left): 64 KiB keys and 1 GiB strings are beyond any real model's metadata.
constexpr uint64_t kMaxKeyBytes = 65536;
constexpr uint64_t kMaxStringBytes = 1u << 30;

// Smallest encoding of one element of `type` (for checking counts against the bytes left).
absl::StatusOr<size_t> MinimumSize(GgufType type) {
  switch (type) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool:
      return 1;
    case GgufType::kU16:
    case GgufType::kI16:
      return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32:
      return 4;
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64:
    case GgufType::kString:
      return 8;
    case GgufType::kArray:
      return 12;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown value type ", static_cast<uint32_t>(type)));
}

absl::StatusOr<double> ReadNumber(Cursor& c, GgufType type) {
  switch (type) {
    case GgufType::kU8:
      return c.Read<uint8_t>("a u8");
    case GgufType::kI8:
      return c.Read<int8_t>("an i8");
    case GgufType::kU16:
      return c.Read<uint16_t>("a u16");
    case GgufType::kI16:
      return c.Read<int16_t>("an i16");
    case GgufType::kU32:
      return c.Read<uint32_t>("a u32");
    case GgufType::kI32:
      return c.Read<int32_t>("an i32");
    case GgufType::kF32:
      return c.Read<float>("an f32");
    case GgufType::kU64: {
      SY_ASSIGN_OR_RETURN(const uint64_t v, c.Read<uint64_t>("a u64"));
      return static_cast<double>(v);
    }
    case GgufType::kI64: {
      SY_ASSIGN_OR_RETURN(const int64_t v, c.Read<int64_t>("an i64"));
      return static_cast<double>(v);
    }
    case GgufType::kF64:
      return c.Read<double>("an f64");
    case GgufType::kBool: {
      SY_ASSIGN_OR_RETURN(const uint8_t v, c.Read<uint8_t>("a bool"));
      if (v > 1) return absl::InvalidArgumentError(absl::StrCat("bool value ", int{v}));
      return v;
    }
    case GgufType::kString:
    case GgufType::kArray:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown value type ", static_cast<uint32_t>(type)));
}

absl::StatusOr<GgufValue> ReadValue(Cursor& c, GgufType type) {
  GgufValue v;
  v.type = type;
  if (type == GgufType::kString) {
    SY_ASSIGN_OR_RETURN(v.string, c.String("a string value", kMaxStringBytes));
    return v;
  }
  if (type != GgufType::kArray) {
    SY_ASSIGN_OR_RETURN(v.number, ReadNumber(c, type));
    return v;
  }
  SY_ASSIGN_OR_RETURN(const uint32_t element, c.Read<uint32_t>("an array's element type"));
  v.element_type = static_cast<GgufType>(element);
  if (v.element_type == GgufType::kArray) {
    return absl::InvalidArgumentError("nested arrays are not supported");
  }
  SY_ASSIGN_OR_RETURN(const size_t min_size, MinimumSize(v.element_type));
  SY_ASSIGN_OR_RETURN(const uint64_t n, c.Read<uint64_t>("an array's length"));
  if (n > c.left() / min_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("array of ", n, " elements is longer than the ", c.left(), " bytes left"));
  }
  if (v.element_type == GgufType::kString) {
    v.strings.reserve(static_cast<size_t>(n));
    for (uint64_t i = 0; i < n; ++i) {
      SY_ASSIGN_OR_RETURN(std::string s, c.String("an array's string", kMaxStringBytes));
      v.strings.push_back(std::move(s));
    }
  } else {
    v.numbers.reserve(static_cast<size_t>(n));
    for (uint64_t i = 0; i < n; ++i) {
      SY_ASSIGN_OR_RETURN(const double x, ReadNumber(c, v.element_type));
      v.numbers.push_back(x);
    }
  }
  return v;
}

// Bytes of a tensor of `shape` ([rows..., cols]) and `type`; the innermost dimension must hold
// whole blocks. Fails on overflow.
absl::StatusOr<size_t> TensorBytes(const GgufTensorType& type, const Shape& shape) {
  const int64_t cols = shape.back();
  size_t row_bytes;
  if (type.dense.has_value()) {
    row_bytes = static_cast<size_t>(cols) * SizeOf(*type.dense);
  } else {
    const QuantTraits t = Traits(type.quant);
    if (cols % t.values != 0) {
      return absl::InvalidArgumentError(absl::StrCat("rows of ", cols, " values are not whole ",
                                                     t.name, " blocks of ", t.values));
    }
    row_bytes = QuantRowBytes(type.quant, cols);
  }
  size_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) {
    if (__builtin_mul_overflow(rows, static_cast<size_t>(shape[i]), &rows)) {
      return absl::InvalidArgumentError("tensor size overflows");
    }
  }
  size_t bytes;
  if (__builtin_mul_overflow(rows, row_bytes, &bytes)) {
    return absl::InvalidArgumentError("tensor size overflows");
  }
  return bytes;
}

}  // namespace

absl::StatusOr<GgufTensorType> GgufTensorTypeFromId(uint32_t id) {
  switch (id) {
    case 0:
      return GgufTensorType{DType::kF32, QuantType::kNone};
    case 1:
      return GgufTensorType{DType::kF16, QuantType::kNone};
    case 30:
      return GgufTensorType{DType::kBF16, QuantType::kNone};
    case 2:
      return GgufTensorType{std::nullopt, QuantType::kQ4_0};
    case 8:
      return GgufTensorType{std::nullopt, QuantType::kQ8_0};
    case 12:
      return GgufTensorType{std::nullopt, QuantType::kQ4_K};
    case 13:
      return GgufTensorType{std::nullopt, QuantType::kQ5_K};
    case 14:
      return GgufTensorType{std::nullopt, QuantType::kQ6_K};
    default:
      break;
  }
  return absl::UnimplementedError(
      absl::StrCat("tensor type ", id,
                   " is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K)"));
}

GgufFile::~GgufFile() = default;

absl::StatusOr<std::shared_ptr<const GgufFile>> GgufFile::Open(const std::string& path) {
  SY_ASSIGN_OR_RETURN(FileBytes bytes, FileBytes::Map(path));
  return Adopt(std::move(bytes), path);
}

absl::StatusOr<std::shared_ptr<const GgufFile>> GgufFile::FromBytes(std::string bytes,
                                                                    std::string name) {
  return Adopt(FileBytes::Own(std::move(bytes)), std::move(name));
}

absl::StatusOr<std::shared_ptr<const GgufFile>> GgufFile::Adopt(FileBytes bytes, std::string name) {
  std::shared_ptr<GgufFile> file(new GgufFile());
  file->path_ = std::move(name);
  file->bytes_ = std::move(bytes);
  absl::Status status = file->Parse();
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file->path_, ": malformed GGUF file: ", status.message()));
  }
  file->self_ = file;
  return std::shared_ptr<const GgufFile>(std::move(file));
}

absl::Status GgufFile::Parse() {
  Cursor c(reinterpret_cast<const uint8_t*>(bytes_.data()), bytes_.size());
  SY_ASSIGN_OR_RETURN(const uint32_t magic, c.Read<uint32_t>("the magic number"));
  if (magic != kMagic) return absl::InvalidArgumentError("no GGUF magic number");
  SY_ASSIGN_OR_RETURN(version_, c.Read<uint32_t>("the version"));
  if (version_ != 2 && version_ != 3) {
    return absl::InvalidArgumentError(absl::StrCat("version ", version_, " (supported: 2, 3)"));
  }
  SY_ASSIGN_OR_RETURN(const uint64_t tensor_count, c.Read<uint64_t>("the tensor count"));
  SY_ASSIGN_OR_RETURN(const uint64_t kv_count, c.Read<uint64_t>("the metadata count"));
  SY_RETURN_IF_ERROR(ParseMetadata(c, kv_count));
  SY_RETURN_IF_ERROR(ParseTensorInfos(c, tensor_count));
  return CheckTensorData(c.offset());
}

absl::Status GgufFile::ParseMetadata(Cursor& c, uint64_t count) {
  // A key-value pair takes at least 8 (key length) + 4 (type) + 1 bytes.
  if (count > c.left() / 13) {
    return absl::InvalidArgumentError(absl::StrCat(count, " metadata entries cannot fit"));
  }
  for (uint64_t i = 0; i < count; ++i) {
    SY_ASSIGN_OR_RETURN(std::string key, c.String("a metadata key", kMaxKeyBytes));
    SY_ASSIGN_OR_RETURN(const uint32_t type, c.Read<uint32_t>("a metadata type"));
    absl::StatusOr<GgufValue> value = ReadValue(c, static_cast<GgufType>(type));
    if (!value.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("key \"", key, "\": ", value.status().message()));
    }
    if (metadata_.contains(key)) {
      return absl::InvalidArgumentError(absl::StrCat("key \"", key, "\" appears twice"));
    }
    keys_.push_back(key);
    metadata_.emplace(std::move(key), *std::move(value));
  }
  return absl::OkStatus();
}

absl::Status GgufFile::ParseTensorInfos(Cursor& c, uint64_t count) {
  // A tensor info takes at least 8 (name length) + 4 (dims) + 8 (one dim) + 4 + 8 bytes.
  if (count > c.left() / 32) {
    return absl::InvalidArgumentError(absl::StrCat(count, " tensors cannot fit"));
  }
  for (uint64_t i = 0; i < count; ++i) {
    GgufTensor t;
    SY_ASSIGN_OR_RETURN(t.name, c.String("a tensor name", kMaxKeyBytes));
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", t.name, "\": ", what));
    };
    SY_ASSIGN_OR_RETURN(const uint32_t dims, c.Read<uint32_t>("a tensor's rank"));
    if (dims == 0 || dims > kMaxDims) return bad(absl::StrCat("rank ", dims, " (1 to 4)"));
    t.shape.resize(dims);
    for (uint32_t d = 0; d < dims; ++d) {
      SY_ASSIGN_OR_RETURN(const uint64_t n, c.Read<uint64_t>("a tensor dimension"));
      if (n == 0 || n > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
        return bad(absl::StrCat("dimension ", n));
      }
      t.shape[dims - 1 - d] = static_cast<int64_t>(n);  // GGUF writes the innermost first
    }
    SY_ASSIGN_OR_RETURN(t.type_id, c.Read<uint32_t>("a tensor type"));
    absl::StatusOr<GgufTensorType> type = GgufTensorTypeFromId(t.type_id);
    if (!type.ok())
      return absl::Status(type.status().code(),
                          absl::StrCat("tensor \"", t.name, "\": ", type.status().message()));
    t.type = *type;
    absl::StatusOr<size_t> bytes = TensorBytes(t.type, t.shape);
    if (!bytes.ok()) return bad(bytes.status().message());
    t.bytes = *bytes;
    SY_ASSIGN_OR_RETURN(const uint64_t offset, c.Read<uint64_t>("a tensor offset"));
    t.offset = static_cast<size_t>(offset);
    if (tensor_index_.contains(t.name)) return bad("appears twice");
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }
  return absl::OkStatus();
}

absl::Status GgufFile::CheckTensorData(size_t infos_end) {
  size_t alignment = kDefaultAlignment;
  if (const GgufValue* a = Find("general.alignment"); a != nullptr) {
    if (a->type != GgufType::kU32 || a->number < 1 || a->number > 65536 ||
        (static_cast<uint32_t>(a->number) & (static_cast<uint32_t>(a->number) - 1)) != 0) {
      return absl::InvalidArgumentError("general.alignment is not a u32 power of two");
    }
    alignment = static_cast<size_t>(a->number);
  }
  data_offset_ = (infos_end + alignment - 1) / alignment * alignment;
  if (data_offset_ > bytes_.size()) {
    if (!tensors_.empty()) return absl::InvalidArgumentError("file ends before its data section");
    data_offset_ = bytes_.size();
  }
  const size_t data_size = bytes_.size() - data_offset_;
  std::vector<const GgufTensor*> order;
  for (const GgufTensor& t : tensors_) {
    if (t.offset % alignment != 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", t.name, "\": offset ", t.offset,
                                                     " is not aligned to ", alignment));
    }
    if (t.offset > data_size || t.bytes > data_size - t.offset) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", t.name, "\": bytes [", t.offset,
                                                     ", +", t.bytes, ") lie outside the ",
                                                     data_size, "-byte data section"));
    }
    order.push_back(&t);
  }
  std::sort(order.begin(), order.end(),
            [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < order.size(); ++i) {
    if (order[i - 1]->offset + order[i - 1]->bytes > order[i]->offset) {
      return absl::InvalidArgumentError(absl::StrCat("tensors \"", order[i - 1]->name, "\" and \"",
                                                     order[i]->name, "\" overlap"));
    }
  }
  return absl::OkStatus();
}

const GgufTensor* GgufFile::FindTensor(absl::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufValue* GgufFile::Find(absl::string_view key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::string> GgufFile::GetString(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr)
    return absl::NotFoundError(absl::StrCat(path_, ": no metadata key \"", key, "\""));
  if (v->type != GgufType::kString) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": \"", key, "\" is not a string"));
  }
  return v->string;
}

absl::StatusOr<double> GgufFile::GetNumber(absl::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr)
    return absl::NotFoundError(absl::StrCat(path_, ": no metadata key \"", key, "\""));
  if (v->type == GgufType::kString || v->type == GgufType::kArray) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": \"", key, "\" is not a number"));
  }
  return v->number;
}

absl::StatusOr<int64_t> GgufFile::GetInt(absl::string_view key) const {
  SY_ASSIGN_OR_RETURN(const double v, GetNumber(key));
  if (v != std::floor(v) || std::fabs(v) > 9.0e15) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": \"", key, "\" is not an integer"));
  }
  return static_cast<int64_t>(v);
}

absl::StatusOr<Tensor> GgufFile::Data(const GgufTensor& t) const {
  void* data = const_cast<char*>(bytes_.data()) + data_offset_ + t.offset;
  if (t.type.dense.has_value()) return Tensor::Wrap(data, *t.type.dense, t.shape, self_.lock());
  const int64_t row_bytes = static_cast<int64_t>(QuantRowBytes(t.type.quant, t.shape.back()));
  return Tensor::Wrap(data, DType::kU8, {static_cast<int64_t>(t.bytes) / row_bytes, row_bytes},
                      self_.lock());
}

}  // namespace switchyard

// GGUF files (llama.cpp's single-file model format), memory-mapped and validated before anything
// is handed out: magic and version (2 or 3), every length and count against the bytes left,
// strings, arrays (no nesting), at most 4 dimensions per tensor with a size that does not
// overflow, known tensor types with rows of whole blocks, offsets aligned and inside the data
// section, no two tensors overlapping and no name twice. A malformed file is refused with a
// Status naming what is wrong.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/core/file_bytes.h"
#include "engine/core/quant.h"
#include "engine/core/tensor.h"

namespace switchyard {

namespace gguf_internal {
class Cursor;
}

// GGUF's value types, numbered as in the file.
enum class GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// One metadata value. Scalars live in `number` (integers that fit a double exactly, which every
// hyper-parameter does) or `string`; arrays in `strings` or `numbers` by element type.
struct GgufValue {
  GgufType type = GgufType::kU8;
  GgufType element_type = GgufType::kU8;  // arrays
  double number = 0;
  std::string string;
  std::vector<std::string> strings;
  std::vector<double> numbers;
};

// A tensor's element type: dense (F32/F16/BF16) or block-quantized.
struct GgufTensorType {
  std::optional<DType> dense;
  QuantType quant = QuantType::kNone;
};

struct GgufTensor {
  std::string name;
  uint32_t type_id = 0;  // as written
  GgufTensorType type;
  Shape shape;        // outermost first, as safetensors and PyTorch write it ([rows, cols])
  size_t offset = 0;  // from the start of the data section
  size_t bytes = 0;
};

// Thread-safety: immutable after Open; safe to share.
class GgufFile {
 public:
  static absl::StatusOr<std::shared_ptr<const GgufFile>> Open(const std::string& path);
  static absl::StatusOr<std::shared_ptr<const GgufFile>> FromBytes(std::string bytes,
                                                                   std::string name);
  ~GgufFile();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* FindTensor(absl::string_view name) const;
  const GgufValue* Find(absl::string_view key) const;
  const std::vector<std::string>& keys() const { return keys_; }

  // Typed metadata lookups; errors name the key.
  absl::StatusOr<std::string> GetString(absl::string_view key) const;
  absl::StatusOr<double> GetNumber(absl::string_view key) const;
  absl::StatusOr<int64_t> GetInt(absl::string_view key) const;

  // The tensor's bytes, viewed in the mapping (kept alive by the view): a dense tensor as its
  // dtype and shape; a quantized one as U8 [rows, row bytes].
  absl::StatusOr<Tensor> Data(const GgufTensor& tensor) const;

 private:
  GgufFile() = default;
  static absl::StatusOr<std::shared_ptr<const GgufFile>> Adopt(FileBytes bytes, std::string name);
  absl::Status Parse();
  absl::Status ParseMetadata(gguf_internal::Cursor& c, uint64_t count);
  absl::Status ParseTensorInfos(gguf_internal::Cursor& c, uint64_t count);
  absl::Status CheckTensorData(size_t infos_end);

  std::string path_;
  FileBytes bytes_;
  uint32_t version_ = 0;
  size_t data_offset_ = 0;
  std::vector<std::string> keys_;
  absl::flat_hash_map<std::string, GgufValue> metadata_;
  std::vector<GgufTensor> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
  std::weak_ptr<const GgufFile> self_;
};

// Maps a GGUF tensor type id to ours; UNIMPLEMENTED names types Switchyard does not run.
absl::StatusOr<GgufTensorType> GgufTensorTypeFromId(uint32_t id);

}  // namespace switchyard

// Safetensors files, memory-mapped and validated before any tensor is handed out: header size cap,
// well-formed JSON, known dtypes, shapes x dtype = byte length, offsets inside the data section
// and no two tensors overlapping. A malformed or truncated file is refused with a Status.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/core/file_bytes.h"
#include "engine/core/tensor.h"

namespace switchyard {

struct SafetensorsEntry {
  std::string name;
  std::string dtype_name;      // as written ("BF16", "I64", ...)
  std::optional<DType> dtype;  // set when Switchyard computes with this dtype
  Shape shape;
  size_t begin = 0;  // byte offsets within the data section
  size_t end = 0;
};

// Thread-safety: immutable after Open; safe to share.
class SafetensorsFile {
 public:
  static constexpr size_t kMaxHeaderBytes = 100u << 20;  // as the reference implementation

  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> Open(const std::string& path);
  // Parses a file image held in memory (tests, fuzzing).
  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> FromBytes(std::string bytes,
                                                                          std::string name);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsEntry* Find(absl::string_view name) const;
  // A view into the mapping that keeps this file alive.
  absl::StatusOr<Tensor> Get(absl::string_view name) const;

 private:
  SafetensorsFile() = default;
  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> Adopt(FileBytes bytes,
                                                                      std::string name);
  absl::Status Parse();

  std::string path_;
  const char* base_ = nullptr;  // whole file
  size_t size_ = 0;
  FileBytes bytes_;
  const char* data_ = nullptr;  // data section
  size_t data_size_ = 0;
  std::vector<SafetensorsEntry> entries_;
  absl::flat_hash_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  std::weak_ptr<const SafetensorsFile> self_;
};

// The weights of a model (or adapter) folder: `<stem>.safetensors`, or the shards listed in
// `<stem>.safetensors.index.json`.
class TensorSet {
 public:
  static absl::StatusOr<TensorSet> OpenFolder(const std::string& dir,
                                              absl::string_view stem = "model");
  static TensorSet FromFile(std::shared_ptr<const SafetensorsFile> file);

  bool Contains(absl::string_view name) const;
  std::vector<std::string> Names() const;
  const SafetensorsEntry* Find(absl::string_view name) const;
  // Refuses a missing tensor or one whose shape differs from `expected`, naming it.
  absl::StatusOr<Tensor> Get(absl::string_view name, const Shape& expected) const;
  absl::StatusOr<Tensor> Get(absl::string_view name) const;

 private:
  std::vector<std::shared_ptr<const SafetensorsFile>> files_;
  absl::flat_hash_map<std::string, size_t> file_of_;
};

}  // namespace switchyard

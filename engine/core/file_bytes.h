// A file's bytes, read-only: memory-mapped from disk, or owned (a file image built in memory by a
// test or a fuzzer). The parsers of model files (safetensors, GGUF) read through it.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace switchyard {

class FileBytes {
 public:
  // NOT_FOUND when it cannot be opened; INVALID_ARGUMENT when not a regular file.
  static absl::StatusOr<FileBytes> Map(const std::string& path);
  static FileBytes Own(std::string bytes);

  FileBytes() = default;
  FileBytes(FileBytes&& other) noexcept;
  FileBytes& operator=(FileBytes&& other) noexcept;
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes();

  const char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void Release();

  const char* data_ = nullptr;
  size_t size_ = 0;
  void* mapping_ = nullptr;
  std::string owned_;
};

}  // namespace switchyard

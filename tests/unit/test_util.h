// Helpers shared by the unit tests.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace switchyard {

// A fresh directory, removed with its contents at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "switchyard-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The tiny model that ctest's model fixture generates (tests/CMakeLists.txt).
inline std::string TinyModelDir() {
  const char* dir = std::getenv("SWITCHYARD_TEST_MODEL");
  return dir != nullptr ? dir : "";
}

}  // namespace switchyard

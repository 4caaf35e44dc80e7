// Pre-tokenizer regular expressions through PCRE2 (UTF, Unicode properties, JIT). Compiled once,
// matched from any thread.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard {

class Regex {
 public:
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(absl::string_view pattern);
  // A pattern matching `literal` exactly.
  static absl::StatusOr<std::unique_ptr<Regex>> Literal(absl::string_view literal);
  ~Regex();

  // Non-overlapping matches, left to right, as [begin, end) byte offsets. Empty matches are
  // skipped over one character, as JavaScript's matchAll does. `text` must be valid UTF-8.
  void FindAll(absl::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

 private:
  Regex() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace switchyard

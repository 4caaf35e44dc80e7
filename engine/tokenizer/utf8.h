// UTF-8 helpers: validation, code point iteration, and a streaming lossy decoder that replaces
// each maximal invalid subpart with U+FFFD (the WHATWG / Rust from_utf8_lossy rule).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace switchyard::utf8 {

inline constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Byte offset of the first invalid sequence, or npos when `s` is valid UTF-8.
size_t FirstInvalid(absl::string_view s);

// Length of the (valid) sequence starting with lead byte `b`, or 0 for a continuation or an
// invalid lead byte.
inline int SequenceLength(unsigned char b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

// Decodes the code point at s[*pos] of valid UTF-8 and advances *pos.
char32_t Next(absl::string_view s, size_t* pos);
void Append(char32_t cp, std::string* out);

// Feeds bytes, emits text: complete characters as they close, U+FFFD for each maximal subpart of
// an ill-formed sequence. Finish() flushes a truncated trailing sequence as one U+FFFD.
class LossyDecoder {
 public:
  void Push(absl::string_view bytes, std::string* out);
  void Finish(std::string* out);
  bool pending() const { return have_ > 0; }

 private:
  unsigned char buf_[4] = {};
  int have_ = 0;
  int need_ = 0;
};

// `s` with every maximal invalid subpart replaced by U+FFFD.
std::string Sanitize(absl::string_view s);

}  // namespace switchyard::utf8

// Python's str methods over UTF-8 text, as chat templates call them (strip, split, title ...).
// Case mappings and character classes come from utf8proc, per code point.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace switchyard::jinja::py {

// Decodes the code point at s[*pos] and advances *pos; a byte that starts no valid UTF-8
// sequence decodes as itself (one code point per byte, never a failure).
char32_t NextCodePoint(absl::string_view s, size_t* pos);

bool IsSpace(char32_t cp);  // str.isspace
// strip/lstrip/rstrip: whitespace when `chars` is absent, else any code point of `chars`.
std::string Strip(absl::string_view s, const std::optional<std::string>& chars, bool left,
                  bool right);
// split/rsplit: on runs of whitespace when `sep` is absent; maxsplit < 0 is unlimited.
std::vector<std::string> Split(absl::string_view s, const std::optional<std::string>& sep,
                               int64_t maxsplit, bool from_right);
std::vector<std::string> SplitLines(absl::string_view s, bool keepends);
std::string Upper(absl::string_view s);
std::string Lower(absl::string_view s);
std::string Title(absl::string_view s);       // str.title
std::string Capitalize(absl::string_view s);  // str.capitalize
std::string SwapCase(absl::string_view s);
// isalpha, isdigit, isalnum, isupper, islower, isspace as Python defines them on a whole string.
bool IsClass(absl::string_view s, absl::string_view method);
std::string Replace(absl::string_view s, absl::string_view old, absl::string_view replacement,
                    int64_t count);
int64_t Count(absl::string_view s, absl::string_view sub);
// find/rfind in code points; -1 when absent.
int64_t Find(absl::string_view s, absl::string_view sub, bool from_right);

}  // namespace switchyard::jinja::py

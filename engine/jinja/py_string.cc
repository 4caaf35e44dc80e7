#include "engine/jinja/py_string.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/jinja/value.h"
#include "utf8proc.h"

namespace switchyard::jinja::py {
namespace {

std::vector<char32_t> Decode(absl::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) out.push_back(NextCodePoint(s, &pos));
  return out;
}

void Encode(char32_t cp, std::string* out) {
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
  out->append(reinterpret_cast<const char*>(buf), n);
}

std::string Encode(const std::vector<char32_t>& cps, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) Encode(cps[i], &out);
  return out;
}

bool IsCased(char32_t cp) {
  const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT;
}

char32_t ToUpper(char32_t cp) { return utf8proc_toupper(static_cast<utf8proc_int32_t>(cp)); }
char32_t ToLower(char32_t cp) { return utf8proc_tolower(static_cast<utf8proc_int32_t>(cp)); }

template <typename F>
std::string MapChars(absl::string_view s, F f) {
  std::string out;
  out.reserve(s.size());
  for (char32_t cp : Decode(s)) Encode(f(cp), &out);
  return out;
}

}  // namespace

char32_t NextCodePoint(absl::string_view s, size_t* pos) {
  utf8proc_int32_t cp = -1;
  const utf8proc_ssize_t n = utf8proc_iterate(
      reinterpret_cast<const utf8proc_uint8_t*>(s.data()) + *pos, s.size() - *pos, &cp);
  if (n <= 0) {
    cp = static_cast<unsigned char>(s[*pos]);
    *pos += 1;
  } else {
    *pos += n;
  }
  return static_cast<char32_t>(cp);
}

bool IsSpace(char32_t cp) {
  if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F)) return true;
  switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

std::string Strip(absl::string_view s, const std::optional<std::string>& chars, bool left,
                  bool right) {
  // Only the ends are decoded: templates trim every message, and contents can be long.
  std::vector<char32_t> set;
  if (chars) set = Decode(*chars);
  const auto strip = [&](char32_t cp) {
    if (!chars) return IsSpace(cp);
    return std::find(set.begin(), set.end(), cp) != set.end();
  };
  const auto at = [&](size_t pos, size_t* len) {
    size_t next = pos;
    const char32_t cp = NextCodePoint(s, &next);
    *len = next - pos;
    return cp;
  };
  size_t b = 0, e = s.size(), len = 0;
  while (left && b < e && strip(at(b, &len))) b += len;
  while (right && e > b) {
    size_t start = e - 1;
    while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    const char32_t cp = at(start, &len);
    if (start + len != e) {
      // An invalid tail: Decode takes each of its bytes as one code point.
      start = e - 1;
      if (!strip(static_cast<unsigned char>(s[start]))) break;
    } else if (!strip(cp)) {
      break;
    }
    e = start;
  }
  return std::string(s.substr(b, e - b));
}

std::vector<std::string> Split(absl::string_view s, const std::optional<std::string>& sep,
                               int64_t maxsplit, bool from_right) {
  std::vector<std::string> parts;
  if (sep) {
    if (sep->empty()) Fail("empty separator");
    if (!from_right) {
      size_t start = 0;
      while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
        const size_t at = s.find(*sep, start);
        if (at == absl::string_view::npos) break;
        parts.emplace_back(s.substr(start, at - start));
        start = at + sep->size();
      }
      parts.emplace_back(s.substr(start));
      return parts;
    }
    size_t end = s.size();
    std::vector<std::string> rev;
    while (maxsplit < 0 || static_cast<int64_t>(rev.size()) < maxsplit) {
      if (end < sep->size()) break;
      const size_t at = s.rfind(*sep, end - sep->size());
      if (at == absl::string_view::npos) break;
      rev.emplace_back(s.substr(at + sep->size(), end - at - sep->size()));
      end = at;
    }
    rev.emplace_back(s.substr(0, end));
    return std::vector<std::string>(rev.rbegin(), rev.rend());
  }
  // Runs of whitespace; leading and trailing whitespace yields no empty parts.
  const std::vector<char32_t> cps = Decode(s);
  if (!from_right) {
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && IsSpace(cps[i])) ++i;
      if (i == cps.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        size_t e = cps.size();
        while (e > i && IsSpace(cps[e - 1])) --e;
        parts.push_back(Encode(cps, i, e));
        break;
      }
      size_t j = i;
      while (j < cps.size() && !IsSpace(cps[j])) ++j;
      parts.push_back(Encode(cps, i, j));
      i = j;
    }
    return parts;
  }
  std::vector<std::string> rev;
  size_t i = cps.size();
  while (i > 0) {
    while (i > 0 && IsSpace(cps[i - 1])) --i;
    if (i == 0) break;
    if (maxsplit >= 0 && static_cast<int64_t>(rev.size()) == maxsplit) {
      size_t b = 0;
      while (b < i && IsSpace(cps[b])) ++b;
      rev.push_back(Encode(cps, b, i));
      break;
    }
    size_t j = i;
    while (j > 0 && !IsSpace(cps[j - 1])) --j;
    rev.push_back(Encode(cps, j, i));
    i = j;
  }
  return std::vector<std::string>(rev.rbegin(), rev.rend());
}

std::vector<std::string> SplitLines(absl::string_view s, bool keepends) {
  const std::vector<char32_t> cps = Decode(s);
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    const char32_t c = cps[i];
    const bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D ||
                     c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) continue;
    size_t end = i + 1;
    if (c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') end = i + 2;
    lines.push_back(Encode(cps, start, keepends ? end : i));
    start = end;
    i = end - 1;
  }
  if (start < cps.size()) lines.push_back(Encode(cps, start, cps.size()));
  return lines;
}

std::string Upper(absl::string_view s) { return MapChars(s, ToUpper); }
std::string Lower(absl::string_view s) { return MapChars(s, ToLower); }

std::string SwapCase(absl::string_view s) {
  return MapChars(s, [](char32_t cp) {
    const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
    if (c == UTF8PROC_CATEGORY_LU) return ToLower(cp);
    if (c == UTF8PROC_CATEGORY_LL) return ToUpper(cp);
    return cp;
  });
}

std::string Title(absl::string_view s) {
  std::string out;
  bool previous_cased = false;
  for (char32_t cp : Decode(s)) {
    if (IsCased(cp)) {
      Encode(previous_cased ? ToLower(cp) : utf8proc_totitle(static_cast<utf8proc_int32_t>(cp)),
             &out);
      previous_cased = true;
    } else {
      Encode(cp, &out);
      previous_cased = false;
    }
  }
  return out;
}

std::string Capitalize(absl::string_view s) {
  const std::vector<char32_t> cps = Decode(s);
  std::string out;
  for (size_t i = 0; i < cps.size(); ++i) {
    Encode(i == 0 ? utf8proc_totitle(static_cast<utf8proc_int32_t>(cps[i])) : ToLower(cps[i]),
           &out);
  }
  return out;
}

bool IsClass(absl::string_view s, absl::string_view method) {
  const std::vector<char32_t> cps = Decode(s);
  if (cps.empty()) return false;
  if (method == "isupper" || method == "islower") {
    bool any_cased = false;
    for (char32_t cp : cps) {
      const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
      if (c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LT) {
        if (method == "islower") return false;
        any_cased = true;
      } else if (c == UTF8PROC_CATEGORY_LL) {
        if (method == "isupper") return false;
        any_cased = true;
      }
    }
    return any_cased;
  }
  for (char32_t cp : cps) {
    const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
    const bool alpha = c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
    const bool digit = c == UTF8PROC_CATEGORY_ND;
    bool ok;
    if (method == "isalpha") {
      ok = alpha;
    } else if (method == "isdigit" || method == "isdecimal" || method == "isnumeric") {
      ok = digit;
    } else if (method == "isalnum") {
      ok = alpha || digit;
    } else {
      ok = IsSpace(cp);
    }
    if (!ok) return false;
  }
  return true;
}

std::string Replace(absl::string_view s, absl::string_view old, absl::string_view replacement,
                    int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts the replacement between every character and at both ends.
    const std::vector<char32_t> cps = Decode(s);
    int64_t done = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        absl::StrAppend(&out, replacement);
        ++done;
      }
      if (i < cps.size()) Encode(cps[i], &out);
    }
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t at = s.find(old, start);
    if (at == absl::string_view::npos) break;
    absl::StrAppend(&out, s.substr(start, at - start));
    absl::StrAppend(&out, replacement);
    start = at + old.size();
    ++done;
  }
  absl::StrAppend(&out, s.substr(start));
  return out;
}

int64_t Count(absl::string_view s, absl::string_view sub) {
  if (sub.empty()) return static_cast<int64_t>(CodePointCount(s)) + 1;
  int64_t n = 0;
  for (size_t at = s.find(sub); at != absl::string_view::npos; at = s.find(sub, at + sub.size())) {
    ++n;
  }
  return n;
}

int64_t Find(absl::string_view s, absl::string_view sub, bool from_right) {
  const size_t at = from_right ? s.rfind(sub) : s.find(sub);
  if (at == absl::string_view::npos) return -1;
  return static_cast<int64_t>(CodePointCount(s.substr(0, at)));
}

}  // namespace switchyard::jinja::py

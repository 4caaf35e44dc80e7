#include "engine/tokenizer/utf8.h"

namespace switchyard::utf8 {
namespace {

// Valid range of the second byte for a given lead byte (Unicode Table 3-7).
inline bool SecondByteOk(unsigned char lead, unsigned char b) {
  switch (lead) {
    case 0xE0:
      return b >= 0xA0 && b <= 0xBF;
    case 0xED:
      return b >= 0x80 && b <= 0x9F;
    case 0xF0:
      return b >= 0x90 && b <= 0xBF;
    case 0xF4:
      return b >= 0x80 && b <= 0x8F;
    default:
      return b >= 0x80 && b <= 0xBF;
  }
}

inline bool IsContinuation(unsigned char b) { return b >= 0x80 && b <= 0xBF; }

}  // namespace

size_t FirstInvalid(absl::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    const int len = SequenceLength(b);
    if (len == 0 || i + len > n) return i;
    if (!SecondByteOk(b, static_cast<unsigned char>(s[i + 1]))) return i;
    for (int k = 2; k < len; ++k) {
      if (!IsContinuation(static_cast<unsigned char>(s[i + k]))) return i;
    }
    i += len;
  }
  return absl::string_view::npos;
}

char32_t Next(absl::string_view s, size_t* pos) {
  const unsigned char b = static_cast<unsigned char>(s[*pos]);
  const int len = SequenceLength(b);
  char32_t cp;
  switch (len) {
    case 1:
      cp = b;
      break;
    case 2:
      cp = b & 0x1F;
      break;
    case 3:
      cp = b & 0x0F;
      break;
    default:
      cp = b & 0x07;
      break;
  }
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[*pos + k]) & 0x3F);
  *pos += len > 0 ? len : 1;
  return cp;
}

void Append(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

void LossyDecoder::Push(absl::string_view bytes, std::string* out) {
  for (const char c : bytes) {
    const unsigned char b = static_cast<unsigned char>(c);
    if (have_ == 0) {
      if (b < 0x80) {
        out->push_back(c);
        continue;
      }
      const int len = SequenceLength(b);
      if (len == 0) {
        out->append(kReplacement.data(), kReplacement.size());
        continue;
      }
      buf_[0] = b;
      have_ = 1;
      need_ = len;
      continue;
    }
    const bool ok = have_ == 1 ? SecondByteOk(buf_[0], b) : IsContinuation(b);
    if (!ok) {
      // The maximal subpart so far is replaced; this byte starts over.
      out->append(kReplacement.data(), kReplacement.size());
      have_ = 0;
      Push(absl::string_view(&c, 1), out);
      continue;
    }
    buf_[have_++] = b;
    if (have_ == need_) {
      out->append(reinterpret_cast<const char*>(buf_), have_);
      have_ = 0;
    }
  }
}

void LossyDecoder::Finish(std::string* out) {
  if (have_ > 0) out->append(kReplacement.data(), kReplacement.size());
  have_ = 0;
}

std::string Sanitize(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  LossyDecoder d;
  d.Push(s, &out);
  d.Finish(&out);
  return out;
}

}  // namespace switchyard::utf8

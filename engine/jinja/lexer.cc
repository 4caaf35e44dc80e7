#include "engine/jinja/lexer.h"

#include <cctype>

#include "absl/strings/str_cat.h"
#include "engine/jinja/value.h"

namespace switchyard::jinja {
namespace {

[[noreturn]] void SyntaxError(int line, const std::string& message) {
  throw Error(Error::Kind::kSyntax, absl::StrCat(message, " (line ", line, ")"));
}

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string NormalizeNewlines(absl::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

void AppendHex(absl::string_view digits, std::string* out, int line) {
  uint32_t cp = 0;
  for (char c : digits) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) SyntaxError(line, "bad escape in string");
    cp = cp * 16 +
         (std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (std::tolower(c) - 'a' + 10));
  }
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) SyntaxError(line, "bad escape in string");
  if (cp < 0x80) {
    *out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    *out += static_cast<char>(0xC0 | (cp >> 6));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *out += static_cast<char>(0xE0 | (cp >> 12));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    *out += static_cast<char>(0xF0 | (cp >> 18));
    *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Python's unicode-escape decoding of a string literal's body; unknown escapes keep the backslash.
std::string Unescape(absl::string_view body, int line) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 == body.size()) {
      out += body[i];
      continue;
    }
    const char c = body[++i];
    switch (c) {
      case '\\':
        out += '\\';
        break;
      case '\'':
        out += '\'';
        break;
      case '"':
        out += '"';
        break;
      case 'a':
        out += '\a';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'v':
        out += '\v';
        break;
      case '\n':
        break;
      case 'x':
      case 'u':
      case 'U': {
        const size_t len = c == 'x' ? 2 : (c == 'u' ? 4 : 8);
        if (i + len >= body.size()) SyntaxError(line, "truncated escape in string");
        AppendHex(body.substr(i + 1, len), &out, line);
        i += len;
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          uint32_t v = 0;
          size_t n = 0;
          while (n < 3 && i < body.size() && body[i] >= '0' && body[i] <= '7') {
            v = v * 8 + (body[i] - '0');
            ++i;
            ++n;
          }
          --i;
          AppendHex(absl::StrCat(absl::Hex(v)), &out, line);
        } else {
          out += '\\';
          out += c;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {}

  std::vector<Token> Run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      const size_t open = NextOpener(pos_);
      std::string text = src_.substr(pos_, open - pos_);
      if (open == src_.size()) {
        EmitText(std::move(text));
        pos_ = open;
        break;
      }
      const char kind = src_[open + 1];  // '{', '%' or '#'
      size_t p = open + 2;
      const char sign = p < src_.size() && (src_[p] == '-' || src_[p] == '+') ? src_[p] : 0;
      if (sign == '-') {
        size_t e = text.size();
        while (e > 0 && IsSpace(text[e - 1])) --e;
        text.resize(e);
      } else if (sign != '+' && kind != '{') {
        const size_t line_start = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
        if (line_start > 0 || line_starting) {
          bool blank = true;
          for (size_t i = line_start; i < text.size(); ++i) blank = blank && IsSpace(text[i]);
          if (blank) text.resize(line_start);
        }
      }
      EmitText(std::move(text));
      CountLines(pos_, open);
      pos_ = sign ? p + 1 : p;
      if (kind == '#') {
        line_starting = Comment();
      } else {
        line_starting = Tag(kind == '%');
      }
    }
    tokens_.push_back({Token::Type::kEof, "", line_});
    return std::move(tokens_);
  }

 private:
  size_t NextOpener(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) {
        return i;
      }
    }
    return src_.size();
  }

  void CountLines(size_t from, size_t to) {
    for (size_t i = from; i < to && i < src_.size(); ++i) line_ += src_[i] == '\n';
  }

  void EmitText(std::string text) {
    if (!text.empty()) tokens_.push_back({Token::Type::kText, std::move(text), line_});
  }

  // Consumes whitespace after a '-' closer, or one newline after a plain block closer; returns
  // whether what was consumed ends a line (lstrip_blocks then applies to the next tag).
  bool AfterClose(char sign, bool block) {
    if (sign == '-') {
      const size_t start = pos_;
      while (pos_ < src_.size() && IsSpace(src_[pos_])) ++pos_;
      CountLines(start, pos_);
      return pos_ > start && src_[pos_ - 1] == '\n';
    }
    if (sign == 0 && block && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
      ++line_;
      return true;
    }
    return false;
  }

  bool Comment() {
    const size_t end = src_.find("#}", pos_);
    if (end == std::string::npos) SyntaxError(line_, "missing end of comment tag");
    char sign = 0;
    if (end > pos_ && (src_[end - 1] == '-' || src_[end - 1] == '+')) sign = src_[end - 1];
    CountLines(pos_, end);
    pos_ = end + 2;
    return AfterClose(sign, true);
  }

  // Lexes one {{ }} or {% %} tag. Closers inside open brackets are operators, as in Jinja.
  bool Tag(bool block) {
    tokens_.push_back({block ? Token::Type::kBlockBegin : Token::Type::kVarBegin, "", line_});
    const size_t first_token = tokens_.size();
    int depth = 0;
    while (true) {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) {
        line_ += src_[pos_] == '\n';
        ++pos_;
      }
      if (pos_ >= src_.size())
        SyntaxError(line_, block ? "unexpected end of template in a {% %} tag"
                                 : "unexpected end of template in a {{ }} expression");
      if (depth == 0) {
        const std::string closer = block ? "%}" : "}}";
        size_t at = pos_;
        char sign = 0;
        if ((src_[at] == '-' || (block && src_[at] == '+')) &&
            src_.compare(at + 1, 2, closer) == 0) {
          sign = src_[at++];
        }
        if (src_.compare(at, 2, closer) == 0) {
          pos_ = at + 2;
          tokens_.push_back({block ? Token::Type::kBlockEnd : Token::Type::kVarEnd, "", line_});
          const bool raw = block && tokens_.size() == first_token + 2 &&
                           tokens_[first_token].type == Token::Type::kName &&
                           tokens_[first_token].value == "raw";
          return raw ? Raw(sign, first_token) : AfterClose(sign, block);
        }
      }
      LexToken(&depth);
    }
  }

  // {% raw %} ... {% endraw %}: the text in between, verbatim.
  bool Raw(char open_sign, size_t first_token) {
    tokens_.resize(first_token - 1);
    AfterClose(open_sign, true);
    for (size_t i = src_.find("{%", pos_); i != std::string::npos; i = src_.find("{%", i + 1)) {
      size_t p = i + 2;
      const char lead = p < src_.size() && (src_[p] == '-' || src_[p] == '+') ? src_[p] : 0;
      if (lead) ++p;
      while (p < src_.size() && IsSpace(src_[p])) ++p;
      if (src_.compare(p, 6, "endraw") != 0) continue;
      p += 6;
      while (p < src_.size() && IsSpace(src_[p])) ++p;
      char sign = 0;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
      if (src_.compare(p, 2, "%}") != 0) continue;
      std::string text = src_.substr(pos_, i - pos_);
      if (lead == '-') {
        size_t e = text.size();
        while (e > 0 && IsSpace(text[e - 1])) --e;
        text.resize(e);
      }
      EmitText(std::move(text));
      CountLines(pos_, p + 2);
      pos_ = p + 2;
      return AfterClose(sign, true);
    }
    SyntaxError(line_, "missing {% endraw %}");
  }

  void LexToken(int* depth) {
    const char c = src_[pos_];
    if (c == '\'' || c == '"') {
      size_t i = pos_ + 1;
      while (i < src_.size() && src_[i] != c) i += src_[i] == '\\' ? 2 : 1;
      if (i >= src_.size()) SyntaxError(line_, "unterminated string");
      const int line = line_;
      CountLines(pos_, i);
      tokens_.push_back({Token::Type::kString,
                         Unescape(absl::string_view(src_).substr(pos_ + 1, i - pos_ - 1), line),
                         line});
      pos_ = i + 1;
      return;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      LexNumber();
      return;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t i = pos_;
      while (i < src_.size() &&
             (std::isalnum(static_cast<unsigned char>(src_[i])) || src_[i] == '_'))
        ++i;
      tokens_.push_back({Token::Type::kName, src_.substr(pos_, i - pos_), line_});
      pos_ = i;
      return;
    }
    static const char* kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* op : kTwo) {
      if (src_.compare(pos_, 2, op) == 0) {
        tokens_.push_back({Token::Type::kOp, op, line_});
        pos_ += 2;
        return;
      }
    }
    if (std::string("+-/*%~[](){}<>=.,:|;").find(c) == std::string::npos) {
      SyntaxError(line_, absl::StrCat("unexpected character '", std::string(1, c), "'"));
    }
    if (c == '(' || c == '[' || c == '{') ++*depth;
    if (c == ')' || c == ']' || c == '}') {
      if (*depth == 0) SyntaxError(line_, absl::StrCat("unexpected '", std::string(1, c), "'"));
      --*depth;
    }
    tokens_.push_back({Token::Type::kOp, std::string(1, c), line_});
    ++pos_;
  }

  void LexNumber() {
    const bool after_dot = !tokens_.empty() && tokens_.back().type == Token::Type::kOp &&
                           tokens_.back().value == "." && pos_ > 0 && src_[pos_ - 1] == '.';
    const auto digits = [&](size_t i) {
      while (i < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[i])) ||
                                 (src_[i] == '_' && i + 1 < src_.size() &&
                                  std::isdigit(static_cast<unsigned char>(src_[i + 1]))))) {
        ++i;
      }
      return i;
    };
    size_t i = digits(pos_);
    bool is_float = false;
    if (!after_dot && i + 1 < src_.size() && src_[i] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[i + 1]))) {
      i = digits(i + 1);
      is_float = true;
    }
    if (!after_dot && i < src_.size() && (src_[i] == 'e' || src_[i] == 'E')) {
      size_t j = i + 1;
      if (j < src_.size() && (src_[j] == '+' || src_[j] == '-')) ++j;
      if (j < src_.size() && std::isdigit(static_cast<unsigned char>(src_[j]))) {
        i = digits(j);
        is_float = true;
      }
    }
    std::string text;
    for (size_t k = pos_; k < i; ++k) {
      if (src_[k] != '_') text += src_[k];
    }
    tokens_.push_back({is_float ? Token::Type::kFloat : Token::Type::kInt, text, line_});
    pos_ = i;
  }

  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> Lex(absl::string_view source) { return Lexer(NormalizeNewlines(source)).Run(); }

}  // namespace switchyard::jinja

#include "engine/grammar/regex.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/core/status_macros.h"
#include "engine/tokenizer/utf8.h"

namespace switchyard::grammar {
namespace {

CodePointSet Digits() { return CodePointSet::Of('0', '9'); }
CodePointSet Word() {
  CodePointSet s = Digits();
  s.Add('A', 'Z');
  s.Add('a', 'z');
  s.Add('_', '_');
  return s;
}
CodePointSet Space() {  // ECMAScript's WhiteSpace and LineTerminator
  CodePointSet s;
  for (char32_t c : {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F,
                     0x205F, 0x3000, 0xFEFF}) {
    s.Add(c, c);
  }
  s.Add(0x2000, 0x200A);
  return s;
}
CodePointSet AnyButNewline() {
  CodePointSet s;
  for (char32_t c : {0x0A, 0x0D, 0x2028, 0x2029}) s.Add(c, c);
  return s.Complement();
}

class RegexParser {
 public:
  RegexParser(absl::string_view pattern, const RegexOptions& options, GrammarBuilder* b)
      : p_(pattern), options_(options), b_(b) {}

  absl::StatusOr<Sequence> Parse() {
    if (utf8::FirstInvalid(p_) != absl::string_view::npos) return Error("is not valid UTF-8");
    bool anchored_start = false, anchored_end = false;
    if (!p_.empty() && p_[0] == '^') anchored_start = true, pos_ = 1;
    size_t end = p_.size();
    if (end > pos_ && p_[end - 1] == '$' && !Escaped(end - 1)) anchored_end = true, --end;
    end_ = end;
    Sequence body;
    SY_ASSIGN_OR_RETURN(body, Alternation());
    if (pos_ != end_) return Error(absl::StrCat("has an unexpected ')' at offset ", pos_));
    if (!options_.search) return body;
    Sequence out;
    const Symbol any = b_->Star({Char(CodePointSet().Complement())});
    if (!anchored_start) out.push_back(any);
    out.insert(out.end(), body.begin(), body.end());
    if (!anchored_end) out.push_back(any);
    return out;
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("regex /", p_, "/ ", what));
  }
  bool Escaped(size_t i) const {
    size_t n = 0;
    while (i > 0 && p_[i - 1] == '\\') --i, ++n;
    return n % 2 == 1;
  }
  bool AtEnd() const { return pos_ >= end_; }
  char Peek() const { return p_[pos_]; }
  char32_t NextCodePoint() { return utf8::Next(p_, &pos_); }

  Symbol Char(const CodePointSet& set) {
    return options_.json_string ? JsonStringChar(set, b_) : Symbol::Class(set);
  }

  absl::StatusOr<Sequence> Alternation() {
    if (++depth_ > kMaxNesting) return Error("nests groups too deeply");
    std::vector<Sequence> alts;
    while (true) {
      Sequence seq;
      SY_ASSIGN_OR_RETURN(seq, Concatenation());
      alts.push_back(std::move(seq));
      if (AtEnd() || Peek() != '|') break;
      ++pos_;
    }
    --depth_;
    if (alts.size() == 1) return std::move(alts[0]);
    return Sequence{b_->Group(std::move(alts), "regex alternation")};
  }

  absl::StatusOr<Sequence> Concatenation() {
    Sequence seq;
    while (!AtEnd() && Peek() != '|' && Peek() != ')') {
      Sequence atom;
      SY_ASSIGN_OR_RETURN(atom, Atom());
      SY_ASSIGN_OR_RETURN(atom, Quantified(std::move(atom)));
      seq.insert(seq.end(), atom.begin(), atom.end());
      if (b_->size() > (1u << 20)) return Error("expands to too large a grammar");
    }
    return seq;
  }

  absl::StatusOr<Sequence> Quantified(Sequence atom) {
    while (!AtEnd()) {
      int64_t min = 0, max = -1;
      const char c = Peek();
      if (c == '*') {
        ++pos_;
      } else if (c == '+') {
        min = 1, ++pos_;
      } else if (c == '?') {
        max = 1, ++pos_;
      } else if (c == '{' && ParseBraces(&min, &max)) {
      } else {
        break;
      }
      if (!AtEnd() && Peek() == '?') ++pos_;  // lazy: same language
      if (!AtEnd() && (Peek() == '*' || Peek() == '+' || Peek() == '?' || Peek() == '{')) {
        if (Peek() != '{' || IsBraceQuantifier()) return Error("has a quantifier after another");
      }
      if (max >= 0 && max < min) return Error("has a {n,m} quantifier with m < n");
      if (min > options_.max_repeat || max > options_.max_repeat) {
        return Error(absl::StrCat("repeats more than ", options_.max_repeat, " times"));
      }
      atom = Sequence{b_->Repeat(atom, min, max)};
    }
    return atom;
  }

  bool IsBraceQuantifier() {
    const size_t save = pos_;
    int64_t a, b;
    const bool ok = ParseBraces(&a, &b);
    pos_ = save;
    return ok;
  }

  // {n}, {n,}, {n,m}; anything else is a literal '{' (as ECMAScript's Annex B reads it).
  bool ParseBraces(int64_t* min, int64_t* max) {
    size_t i = pos_ + 1;
    const auto number = [&](int64_t* out) {
      const size_t start = i;
      int64_t v = 0;
      while (i < end_ && p_[i] >= '0' && p_[i] <= '9') {
        v = std::min<int64_t>(v * 10 + (p_[i] - '0'), int64_t{1} << 40);
        ++i;
      }
      *out = v;
      return i > start;
    };
    if (!number(min)) return false;
    *max = *min;
    if (i < end_ && p_[i] == ',') {
      ++i;
      if (!number(max)) *max = -1;
    }
    if (i >= end_ || p_[i] != '}') return false;
    pos_ = i + 1;
    return true;
  }

  absl::StatusOr<Sequence> Atom() {
    const char c = Peek();
    if (c == '(') {
      ++pos_;
      if (p_.substr(pos_, 2) == "?:") {
        pos_ += 2;
      } else if (p_.substr(pos_, 2) == "?<" && p_.substr(pos_, 3) != "?<=" &&
                 p_.substr(pos_, 3) != "?<!") {
        const size_t close = p_.find('>', pos_);
        if (close == absl::string_view::npos || close >= end_) return Error("has a bad group name");
        pos_ = close + 1;
      } else if (!AtEnd() && Peek() == '?') {
        return Error("uses lookaround or group flags, which constrained decoding cannot enforce");
      }
      Sequence inner;
      SY_ASSIGN_OR_RETURN(inner, Alternation());
      if (AtEnd() || Peek() != ')') return Error("has an unclosed '('");
      ++pos_;
      return Sequence{b_->Group({std::move(inner)}, "regex group")};
    }
    if (c == '[') return ClassAtom();
    if (c == '.') {
      ++pos_;
      return Sequence{Char(AnyButNewline())};
    }
    if (c == '^' || c == '$') return Error("has an anchor inside the pattern (only at its ends)");
    if (c == '*' || c == '+' || c == '?') return Error("has a quantifier with nothing before it");
    if (c == '\\') {
      CodePointSet set;
      SY_ASSIGN_OR_RETURN(set, Escape(/*in_class=*/false));
      return Sequence{Char(set)};
    }
    if (c == '{' && IsBraceQuantifier()) return Error("has a quantifier with nothing before it");
    const char32_t cp = NextCodePoint();
    return Sequence{Char(CodePointSet::Of(cp, cp))};
  }

  absl::StatusOr<CodePointSet> Escape(bool in_class) {
    ++pos_;  // '\'
    if (AtEnd()) return Error("ends with a lone backslash");
    const char c = Peek();
    ++pos_;
    switch (c) {
      case 'd':
        return Digits();
      case 'D':
        return Digits().Complement();
      case 'w':
        return Word();
      case 'W':
        return Word().Complement();
      case 's':
        return Space();
      case 'S':
        return Space().Complement();
      case 'n':
        return CodePointSet::Of('\n', '\n');
      case 'r':
        return CodePointSet::Of('\r', '\r');
      case 't':
        return CodePointSet::Of('\t', '\t');
      case 'f':
        return CodePointSet::Of('\f', '\f');
      case 'v':
        return CodePointSet::Of('\v', '\v');
      case '0':
        return CodePointSet::Of(0, 0);
      case 'b':
        if (in_class) return CodePointSet::Of('\b', '\b');
        return Error("uses \\b (word boundaries cannot be enforced token by token)");
      case 'B':
        return Error("uses \\B (word boundaries cannot be enforced token by token)");
      case 'x':
        return HexEscape(2);
      case 'u':
        if (!AtEnd() && Peek() == '{') {
          const size_t close = p_.find('}', pos_);
          if (close == absl::string_view::npos || close >= end_ || close == pos_ + 1) {
            return Error("has a bad \\u{...} escape");
          }
          ++pos_;
          return HexEscape(static_cast<int>(close - pos_), /*closing=*/true);
        }
        return HexEscape(4);
      case 'c':
        return Error("uses \\c control escapes, which are not supported");
      default:
        break;
    }
    if (c >= '1' && c <= '9') return Error("uses a backreference, which cannot be enforced");
    if (c == 'k') return Error("uses a named backreference, which cannot be enforced");
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      return Error(absl::StrFormat("has an unknown escape \\%c", c));
    }
    --pos_;
    const char32_t cp = NextCodePoint();
    return CodePointSet::Of(cp, cp);
  }

  absl::StatusOr<CodePointSet> HexEscape(int digits, bool closing = false) {
    if (pos_ + digits > end_) return Error("has a bad hex escape");
    const std::optional<char32_t> v = ParseHex(p_.substr(pos_, digits));
    if (!v) return Error("has a bad hex escape");
    pos_ += digits + (closing ? 1 : 0);  // and '}'
    if (*v > CodePointSet::kMax) return Error("has a code point beyond U+10FFFF");
    return CodePointSet::Of(*v, *v);
  }

  absl::StatusOr<Sequence> ClassAtom() {
    ++pos_;  // '['
    bool negate = false;
    if (!AtEnd() && Peek() == '^') negate = true, ++pos_;
    CodePointSet set;
    bool first = true;
    while (true) {
      if (AtEnd()) return Error("has an unclosed '['");
      if (Peek() == ']' && !first) break;
      if (Peek() == ']' && first) break;  // ECMAScript: [] matches nothing, [^] anything
      first = false;
      CodePointSet lo_set;
      SY_ASSIGN_OR_RETURN(lo_set, ClassMember());
      const bool single =
          lo_set.ranges().size() == 1 && lo_set.ranges()[0].first == lo_set.ranges()[0].second;
      if (single && pos_ + 1 < end_ && Peek() == '-' && p_[pos_ + 1] != ']') {
        ++pos_;
        CodePointSet hi_set;
        SY_ASSIGN_OR_RETURN(hi_set, ClassMember());
        if (hi_set.ranges().size() != 1 || hi_set.ranges()[0].first != hi_set.ranges()[0].second) {
          return Error("has a class range ending in a class escape");
        }
        const char32_t lo = lo_set.ranges()[0].first, hi = hi_set.ranges()[0].first;
        if (hi < lo) return Error("has a class range out of order");
        set.Add(lo, hi);
      } else {
        set.Add(lo_set);
      }
    }
    ++pos_;  // ']'
    if (negate) set = set.Complement();
    if (set.empty()) return Error("has a character class that matches nothing");
    return Sequence{Char(set)};
  }

  absl::StatusOr<CodePointSet> ClassMember() {
    if (Peek() == '\\') return Escape(/*in_class=*/true);
    const char32_t cp = NextCodePoint();
    return CodePointSet::Of(cp, cp);
  }

  absl::string_view p_;
  const RegexOptions& options_;
  GrammarBuilder* b_;
  size_t pos_ = 0;
  size_t end_ = 0;
  int depth_ = 0;
  static constexpr int kMaxNesting = 200;
};

}  // namespace

Symbol JsonStringChar(const CodePointSet& chars, GrammarBuilder* builder) {
  const CodePointSet controls = CodePointSet::Of(0, 0x1F);
  CodePointSet special = controls;
  special.Add('"', '"');
  special.Add('\\', '\\');
  std::vector<Sequence> alts;
  const CodePointSet plain = chars.Minus(special);
  if (!plain.empty()) alts.push_back({Symbol::Class(plain)});
  if (chars.Contains('"')) alts.push_back(GrammarBuilder::Literal("\\\""));
  if (chars.Contains('\\')) alts.push_back(GrammarBuilder::Literal("\\\\"));
  if (chars.Minus(controls).ranges() != chars.ranges()) {
    if (controls.Minus(chars).empty()) {
      // Every control character: \u0000 .. \u001f in one run of classes (fewer grammar
      // positions, so fewer cached contexts), and the short forms.
      Sequence u = GrammarBuilder::Literal("\\u00");
      u.push_back(Symbol::Class(CodePointSet::Of('0', '1')));
      CodePointSet hex = CodePointSet::Of('0', '9');
      hex.Add('a', 'f');
      u.push_back(Symbol::Class(hex));
      alts.push_back(std::move(u));
      alts.push_back({Symbol::Char('\\'), Symbol::Class([] {
                        CodePointSet s;
                        for (char c : {'n', 'r', 't', 'b', 'f'}) s.Add(c, c);
                        return s;
                      }())});
    } else {
      for (const auto& [lo, hi] : chars.ranges()) {
        for (char32_t c = lo; c <= std::min<char32_t>(hi, 0x1F); ++c) {
          alts.push_back(GrammarBuilder::Literal(absl::StrFormat("\\u%04x", static_cast<int>(c))));
          static constexpr absl::string_view kShort = "btn?fr";  // \b=8 .. \r=13
          if (c >= 8 && c <= 13 && kShort[c - 8] != '?') {
            alts.push_back({Symbol::Char('\\'), Symbol::Char(kShort[c - 8])});
          }
        }
      }
    }
  }
  return builder->Group(std::move(alts), "json string char");
}

absl::StatusOr<Sequence> CompileRegex(absl::string_view pattern, const RegexOptions& options,
                                      GrammarBuilder* builder) {
  return RegexParser(pattern, options, builder).Parse();
}

}  // namespace switchyard::grammar

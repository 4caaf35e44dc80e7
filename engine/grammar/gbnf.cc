#include "engine/grammar/gbnf.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/tokenizer/utf8.h"

namespace switchyard::grammar {
namespace {

constexpr int64_t kMaxRepeat = 10000;
constexpr int kMaxNesting = 200;

class GbnfParser {
 public:
  explicit GbnfParser(absl::string_view text) : t_(text) {}

  absl::StatusOr<Grammar> Parse() {
    if (utf8::FirstInvalid(t_) != absl::string_view::npos) {
      return absl::InvalidArgumentError("grammar is not valid UTF-8");
    }
    SkipSpace(true);
    while (pos_ < t_.size()) {
      SY_RETURN_IF_ERROR(ParseRule());
      SkipSpace(true);
    }
    auto root = rules_.find("root");
    if (root == rules_.end() || !root->second.defined) {
      return absl::InvalidArgumentError("grammar has no 'root' rule");
    }
    for (const auto& [name, rule] : rules_) {
      if (!rule.defined) {
        return absl::InvalidArgumentError(absl::StrCat("grammar rule '", name, "' is not defined"));
      }
    }
    return b_.Build(root->second.id);
  }

 private:
  absl::Status Error(absl::string_view what) const {
    int line = 1;
    for (size_t i = 0; i < pos_ && i < t_.size(); ++i) line += t_[i] == '\n';
    return absl::InvalidArgumentError(absl::StrCat("grammar line ", line, ": ", what));
  }

  static bool IsNameChar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
  }

  // Spaces, tabs, comments; newlines too when `newlines`.
  void SkipSpace(bool newlines) {
    while (pos_ < t_.size()) {
      const char c = t_[pos_];
      if (c == ' ' || c == '\t' || (newlines && (c == '\n' || c == '\r'))) {
        ++pos_;
      } else if (c == '#') {
        while (pos_ < t_.size() && t_[pos_] != '\n') ++pos_;
      } else {
        break;
      }
    }
  }

  struct NamedRule {
    int id = -1;
    bool defined = false;
  };
  NamedRule& Rule(absl::string_view name) {
    NamedRule& r = rules_[std::string(name)];
    if (r.id < 0) r.id = b_.NewRule(name);
    return r;
  }

  absl::StatusOr<std::string> Name() {
    const size_t start = pos_;
    while (pos_ < t_.size() && IsNameChar(t_[pos_])) ++pos_;
    if (pos_ == start) return Error("expected a rule name");
    return std::string(t_.substr(start, pos_ - start));
  }

  absl::Status ParseRule() {
    SY_ASSIGN_OR_RETURN(std::string name, Name());
    SkipSpace(false);
    if (t_.substr(pos_, 3) != "::=") return Error(absl::StrCat("expected ::= after '", name, "'"));
    pos_ += 3;
    SkipSpace(false);
    NamedRule& rule = Rule(name);
    if (rule.defined) return Error(absl::StrCat("rule '", name, "' is defined twice"));
    rule.defined = true;
    const int id = rule.id;
    SY_ASSIGN_OR_RETURN(std::vector<Sequence> alts, Alternatives(false, 0));
    for (Sequence& s : alts) b_.AddAlternative(id, std::move(s));
    if (pos_ < t_.size() && t_[pos_] != '\n' && t_[pos_] != '\r') {
      return Error(absl::StrCat("unexpected '", t_.substr(pos_, 1), "'"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<Sequence>> Alternatives(bool nested, int depth) {
    if (depth > kMaxNesting) return Error("nests too deeply");
    std::vector<Sequence> alts;
    while (true) {
      SY_ASSIGN_OR_RETURN(Sequence seq, Sequence_(nested, depth));
      alts.push_back(std::move(seq));
      if (pos_ >= t_.size() || t_[pos_] != '|') break;
      ++pos_;
      SkipSpace(true);
    }
    return alts;
  }

  absl::StatusOr<Sequence> Sequence_(bool nested, int depth) {
    Sequence seq;
    while (pos_ < t_.size()) {
      const char c = t_[pos_];
      Sequence atom;
      if (c == '"') {
        SY_ASSIGN_OR_RETURN(atom, LiteralAtom());
      } else if (c == '[') {
        SY_ASSIGN_OR_RETURN(CodePointSet set, ClassAtom());
        atom = {Symbol::Class(std::move(set))};
      } else if (c == '.') {
        ++pos_;
        atom = {Symbol::Class(CodePointSet().Complement())};
      } else if (c == '(') {
        ++pos_;
        SkipSpace(true);
        SY_ASSIGN_OR_RETURN(std::vector<Sequence> inner, Alternatives(true, depth + 1));
        if (pos_ >= t_.size() || t_[pos_] != ')') return Error("expected ')'");
        ++pos_;
        atom = {b_.Group(std::move(inner), "group")};
      } else if (IsNameChar(c)) {
        const size_t save = pos_;
        SY_ASSIGN_OR_RETURN(std::string name, Name());
        size_t look = pos_;
        while (look < t_.size() && (t_[look] == ' ' || t_[look] == '\t')) ++look;
        if (t_.substr(look, 3) == "::=") {  // the next rule: this sequence ended at a newline
          pos_ = save;
          return Error(absl::StrCat("rule '", name, "' starts without a newline before it"));
        }
        atom = {Symbol::Rule(Rule(name).id)};
      } else {
        break;
      }
      SY_ASSIGN_OR_RETURN(atom, Repetition(std::move(atom)));
      seq.insert(seq.end(), atom.begin(), atom.end());
      SkipSpace(nested);
      if (b_.size() > (size_t{1} << 20)) return Error("the grammar is too large");
    }
    return seq;
  }

  absl::StatusOr<Sequence> Repetition(Sequence atom) {
    while (pos_ < t_.size()) {
      const char c = t_[pos_];
      if (c == '*') {
        atom = {b_.Star(std::move(atom))};
      } else if (c == '+') {
        atom = {b_.Plus(std::move(atom))};
      } else if (c == '?') {
        atom = {b_.Optional(std::move(atom))};
      } else if (c == '{') {
        ++pos_;
        SkipSpace(false);
        SY_ASSIGN_OR_RETURN(int64_t min, Number());
        int64_t max = min;
        SkipSpace(false);
        if (pos_ < t_.size() && t_[pos_] == ',') {
          ++pos_;
          SkipSpace(false);
          max = -1;
          if (pos_ < t_.size() && t_[pos_] >= '0' && t_[pos_] <= '9') {
            SY_ASSIGN_OR_RETURN(max, Number());
          }
          SkipSpace(false);
        }
        if (pos_ >= t_.size() || t_[pos_] != '}') return Error("expected '}'");
        if (max >= 0 && max < min) return Error("{m,n} with n < m");
        atom = {b_.Repeat(atom, min, max)};
      } else {
        break;
      }
      ++pos_;
    }
    return atom;
  }

  absl::StatusOr<int64_t> Number() {
    const size_t start = pos_;
    int64_t v = 0;
    while (pos_ < t_.size() && t_[pos_] >= '0' && t_[pos_] <= '9') {
      v = v * 10 + (t_[pos_++] - '0');
      if (v > kMaxRepeat) return Error(absl::StrCat("repeats more than ", kMaxRepeat, " times"));
    }
    if (pos_ == start) return Error("expected a number");
    return v;
  }

  absl::StatusOr<char32_t> Char() {
    if (pos_ >= t_.size()) return Error("unexpected end");
    if (t_[pos_] != '\\') return utf8::Next(t_, &pos_);
    ++pos_;
    if (pos_ >= t_.size()) return Error("unexpected end after '\\'");
    const char e = t_[pos_++];
    switch (e) {
      case 'n':
        return U'\n';
      case 'r':
        return U'\r';
      case 't':
        return U'\t';
      case '\\':
        return U'\\';
      case '"':
        return U'"';
      case '[':
        return U'[';
      case ']':
        return U']';
      case '-':
        return U'-';
      case '^':
        return U'^';
      case 'x':
        return Hex(2);
      case 'u':
        return Hex(4);
      case 'U':
        return Hex(8);
      default:
        return Error(absl::StrCat("unknown escape '\\", absl::string_view(&e, 1), "'"));
    }
  }

  absl::StatusOr<char32_t> Hex(int n) {
    if (pos_ + n > t_.size()) return Error("short hex escape");
    const std::optional<char32_t> parsed = ParseHex(t_.substr(pos_, n));
    if (!parsed) return Error("bad hex escape");
    pos_ += n;
    const char32_t v = *parsed;
    if (v > CodePointSet::kMax || (v >= 0xD800 && v <= 0xDFFF)) {
      return Error("escape is not a Unicode scalar value");
    }
    return v;
  }

  absl::StatusOr<Sequence> LiteralAtom() {
    ++pos_;
    std::string text;
    while (true) {
      if (pos_ >= t_.size() || t_[pos_] == '\n') return Error("unterminated string literal");
      if (t_[pos_] == '"') break;
      SY_ASSIGN_OR_RETURN(char32_t c, Char());
      utf8::Append(c, &text);
    }
    ++pos_;
    return GrammarBuilder::Literal(text);
  }

  absl::StatusOr<CodePointSet> ClassAtom() {
    ++pos_;
    bool negate = false;
    if (pos_ < t_.size() && t_[pos_] == '^') negate = true, ++pos_;
    CodePointSet set;
    while (true) {
      if (pos_ >= t_.size() || t_[pos_] == '\n') return Error("unterminated character class");
      if (t_[pos_] == ']') break;
      SY_ASSIGN_OR_RETURN(char32_t lo, Char());
      char32_t hi = lo;
      if (pos_ + 1 < t_.size() && t_[pos_] == '-' && t_[pos_ + 1] != ']') {
        ++pos_;
        SY_ASSIGN_OR_RETURN(hi, Char());
        if (hi < lo) return Error("character range out of order");
      }
      set.Add(lo, hi);
    }
    ++pos_;
    if (negate) set = set.Complement();
    if (set.empty()) return Error("character class matches nothing");
    return set;
  }

  absl::string_view t_;
  size_t pos_ = 0;
  GrammarBuilder b_;
  std::map<std::string, NamedRule> rules_;
};

}  // namespace

absl::StatusOr<Grammar> ParseGbnf(absl::string_view text) { return GbnfParser(text).Parse(); }

}  // namespace switchyard::grammar

// Context-free grammars over bytes, the form every structured-output constraint compiles to (JSON
// schema, regex, choice, GBNF). Authors build rules over Unicode code points with GrammarBuilder;
// Build() lowers them to a flat byte-level grammar (a code-point class becomes the UTF-8 byte
// sequences of its ranges), refuses left recursion and bounds the size.
//
// Thread-safety: a built Grammar is immutable.
#pragma once

#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::grammar {

// A set of code points as sorted, disjoint, non-adjacent closed ranges.
class CodePointSet {
 public:
  static constexpr char32_t kMax = 0x10FFFF;
  CodePointSet() = default;
  static CodePointSet Of(char32_t lo, char32_t hi) {
    CodePointSet s;
    s.Add(lo, hi);
    return s;
  }
  void Add(char32_t lo, char32_t hi);
  void Add(const CodePointSet& other);
  CodePointSet Complement() const;  // within [0, kMax], surrogates excluded
  CodePointSet Minus(const CodePointSet& other) const;
  bool Contains(char32_t c) const;
  bool empty() const { return ranges_.empty(); }
  const std::vector<std::pair<char32_t, char32_t>>& ranges() const { return ranges_; }

 private:
  std::vector<std::pair<char32_t, char32_t>> ranges_;
};

// One symbol of an alternative: a code-point class or a reference to a rule.
struct Symbol {
  enum Kind { kClass, kRule } kind = kClass;
  CodePointSet chars;
  int rule = -1;
  static Symbol Class(CodePointSet s) { return {kClass, std::move(s), -1}; }
  static Symbol Char(char32_t c) { return Class(CodePointSet::Of(c, c)); }
  static Symbol Rule(int r) { return {kRule, {}, r}; }
};
using Sequence = std::vector<Symbol>;

// The byte-level grammar the matcher runs: rules are lists of alternatives; an alternative is a
// run of elements in `elements` ending with an kEnd element.
struct Grammar {
  struct Element {
    enum Kind : uint8_t { kBytes, kRule, kEnd } kind;
    int32_t arg;  // kBytes: index into byte_sets; kRule: the rule
  };
  std::vector<Element> elements;
  std::vector<std::bitset<256>> byte_sets;
  std::vector<std::vector<int32_t>> rule_alternatives;  // start element of each alternative
  std::vector<std::string> rule_names;
  int32_t root = 0;

  size_t num_elements() const { return elements.size(); }
};

struct GrammarLimits {
  size_t max_elements = 1 << 20;  // after lowering
  size_t max_rules = 1 << 17;
};

class GrammarBuilder {
 public:
  // Rules are named for error messages; names need not be unique.
  int NewRule(absl::string_view name);
  void AddAlternative(int rule, Sequence seq);
  int num_rules() const { return static_cast<int>(rules_.size()); }
  const std::string& rule_name(int rule) const { return rules_[rule].name; }
  bool has_alternatives(int rule) const { return !rules_[rule].alternatives.empty(); }

  // Conveniences; each returns a symbol (a new rule where one is needed).
  static Sequence Literal(absl::string_view text);  // UTF-8
  Symbol Group(std::vector<Sequence> alternatives, absl::string_view name = "group");
  Symbol Optional(Sequence seq);
  Symbol Star(Sequence seq);
  Symbol Plus(Sequence seq);
  // seq repeated min..max times (max < 0: unbounded), without exponential blow-up.
  Symbol Repeat(const Sequence& seq, int64_t min, int64_t max);

  // Lowers to bytes with `root` as the start rule. Refuses rules without alternatives, rules
  // that refer to themselves before consuming input (left recursion), and grammars past limits.
  absl::StatusOr<Grammar> Build(int root, const GrammarLimits& limits = {}) const;

  // Total symbols so far (compilers bound their output with it).
  size_t size() const { return symbols_; }

 private:
  struct RuleDef {
    std::string name;
    std::vector<Sequence> alternatives;
  };
  std::vector<RuleDef> rules_;
  size_t symbols_ = 0;
};

// The value of `digits` (1 to 8 hexadecimal digits), or nullopt when they are not that.
std::optional<char32_t> ParseHex(absl::string_view digits);

// UTF-8 byte sequences of a code-point class: each entry is a run of byte ranges (one per byte of
// the encoding). Surrogates are never produced.
std::vector<std::vector<std::pair<uint8_t, uint8_t>>> Utf8Sequences(const CodePointSet& set);

}  // namespace switchyard::grammar

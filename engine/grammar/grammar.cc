#include "engine/grammar/grammar.h"

#include <algorithm>
#include <map>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/utf8.h"

namespace switchyard::grammar {
namespace {

constexpr char32_t kSurrogateLo = 0xD800, kSurrogateHi = 0xDFFF;

int Utf8Length(char32_t c) { return c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4; }

void EncodeBytes(char32_t c, int n, uint8_t* out) {
  if (n == 1) {
    out[0] = static_cast<uint8_t>(c);
    return;
  }
  static constexpr uint8_t kLead[] = {0, 0, 0xC0, 0xE0, 0xF0};
  for (int i = n - 1; i > 0; --i) {
    out[i] = static_cast<uint8_t>(0x80 | (c & 0x3F));
    c >>= 6;
  }
  out[0] = static_cast<uint8_t>(kLead[n] | c);
}

// Splits [lo, hi] (one encoding length n) into ranges whose encodings are products of byte
// ranges.
void SplitSameLength(char32_t lo, char32_t hi, int n,
                     std::vector<std::vector<std::pair<uint8_t, uint8_t>>>* out) {
  for (int i = 1; i < n; ++i) {
    const char32_t m = (char32_t{1} << (6 * i)) - 1;
    if ((lo & ~m) == (hi & ~m)) continue;
    if ((lo & m) != 0) {
      SplitSameLength(lo, lo | m, n, out);
      SplitSameLength((lo | m) + 1, hi, n, out);
      return;
    }
    if ((hi & m) != m) {
      SplitSameLength(lo, (hi & ~m) - 1, n, out);
      SplitSameLength(hi & ~m, hi, n, out);
      return;
    }
  }
  uint8_t a[4], b[4];
  EncodeBytes(lo, n, a);
  EncodeBytes(hi, n, b);
  std::vector<std::pair<uint8_t, uint8_t>> seq;
  for (int i = 0; i < n; ++i) seq.emplace_back(a[i], b[i]);
  out->push_back(std::move(seq));
}

}  // namespace

std::optional<char32_t> ParseHex(absl::string_view digits) {
  if (digits.empty() || digits.size() > 8) return std::nullopt;
  char32_t v = 0;
  for (char h : digits) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(h))) return std::nullopt;
    v = v * 16 + static_cast<char32_t>(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
  }
  return v;
}

void CodePointSet::Add(char32_t lo, char32_t hi) {
  if (lo > hi) return;
  std::vector<std::pair<char32_t, char32_t>> merged;
  merged.reserve(ranges_.size() + 1);
  bool placed = false;
  for (const auto& r : ranges_) {
    if (r.second + 1 < lo) {
      merged.push_back(r);
    } else if (hi + 1 < r.first) {
      if (!placed) merged.emplace_back(lo, hi), placed = true;
      merged.push_back(r);
    } else {
      lo = std::min(lo, r.first);
      hi = std::max(hi, r.second);
    }
  }
  if (!placed) merged.emplace_back(lo, hi);
  ranges_ = std::move(merged);
}

void CodePointSet::Add(const CodePointSet& other) {
  for (const auto& [lo, hi] : other.ranges_) Add(lo, hi);
}

CodePointSet CodePointSet::Complement() const {
  CodePointSet out;
  char32_t next = 0;
  for (const auto& [lo, hi] : ranges_) {
    if (lo > next) out.Add(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMax) out.Add(next, kMax);
  return out.Minus(Of(kSurrogateLo, kSurrogateHi));
}

CodePointSet CodePointSet::Minus(const CodePointSet& other) const {
  CodePointSet out;
  for (auto [lo, hi] : ranges_) {
    for (const auto& [olo, ohi] : other.ranges_) {
      if (ohi < lo || olo > hi) continue;
      if (olo > lo) out.Add(lo, olo - 1);
      if (ohi >= hi) {
        lo = 1, hi = 0;  // consumed
        break;
      }
      lo = ohi + 1;
    }
    if (lo <= hi) out.Add(lo, hi);
  }
  return out;
}

bool CodePointSet::Contains(char32_t c) const {
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), c,
                             [](char32_t v, const auto& r) { return v < r.first; });
  return it != ranges_.begin() && std::prev(it)->second >= c;
}

std::vector<std::vector<std::pair<uint8_t, uint8_t>>> Utf8Sequences(const CodePointSet& set) {
  std::vector<std::vector<std::pair<uint8_t, uint8_t>>> out;
  static constexpr char32_t kBounds[] = {0x7F, 0x7FF, 0xFFFF, 0x10FFFF};
  const CodePointSet valid = set.Minus(CodePointSet::Of(kSurrogateLo, kSurrogateHi));
  for (auto [lo, hi] : valid.ranges()) {
    for (char32_t bound : kBounds) {
      if (lo > bound) continue;
      const char32_t end = std::min(hi, bound);
      SplitSameLength(lo, end, Utf8Length(lo), &out);
      if (end == hi) break;
      lo = end + 1;
    }
  }
  return out;
}

int GrammarBuilder::NewRule(absl::string_view name) {
  rules_.push_back({std::string(name), {}});
  return static_cast<int>(rules_.size()) - 1;
}

void GrammarBuilder::AddAlternative(int rule, Sequence seq) {
  symbols_ += seq.size() + 1;
  rules_[rule].alternatives.push_back(std::move(seq));
}

Sequence GrammarBuilder::Literal(absl::string_view text) {
  // Code points (each lowers back to its UTF-8 bytes); ill-formed UTF-8, which no API input
  // carries, would be matched as U+FFFD.
  const std::string valid = utf8::Sanitize(text);
  Sequence seq;
  for (size_t pos = 0; pos < valid.size();) seq.push_back(Symbol::Char(utf8::Next(valid, &pos)));
  return seq;
}

Symbol GrammarBuilder::Group(std::vector<Sequence> alternatives, absl::string_view name) {
  if (alternatives.size() == 1 && alternatives[0].size() == 1) return alternatives[0][0];
  const int r = NewRule(name);
  for (Sequence& s : alternatives) AddAlternative(r, std::move(s));
  return Symbol::Rule(r);
}

Symbol GrammarBuilder::Optional(Sequence seq) { return Group({std::move(seq), {}}, "optional"); }

Symbol GrammarBuilder::Star(Sequence seq) {
  const int r = NewRule("star");
  seq.push_back(Symbol::Rule(r));
  AddAlternative(r, std::move(seq));
  AddAlternative(r, {});
  return Symbol::Rule(r);
}

Symbol GrammarBuilder::Plus(Sequence seq) {
  Sequence once = seq;
  once.push_back(Star(std::move(seq)));
  return Group({std::move(once)}, "plus");
}

Symbol GrammarBuilder::Repeat(const Sequence& seq, int64_t min, int64_t max) {
  const Symbol item = Group({seq}, "item");
  Sequence body(static_cast<size_t>(min), item);
  if (max < 0) {
    body.push_back(Star({item}));
  } else if (max > min) {
    // tail_k ::= item tail_{k-1} | ""  (at most max - min more)
    Symbol tail = Optional({item});
    for (int64_t k = max - min; k > 1; --k) tail = Optional({item, tail});
    body.push_back(tail);
  }
  const int r = NewRule("repeat");
  AddAlternative(r, std::move(body));
  return Symbol::Rule(r);
}

absl::StatusOr<Grammar> GrammarBuilder::Build(int root, const GrammarLimits& limits) const {
  if (rules_.size() > limits.max_rules) {
    return absl::InvalidArgumentError(
        absl::StrCat("the grammar has more than ", limits.max_rules, " rules"));
  }
  Grammar g;
  g.root = root;
  g.rule_alternatives.resize(rules_.size());
  for (const RuleDef& r : rules_) g.rule_names.push_back(r.name);
  absl::flat_hash_map<std::string, int32_t> byte_set_index;
  const auto byte_set = [&](const std::bitset<256>& bits) {
    auto [it, inserted] = byte_set_index.try_emplace(bits.to_string(), g.byte_sets.size());
    if (inserted) g.byte_sets.push_back(bits);
    return it->second;
  };
  // Non-ASCII classes become rules of UTF-8 sequences, shared by equal classes.
  std::map<std::vector<std::pair<char32_t, char32_t>>, int32_t> class_rules;
  std::vector<std::vector<std::vector<Grammar::Element>>> pending(rules_.size());
  const auto lower_class = [&](const CodePointSet& set) -> Grammar::Element {
    if (!set.empty() && set.ranges().back().second < 0x80) {
      std::bitset<256> bits;
      for (auto [lo, hi] : set.ranges()) {
        for (char32_t c = lo; c <= hi; ++c) bits.set(c);
      }
      return {Grammar::Element::kBytes, byte_set(bits)};
    }
    auto [it, inserted] = class_rules.try_emplace(set.ranges(), 0);
    if (inserted) {
      it->second = static_cast<int32_t>(pending.size());
      pending.emplace_back();
      g.rule_names.push_back("utf8 class");
      g.rule_alternatives.emplace_back();
      for (const auto& seq : Utf8Sequences(set)) {
        std::vector<Grammar::Element> alt;
        for (auto [lo, hi] : seq) {
          std::bitset<256> bits;
          for (int b = lo; b <= hi; ++b) bits.set(b);
          alt.push_back({Grammar::Element::kBytes, byte_set(bits)});
        }
        pending[it->second].push_back(std::move(alt));
      }
    }
    return {Grammar::Element::kRule, it->second};
  };
  for (size_t r = 0; r < rules_.size(); ++r) {
    if (rules_[r].alternatives.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("grammar rule '", rules_[r].name, "' has no alternatives"));
    }
    for (const Sequence& seq : rules_[r].alternatives) {
      std::vector<Grammar::Element> alt;
      for (const Symbol& s : seq) {
        alt.push_back(s.kind == Symbol::kRule ? Grammar::Element{Grammar::Element::kRule, s.rule}
                                              : lower_class(s.chars));
      }
      pending[r].push_back(std::move(alt));
    }
  }
  for (size_t r = 0; r < pending.size(); ++r) {
    if (pending[r].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "grammar rule '", g.rule_names[r], "' matches nothing (an empty character class)"));
    }
    for (const auto& alt : pending[r]) {
      g.rule_alternatives[r].push_back(static_cast<int32_t>(g.elements.size()));
      g.elements.insert(g.elements.end(), alt.begin(), alt.end());
      g.elements.push_back({Grammar::Element::kEnd, 0});
    }
    if (g.elements.size() > limits.max_elements) {
      return absl::InvalidArgumentError(
          absl::StrCat("the grammar is too large (over ", limits.max_elements, " elements)"));
    }
  }

  // Left recursion would make expansion loop: find rules reachable from themselves through
  // prefixes that consume nothing.
  const size_t n = g.rule_alternatives.size();
  std::vector<char> nullable(n, 0);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t r = 0; r < n; ++r) {
      if (nullable[r]) continue;
      for (int32_t start : g.rule_alternatives[r]) {
        bool all = true;
        for (int32_t e = start; g.elements[e].kind != Grammar::Element::kEnd; ++e) {
          const auto& el = g.elements[e];
          if (el.kind == Grammar::Element::kBytes || !nullable[el.arg]) {
            all = false;
            break;
          }
        }
        if (all) {
          nullable[r] = 1;
          changed = true;
          break;
        }
      }
    }
  }
  std::vector<std::vector<int32_t>> left(n);
  for (size_t r = 0; r < n; ++r) {
    for (int32_t start : g.rule_alternatives[r]) {
      for (int32_t e = start; g.elements[e].kind == Grammar::Element::kRule; ++e) {
        left[r].push_back(g.elements[e].arg);
        if (!nullable[g.elements[e].arg]) break;
      }
    }
  }
  std::vector<char> color(n, 0);  // 0 new, 1 on the path, 2 done
  for (size_t start = 0; start < n; ++start) {
    if (color[start]) continue;
    std::vector<std::pair<int32_t, size_t>> stack{{static_cast<int32_t>(start), 0}};
    color[start] = 1;
    while (!stack.empty()) {
      auto& [r, i] = stack.back();
      if (i == left[r].size()) {
        color[r] = 2;
        stack.pop_back();
        continue;
      }
      const int32_t next = left[r][i++];
      if (color[next] == 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("grammar rule '", g.rule_names[next],
                         "' is left-recursive (it can reach itself without consuming input)"));
      }
      if (color[next] == 0) {
        color[next] = 1;
        stack.emplace_back(next, 0);
      }
    }
  }
  return g;
}

}  // namespace switchyard::grammar

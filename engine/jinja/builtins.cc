#include "engine/jinja/builtins.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/jinja/py_string.h"

namespace switchyard::jinja {
namespace {

using FilterFn = Value (*)(Interpreter&, const Value&, CallArgs&);
using TestFn = bool (*)(Interpreter&, const Value&, CallArgs&);

// ---- argument helpers ----

std::optional<std::string> OptString(const Value& v) {
  if (v.is_undefined() || v.is_none()) return std::nullopt;
  return ToString(v);
}

bool BoolArg(const Value& v, bool fallback) {
  if (v.is_undefined()) return fallback;
  return Truthy(v);
}

std::string StrOf(const Value& v) { return ToString(v); }

// Jinja's attribute getter for filters: "a.b.0" walks items (getitem first, as Jinja's
// environment.getitem).
Value GetPath(Interpreter& in, Value v, const std::string& path) {
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    int64_t index;
    if (absl::SimpleAtoi(part, &index)) {
      v = in.GetItem(v, Value::Int(index));
    } else {
      v = in.GetItem(v, Value::Str(std::string(part)));
    }
  }
  return v;
}

// A required argument: absent is an error naming it, as Python's missing positional argument.
Value Required(CallArgs& a, size_t index, absl::string_view name, absl::string_view function) {
  const bool given =
      index < a.positional.size() || std::any_of(a.keywords.begin(), a.keywords.end(),
                                                 [&](const auto& kw) { return kw.first == name; });
  if (!given) Fail(absl::StrCat(function, "() missing required argument '", name, "'"));
  return a.Get(index, name);
}

// ---- filters ----

Value FilterDefault(Interpreter&, const Value& v, CallArgs& a) {
  Value fallback = a.Get(0, "default_value");
  if (fallback.is_undefined()) fallback = Value::Str("");
  const bool boolean = BoolArg(a.Get(1, "boolean"), false);
  a.ExpectConsumed("default");
  if (v.is_undefined() || (boolean && !Truthy(v))) return fallback;
  return v;
}

Value FilterLength(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("length");
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return Value::Int(0);
    case Value::Kind::kString:
      return Value::Int(static_cast<int64_t>(CodePointCount(v.str())));
    case Value::Kind::kList:
      return Value::Int(static_cast<int64_t>(v.list().items.size()));
    case Value::Kind::kDict:
      if (!v.dict().is_namespace) return Value::Int(static_cast<int64_t>(v.dict().items.size()));
      break;
    default:
      break;
  }
  Fail(absl::StrCat("object of type '", TypeName(v), "' has no len()"));
}

Value FilterString(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("string");
  return Value::Str(StrOf(v));
}

Value FilterTrim(Interpreter&, const Value& v, CallArgs& a) {
  const std::optional<std::string> chars = OptString(a.Get(0, "chars"));
  a.ExpectConsumed("trim");
  return Value::Str(py::Strip(StrOf(v), chars, true, true));
}

Value FilterUpper(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("upper");
  return Value::Str(py::Upper(StrOf(v)));
}

Value FilterLower(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("lower");
  return Value::Str(py::Lower(StrOf(v)));
}

Value FilterCapitalize(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("capitalize");
  return Value::Str(py::Capitalize(StrOf(v)));
}

// Jinja's own title: words begin after '-', whitespace or an opening bracket.
Value FilterTitle(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("title");
  const std::vector<std::string> chars = CodePoints(StrOf(v));
  std::string out;
  bool word_start = true;
  for (const std::string& c : chars) {
    const bool sep =
        c == "-" || c == "(" || c == "{" || c == "[" || c == "<" ||
        (c.size() == 1 ? py::IsSpace(static_cast<unsigned char>(c[0])) : py::IsClass(c, "isspace"));
    if (sep) {
      out += c;
      word_start = true;
    } else {
      out += word_start ? py::Upper(c) : py::Lower(c);
      word_start = false;
    }
  }
  return Value::Str(std::move(out));
}

Value FilterFirst(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("first");
  std::vector<Value> items = Iterate(v);
  if (items.empty()) return Value::Undefined("No first item, sequence was empty.");
  return items.front();
}

Value FilterLast(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("last");
  std::vector<Value> items = Iterate(v);
  if (items.empty()) return Value::Undefined("No last item, sequence was empty.");
  return items.back();
}

Value FilterJoin(Interpreter& in, const Value& v, CallArgs& a) {
  const std::string sep = StrOf(a.Get(0, "d"));
  const std::optional<std::string> attribute = OptString(a.Get(1, "attribute"));
  a.ExpectConsumed("join");
  std::string out;
  bool first = true;
  for (const Value& item : Iterate(v)) {
    if (!first) out += sep;
    first = false;
    out += StrOf(attribute ? GetPath(in, item, *attribute) : item);
    in.CheckString(out.size());
  }
  return Value::Str(std::move(out));
}

Value FilterList(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("list");
  return Value::List(Iterate(v));
}

Value FilterReverse(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("reverse");
  std::vector<Value> items = Iterate(v);
  std::reverse(items.begin(), items.end());
  if (v.is_string()) {
    std::string out;
    for (const Value& c : items) out += c.str();
    return Value::Str(std::move(out));
  }
  return Value::List(std::move(items));
}

Value FilterToJson(Interpreter& in, const Value& v, CallArgs& a) {
  JsonOptions o;
  o.ensure_ascii = BoolArg(a.Get(0, "ensure_ascii"), false);
  const Value indent = a.Get(1, "indent");
  if (!indent.is_undefined() && !indent.is_none()) {
    o.pretty = true;
    if (indent.is_string()) {
      o.indent_unit = indent.str();
    } else {
      o.indent_unit =
          std::string(static_cast<size_t>(std::clamp<int64_t>(IntArg(indent, 0), 0, 64)), ' ');
    }
  }
  const Value separators = a.Get(2, "separators");
  if (separators.is_list()) {
    if (separators.list().items.size() != 2) Fail("tojson: separators must be a pair");
    o.item_separator = StrOf(separators.list().items[0]);
    o.key_separator = StrOf(separators.list().items[1]);
  }
  o.sort_keys = BoolArg(a.Get(3, "sort_keys"), false);
  a.ExpectConsumed("tojson");
  o.max_bytes = 32u << 20;
  std::string out = ToJson(v, o);
  in.CheckString(out.size());
  return Value::Str(std::move(out));
}

Value FilterItems(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("items");
  if (v.is_undefined()) return Value::List({});
  if (!v.is_dict() || v.dict().is_namespace) Fail("Can only get item pairs from a mapping.");
  std::vector<Value> pairs;
  for (const auto& [k, val] : v.dict().items)
    pairs.push_back(Value::List({Value::Str(k), val}, true));
  return Value::List(std::move(pairs));
}

// Sort key as Jinja's: an attribute path, lower-cased strings unless case-sensitive.
Value SortKey(Interpreter& in, const Value& item, const std::optional<std::string>& attribute,
              bool case_sensitive) {
  Value key = attribute ? GetPath(in, item, *attribute) : item;
  if (!case_sensitive && key.is_string()) key = Value::Str(py::Lower(key.str()));
  return key;
}

std::vector<Value> Sorted(Interpreter& in, std::vector<Value> items,
                          const std::optional<std::string>& attribute, bool case_sensitive,
                          bool reverse) {
  std::vector<std::pair<Value, Value>> keyed;
  keyed.reserve(items.size());
  for (Value& item : items) {
    keyed.emplace_back(SortKey(in, item, attribute, case_sensitive), std::move(item));
  }
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return reverse ? Compare(y.first, x.first) < 0 : Compare(x.first, y.first) < 0;
  });
  std::vector<Value> out;
  out.reserve(keyed.size());
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return out;
}

Value FilterSort(Interpreter& in, const Value& v, CallArgs& a) {
  const bool reverse = BoolArg(a.Get(0, "reverse"), false);
  const bool case_sensitive = BoolArg(a.Get(1, "case_sensitive"), false);
  const std::optional<std::string> attribute = OptString(a.Get(2, "attribute"));
  a.ExpectConsumed("sort");
  return Value::List(Sorted(in, Iterate(v), attribute, case_sensitive, reverse));
}

Value FilterDictSort(Interpreter& in, const Value& v, CallArgs& a) {
  const bool case_sensitive = BoolArg(a.Get(0, "case_sensitive"), false);
  const std::string by = a.Get(1, "by").is_undefined() ? "key" : StrOf(a.Get(1, "by"));
  const bool reverse = BoolArg(a.Get(2, "reverse"), false);
  a.ExpectConsumed("dictsort");
  CallArgs none;
  Value pairs = FilterItems(in, v, none);
  if (by != "key" && by != "value") Fail("You can only sort by either \"key\" or \"value\"");
  return Value::List(
      Sorted(in, pairs.list().items, by == "key" ? "0" : "1", case_sensitive, reverse));
}

Value FilterUnique(Interpreter& in, const Value& v, CallArgs& a) {
  const bool case_sensitive = BoolArg(a.Get(0, "case_sensitive"), false);
  const std::optional<std::string> attribute = OptString(a.Get(1, "attribute"));
  a.ExpectConsumed("unique");
  std::vector<Value> seen, out;
  for (const Value& item : Iterate(v)) {
    Value key = SortKey(in, item, attribute, case_sensitive);
    if (key.is_dict() || (key.is_list() && !key.list().tuple)) {
      Fail(absl::StrCat("unhashable type: '", TypeName(key), "'"));
    }
    bool dup = false;
    for (const Value& s : seen) dup = dup || Equals(s, key);
    if (dup) continue;
    seen.push_back(std::move(key));
    out.push_back(item);
  }
  return Value::List(std::move(out));
}

Value FilterMinMax(Interpreter& in, const Value& v, CallArgs& a, bool max, const char* name) {
  const bool case_sensitive = BoolArg(a.Get(0, "case_sensitive"), false);
  const std::optional<std::string> attribute = OptString(a.Get(1, "attribute"));
  a.ExpectConsumed(name);
  std::vector<Value> items = Iterate(v);
  if (items.empty())
    return Value::Undefined(absl::StrCat("No aggregated item, sequence was empty."));
  size_t best = 0;
  Value best_key = SortKey(in, items[0], attribute, case_sensitive);
  for (size_t i = 1; i < items.size(); ++i) {
    Value key = SortKey(in, items[i], attribute, case_sensitive);
    const int c = Compare(key, best_key);
    if (max ? c > 0 : c < 0) {
      best = i;
      best_key = std::move(key);
    }
  }
  return items[best];
}

Value FilterMin(Interpreter& in, const Value& v, CallArgs& a) {
  return FilterMinMax(in, v, a, false, "min");
}
Value FilterMax(Interpreter& in, const Value& v, CallArgs& a) {
  return FilterMinMax(in, v, a, true, "max");
}

Value FilterSum(Interpreter& in, const Value& v, CallArgs& a) {
  const std::optional<std::string> attribute = OptString(a.Get(0, "attribute"));
  Value total = a.Get(1, "start");
  if (total.is_undefined()) total = Value::Int(0);
  a.ExpectConsumed("sum");
  for (const Value& item : Iterate(v)) {
    total = Arithmetic(in, "+", total, attribute ? GetPath(in, item, *attribute) : item);
  }
  return total;
}

// select/reject and their attribute forms: a test by name with arguments, or truthiness.
Value SelectOrReject(Interpreter& in, const Value& v, CallArgs& a, bool select, bool by_attribute) {
  size_t next = 0;
  std::optional<std::string> attribute;
  if (by_attribute) {
    if (a.positional.empty()) Fail("selectattr/rejectattr need an attribute");
    attribute = StrOf(a.positional[next++]);
  }
  std::optional<std::string> test;
  if (next < a.positional.size()) test = StrOf(a.positional[next++]);
  if (test && !IsKnownTest(*test)) Fail(absl::StrCat("no test named '", *test, "'"));
  CallArgs test_args;
  test_args.positional.assign(a.positional.begin() + static_cast<ptrdiff_t>(next),
                              a.positional.end());
  test_args.keywords = a.keywords;
  std::vector<Value> out;
  if (!Truthy(v)) return Value::List({});  // Jinja's `if value:` guard: none, 0, '' give nothing
  for (const Value& item : Iterate(v)) {
    in.Step();
    Value subject = attribute ? GetPath(in, item, *attribute) : item;
    CallArgs call = test_args;
    const bool pass = test ? ApplyTest(in, *test, subject, call) : Truthy(subject);
    if (pass == select) out.push_back(item);
  }
  return Value::List(std::move(out));
}

Value FilterSelect(Interpreter& in, const Value& v, CallArgs& a) {
  return SelectOrReject(in, v, a, true, false);
}
Value FilterReject(Interpreter& in, const Value& v, CallArgs& a) {
  return SelectOrReject(in, v, a, false, false);
}
Value FilterSelectAttr(Interpreter& in, const Value& v, CallArgs& a) {
  return SelectOrReject(in, v, a, true, true);
}
Value FilterRejectAttr(Interpreter& in, const Value& v, CallArgs& a) {
  return SelectOrReject(in, v, a, false, true);
}

Value FilterMap(Interpreter& in, const Value& v, CallArgs& a) {
  std::vector<Value> out;
  if (!Truthy(v)) return Value::List({});  // Jinja's `if value:` guard
  Value attribute = a.Get(std::numeric_limits<size_t>::max(), "attribute");
  if (!attribute.is_undefined()) {
    Value fallback = a.Get(std::numeric_limits<size_t>::max(), "default");
    a.ExpectConsumed("map");
    for (const Value& item : Iterate(v)) {
      Value x = GetPath(in, item, StrOf(attribute));
      out.push_back(x.is_undefined() && !fallback.is_undefined() ? fallback : x);
    }
    return Value::List(std::move(out));
  }
  if (a.positional.empty()) Fail("map requires a filter argument");
  const std::string filter = StrOf(a.positional[0]);
  if (!IsKnownFilter(filter)) Fail(absl::StrCat("no filter named '", filter, "'"));
  CallArgs rest;
  rest.positional.assign(a.positional.begin() + 1, a.positional.end());
  rest.keywords = a.keywords;
  for (const Value& item : Iterate(v)) {
    CallArgs call = rest;
    out.push_back(ApplyFilter(in, filter, item, call));
  }
  return Value::List(std::move(out));
}

Value FilterReplace(Interpreter& in, const Value& v, CallArgs& a) {
  const std::string s = StrOf(v);
  const std::string old = StrOf(a.Get(0, "old"));
  const std::string replacement = StrOf(a.Get(1, "new"));
  const int64_t count = IntArg(a.Get(2, "count"), -1);
  a.ExpectConsumed("replace");
  const int64_t n = old.empty() ? static_cast<int64_t>(CodePointCount(s)) + 1 : py::Count(s, old);
  in.CheckString(s.size() + static_cast<size_t>(n) * replacement.size());
  return Value::Str(py::Replace(s, old, replacement, count));
}

Value FilterIndent(Interpreter& in, const Value& v, CallArgs& a) {
  const Value width = a.Get(0, "width");
  const bool first = BoolArg(a.Get(1, "first"), false);
  const bool blank = BoolArg(a.Get(2, "blank"), false);
  a.ExpectConsumed("indent");
  const std::string indent =
      width.is_string()
          ? width.str()
          : std::string(static_cast<size_t>(std::clamp<int64_t>(IntArg(width, 4), 0, 256)), ' ');
  std::vector<std::string> lines = py::SplitLines(StrOf(v) + "\n", false);
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) out += "\n";
    if ((i > 0 || first) && (blank || !lines[i].empty())) out += indent;
    out += lines[i];
    in.CheckString(out.size());
  }
  return Value::Str(std::move(out));
}

// Python's int() of a string: optional sign, digits with single underscores, surrounding space.
std::optional<int64_t> ParseInt(const std::string& text, int base) {
  std::string s = py::Strip(text, std::nullopt, true, true);
  std::string digits;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_' && i > 0 && i + 1 < s.size() &&
        std::isalnum(static_cast<unsigned char>(s[i - 1])))
      continue;
    digits += s[i];
  }
  if (digits.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(digits.c_str(), &end, base);
  if (errno != 0 || end != digits.c_str() + digits.size()) return std::nullopt;
  return v;
}

std::optional<double> ParseFloat(const std::string& text) {
  std::string s = py::Strip(text, std::nullopt, true, true);
  if (s.empty()) return std::nullopt;
  double d;
  if (!absl::SimpleAtod(s, &d)) return std::nullopt;
  return d;
}

Value FilterInt(Interpreter&, const Value& v, CallArgs& a) {
  Value fallback = a.Get(0, "default");
  if (fallback.is_undefined()) fallback = Value::Int(0);
  const int64_t base = IntArg(a.Get(1, "base"), 10);
  a.ExpectConsumed("int");
  RequireDefined(v);  // int() of an undefined fails in Jinja, unlike str()
  if (v.kind() == Value::Kind::kInt || v.kind() == Value::Kind::kBool)
    return Value::Int(v.as_int());
  double d;
  if (v.kind() == Value::Kind::kFloat) {
    d = v.as_double();
  } else if (v.is_string()) {
    if (base >= 2 && base <= 36) {
      if (std::optional<int64_t> i = ParseInt(v.str(), static_cast<int>(base)))
        return Value::Int(*i);
    }
    std::optional<double> f = ParseFloat(v.str());
    if (!f) return fallback;
    d = *f;
  } else {
    return fallback;
  }
  if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return fallback;
  return Value::Int(static_cast<int64_t>(std::trunc(d)));
}

Value FilterFloat(Interpreter&, const Value& v, CallArgs& a) {
  Value fallback = a.Get(0, "default");
  if (fallback.is_undefined()) fallback = Value::Float(0.0);
  a.ExpectConsumed("float");
  RequireDefined(v);
  if (v.is_number()) return Value::Float(v.as_double());
  if (v.is_string()) {
    if (std::optional<double> f = ParseFloat(v.str())) return Value::Float(*f);
  }
  return fallback;
}

Value FilterAbs(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("abs");
  if (v.kind() == Value::Kind::kFloat) return Value::Float(std::fabs(v.as_double()));
  if (v.is_number()) {
    if (v.as_int() == std::numeric_limits<int64_t>::min()) Fail("integer overflow");
    return Value::Int(std::llabs(v.as_int()));
  }
  Fail(absl::StrCat("bad operand type for abs(): '", TypeName(v), "'"));
}

Value FilterRound(Interpreter&, const Value& v, CallArgs& a) {
  const int64_t precision = std::clamp<int64_t>(IntArg(a.Get(0, "precision"), 0), -20, 20);
  const std::string method =
      a.Get(1, "method").is_undefined() ? "common" : StrOf(a.Get(1, "method"));
  a.ExpectConsumed("round");
  if (!v.is_number()) Fail(absl::StrCat("round: a number is required, not ", TypeName(v)));
  if (v.kind() != Value::Kind::kFloat && method == "common" && precision >= 0) {
    return Value::Int(v.as_int());  // Python's round() of an int stays an int
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double x = v.as_double() * scale;
  double r;
  if (method == "common") {
    r = std::nearbyint(x);
  } else if (method == "ceil") {
    r = std::ceil(x);
  } else if (method == "floor") {
    r = std::floor(x);
  } else {
    Fail("method must be 'common', 'ceil' or 'floor'");
  }
  return Value::Float(r / scale);
}

Value FilterCenter(Interpreter& in, const Value& v, CallArgs& a) {
  const int64_t width = std::clamp<int64_t>(IntArg(a.Get(0, "width"), 80), 0, 1 << 16);
  a.ExpectConsumed("center");
  const std::string s = StrOf(v);
  const int64_t len = static_cast<int64_t>(CodePointCount(s));
  if (width <= len) return Value::Str(s);
  const int64_t total = width - len;
  // Python's str.center puts the odd space on the left when the width is odd.
  const int64_t left = total / 2 + (total & width & 1);
  in.CheckString(s.size() + static_cast<size_t>(total));
  return Value::Str(std::string(static_cast<size_t>(left), ' ') + s +
                    std::string(static_cast<size_t>(total - left), ' '));
}

Value FilterWordCount(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("wordcount");
  int64_t n = 0;
  bool in_word = false;
  for (const std::string& c : CodePoints(StrOf(v))) {
    const bool word = py::IsClass(c, "isalnum") || c == "_";
    if (word && !in_word) ++n;
    in_word = word;
  }
  return Value::Int(n);
}

Value FilterEscape(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("escape");
  std::string out;
  for (char c : StrOf(v)) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return Value::Str(std::move(out));
}

Value FilterSafe(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("safe");
  return v;
}

Value FilterFormat(Interpreter& in, const Value& v, CallArgs& a) {
  if (!a.keywords.empty() && !a.positional.empty()) {
    Fail("can't handle positional and keyword arguments at the same time");
  }
  if (!a.keywords.empty()) return Value::Str(PercentFormat(in, StrOf(v), Value::Dict(a.keywords)));
  return Value::Str(PercentFormat(in, StrOf(v), Value::List(a.positional, true)));
}

Value FilterAttr(Interpreter& in, const Value& v, CallArgs& a) {
  const std::string name = StrOf(a.Get(0, "name"));
  a.ExpectConsumed("attr");
  // Python's getattr only: dict keys are not attributes here.
  if (v.is_dict() && !v.dict().is_namespace) {
    Value m = BoundMethod(v, name);
    return m.is_undefined()
               ? Value::Undefined(absl::StrCat("'dict object' has no attribute '", name, "'"))
               : m;
  }
  return in.GetAttr(v, name);
}

Value FilterPprint(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("pprint");
  return Value::Str(Repr(v));
}

Value FilterBatch(Interpreter& in, const Value& v, CallArgs& a) {
  const int64_t size = IntArg(a.Get(0, "linecount"), 1);
  const Value fill = a.Get(1, "fill_with");
  a.ExpectConsumed("batch");
  if (size <= 0) Fail("batch: linecount must be positive");
  std::vector<Value> out, row;
  for (const Value& item : Iterate(v)) {
    row.push_back(item);
    if (static_cast<int64_t>(row.size()) == size) {
      out.push_back(Value::List(std::move(row)));
      row.clear();
    }
  }
  if (!row.empty()) {
    if (!fill.is_undefined() && !fill.is_none()) {
      in.CheckItems(static_cast<size_t>(size));
      while (static_cast<int64_t>(row.size()) < size) row.push_back(fill);
    }
    out.push_back(Value::List(std::move(row)));
  }
  return Value::List(std::move(out));
}

const absl::flat_hash_map<std::string, FilterFn>& Filters() {
  static const auto* filters =
      new absl::flat_hash_map<std::string, FilterFn>{{"abs", FilterAbs},
                                                     {"attr", FilterAttr},
                                                     {"batch", FilterBatch},
                                                     {"capitalize", FilterCapitalize},
                                                     {"center", FilterCenter},
                                                     {"count", FilterLength},
                                                     {"d", FilterDefault},
                                                     {"default", FilterDefault},
                                                     {"dictsort", FilterDictSort},
                                                     {"e", FilterEscape},
                                                     {"escape", FilterEscape},
                                                     {"first", FilterFirst},
                                                     {"float", FilterFloat},
                                                     {"forceescape", FilterEscape},
                                                     {"format", FilterFormat},
                                                     {"indent", FilterIndent},
                                                     {"int", FilterInt},
                                                     {"items", FilterItems},
                                                     {"join", FilterJoin},
                                                     {"last", FilterLast},
                                                     {"length", FilterLength},
                                                     {"list", FilterList},
                                                     {"lower", FilterLower},
                                                     {"map", FilterMap},
                                                     {"max", FilterMax},
                                                     {"min", FilterMin},
                                                     {"pprint", FilterPprint},
                                                     {"reject", FilterReject},
                                                     {"rejectattr", FilterRejectAttr},
                                                     {"replace", FilterReplace},
                                                     {"reverse", FilterReverse},
                                                     {"round", FilterRound},
                                                     {"safe", FilterSafe},
                                                     {"select", FilterSelect},
                                                     {"selectattr", FilterSelectAttr},
                                                     {"sort", FilterSort},
                                                     {"string", FilterString},
                                                     {"sum", FilterSum},
                                                     {"title", FilterTitle},
                                                     {"tojson", FilterToJson},
                                                     {"trim", FilterTrim},
                                                     {"unique", FilterUnique},
                                                     {"upper", FilterUpper},
                                                     {"wordcount", FilterWordCount}};
  return *filters;
}

// ---- tests ----

bool IsInt(const Value& v) { return v.kind() == Value::Kind::kInt; }

bool TestCompare(Interpreter&, const Value& v, CallArgs& a, const char* name, int want) {
  Value other = Required(a, 0, "b", name);
  a.ExpectConsumed(name);
  if (want == 0) return Equals(v, other);
  if (want == 9) return !Equals(v, other);
  RequireDefined(v);
  RequireDefined(other);
  const int c = Compare(v, other);
  switch (want) {
    case -2:
      return c < 0;
    case -1:
      return c <= 0;
    case 1:
      return c >= 0;
    default:
      return c > 0;
  }
}

#define SY_COMPARE_TEST(fn, name, want)                   \
  bool fn(Interpreter& in, const Value& v, CallArgs& a) { \
    return TestCompare(in, v, a, name, want);             \
  }
SY_COMPARE_TEST(TestEq, "eq", 0)
SY_COMPARE_TEST(TestNe, "ne", 9)
SY_COMPARE_TEST(TestLt, "lt", -2)
SY_COMPARE_TEST(TestLe, "le", -1)
SY_COMPARE_TEST(TestGe, "ge", 1)
SY_COMPARE_TEST(TestGt, "gt", 2)
#undef SY_COMPARE_TEST

#define SY_SIMPLE_TEST(fn, name, expr)                 \
  bool fn(Interpreter&, const Value& v, CallArgs& a) { \
    a.ExpectConsumed(name);                            \
    return (expr);                                     \
  }
SY_SIMPLE_TEST(TestDefined, "defined", !v.is_undefined())
SY_SIMPLE_TEST(TestUndefined, "undefined", v.is_undefined())
SY_SIMPLE_TEST(TestNone, "none", v.is_none())
SY_SIMPLE_TEST(TestBoolean, "boolean", v.kind() == Value::Kind::kBool)
SY_SIMPLE_TEST(TestFalse, "false", v.kind() == Value::Kind::kBool && !v.as_bool())
SY_SIMPLE_TEST(TestTrue, "true", v.kind() == Value::Kind::kBool && v.as_bool())
SY_SIMPLE_TEST(TestInteger, "integer", IsInt(v))
SY_SIMPLE_TEST(TestFloat, "float", v.kind() == Value::Kind::kFloat)
SY_SIMPLE_TEST(TestNumber, "number", v.is_number())
SY_SIMPLE_TEST(TestString, "string", v.is_string())
SY_SIMPLE_TEST(TestMapping, "mapping", v.is_dict() && !v.dict().is_namespace)
SY_SIMPLE_TEST(TestIterable, "iterable",
               v.is_undefined() || v.is_list() || v.is_string() ||
                   (v.is_dict() && !v.dict().is_namespace))
SY_SIMPLE_TEST(TestSequence, "sequence",
               v.is_undefined() || v.is_list() || v.is_string() ||
                   (v.is_dict() && !v.dict().is_namespace))
SY_SIMPLE_TEST(TestCallable, "callable", v.is_callable())
SY_SIMPLE_TEST(TestEscaped, "escaped", false)
SY_SIMPLE_TEST(TestLowerCase, "lower", v.is_string() && py::IsClass(v.str(), "islower"))
SY_SIMPLE_TEST(TestUpperCase, "upper", v.is_string() && py::IsClass(v.str(), "isupper"))
#undef SY_SIMPLE_TEST

int64_t RequireInt(const Value& v, const char* test) {
  RequireDefined(v);
  if (!v.is_number()) Fail(absl::StrCat("the ", test, " test needs a number, got ", TypeName(v)));
  return v.kind() == Value::Kind::kFloat ? static_cast<int64_t>(v.as_double()) : v.as_int();
}

bool TestOdd(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("odd");
  return RequireInt(v, "odd") % 2 != 0;
}
bool TestEven(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("even");
  return RequireInt(v, "even") % 2 == 0;
}
bool TestDivisibleBy(Interpreter& in, const Value& v, CallArgs& a) {
  Value n = Required(a, 0, "num", "divisibleby");
  a.ExpectConsumed("divisibleby");
  return Truthy(Arithmetic(in, "%", v, n)) == false;
}
bool TestSameAs(Interpreter&, const Value& v, CallArgs& a) {
  Value other = Required(a, 0, "other", "sameas");
  a.ExpectConsumed("sameas");
  return v.SameObject(other);
}
bool TestIn(Interpreter&, const Value& v, CallArgs& a) {
  Value seq = Required(a, 0, "seq", "in");
  a.ExpectConsumed("in");
  return Contains(seq, v);
}
bool TestFilter(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("filter");
  return v.is_string() && IsKnownFilter(v.str());
}
bool TestTest(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("test");
  return v.is_string() && IsKnownTest(v.str());
}

const absl::flat_hash_map<std::string, TestFn>& Tests() {
  static const auto* tests =
      new absl::flat_hash_map<std::string, TestFn>{{"boolean", TestBoolean},
                                                   {"callable", TestCallable},
                                                   {"defined", TestDefined},
                                                   {"divisibleby", TestDivisibleBy},
                                                   {"eq", TestEq},
                                                   {"equalto", TestEq},
                                                   {"==", TestEq},
                                                   {"escaped", TestEscaped},
                                                   {"even", TestEven},
                                                   {"false", TestFalse},
                                                   {"filter", TestFilter},
                                                   {"float", TestFloat},
                                                   {"ge", TestGe},
                                                   {">=", TestGe},
                                                   {"gt", TestGt},
                                                   {"greaterthan", TestGt},
                                                   {">", TestGt},
                                                   {"in", TestIn},
                                                   {"integer", TestInteger},
                                                   {"iterable", TestIterable},
                                                   {"le", TestLe},
                                                   {"<=", TestLe},
                                                   {"lower", TestLowerCase},
                                                   {"lt", TestLt},
                                                   {"lessthan", TestLt},
                                                   {"<", TestLt},
                                                   {"mapping", TestMapping},
                                                   {"ne", TestNe},
                                                   {"!=", TestNe},
                                                   {"none", TestNone},
                                                   {"number", TestNumber},
                                                   {"odd", TestOdd},
                                                   {"sameas", TestSameAs},
                                                   {"sequence", TestSequence},
                                                   {"string", TestString},
                                                   {"test", TestTest},
                                                   {"true", TestTrue},
                                                   {"undefined", TestUndefined},
                                                   {"upper", TestUpperCase}};
  return *tests;
}

}  // namespace

int64_t IntArg(const Value& v, int64_t fallback) {
  if (v.is_undefined() || v.is_none()) return fallback;
  if (v.kind() == Value::Kind::kInt || v.kind() == Value::Kind::kBool) return v.as_int();
  Fail(absl::StrCat("an integer is required, got ", TypeName(v)));
}

bool IsKnownFilter(absl::string_view name) { return Filters().contains(name); }
bool IsKnownTest(absl::string_view name) { return Tests().contains(name); }

Value ApplyFilter(Interpreter& in, const std::string& name, const Value& input, CallArgs& args) {
  auto it = Filters().find(name);
  if (it == Filters().end()) Fail(absl::StrCat("no filter named '", name, "'"));
  // Filters other than these fail on an undefined input only where Python would (str() of an
  // undefined is "", iterating it is empty), which their bodies handle.
  return it->second(in, input, args);
}

bool ApplyTest(Interpreter& in, const std::string& name, const Value& input, CallArgs& args) {
  auto it = Tests().find(name);
  if (it == Tests().end()) Fail(absl::StrCat("no test named '", name, "'"));
  return it->second(in, input, args);
}

}  // namespace switchyard::jinja

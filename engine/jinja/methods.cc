// Python's methods on str, list and dict that templates call, and Jinja's global functions.
#include <ctime>
#include <limits>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/jinja/builtins.h"
#include "engine/jinja/py_string.h"

namespace switchyard::jinja {
namespace {

using Method = Value (*)(Interpreter&, const Value& self, CallArgs&);

std::optional<std::string> OptStringArg(const Value& v) {
  if (v.is_undefined() || v.is_none()) return std::nullopt;
  if (!v.is_string()) Fail(absl::StrCat("expected a str argument, got ", TypeName(v)));
  return v.str();
}

std::string StringArg(const Value& v, absl::string_view method) {
  if (!v.is_string()) {
    Fail(absl::StrCat(method, "() argument must be str, not ", TypeName(v)));
  }
  return v.str();
}

std::vector<Value> Strings(const std::vector<std::string>& parts) {
  std::vector<Value> out;
  out.reserve(parts.size());
  for (const std::string& p : parts) out.push_back(Value::Str(p));
  return out;
}

// ---- str ----

Value StrStrip(const Value& self, CallArgs& a, bool left, bool right, const char* name) {
  std::optional<std::string> chars = OptStringArg(a.Get(0, "chars"));
  a.ExpectConsumed(name);
  return Value::Str(py::Strip(self.str(), chars, left, right));
}
Value StrStripBoth(Interpreter&, const Value& s, CallArgs& a) {
  return StrStrip(s, a, true, true, "strip");
}
Value StrLStrip(Interpreter&, const Value& s, CallArgs& a) {
  return StrStrip(s, a, true, false, "lstrip");
}
Value StrRStrip(Interpreter&, const Value& s, CallArgs& a) {
  return StrStrip(s, a, false, true, "rstrip");
}

Value StrSplitImpl(const Value& self, CallArgs& a, bool right, const char* name) {
  std::optional<std::string> sep = OptStringArg(a.Get(0, "sep"));
  const int64_t maxsplit = IntArg(a.Get(1, "maxsplit"), -1);
  a.ExpectConsumed(name);
  return Value::List(Strings(py::Split(self.str(), sep, maxsplit, right)));
}
Value StrSplit(Interpreter&, const Value& s, CallArgs& a) {
  return StrSplitImpl(s, a, false, "split");
}
Value StrRSplit(Interpreter&, const Value& s, CallArgs& a) {
  return StrSplitImpl(s, a, true, "rsplit");
}

Value StrSplitLines(Interpreter&, const Value& s, CallArgs& a) {
  const bool keepends = Truthy(a.Get(0, "keepends"));
  a.ExpectConsumed("splitlines");
  return Value::List(Strings(py::SplitLines(s.str(), keepends)));
}

// Code-point slice [start, end) of s with Python's clamping of optional bounds.
std::string Window(const std::string& s, const Value& start_v, const Value& end_v) {
  if ((start_v.is_undefined() || start_v.is_none()) && (end_v.is_undefined() || end_v.is_none())) {
    return s;
  }
  const std::vector<std::string> cps = CodePoints(s);
  const int64_t n = static_cast<int64_t>(cps.size());
  const auto clamp = [n](int64_t i) {
    return i < 0 ? std::max<int64_t>(0, i + n) : std::min(i, n);
  };
  const int64_t b = clamp(IntArg(start_v, 0)), e = clamp(IntArg(end_v, n));
  std::string out;
  for (int64_t i = b; i < e; ++i) out += cps[static_cast<size_t>(i)];
  return out;
}

Value StrAffix(const Value& self, CallArgs& a, bool prefix, const char* name) {
  const Value affix = a.Get(0, prefix ? "prefix" : "suffix");
  const std::string s = Window(self.str(), a.Get(1, "start"), a.Get(2, "end"));
  a.ExpectConsumed(name);
  const auto matches = [&](const Value& v) {
    const std::string x = StringArg(v, name);
    if (x.size() > s.size()) return false;
    return prefix ? s.compare(0, x.size(), x) == 0
                  : s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (affix.is_list() && affix.list().tuple) {
    for (const Value& v : affix.list().items) {
      if (matches(v)) return Value::Bool(true);
    }
    return Value::Bool(false);
  }
  return Value::Bool(matches(affix));
}
Value StrStartsWith(Interpreter&, const Value& s, CallArgs& a) {
  return StrAffix(s, a, true, "startswith");
}
Value StrEndsWith(Interpreter&, const Value& s, CallArgs& a) {
  return StrAffix(s, a, false, "endswith");
}

Value StrReplace(Interpreter& in, const Value& s, CallArgs& a) {
  const std::string old = StringArg(a.Get(0, "old"), "replace");
  const std::string replacement = StringArg(a.Get(1, "new"), "replace");
  const int64_t count = IntArg(a.Get(2, "count"), -1);
  a.ExpectConsumed("replace");
  const int64_t n =
      old.empty() ? static_cast<int64_t>(CodePointCount(s.str())) + 1 : py::Count(s.str(), old);
  in.CheckString(s.str().size() + static_cast<size_t>(n) * replacement.size());
  return Value::Str(py::Replace(s.str(), old, replacement, count));
}

#define SY_CASE_METHOD(fn, name, call)                  \
  Value fn(Interpreter&, const Value& s, CallArgs& a) { \
    a.ExpectConsumed(name);                             \
    return Value::Str(call(s.str()));                   \
  }
SY_CASE_METHOD(StrUpper, "upper", py::Upper)
SY_CASE_METHOD(StrLower, "lower", py::Lower)
SY_CASE_METHOD(StrCaseFold, "casefold", py::Lower)
SY_CASE_METHOD(StrTitle, "title", py::Title)
SY_CASE_METHOD(StrCapitalize, "capitalize", py::Capitalize)
SY_CASE_METHOD(StrSwapCase, "swapcase", py::SwapCase)
#undef SY_CASE_METHOD

Value StrFindImpl(const Value& s, CallArgs& a, bool right, bool raise, const char* name) {
  const std::string sub = StringArg(a.Get(0, "sub"), name);
  a.ExpectConsumed(name);
  const int64_t at = py::Find(s.str(), sub, right);
  if (raise && at < 0) Fail("substring not found");
  return Value::Int(at);
}
Value StrFind(Interpreter&, const Value& s, CallArgs& a) {
  return StrFindImpl(s, a, false, false, "find");
}
Value StrRFind(Interpreter&, const Value& s, CallArgs& a) {
  return StrFindImpl(s, a, true, false, "rfind");
}
Value StrIndex(Interpreter&, const Value& s, CallArgs& a) {
  return StrFindImpl(s, a, false, true, "index");
}
Value StrRIndex(Interpreter&, const Value& s, CallArgs& a) {
  return StrFindImpl(s, a, true, true, "rindex");
}

Value StrCount(Interpreter&, const Value& s, CallArgs& a) {
  const std::string sub = StringArg(a.Get(0, "sub"), "count");
  a.ExpectConsumed("count");
  return Value::Int(py::Count(s.str(), sub));
}

Value StrJoin(Interpreter& in, const Value& s, CallArgs& a) {
  const Value items = a.Get(0, "iterable");
  a.ExpectConsumed("join");
  std::string out;
  bool first = true;
  for (const Value& item : Iterate(items)) {
    if (!first) out += s.str();
    first = false;
    out += StringArg(item, "join");
    in.CheckString(out.size());
  }
  return Value::Str(std::move(out));
}

#define SY_CLASS_METHOD(fn, name)                       \
  Value fn(Interpreter&, const Value& s, CallArgs& a) { \
    a.ExpectConsumed(name);                             \
    return Value::Bool(py::IsClass(s.str(), name));     \
  }
SY_CLASS_METHOD(StrIsAlpha, "isalpha")
SY_CLASS_METHOD(StrIsDigit, "isdigit")
SY_CLASS_METHOD(StrIsDecimal, "isdecimal")
SY_CLASS_METHOD(StrIsNumeric, "isnumeric")
SY_CLASS_METHOD(StrIsAlnum, "isalnum")
SY_CLASS_METHOD(StrIsSpace, "isspace")
SY_CLASS_METHOD(StrIsUpper, "isupper")
SY_CLASS_METHOD(StrIsLower, "islower")
#undef SY_CLASS_METHOD

Value StrJustify(Interpreter& in, const Value& s, CallArgs& a, int where, const char* name) {
  const int64_t width = IntArg(a.Get(0, "width"), 0);
  const Value fill_v = a.Get(1, "fillchar");
  a.ExpectConsumed(name);
  const std::string fill = fill_v.is_undefined() ? " " : StringArg(fill_v, name);
  if (CodePointCount(fill) != 1) Fail("The fill character must be exactly one character long");
  const int64_t len = static_cast<int64_t>(CodePointCount(s.str()));
  if (width <= len) return s;
  const int64_t total = width - len;
  in.CheckString(static_cast<size_t>(total) * fill.size() + s.str().size());
  int64_t left = where < 0 ? 0 : where > 0 ? total : total / 2 + (total & width & 1);
  std::string out;
  for (int64_t i = 0; i < left; ++i) out += fill;
  out += s.str();
  for (int64_t i = left; i < total; ++i) out += fill;
  return Value::Str(std::move(out));
}
Value StrLJust(Interpreter& in, const Value& s, CallArgs& a) {
  return StrJustify(in, s, a, -1, "ljust");
}
Value StrRJust(Interpreter& in, const Value& s, CallArgs& a) {
  return StrJustify(in, s, a, 1, "rjust");
}
Value StrCenter(Interpreter& in, const Value& s, CallArgs& a) {
  return StrJustify(in, s, a, 0, "center");
}

Value StrZFill(Interpreter& in, const Value& s, CallArgs& a) {
  const int64_t width = IntArg(a.Get(0, "width"), 0);
  a.ExpectConsumed("zfill");
  const std::string& str = s.str();
  const int64_t len = static_cast<int64_t>(CodePointCount(str));
  if (width <= len) return s;
  in.CheckString(static_cast<size_t>(width));
  const bool sign = !str.empty() && (str[0] == '-' || str[0] == '+');
  return Value::Str((sign ? str.substr(0, 1) : "") +
                    std::string(static_cast<size_t>(width - len), '0') +
                    (sign ? str.substr(1) : str));
}

Value StrPartitionImpl(const Value& s, CallArgs& a, bool right, const char* name) {
  const std::string sep = StringArg(a.Get(0, "sep"), name);
  a.ExpectConsumed(name);
  if (sep.empty()) Fail("empty separator");
  const std::string& str = s.str();
  const size_t at = right ? str.rfind(sep) : str.find(sep);
  if (at == std::string::npos) {
    return right ? Value::List({Value::Str(""), Value::Str(""), s}, true)
                 : Value::List({s, Value::Str(""), Value::Str("")}, true);
  }
  return Value::List(
      {Value::Str(str.substr(0, at)), Value::Str(sep), Value::Str(str.substr(at + sep.size()))},
      true);
}
Value StrPartition(Interpreter&, const Value& s, CallArgs& a) {
  return StrPartitionImpl(s, a, false, "partition");
}
Value StrRPartition(Interpreter&, const Value& s, CallArgs& a) {
  return StrPartitionImpl(s, a, true, "rpartition");
}

Value StrRemoveAffix(const Value& s, CallArgs& a, bool prefix, const char* name) {
  const std::string x = StringArg(a.Get(0, prefix ? "prefix" : "suffix"), name);
  a.ExpectConsumed(name);
  const std::string& str = s.str();
  if (x.size() <= str.size()) {
    if (prefix && str.compare(0, x.size(), x) == 0) return Value::Str(str.substr(x.size()));
    if (!prefix && str.compare(str.size() - x.size(), x.size(), x) == 0) {
      return Value::Str(str.substr(0, str.size() - x.size()));
    }
  }
  return s;
}
Value StrRemovePrefix(Interpreter&, const Value& s, CallArgs& a) {
  return StrRemoveAffix(s, a, true, "removeprefix");
}
Value StrRemoveSuffix(Interpreter&, const Value& s, CallArgs& a) {
  return StrRemoveAffix(s, a, false, "removesuffix");
}

// str.format: {} {0} {name} {name.attr} {0[key]}, conversions !s !r, and a format spec of
// [[fill]align][width][.precision][type] for s, d and f.
std::string FormatField(Interpreter& in, const Value& v, absl::string_view spec) {
  char fill = ' ', align = 0;
  size_t i = 0;
  if (spec.size() >= 2 && (spec[1] == '<' || spec[1] == '>' || spec[1] == '^')) {
    fill = spec[0];
    align = spec[1];
    i = 2;
  } else if (!spec.empty() && (spec[0] == '<' || spec[0] == '>' || spec[0] == '^')) {
    align = spec[0];
    i = 1;
  }
  int64_t width = 0, precision = -1;
  while (i < spec.size() && std::isdigit(static_cast<unsigned char>(spec[i]))) {
    width = std::min<int64_t>(width * 10 + (spec[i++] - '0'), 1 << 16);
  }
  if (i < spec.size() && spec[i] == '.') {
    ++i;
    precision = 0;
    while (i < spec.size() && std::isdigit(static_cast<unsigned char>(spec[i]))) {
      precision = std::min<int64_t>(precision * 10 + (spec[i++] - '0'), 100);
    }
  }
  const char type = i < spec.size() ? spec[i++] : 0;
  if (i != spec.size()) Fail(absl::StrCat("unsupported format spec '", spec, "'"));
  std::string body;
  if (type == 'f' || type == 'd' || (type == 0 && precision >= 0 && v.is_number())) {
    body = PercentFormat(in,
                         absl::StrCat("%", precision >= 0 ? absl::StrCat(".", precision) : "",
                                      type == 'd' ? "d" : "f"),
                         v);
  } else {
    body = ToString(v);
    if (precision >= 0) {
      std::vector<std::string> cps = CodePoints(body);
      if (static_cast<size_t>(precision) < cps.size()) {
        body.clear();
        for (int64_t k = 0; k < precision; ++k) body += cps[static_cast<size_t>(k)];
      }
    }
  }
  const int64_t len = static_cast<int64_t>(CodePointCount(body));
  if (width <= len) return body;
  if (align == 0) align = v.is_number() ? '>' : '<';
  const int64_t pad = width - len;
  const int64_t left = align == '<' ? 0 : align == '>' ? pad : pad / 2;
  return std::string(static_cast<size_t>(left), fill) + body +
         std::string(static_cast<size_t>(pad - left), fill);
}

Value StrFormat(Interpreter& in, const Value& s, CallArgs& a) {
  const std::string& f = s.str();
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] == '}') {
      if (i + 1 < f.size() && f[i + 1] == '}')
        ++i;
      else
        Fail("Single '}' encountered in format string");
      out += '}';
      continue;
    }
    if (f[i] != '{') {
      out += f[i];
      continue;
    }
    if (i + 1 < f.size() && f[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    const size_t close = f.find('}', i);
    if (close == std::string::npos) Fail("Single '{' encountered in format string");
    absl::string_view field = absl::string_view(f).substr(i + 1, close - i - 1);
    i = close;
    absl::string_view spec, conversion;
    if (size_t colon = field.find(':'); colon != absl::string_view::npos) {
      spec = field.substr(colon + 1);
      field = field.substr(0, colon);
    }
    if (size_t bang = field.find('!'); bang != absl::string_view::npos) {
      conversion = field.substr(bang + 1);
      field = field.substr(0, bang);
    }
    const size_t name_end = std::min(field.find('.'), field.find('['));
    absl::string_view name = field.substr(0, name_end);
    Value v;
    size_t index;
    if (name.empty()) {
      index = auto_index++;
      v = index < a.positional.size() ? a.positional[index] : Value();
      if (index >= a.positional.size()) Fail("Replacement index out of range for positional args");
    } else if (absl::SimpleAtoi(name, &index)) {
      if (index >= a.positional.size()) Fail("Replacement index out of range for positional args");
      v = a.positional[index];
    } else {
      bool found = false;
      for (const auto& [k, kv] : a.keywords) {
        if (k == name) {
          v = kv;
          found = true;
        }
      }
      if (!found) Fail(absl::StrCat("format: missing key '", name, "'"));
    }
    absl::string_view rest = name_end == absl::string_view::npos ? "" : field.substr(name_end);
    while (!rest.empty()) {
      if (rest[0] == '.') {
        const size_t end = std::min(rest.find('.', 1), rest.find('['));
        v = in.GetAttr(
            v, std::string(rest.substr(1, end == absl::string_view::npos ? rest.npos : end - 1)));
        rest = end == absl::string_view::npos ? "" : rest.substr(end);
      } else {
        const size_t end = rest.find(']');
        if (end == absl::string_view::npos) Fail("Missing ']' in format string");
        absl::string_view key = rest.substr(1, end - 1);
        int64_t k;
        v = absl::SimpleAtoi(key, &k) ? in.GetItem(v, Value::Int(k))
                                      : in.GetItem(v, Value::Str(std::string(key)));
        rest = rest.substr(end + 1);
      }
    }
    if (conversion == "r") v = Value::Str(Repr(v));
    out += FormatField(in, v, spec);
    in.CheckString(out.size());
  }
  return Value::Str(std::move(out));
}

// ---- list and dict ----

Value ListIndex(Interpreter&, const Value& l, CallArgs& a) {
  const Value x = a.Get(0, "value");
  a.ExpectConsumed("index");
  const auto& items = l.list().items;
  for (size_t i = 0; i < items.size(); ++i) {
    if (Equals(items[i], x)) return Value::Int(static_cast<int64_t>(i));
  }
  Fail(absl::StrCat(Repr(x), " is not in list"));
}

Value ListCount(Interpreter&, const Value& l, CallArgs& a) {
  const Value x = a.Get(0, "value");
  a.ExpectConsumed("count");
  int64_t n = 0;
  for (const Value& v : l.list().items) n += Equals(v, x);
  return Value::Int(n);
}

Value Copy(Interpreter&, const Value& v, CallArgs& a) {
  a.ExpectConsumed("copy");
  if (v.is_list()) return Value::List(v.list().items, v.list().tuple);
  return Value::Dict(v.dict().items);
}

Value DictItems(Interpreter&, const Value& d, CallArgs& a) {
  a.ExpectConsumed("items");
  std::vector<Value> pairs;
  pairs.reserve(d.dict().items.size());
  for (const auto& [k, v] : d.dict().items) pairs.push_back(Value::List({Value::Str(k), v}, true));
  return Value::List(std::move(pairs));
}

Value DictKeys(Interpreter&, const Value& d, CallArgs& a) {
  a.ExpectConsumed("keys");
  std::vector<Value> keys;
  for (const auto& [k, v] : d.dict().items) keys.push_back(Value::Str(k));
  return Value::List(std::move(keys));
}

Value DictValues(Interpreter&, const Value& d, CallArgs& a) {
  a.ExpectConsumed("values");
  std::vector<Value> values;
  for (const auto& [k, v] : d.dict().items) values.push_back(v);
  return Value::List(std::move(values));
}

Value DictGet(Interpreter&, const Value& d, CallArgs& a) {
  const Value key = a.Get(0, "key");
  Value fallback = a.Get(1, "default");
  a.ExpectConsumed("get");
  if (fallback.is_undefined()) fallback = Value::None();
  if (!key.is_string()) return fallback;
  const Value* v = d.dict().Find(key.str());
  return v != nullptr ? *v : fallback;
}

const absl::flat_hash_map<std::string, Method>& StringMethods() {
  static const auto* m =
      new absl::flat_hash_map<std::string, Method>{{"strip", StrStripBoth},
                                                   {"lstrip", StrLStrip},
                                                   {"rstrip", StrRStrip},
                                                   {"split", StrSplit},
                                                   {"rsplit", StrRSplit},
                                                   {"splitlines", StrSplitLines},
                                                   {"startswith", StrStartsWith},
                                                   {"endswith", StrEndsWith},
                                                   {"replace", StrReplace},
                                                   {"upper", StrUpper},
                                                   {"lower", StrLower},
                                                   {"casefold", StrCaseFold},
                                                   {"title", StrTitle},
                                                   {"capitalize", StrCapitalize},
                                                   {"swapcase", StrSwapCase},
                                                   {"find", StrFind},
                                                   {"rfind", StrRFind},
                                                   {"index", StrIndex},
                                                   {"rindex", StrRIndex},
                                                   {"count", StrCount},
                                                   {"join", StrJoin},
                                                   {"format", StrFormat},
                                                   {"isalpha", StrIsAlpha},
                                                   {"isdigit", StrIsDigit},
                                                   {"isdecimal", StrIsDecimal},
                                                   {"isnumeric", StrIsNumeric},
                                                   {"isalnum", StrIsAlnum},
                                                   {"isspace", StrIsSpace},
                                                   {"isupper", StrIsUpper},
                                                   {"islower", StrIsLower},
                                                   {"ljust", StrLJust},
                                                   {"rjust", StrRJust},
                                                   {"center", StrCenter},
                                                   {"zfill", StrZFill},
                                                   {"partition", StrPartition},
                                                   {"rpartition", StrRPartition},
                                                   {"removeprefix", StrRemovePrefix},
                                                   {"removesuffix", StrRemoveSuffix}};
  return *m;
}

const absl::flat_hash_map<std::string, Method>& ListMethods() {
  static const auto* m = new absl::flat_hash_map<std::string, Method>{
      {"index", ListIndex}, {"count", ListCount}, {"copy", Copy}};
  return *m;
}

const absl::flat_hash_map<std::string, Method>& DictMethods() {
  static const auto* m = new absl::flat_hash_map<std::string, Method>{{"items", DictItems},
                                                                      {"keys", DictKeys},
                                                                      {"values", DictValues},
                                                                      {"get", DictGet},
                                                                      {"copy", Copy}};
  return *m;
}

// Hugging Face renders in Jinja's immutable sandbox: these exist but refuse to run.
bool IsMutatingMethod(const Value& obj, absl::string_view name) {
  static const absl::string_view kList[] = {"append", "extend", "insert", "pop",
                                            "remove", "clear",  "sort",   "reverse"};
  static const absl::string_view kDict[] = {"update", "pop", "popitem", "setdefault", "clear"};
  if (obj.is_list()) {
    for (absl::string_view m : kList) {
      if (m == name) return true;
    }
  }
  if (obj.is_dict()) {
    for (absl::string_view m : kDict) {
      if (m == name) return true;
    }
  }
  return false;
}

// ---- globals ----

Value Range(Interpreter& in, CallArgs& a) {
  if (a.positional.empty() || a.positional.size() > 3 || !a.keywords.empty()) {
    Fail("range expected 1 to 3 integer arguments");
  }
  int64_t start = 0, stop, step = 1;
  if (a.positional.size() == 1) {
    stop = IntArg(a.positional[0], 0);
  } else {
    start = IntArg(a.positional[0], 0);
    stop = IntArg(a.positional[1], 0);
    if (a.positional.size() == 3) step = IntArg(a.positional[2], 1);
  }
  if (step == 0) Fail("range() arg 3 must not be zero");
  const long double count_ld =
      step > 0 ? (stop > start ? (static_cast<long double>(stop) - start + step - 1) / step : 0)
               : (start > stop ? (static_cast<long double>(start) - stop - step - 1) / -step : 0);
  in.CheckItems(static_cast<size_t>(std::min<long double>(count_ld, 1e18L)));
  std::vector<Value> out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    out.push_back(Value::Int(i));
    if ((step > 0 && i > std::numeric_limits<int64_t>::max() - step) ||
        (step < 0 && i < std::numeric_limits<int64_t>::min() - step)) {
      break;
    }
  }
  return Value::List(std::move(out));
}

std::vector<std::pair<std::string, Value>> DictArgs(CallArgs& a, const char* name) {
  std::vector<std::pair<std::string, Value>> items;
  Value d = Value::Dict({});
  if (a.positional.size() > 1) Fail(absl::StrCat(name, " expected at most 1 positional argument"));
  if (!a.positional.empty()) {
    const Value& src = a.positional[0];
    if (src.is_dict()) {
      for (const auto& [k, v] : src.dict().items) d.mutable_dict().Set(k, v);
    } else if (src.is_list()) {
      for (const Value& pair : src.list().items) {
        if (!pair.is_list() || pair.list().items.size() != 2 || !pair.list().items[0].is_string()) {
          Fail(absl::StrCat(name, ": expected pairs of a string key and a value"));
        }
        d.mutable_dict().Set(pair.list().items[0].str(), pair.list().items[1]);
      }
    } else {
      Fail(absl::StrCat(name, ": cannot convert ", TypeName(src), " to a dict"));
    }
  }
  for (const auto& [k, v] : a.keywords) d.mutable_dict().Set(k, v);
  return d.dict().items;
}

Value MakeDict(Interpreter&, CallArgs& a) { return Value::Dict(DictArgs(a, "dict")); }
Value MakeNamespace(Interpreter&, CallArgs& a) {
  return Value::Namespace(DictArgs(a, "namespace"));
}

Value RaiseException(Interpreter&, CallArgs& a) {
  const Value message = a.Get(0, "message");
  throw Error(Error::Kind::kRaised, ToString(message));
}

Value StrftimeNow(Interpreter& in, CallArgs& a) {
  const Value format = a.Get(0, "format");
  a.ExpectConsumed("strftime_now");
  const std::string f = StringArg(format, "strftime_now");
  if (f.size() > 256) Fail("strftime_now: format too long");
  const std::time_t now = in.now();
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[4096];
  const size_t n = std::strftime(buf, sizeof(buf), f.c_str(), &tm);
  return Value::Str(std::string(buf, n));
}

Value Joiner(Interpreter&, CallArgs& a) {
  const Value sep_v = a.Get(0, "sep");
  a.ExpectConsumed("joiner");
  const std::string sep = sep_v.is_undefined() ? ", " : ToString(sep_v);
  auto used = std::make_shared<bool>(false);
  return Value::Fn("joiner", [sep, used](Interpreter&, CallArgs&) {
    if (!*used) {
      *used = true;
      return Value::Str("");
    }
    return Value::Str(sep);
  });
}

}  // namespace

Value BoundMethod(const Value& obj, const std::string& name) {
  const absl::flat_hash_map<std::string, Method>* table = nullptr;
  if (obj.is_string()) table = &StringMethods();
  if (obj.is_list()) table = &ListMethods();
  if (obj.is_dict() && !obj.dict().is_namespace) table = &DictMethods();
  if (table != nullptr) {
    auto it = table->find(name);
    if (it != table->end()) {
      const Method m = it->second;
      return Value::Fn(name, [m, obj](Interpreter& in, CallArgs& a) { return m(in, obj, a); });
    }
  }
  if (IsMutatingMethod(obj, name)) {
    const std::string type = TypeName(obj);
    return Value::Fn(name, [name, type](Interpreter&, CallArgs&) -> Value {
      Fail(absl::StrCat("access to attribute '", name, "' of '", type, "' object is unsafe."));
    });
  }
  return Value();
}

Value Global(const std::string& name) {
  static const auto* globals = new absl::flat_hash_map<std::string, Value>{
      {"range", Value::Fn("range", Range)},
      {"dict", Value::Fn("dict", MakeDict)},
      {"namespace", Value::Fn("namespace", MakeNamespace)},
      {"raise_exception", Value::Fn("raise_exception", RaiseException)},
      {"strftime_now", Value::Fn("strftime_now", StrftimeNow)},
      {"joiner", Value::Fn("joiner", Joiner)}};
  auto it = globals->find(name);
  return it == globals->end() ? Value() : it->second;
}

}  // namespace switchyard::jinja

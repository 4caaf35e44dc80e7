#include "engine/jinja/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "engine/jinja/py_string.h"
#include "utf8proc.h"

namespace switchyard::jinja {

void Fail(const std::string& message) { throw Error(Error::Kind::kRender, message); }

Value Value::Undefined(std::string name) {
  Value v;
  v.data_ = std::move(name);
  return v;
}
Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}
Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.data_ = b;
  return v;
}
Value Value::Int(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.data_ = i;
  return v;
}
Value Value::Float(double d) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.data_ = d;
  return v;
}
Value Value::Str(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.data_ = std::move(s);
  return v;
}
Value Value::List(std::vector<Value> items, bool tuple) {
  Value v;
  v.kind_ = Kind::kList;
  v.data_ = std::make_shared<ListObject>(ListObject{std::move(items), tuple});
  return v;
}
Value Value::Dict(std::vector<std::pair<std::string, Value>> items) {
  Value v;
  v.kind_ = Kind::kDict;
  // Keys are unique here (JSON objects, filter results); dict literals go through Set.
  auto d = std::make_shared<DictObject>();
  d->items = std::move(items);
  v.data_ = std::move(d);
  return v;
}
Value Value::Namespace(std::vector<std::pair<std::string, Value>> items) {
  Value v = Dict(std::move(items));
  v.mutable_dict().is_namespace = true;
  return v;
}
Value Value::Fn(std::string name, Function fn) {
  Value v;
  v.kind_ = Kind::kCallable;
  v.data_ = std::make_shared<Callable>(Callable{std::move(name), std::move(fn)});
  return v;
}

int64_t Value::as_int() const {
  if (kind_ == Kind::kBool) return as_bool() ? 1 : 0;
  return std::get<int64_t>(data_);
}

double Value::as_double() const {
  if (kind_ == Kind::kFloat) return std::get<double>(data_);
  return static_cast<double>(as_int());
}

bool Value::SameObject(const Value& other) const {
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kList:
    case Kind::kDict:
    case Kind::kCallable:
      return data_ == other.data_;
    default:
      return Equals(*this, other);
  }
}

const Value* DictObject::Find(absl::string_view key) const {
  for (const auto& [k, v] : items) {
    if (k == key) return &v;
  }
  return nullptr;
}

void DictObject::Set(const std::string& key, Value v) {
  for (auto& [k, old] : items) {
    if (k == key) {
      old = std::move(v);
      return;
    }
  }
  items.emplace_back(key, std::move(v));
}

Value CallArgs::Get(size_t index, absl::string_view name) {
  used_positional_.resize(positional.size());
  used_keyword_.resize(keywords.size());
  if (index < positional.size()) {
    used_positional_[index] = true;
    return positional[index];
  }
  for (size_t i = 0; i < keywords.size(); ++i) {
    if (keywords[i].first == name) {
      used_keyword_[i] = true;
      return keywords[i].second;
    }
  }
  return Value();
}

void CallArgs::ExpectConsumed(absl::string_view function) const {
  for (size_t i = 0; i < positional.size(); ++i) {
    if (i >= used_positional_.size() || !used_positional_[i]) {
      Fail(absl::StrCat(function, "() takes ", used_positional_.size(),
                        " positional arguments but more were given"));
    }
  }
  for (size_t i = 0; i < keywords.size(); ++i) {
    if (i >= used_keyword_.size() || !used_keyword_[i]) {
      Fail(absl::StrCat(function, "() got an unexpected keyword argument '", keywords[i].first,
                        "'"));
    }
  }
}

bool Truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return false;
    case Value::Kind::kBool:
      return v.as_bool();
    case Value::Kind::kInt:
      return v.as_int() != 0;
    case Value::Kind::kFloat:
      return v.as_double() != 0.0;
    case Value::Kind::kString:
      return !v.str().empty();
    case Value::Kind::kList:
      return !v.list().items.empty();
    case Value::Kind::kDict:
      return v.dict().is_namespace || !v.dict().items.empty();
    case Value::Kind::kCallable:
      return true;
  }
  return false;
}

bool Equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat) {
      return a.as_double() == b.as_double();
    }
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kString:
      return a.str() == b.str();
    case Value::Kind::kList: {
      const ListObject &x = a.list(), &y = b.list();
      if (x.tuple != y.tuple || x.items.size() != y.items.size()) return false;
      for (size_t i = 0; i < x.items.size(); ++i) {
        if (!Equals(x.items[i], y.items[i])) return false;
      }
      return true;
    }
    case Value::Kind::kDict: {
      const DictObject &x = a.dict(), &y = b.dict();
      if (x.is_namespace || y.is_namespace) return a.SameObject(b);
      if (x.items.size() != y.items.size()) return false;
      for (const auto& [k, v] : x.items) {
        const Value* other = y.Find(k);
        if (other == nullptr || !Equals(v, *other)) return false;
      }
      return true;
    }
    case Value::Kind::kCallable:
      return a.SameObject(b);
    default:
      return false;
  }
}

int Compare(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat) {
      const double x = a.as_double(), y = b.as_double();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    const int64_t x = a.as_int(), y = b.as_int();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string())
    return a.str().compare(b.str()) < 0 ? -1 : (a.str() == b.str() ? 0 : 1);
  if (a.is_list() && b.is_list() && a.list().tuple == b.list().tuple) {
    const auto &x = a.list().items, &y = b.list().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!Equals(x[i], y[i])) return Compare(x[i], y[i]);
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  Fail(absl::StrCat("'<' not supported between instances of '", TypeName(a), "' and '", TypeName(b),
                    "'"));
}

const char* TypeName(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return "Undefined";
    case Value::Kind::kNone:
      return "NoneType";
    case Value::Kind::kBool:
      return "bool";
    case Value::Kind::kInt:
      return "int";
    case Value::Kind::kFloat:
      return "float";
    case Value::Kind::kString:
      return "str";
    case Value::Kind::kList:
      return v.list().tuple ? "tuple" : "list";
    case Value::Kind::kDict:
      return v.dict().is_namespace ? "Namespace" : "dict";
    case Value::Kind::kCallable:
      return "function";
  }
  return "object";
}

std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, laid out as Python's repr: positional for exponents in
  // [-4, 16), scientific otherwise, always with a '.' or an exponent.
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, end);
  const size_t e = sci.find('e');
  const int exponent = std::atoi(sci.c_str() + e + 1);
  std::string mantissa = sci.substr(0, e);
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits += c;
  }
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      absl::StrAppend(&out, "0.", std::string(-exponent - 1, '0'), digits);
    } else if (static_cast<size_t>(exponent) + 1 >= digits.size()) {
      absl::StrAppend(&out, digits, std::string(exponent + 1 - digits.size(), '0'), ".0");
    } else {
      absl::StrAppend(&out, digits.substr(0, exponent + 1), ".", digits.substr(exponent + 1));
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) absl::StrAppend(&out, ".", digits.substr(1));
  char exp[16];
  std::snprintf(exp, sizeof(exp), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return out + exp;
}

namespace {

int32_t NextCodePoint(absl::string_view s, size_t* pos) {
  return static_cast<int32_t>(py::NextCodePoint(s, pos));
}

bool IsPrintable(int32_t cp) {
  if (cp == ' ') return true;
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS:
      return false;
    default:
      return true;
  }
}

std::string StringRepr(absl::string_view s) {
  const bool has_single = s.find('\'') != absl::string_view::npos;
  const bool has_double = s.find('"') != absl::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (size_t pos = 0; pos < s.size();) {
    const size_t start = pos;
    const int32_t cp = NextCodePoint(s, &pos);
    if (cp == quote || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (!IsPrintable(cp)) {
      char buf[16];
      if (cp < 0x100) {
        std::snprintf(buf, sizeof(buf), "\\x%02x", cp);
      } else if (cp < 0x10000) {
        std::snprintf(buf, sizeof(buf), "\\u%04x", cp);
      } else {
        std::snprintf(buf, sizeof(buf), "\\U%08x", cp);
      }
      out += buf;
    } else {
      absl::StrAppend(&out, s.substr(start, pos - start));
    }
  }
  out += quote;
  return out;
}

void JsonString(absl::string_view s, bool ensure_ascii, std::string* out) {
  *out += '"';
  for (size_t pos = 0; pos < s.size();) {
    const size_t start = pos;
    const int32_t cp = NextCodePoint(s, &pos);
    char buf[16];
    switch (cp) {
      case '"':
        *out += "\\\"";
        continue;
      case '\\':
        *out += "\\\\";
        continue;
      case '\n':
        *out += "\\n";
        continue;
      case '\r':
        *out += "\\r";
        continue;
      case '\t':
        *out += "\\t";
        continue;
      case '\b':
        *out += "\\b";
        continue;
      case '\f':
        *out += "\\f";
        continue;
      default:
        break;
    }
    if (cp < 0x20 || (ensure_ascii && cp > 0x7e)) {
      if (cp >= 0x10000) {
        const int32_t v = cp - 0x10000;
        std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
      } else {
        std::snprintf(buf, sizeof(buf), "\\u%04x", cp);
      }
      *out += buf;
    } else {
      absl::StrAppend(out, s.substr(start, pos - start));
    }
  }
  *out += '"';
}

void JsonValue(const Value& v, const JsonOptions& o, int depth, std::string* out) {
  if (depth > 512) Fail("tojson: nesting deeper than 512 levels");
  const std::string item_sep = !o.item_separator.empty() ? o.item_separator : o.pretty ? "," : ", ";
  const std::string key_sep = !o.key_separator.empty() ? o.key_separator : ": ";
  const auto newline = [&](int level) {
    if (out->size() > o.max_bytes) {
      throw Error(Error::Kind::kLimit, "the chat template exceeded its limit on string size");
    }
    if (!o.pretty) return;
    *out += '\n';
    for (int i = 0; i < level; ++i) *out += o.indent_unit;
  };
  switch (v.kind()) {
    case Value::Kind::kNone:
      *out += "null";
      return;
    case Value::Kind::kBool:
      *out += v.as_bool() ? "true" : "false";
      return;
    case Value::Kind::kInt:
      *out += std::to_string(v.as_int());
      return;
    case Value::Kind::kFloat: {
      const double d = v.as_double();
      if (std::isnan(d)) {
        *out += "NaN";
      } else if (std::isinf(d)) {
        *out += d > 0 ? "Infinity" : "-Infinity";
      } else {
        *out += FloatRepr(d);
      }
      return;
    }
    case Value::Kind::kString:
      JsonString(v.str(), o.ensure_ascii, out);
      return;
    case Value::Kind::kList: {
      const auto& items = v.list().items;
      if (items.empty()) {
        *out += "[]";
        return;
      }
      *out += '[';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) *out += item_sep;
        newline(depth + 1);
        JsonValue(items[i], o, depth + 1, out);
      }
      newline(depth);
      *out += ']';
      return;
    }
    case Value::Kind::kDict: {
      if (v.dict().is_namespace) break;
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.dict().items) items.push_back(&kv);
      if (o.sort_keys) {
        std::stable_sort(items.begin(), items.end(),
                         [](auto* a, auto* b) { return a->first < b->first; });
      }
      if (items.empty()) {
        *out += "{}";
        return;
      }
      *out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) *out += item_sep;
        newline(depth + 1);
        JsonString(items[i]->first, o.ensure_ascii, out);
        *out += key_sep;
        JsonValue(items[i]->second, o, depth + 1, out);
      }
      newline(depth);
      *out += '}';
      return;
    }
    default:
      break;
  }
  Fail(absl::StrCat("Object of type ", TypeName(v), " is not JSON serializable"));
}

std::string ReprImpl(const Value& v, int depth);

std::string ContainerRepr(const Value& v, int depth) {
  if (depth > 512) Fail("repr: nesting deeper than 512 levels");
  std::string out;
  if (v.is_list()) {
    const ListObject& l = v.list();
    out += l.tuple ? '(' : '[';
    for (size_t i = 0; i < l.items.size(); ++i) {
      if (i > 0) out += ", ";
      out += ReprImpl(l.items[i], depth + 1);
    }
    if (l.tuple && l.items.size() == 1) out += ',';
    out += l.tuple ? ')' : ']';
    return out;
  }
  const DictObject& d = v.dict();
  out += d.is_namespace ? "<Namespace {" : "{";
  for (size_t i = 0; i < d.items.size(); ++i) {
    if (i > 0) out += ", ";
    out += StringRepr(d.items[i].first) + ": " + ReprImpl(d.items[i].second, depth + 1);
  }
  out += d.is_namespace ? "}>" : "}";
  return out;
}

std::string ReprImpl(const Value& v, int depth) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return "Undefined";
    case Value::Kind::kString:
      return StringRepr(v.str());
    case Value::Kind::kList:
    case Value::Kind::kDict:
      return ContainerRepr(v, depth);
    default:
      return ToString(v);
  }
}

}  // namespace

std::string ToString(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return "";
    case Value::Kind::kNone:
      return "None";
    case Value::Kind::kBool:
      return v.as_bool() ? "True" : "False";
    case Value::Kind::kInt:
      return std::to_string(v.as_int());
    case Value::Kind::kFloat:
      return FloatRepr(v.as_double());
    case Value::Kind::kString:
      return v.str();
    case Value::Kind::kList:
    case Value::Kind::kDict:
      return ContainerRepr(v, 0);
    case Value::Kind::kCallable:
      return absl::StrCat("<function ", v.callable().name, ">");
  }
  return "";
}

std::string Repr(const Value& v) { return ReprImpl(v, 0); }

std::string ToJson(const Value& v, const JsonOptions& options) {
  std::string out;
  JsonValue(v, options, 0, &out);
  return out;
}

namespace {

Value ConvertJson(const nlohmann::ordered_json& j, int depth_left) {
  if (depth_left < 0) throw Error(Error::Kind::kLimit, "nested too deeply");
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::None();
    case nlohmann::ordered_json::value_t::boolean:
      return Value::Bool(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value::Int(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u <= static_cast<uint64_t>(INT64_MAX)) return Value::Int(static_cast<int64_t>(u));
      return Value::Float(static_cast<double>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Value::Float(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value::Str(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(ConvertJson(e, depth_left - 1));
      return Value::List(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      std::vector<std::pair<std::string, Value>> items;
      items.reserve(j.size());
      for (const auto& [k, e] : j.items()) items.emplace_back(k, ConvertJson(e, depth_left - 1));
      return Value::Dict(std::move(items));
    }
    default:
      return Value::None();
  }
}

}  // namespace

absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& j, int max_depth) {
  try {
    return ConvertJson(j, max_depth);
  } catch (const Error&) {
    return absl::InvalidArgumentError(
        absl::StrCat("JSON nested deeper than ", max_depth, " levels"));
  }
}

std::vector<std::string> CodePoints(absl::string_view s) {
  std::vector<std::string> out;
  for (size_t pos = 0; pos < s.size();) {
    const size_t start = pos;
    NextCodePoint(s, &pos);
    out.emplace_back(s.substr(start, pos - start));
  }
  return out;
}

size_t CodePointCount(absl::string_view s) {
  size_t n = 0;
  for (size_t pos = 0; pos < s.size(); ++n) NextCodePoint(s, &pos);
  return n;
}

}  // namespace switchyard::jinja

// Values of the Jinja interpreter, with Python's semantics where chat templates observe them:
// truthiness, equality and ordering, str() and repr() formatting, json.dumps. Lists, tuples and
// dicts are shared and immutable once built (Hugging Face renders in an immutable sandbox); the
// one mutable object is a namespace(), whose attributes `{% set ns.x = ... %}` assigns.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace switchyard::jinja {

// Raised inside the interpreter and turned into an absl::Status at the API (a render unwinds
// through deep recursion; an exception keeps every evaluation step free of status plumbing).
class Error : public std::runtime_error {
 public:
  enum class Kind { kSyntax, kRender, kRaised, kLimit };
  Error(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

[[noreturn]] void Fail(const std::string& message);

class Value;
struct ListObject;
struct DictObject;
struct CallArgs;
class Interpreter;

using Function = std::function<Value(Interpreter&, CallArgs&)>;

struct Callable {
  std::string name;
  Function fn;
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kCallable };

  Value() = default;  // undefined
  static Value Undefined(std::string name);
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double d);
  static Value Str(std::string s);
  static Value List(std::vector<Value> items, bool tuple = false);
  static Value Dict(std::vector<std::pair<std::string, Value>> items);
  static Value Namespace(std::vector<std::pair<std::string, Value>> items);
  static Value Fn(std::string name, Function fn);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_number() const {
    return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool;
  }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_callable() const { return kind_ == Kind::kCallable; }

  bool as_bool() const { return std::get<bool>(data_); }
  int64_t as_int() const;    // bool or int
  double as_double() const;  // bool, int or float
  const std::string& str() const { return std::get<std::string>(data_); }
  const ListObject& list() const { return *std::get<std::shared_ptr<ListObject>>(data_); }
  const DictObject& dict() const { return *std::get<std::shared_ptr<DictObject>>(data_); }
  DictObject& mutable_dict() const { return *std::get<std::shared_ptr<DictObject>>(data_); }
  const Callable& callable() const { return *std::get<std::shared_ptr<Callable>>(data_); }
  // The name an undefined value was looked up by ("" when it has none).
  const std::string& undefined_name() const {
    static const std::string kNone;
    const std::string* s = std::get_if<std::string>(&data_);
    return s != nullptr ? *s : kNone;
  }

  // Python's identity for the `sameas` test: the same object, or equal immutable scalars.
  bool SameObject(const Value& other) const;

 private:
  Kind kind_ = Kind::kUndefined;
  std::variant<std::monostate, bool, int64_t, double, std::string, std::shared_ptr<ListObject>,
               std::shared_ptr<DictObject>, std::shared_ptr<Callable>>
      data_;
};

struct ListObject {
  std::vector<Value> items;
  bool tuple = false;
};

// Insertion-ordered, as Python's dict (templates print and serialise keys in the order given).
struct DictObject {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;
  const Value* Find(absl::string_view key) const;
  void Set(const std::string& key, Value v);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;
  // The argument at `index` or keyword `name`; undefined when absent. Marks it consumed.
  Value Get(size_t index, absl::string_view name);
  // Fails naming `function` when arguments were given that no Get consumed.
  void ExpectConsumed(absl::string_view function) const;

 private:
  std::vector<bool> used_positional_, used_keyword_;
};

// Python semantics.
bool Truthy(const Value& v);
bool Equals(const Value& a, const Value& b);
// <0, 0, >0; fails for values Python cannot order.
int Compare(const Value& a, const Value& b);
const char* TypeName(const Value& v);  // Python's type name: str, int, dict, NoneType ...
std::string ToString(const Value& v);  // str(v); undefined is ""
std::string Repr(const Value& v);      // repr(v)
std::string FloatRepr(double d);       // repr(float)

struct JsonOptions {
  bool pretty = false;  // json.dumps' indent given: one item per line, indented by indent_unit
  std::string indent_unit;
  std::string item_separator;  // empty: Python's default for the indent
  std::string key_separator;
  bool sort_keys = false;
  bool ensure_ascii = false;
  size_t max_bytes = SIZE_MAX;  // longer output fails (Error kLimit)
};
// json.dumps(v, ...) as Hugging Face's tojson calls it.
std::string ToJson(const Value& v, const JsonOptions& options);

// JSON (key order kept) as template values; fails past `max_depth` levels of nesting (the
// conversion recurses, and client JSON may nest arbitrarily).
absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& j, int max_depth = 256);

// Strings index by code point, as Python's do.
std::vector<std::string> CodePoints(absl::string_view s);
size_t CodePointCount(absl::string_view s);

}  // namespace switchyard::jinja

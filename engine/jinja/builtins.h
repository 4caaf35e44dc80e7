// Jinja's built-in filters, tests and global functions, Hugging Face's additions (tojson with
// json.dumps' arguments, raise_exception, strftime_now), Python's methods on str, list and dict
// (the mutating ones refused, as in Hugging Face's immutable sandbox), and Python's operators.
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "engine/jinja/interpreter.h"
#include "engine/jinja/value.h"

namespace switchyard::jinja {

// The variable a filter block's or set block's rendered body is bound to.
inline constexpr absl::string_view kBlockPlaceholder = "\x01block";

// An integer argument (bools count, as in Python); `fallback` when absent or none.
int64_t IntArg(const Value& v, int64_t fallback);

bool IsKnownFilter(absl::string_view name);
bool IsKnownTest(absl::string_view name);
Value ApplyFilter(Interpreter& in, const std::string& name, const Value& input, CallArgs& args);
bool ApplyTest(Interpreter& in, const std::string& name, const Value& input, CallArgs& args);
// obj.name when `name` is a method of obj's type (bound to obj); undefined otherwise.
Value BoundMethod(const Value& obj, const std::string& name);
// Python's `format % args` (a tuple spreads over the conversions, a dict feeds %(name)s).
std::string PercentFormat(Interpreter& in, absl::string_view format, const Value& args);
// range, dict, namespace, raise_exception, strftime_now, cycler, joiner; undefined otherwise.
Value Global(const std::string& name);

}  // namespace switchyard::jinja

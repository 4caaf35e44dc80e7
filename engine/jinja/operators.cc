// Python's arithmetic on template values, and the %-formatting `'%s' % x` and `|format` share.
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/jinja/builtins.h"
#include "engine/jinja/interpreter.h"

namespace switchyard::jinja {
namespace {

[[noreturn]] void Unsupported(const std::string& op, const Value& a, const Value& b) {
  Fail(absl::StrCat("unsupported operand type(s) for ", op, ": '", TypeName(a), "' and '",
                    TypeName(b), "'"));
}

bool IsFloat(const Value& a, const Value& b) {
  return a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat;
}

Value Repeat(Interpreter& in, const Value& seq, int64_t times) {
  if (times < 0) times = 0;
  if (seq.is_string()) {
    const size_t n = seq.str().size();
    if (n > 0) in.CheckString(static_cast<size_t>(times));  // bounds the product below
    in.CheckString(n * static_cast<size_t>(times));
    std::string out;
    out.reserve(n * static_cast<size_t>(times));
    for (int64_t i = 0; i < times; ++i) out += seq.str();
    return Value::Str(std::move(out));
  }
  const auto& items = seq.list().items;
  if (!items.empty()) in.CheckItems(static_cast<size_t>(times));  // bounds the product below
  in.CheckItems(items.size() * static_cast<size_t>(times));
  std::vector<Value> out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), items.begin(), items.end());
  return Value::List(std::move(out), seq.list().tuple);
}

// Python's ints are unbounded; ours stop at 64 bits with an error rather than wrap.
int64_t Checked(bool (*op)(int64_t, int64_t, int64_t*), int64_t a, int64_t b) {
  int64_t r;
  if (op(a, b, &r)) Fail("integer overflow");
  return r;
}
bool Add(int64_t a, int64_t b, int64_t* r) { return __builtin_add_overflow(a, b, r); }
bool Sub(int64_t a, int64_t b, int64_t* r) { return __builtin_sub_overflow(a, b, r); }
bool Mul(int64_t a, int64_t b, int64_t* r) { return __builtin_mul_overflow(a, b, r); }

Value Power(const Value& a, const Value& b) {
  if (!IsFloat(a, b) && b.as_int() >= 0) {
    int64_t base = a.as_int(), exp = b.as_int(), result = 1;
    while (exp > 0) {
      if (exp & 1) result = Checked(Mul, result, base);
      exp >>= 1;
      if (exp > 0) base = Checked(Mul, base, base);
    }
    return Value::Int(result);
  }
  if (a.as_double() == 0.0 && b.as_double() < 0) Fail("0.0 cannot be raised to a negative power");
  return Value::Float(std::pow(a.as_double(), b.as_double()));
}

Value Divide(const std::string& op, const Value& a, const Value& b) {
  if (b.as_double() == 0.0) {
    Fail(op == "/"    ? "division by zero"
         : op == "//" ? "integer division or modulo by zero"
                      : "modulo by zero");
  }
  if (op == "/") return Value::Float(a.as_double() / b.as_double());
  if (IsFloat(a, b)) {
    const double x = a.as_double(), y = b.as_double();
    double mod = std::fmod(x, y);
    if (mod != 0 && ((y < 0) != (mod < 0))) mod += y;
    if (op == "%") return Value::Float(mod);
    return Value::Float(std::floor(x / y));
  }
  const int64_t x = a.as_int(), y = b.as_int();
  if (x == std::numeric_limits<int64_t>::min() && y == -1) Fail("integer overflow");
  int64_t q = x / y, r = x % y;
  if (r != 0 && ((r < 0) != (y < 0))) {
    --q;
    r += y;
  }
  return Value::Int(op == "//" ? q : r);
}

}  // namespace

Value Arithmetic(Interpreter& in, const std::string& op, const Value& a, const Value& b) {
  RequireDefined(a);
  // str % anything formats, undefined included (it formats as "").
  if (op == "%" && a.is_string()) return Value::Str(PercentFormat(in, a.str(), b));
  RequireDefined(b);
  const bool numbers = a.is_number() && b.is_number();
  if (op == "+") {
    if (numbers) {
      if (IsFloat(a, b)) return Value::Float(a.as_double() + b.as_double());
      return Value::Int(Checked(Add, a.as_int(), b.as_int()));
    }
    if (a.is_string() && b.is_string()) {
      in.CheckString(a.str().size() + b.str().size());
      return Value::Str(a.str() + b.str());
    }
    if (a.is_list() && b.is_list() && a.list().tuple == b.list().tuple) {
      in.CheckItems(a.list().items.size() + b.list().items.size());
      std::vector<Value> items = a.list().items;
      items.insert(items.end(), b.list().items.begin(), b.list().items.end());
      return Value::List(std::move(items), a.list().tuple);
    }
    if (a.is_string()) {
      Fail(absl::StrCat("can only concatenate str (not \"", TypeName(b), "\") to str"));
    }
    Unsupported(op, a, b);
  }
  if (op == "*") {
    if (numbers) {
      if (IsFloat(a, b)) return Value::Float(a.as_double() * b.as_double());
      return Value::Int(Checked(Mul, a.as_int(), b.as_int()));
    }
    const bool a_int = a.kind() == Value::Kind::kInt || a.kind() == Value::Kind::kBool;
    const bool b_int = b.kind() == Value::Kind::kInt || b.kind() == Value::Kind::kBool;
    if ((a.is_string() || a.is_list()) && b_int) return Repeat(in, a, b.as_int());
    if ((b.is_string() || b.is_list()) && a_int) return Repeat(in, b, a.as_int());
    Unsupported(op, a, b);
  }
  if (!numbers) Unsupported(op, a, b);
  if (op == "-") {
    if (IsFloat(a, b)) return Value::Float(a.as_double() - b.as_double());
    return Value::Int(Checked(Sub, a.as_int(), b.as_int()));
  }
  if (op == "**") return Power(a, b);
  return Divide(op, a, b);
}

namespace {

std::string Pad(std::string s, int width, bool left_align, char fill = ' ') {
  const int len = static_cast<int>(CodePointCount(s));
  if (width <= len) return s;
  const std::string padding(static_cast<size_t>(width - len), fill);
  return left_align ? s + padding : padding + s;
}

std::string FormatNumber(const Value& v, char type, const std::string& flags, int width,
                         int precision) {
  if (!v.is_number()) {
    Fail(absl::StrCat("%", std::string(1, type), " format: a real number is required, not ",
                      TypeName(v)));
  }
  std::string spec = "%" + flags;
  if (width >= 0) spec += std::to_string(std::min(width, 1000));
  if (precision >= 0) absl::StrAppend(&spec, ".", std::min(precision, 100));
  char buf[1200];
  switch (type) {
    case 'd':
    case 'i':
    case 'u': {
      const int64_t i = v.kind() == Value::Kind::kFloat
                            ? static_cast<int64_t>(std::trunc(v.as_double()))
                            : v.as_int();
      std::snprintf(buf, sizeof(buf), (spec + "lld").c_str(), static_cast<long long>(i));
      break;
    }
    case 'x':
    case 'X':
    case 'o': {
      if (v.kind() == Value::Kind::kFloat) Fail("%x format: an integer is required, not float");
      const int64_t i = v.as_int();
      std::snprintf(
          buf, sizeof(buf), (spec + "ll" + type).c_str(),
          i < 0 ? 0ULL - static_cast<unsigned long long>(i) : static_cast<unsigned long long>(i));
      if (i < 0) return absl::StrCat("-", buf);
      break;
    }
    default:
      std::snprintf(buf, sizeof(buf), (spec + type).c_str(), v.as_double());
  }
  return buf;
}

}  // namespace

std::string PercentFormat(Interpreter& in, absl::string_view format, const Value& args) {
  std::vector<Value> positional;
  const bool mapping = args.is_dict();
  if (args.is_list() && args.list().tuple) {
    positional = args.list().items;
  } else if (!mapping) {
    positional.push_back(args);
  }
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out += format[i];
      continue;
    }
    if (++i >= format.size()) Fail("incomplete format");
    Value arg;
    bool have_arg = false;
    if (format[i] == '(') {
      const size_t close = format.find(')', i);
      if (close == absl::string_view::npos || !mapping) Fail("format requires a mapping");
      const Value* v = args.dict().Find(format.substr(i + 1, close - i - 1));
      if (v == nullptr)
        Fail(absl::StrCat("format: missing key '", format.substr(i + 1, close - i - 1), "'"));
      arg = *v;
      have_arg = true;
      i = close + 1;
    }
    std::string flags;
    while (i < format.size() && std::string("-+ #0").find(format[i]) != std::string::npos) {
      flags += format[i++];
    }
    int width = -1, precision = -1;
    while (i < format.size() && std::isdigit(static_cast<unsigned char>(format[i]))) {
      width = std::min(1000, std::max(width, 0) * 10 + (format[i++] - '0'));
    }
    if (i < format.size() && format[i] == '.') {
      ++i;
      precision = 0;
      while (i < format.size() && std::isdigit(static_cast<unsigned char>(format[i]))) {
        precision = std::min(1000, precision * 10 + (format[i++] - '0'));
      }
    }
    if (i >= format.size()) Fail("incomplete format");
    const char type = format[i];
    if (type == '%') {
      out += '%';
      continue;
    }
    if (!have_arg) {
      if (next >= positional.size()) Fail("not enough arguments for format string");
      arg = positional[next++];
    }
    std::string piece;
    switch (type) {
      case 's':
      case 'r':
      case 'a': {
        piece = type == 's' ? ToString(arg) : Repr(arg);
        if (precision >= 0) {
          std::vector<std::string> cps = CodePoints(piece);
          if (static_cast<size_t>(precision) < cps.size()) {
            piece.clear();
            for (int k = 0; k < precision; ++k) piece += cps[static_cast<size_t>(k)];
          }
        }
        piece = Pad(std::move(piece), width, flags.find('-') != std::string::npos);
        break;
      }
      case 'c':
        if (arg.is_string() && CodePointCount(arg.str()) == 1) {
          piece = arg.str();
        } else if (arg.kind() == Value::Kind::kInt && arg.as_int() >= 0 && arg.as_int() < 128) {
          piece = std::string(1, static_cast<char>(arg.as_int()));
        } else {
          Fail("%c requires an ASCII code or a single character");
        }
        break;
      case 'd':
      case 'i':
      case 'u':
      case 'x':
      case 'X':
      case 'o':
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G':
        piece = FormatNumber(arg, type, flags, width, precision);
        break;
      default:
        Fail(absl::StrCat("unsupported format character '", std::string(1, type), "'"));
    }
    in.CheckString(out.size() + piece.size());
    out += piece;
  }
  // Python skips this check when the argument looks like a mapping (has __getitem__): a dict, a
  // list, an undefined.
  const bool lenient = mapping || args.is_undefined() || (args.is_list() && !args.list().tuple);
  if (!lenient && next < positional.size()) {
    Fail("not all arguments converted during string formatting");
  }
  return out;
}

}  // namespace switchyard::jinja

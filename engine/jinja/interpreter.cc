#include "engine/jinja/interpreter.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/jinja/builtins.h"

namespace switchyard::jinja {

const Value* Scope::Find(const std::string& name) const {
  for (const Scope* s = this; s != nullptr; s = s->parent.get()) {
    auto it = s->vars.find(name);
    if (it != s->vars.end()) return &it->second;
  }
  return nullptr;
}

namespace {

ScopePtr Child(const ScopePtr& parent) {
  auto s = std::make_shared<Scope>();
  s->parent = parent;
  return s;
}

[[noreturn]] void LimitError(const std::string& what) {
  throw Error(Error::Kind::kLimit, absl::StrCat("the chat template exceeded its limit on ", what));
}

std::string NoAttribute(const Value& obj, absl::string_view name) {
  return absl::StrCat("'", TypeName(obj), " object' has no attribute '", name, "'");
}

}  // namespace

void RequireDefined(const Value& v) {
  if (v.is_undefined()) {
    const std::string& why = v.undefined_name();
    Fail(why.empty() ? "undefined value" : why);
  }
}

std::vector<Value> Iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return {};
    case Value::Kind::kList:
      return v.list().items;
    case Value::Kind::kDict: {
      if (v.dict().is_namespace) break;
      std::vector<Value> keys;
      keys.reserve(v.dict().items.size());
      for (const auto& [k, unused] : v.dict().items) keys.push_back(Value::Str(k));
      return keys;
    }
    case Value::Kind::kString: {
      std::vector<Value> chars;
      for (std::string& c : CodePoints(v.str())) chars.push_back(Value::Str(std::move(c)));
      return chars;
    }
    default:
      break;
  }
  Fail(absl::StrCat("'", TypeName(v), "' object is not iterable"));
}

bool Contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        Fail(absl::StrCat("'in <string>' requires string as left operand, not ", TypeName(item)));
      }
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::kList:
      for (const Value& v : container.list().items) {
        if (Equals(v, item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      if (container.dict().is_namespace) break;
      if (item.is_dict() || (item.is_list() && !item.list().tuple)) {
        Fail(absl::StrCat("unhashable type: '", TypeName(item), "'"));
      }
      return item.is_string() && container.dict().Find(item.str()) != nullptr;
    default:
      break;
  }
  Fail(absl::StrCat("argument of type '", TypeName(container), "' is not iterable"));
}

void Interpreter::Step() {
  if (++steps_ > limits_.max_steps) LimitError("evaluation steps");
}

void Interpreter::CheckString(size_t bytes) const {
  if (bytes > limits_.max_value_bytes) LimitError("string size");
}

void Interpreter::CheckItems(size_t items) const {
  if (items > limits_.max_sequence_items) LimitError("sequence length");
}

void Interpreter::Append(std::string* out, absl::string_view text) const {
  if (out->size() + text.size() > limits_.max_output_bytes) LimitError("output size");
  out->append(text.data(), text.size());
}

std::string Interpreter::Render(const Body& body, ScopePtr globals) {
  std::string out;
  Exec(body, globals, &out);
  return out;
}

std::string Interpreter::RenderToString(const Body& body, const ScopePtr& scope) {
  std::string out;
  Exec(body, scope, &out);
  return out;
}

Interpreter::Flow Interpreter::Exec(const Body& body, const ScopePtr& scope, std::string* out) {
  for (const NodePtr& node : body) {
    const Flow flow = ExecNode(*node, scope, out);
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::ExecNode(const Node& node, const ScopePtr& scope, std::string* out) {
  Step();
  switch (node.kind) {
    case Node::Kind::kText:
      Append(out, node.text);
      return Flow::kNormal;
    case Node::Kind::kOutput:
      Append(out, ToString(Eval(*node.expr, scope)));
      return Flow::kNormal;
    case Node::Kind::kIf:
      for (size_t i = 0; i < node.conditions.size(); ++i) {
        if (Truthy(Eval(*node.conditions[i], scope))) return Exec(node.bodies[i], scope, out);
      }
      return Exec(node.else_body, scope, out);
    case Node::Kind::kFor:
      return ExecFor(node, scope, out);
    case Node::Kind::kSet:
      ExecSet(node, scope);
      return Flow::kNormal;
    case Node::Kind::kSetBlock: {
      std::string text = RenderToString(node.bodies[0], Child(scope));
      scope->vars[node.targets[0]] =
          node.expr ? ApplyPlaceholderFilters(*node.expr, std::move(text), scope)
                    : Value::Str(std::move(text));
      return Flow::kNormal;
    }
    case Node::Kind::kMacro:
      ExecMacro(node, scope);
      return Flow::kNormal;
    case Node::Kind::kCallBlock: {
      const Expr& call = *node.expr;
      Value fn = Eval(*call.children[0], scope);
      CallArgs args = EvalArgs(call, 1, scope);
      const Node* block = &node;
      ScopePtr defining = scope;
      args.keywords.emplace_back(
          "caller", Value::Fn("caller", [this, block, defining](Interpreter&, CallArgs& a) {
            return CallMacro(*block, defining, a, Value());
          }));
      Append(out, ToString(Call(fn, args)));
      return Flow::kNormal;
    }
    case Node::Kind::kFilterBlock: {
      std::string text = RenderToString(node.bodies[0], Child(scope));
      Append(out, ToString(ApplyPlaceholderFilters(*node.expr, std::move(text), scope)));
      return Flow::kNormal;
    }
    case Node::Kind::kBreak:
      return Flow::kBreak;
    case Node::Kind::kContinue:
      return Flow::kContinue;
    case Node::Kind::kScope:
      return Exec(node.bodies[0], scope, out);
  }
  return Flow::kNormal;
}

Value Interpreter::ApplyPlaceholderFilters(const Expr& chain, std::string text,
                                           const ScopePtr& scope) {
  ScopePtr s = Child(scope);
  s->vars[std::string(kBlockPlaceholder)] = Value::Str(std::move(text));
  return Eval(chain, s);
}

namespace {

void Bind(Scope& scope, const std::vector<std::string>& targets, const Value& v) {
  if (targets.size() == 1) {
    scope.vars[targets[0]] = v;
    return;
  }
  if (!v.is_list() || v.list().items.size() != targets.size()) {
    if (v.is_list() || v.is_string() || v.is_dict()) {
      Fail(absl::StrCat("cannot unpack into ", targets.size(), " names: wrong number of values"));
    }
    Fail(absl::StrCat("cannot unpack non-iterable ", TypeName(v), " object"));
  }
  for (size_t i = 0; i < targets.size(); ++i) scope.vars[targets[i]] = v.list().items[i];
}

Value LoopObject(const std::vector<Value>& items, size_t i) {
  const int64_t n = static_cast<int64_t>(items.size());
  const int64_t idx = static_cast<int64_t>(i);
  std::vector<std::pair<std::string, Value>> fields = {
      {"index", Value::Int(idx + 1)},
      {"index0", Value::Int(idx)},
      {"revindex", Value::Int(n - idx)},
      {"revindex0", Value::Int(n - idx - 1)},
      {"first", Value::Bool(i == 0)},
      {"last", Value::Bool(idx == n - 1)},
      {"length", Value::Int(n)},
      {"depth", Value::Int(1)},
      {"depth0", Value::Int(0)},
      {"previtem", i > 0 ? items[i - 1] : Value::Undefined("there is no previous item")},
      {"nextitem", idx + 1 < n ? items[i + 1] : Value::Undefined("there is no next item")},
      {"cycle", Value::Fn("cycle", [idx](Interpreter&, CallArgs& a) {
         if (a.positional.empty()) Fail("no items for cycling given");
         return a.positional[static_cast<size_t>(idx) % a.positional.size()];
       })}};
  return Value::Dict(std::move(fields));
}

}  // namespace

Interpreter::Flow Interpreter::ExecFor(const Node& node, const ScopePtr& scope, std::string* out) {
  if (node.recursive) Fail("recursive for loops are not supported");
  const Value iterable = Eval(*node.expr, scope);
  std::vector<Value> items = Iterate(iterable);
  if (node.condition) {
    std::vector<Value> kept;
    for (Value& item : items) {
      Step();
      ScopePtr s = Child(scope);
      Bind(*s, node.targets, item);
      if (Truthy(Eval(*node.condition, s))) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    Exec(node.else_body, Child(scope), out);
    return Flow::kNormal;
  }
  for (size_t i = 0; i < items.size(); ++i) {
    Step();
    ScopePtr s = Child(scope);
    Bind(*s, node.targets, items[i]);
    if (node.uses_loop) s->vars["loop"] = LoopObject(items, i);
    if (Exec(node.bodies[0], s, out) == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

void Interpreter::ExecSet(const Node& node, const ScopePtr& scope) {
  Value v = Eval(*node.expr, scope);
  if (node.attribute_target) {
    const Value* ns = scope->Find(node.targets[0]);
    if (ns == nullptr || !ns->is_dict() || !ns->dict().is_namespace) {
      Fail(absl::StrCat("cannot assign attribute on non-namespace object '", node.targets[0], "'"));
    }
    ns->mutable_dict().Set(node.targets[1], std::move(v));
    return;
  }
  Bind(*scope, node.targets, v);
}

void Interpreter::ExecMacro(const Node& node, const ScopePtr& scope) {
  const Node* macro = &node;
  ScopePtr defining = scope;
  // The macro value is stored in the scope it captures: a weak reference breaks the cycle.
  std::weak_ptr<Scope> weak = defining;
  scope->vars[node.targets[0]] =
      Value::Fn(node.targets[0], [macro, weak](Interpreter& in, CallArgs& args) {
        ScopePtr s = weak.lock();
        if (!s) Fail("macro called after its scope ended");
        Value caller = args.Get(std::numeric_limits<size_t>::max(), "caller");
        return in.CallMacro(*macro, s, args, caller);
      });
}

Value Interpreter::CallMacro(const Node& macro, const ScopePtr& defining, CallArgs& args,
                             Value caller) {
  if (++call_depth_ > limits_.max_call_depth) LimitError("macro call depth");
  ScopePtr s = Child(defining);
  std::vector<bool> bound(macro.params.size(), false);
  std::vector<Value> varargs;
  for (size_t i = 0; i < args.positional.size(); ++i) {
    if (i < macro.params.size()) {
      s->vars[macro.params[i].first] = args.positional[i];
      bound[i] = true;
    } else {
      varargs.push_back(args.positional[i]);
    }
  }
  std::vector<std::pair<std::string, Value>> kwargs;
  for (auto& [name, value] : args.keywords) {
    if (name == "caller") continue;
    bool matched = false;
    for (size_t i = 0; i < macro.params.size(); ++i) {
      if (macro.params[i].first == name) {
        if (bound[i])
          Fail(absl::StrCat("macro '", macro.targets[0], "' got multiple values for argument '",
                            name, "'"));
        s->vars[name] = value;
        bound[i] = matched = true;
      }
    }
    if (!matched) kwargs.emplace_back(name, value);
  }
  for (size_t i = 0; i < macro.params.size(); ++i) {
    if (bound[i]) continue;
    s->vars[macro.params[i].first] =
        macro.params[i].second ? Eval(*macro.params[i].second, s)
                               : Value::Undefined(absl::StrCat("parameter '", macro.params[i].first,
                                                               "' was not provided"));
  }
  s->vars["varargs"] = Value::List(std::move(varargs), /*tuple=*/true);
  s->vars["kwargs"] = Value::Dict(std::move(kwargs));
  if (!caller.is_undefined()) s->vars["caller"] = caller;
  std::string out = RenderToString(macro.bodies[0], s);
  --call_depth_;
  return Value::Str(std::move(out));
}

Value Interpreter::Call(const Value& fn, CallArgs& args) {
  RequireDefined(fn);
  if (!fn.is_callable()) Fail(absl::StrCat("'", TypeName(fn), "' object is not callable"));
  return fn.callable().fn(*this, args);
}

CallArgs Interpreter::EvalArgs(const Expr& e, size_t first, const ScopePtr& scope) {
  CallArgs args;
  for (size_t i = first; i < e.children.size(); ++i) {
    args.positional.push_back(Eval(*e.children[i], scope));
  }
  for (const auto& [name, expr] : e.kwargs) {
    Value v = Eval(*expr, scope);
    if (name == "*") {
      for (Value& item : Iterate(v)) args.positional.push_back(std::move(item));
    } else if (name == "**") {
      if (!v.is_dict() || v.dict().is_namespace) Fail("argument after ** must be a mapping");
      for (const auto& [k, item] : v.dict().items) args.keywords.emplace_back(k, item);
    } else {
      args.keywords.emplace_back(name, std::move(v));
    }
  }
  return args;
}

Value Interpreter::GetAttr(const Value& obj, const std::string& name) {
  RequireDefined(obj);
  if (obj.is_dict() && obj.dict().is_namespace) {
    if (const Value* v = obj.dict().Find(name)) return *v;
    return Value::Undefined(NoAttribute(obj, name));
  }
  if (Value method = BoundMethod(obj, name); !method.is_undefined()) return method;
  if (obj.is_dict()) {
    if (const Value* v = obj.dict().Find(name)) return *v;
  }
  return Value::Undefined(NoAttribute(obj, name));
}

Value Interpreter::GetItem(const Value& obj, const Value& key) {
  RequireDefined(obj);
  switch (obj.kind()) {
    case Value::Kind::kDict:
      if (key.is_string()) {
        if (const Value* v = obj.dict().Find(key.str())) return *v;
      }
      break;
    case Value::Kind::kList:
    case Value::Kind::kString:
      if (key.kind() == Value::Kind::kInt || key.kind() == Value::Kind::kBool) {
        int64_t i = key.as_int();
        if (obj.is_list()) {
          const int64_t n = static_cast<int64_t>(obj.list().items.size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) return obj.list().items[static_cast<size_t>(i)];
        } else {
          std::vector<std::string> chars = CodePoints(obj.str());
          const int64_t n = static_cast<int64_t>(chars.size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) return Value::Str(std::move(chars[static_cast<size_t>(i)]));
        }
        return Value::Undefined(
            absl::StrCat(TypeName(obj), " object has no element ", key.as_int()));
      }
      break;
    default:
      break;
  }
  if (key.is_string() && !obj.is_dict()) return GetAttr(obj, key.str());
  if (key.is_string()) {
    if (Value method = BoundMethod(obj, key.str()); !method.is_undefined()) return method;
  }
  return Value::Undefined(
      absl::StrCat("'", TypeName(obj), " object' has no attribute ",
                   key.is_string() ? absl::StrCat("'", key.str(), "'") : Repr(key)));
}

Value Interpreter::Eval(const Expr& e, const ScopePtr& scope) {
  Step();
  switch (e.kind) {
    case Expr::Kind::kLiteral:
      return e.literal;
    case Expr::Kind::kName: {
      if (const Value* v = scope->Find(e.name)) return *v;
      if (Value g = Global(e.name); !g.is_undefined()) return g;
      return Value::Undefined(absl::StrCat("'", e.name, "' is undefined"));
    }
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      std::vector<Value> items;
      items.reserve(e.children.size());
      for (const ExprPtr& c : e.children) items.push_back(Eval(*c, scope));
      return Value::List(std::move(items), e.kind == Expr::Kind::kTuple);
    }
    case Expr::Kind::kDict: {
      Value d = Value::Dict({});
      for (size_t i = 0; i < e.keys.size(); ++i) {
        Value k = Eval(*e.keys[i], scope);
        if (!k.is_string()) Fail("dict literals take string keys here");
        d.mutable_dict().Set(k.str(), Eval(*e.children[i], scope));
      }
      return d;
    }
    case Expr::Kind::kAttr:
      return GetAttr(Eval(*e.children[0], scope), e.name);
    case Expr::Kind::kItem: {
      Value obj = Eval(*e.children[0], scope);
      return GetItem(obj, Eval(*e.children[1], scope));
    }
    case Expr::Kind::kSlice:
      return EvalSlice(e, scope);
    case Expr::Kind::kCall:
      return EvalCall(e, scope);
    case Expr::Kind::kFilter:
      return EvalFilter(e, scope);
    case Expr::Kind::kTest:
      return EvalTest(e, scope);
    case Expr::Kind::kUnary: {
      Value v = Eval(*e.children[0], scope);
      if (e.name == "not") return Value::Bool(!Truthy(v));
      RequireDefined(v);
      if (!v.is_number())
        Fail(absl::StrCat("bad operand type for unary ", e.name, ": '", TypeName(v), "'"));
      if (e.name == "+") return v.kind() == Value::Kind::kFloat ? v : Value::Int(v.as_int());
      if (v.kind() == Value::Kind::kFloat) return Value::Float(-v.as_double());
      if (v.as_int() == std::numeric_limits<int64_t>::min()) Fail("integer overflow");
      return Value::Int(-v.as_int());
    }
    case Expr::Kind::kBinary:
      return EvalBinary(e, scope);
    case Expr::Kind::kCompare:
      return EvalCompare(e, scope);
    case Expr::Kind::kCondition:
      if (Truthy(Eval(*e.children[0], scope))) return Eval(*e.children[1], scope);
      if (e.children[2]) return Eval(*e.children[2], scope);
      return Value::Undefined(
          "the inline if expression evaluated to false and no else section was defined");
  }
  return Value();
}

Value Interpreter::EvalCall(const Expr& e, const ScopePtr& scope) {
  Value fn = Eval(*e.children[0], scope);
  CallArgs args = EvalArgs(e, 1, scope);
  if (fn.is_undefined()) RequireDefined(fn);
  return Call(fn, args);
}

Value Interpreter::EvalFilter(const Expr& e, const ScopePtr& scope) {
  Value input = Eval(*e.children[0], scope);
  CallArgs args = EvalArgs(e, 1, scope);
  return ApplyFilter(*this, e.name, input, args);
}

Value Interpreter::EvalTest(const Expr& e, const ScopePtr& scope) {
  Value input = Eval(*e.children[0], scope);
  CallArgs args = EvalArgs(e, 1, scope);
  const bool result = ApplyTest(*this, e.name, input, args);
  return Value::Bool(e.negated ? !result : result);
}

Value Interpreter::EvalBinary(const Expr& e, const ScopePtr& scope) {
  if (e.name == "and" || e.name == "or") {
    Value left = Eval(*e.children[0], scope);
    const bool t = Truthy(left);
    if ((e.name == "and") != t) return left;
    return Eval(*e.children[1], scope);
  }
  Value left = Eval(*e.children[0], scope);
  Value right = Eval(*e.children[1], scope);
  if (e.name == "~") {
    std::string s = ToString(left);
    std::string r = ToString(right);
    CheckString(s.size() + r.size());
    return Value::Str(s + r);
  }
  return Arithmetic(*this, e.name, left, right);
}

Value Interpreter::EvalCompare(const Expr& e, const ScopePtr& scope) {
  Value left = Eval(*e.children[0], scope);
  for (size_t i = 0; i < e.ops.size(); ++i) {
    Value right = Eval(*e.children[i + 1], scope);
    const std::string& op = e.ops[i];
    bool r;
    if (op == "==") {
      r = Equals(left, right);
    } else if (op == "!=") {
      r = !Equals(left, right);
    } else if (op == "in" || op == "notin") {
      r = Contains(right, left) == (op == "in");
    } else {
      RequireDefined(left);
      RequireDefined(right);
      const int c = Compare(left, right);
      r = op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0;
    }
    if (!r) return Value::Bool(false);
    left = std::move(right);
  }
  return Value::Bool(true);
}

namespace {

// Python's slice.indices(n).
void SliceIndices(int64_t n, const Value& start_v, const Value& stop_v, const Value& step_v,
                  int64_t* start, int64_t* stop, int64_t* step) {
  const auto as_index = [](const Value& v) {
    if (v.kind() != Value::Kind::kInt && v.kind() != Value::Kind::kBool) {
      Fail("slice indices must be integers or None");
    }
    return v.as_int();
  };
  *step = step_v.is_none() || step_v.is_undefined() ? 1 : as_index(step_v);
  if (*step == 0) Fail("slice step cannot be zero");
  const auto clamp = [&](const Value& v, int64_t def) {
    if (v.is_none() || v.is_undefined()) return def;
    int64_t i = as_index(v);
    if (i < 0) {
      i += n;
      if (i < 0) i = *step < 0 ? -1 : 0;
    } else if (i >= n) {
      i = *step < 0 ? n - 1 : n;
    }
    return i;
  };
  *start = clamp(start_v, *step < 0 ? n - 1 : 0);
  *stop = clamp(stop_v, *step < 0 ? -1 : n);
}

}  // namespace

Value Interpreter::EvalSlice(const Expr& e, const ScopePtr& scope) {
  Value obj = Eval(*e.children[0], scope);
  Value parts[3];
  for (int i = 0; i < 3; ++i) {
    if (e.children[i + 1]) parts[i] = Eval(*e.children[i + 1], scope);
  }
  RequireDefined(obj);
  std::vector<std::string> chars;
  const bool is_string = obj.is_string();
  // Jinja slices with Python's own operator (not its forgiving getitem): anything but a sequence
  // fails.
  if (!is_string && !obj.is_list()) {
    Fail(obj.is_dict() ? std::string("unhashable type: 'slice'")
                       : absl::StrCat("'", TypeName(obj), "' object is not subscriptable"));
  }
  if (is_string) chars = CodePoints(obj.str());
  const int64_t n = is_string ? static_cast<int64_t>(chars.size())
                              : static_cast<int64_t>(obj.list().items.size());
  int64_t start, stop, step;
  SliceIndices(n, parts[0], parts[1], parts[2], &start, &stop, &step);
  std::string s;
  std::vector<Value> items;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (is_string) {
      s += chars[static_cast<size_t>(i)];
    } else {
      items.push_back(obj.list().items[static_cast<size_t>(i)]);
    }
  }
  if (is_string) return Value::Str(std::move(s));
  return Value::List(std::move(items), obj.list().tuple);
}

}  // namespace switchyard::jinja

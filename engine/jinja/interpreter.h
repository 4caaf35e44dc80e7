// Evaluates a parsed template: scopes as Jinja's (a for loop's body is a fresh scope each
// iteration; if and set share the enclosing one; macros see the template's top level live),
// undefined values as Jinja's default Undefined (printing empty, failing on use), and every
// resource a hostile template could exhaust bounded: evaluation steps, call depth, output and
// value sizes.
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "engine/jinja/ast.h"
#include "engine/jinja/value.h"

namespace switchyard::jinja {

struct RenderLimits {
  int64_t max_steps = 5'000'000;         // expression evaluations and loop iterations
  int max_call_depth = 64;               // nested macro calls
  size_t max_output_bytes = 32u << 20;   // the rendered text
  size_t max_value_bytes = 32u << 20;    // one string built by the template
  size_t max_sequence_items = 1u << 22;  // one list built by the template (range(), * ...)
};

struct Scope {
  absl::flat_hash_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;
  const Value* Find(const std::string& name) const;
};
using ScopePtr = std::shared_ptr<Scope>;

class Interpreter {
 public:
  Interpreter(const RenderLimits& limits, std::time_t now) : limits_(limits), now_(now) {}

  std::string Render(const Body& body, ScopePtr globals);

  Value Eval(const Expr& e, const ScopePtr& scope);
  Value Call(const Value& fn, CallArgs& args);
  // obj.name and obj[key], as Jinja's sandboxed getattr / getitem.
  Value GetAttr(const Value& obj, const std::string& name);
  Value GetItem(const Value& obj, const Value& key);
  // Fails when an operation would build a string or list over the limits.
  void CheckString(size_t bytes) const;
  void CheckItems(size_t items) const;
  void Step();
  std::time_t now() const { return now_; }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  Flow Exec(const Body& body, const ScopePtr& scope, std::string* out);
  Flow ExecNode(const Node& node, const ScopePtr& scope, std::string* out);
  Flow ExecFor(const Node& node, const ScopePtr& scope, std::string* out);
  void ExecSet(const Node& node, const ScopePtr& scope);
  void ExecMacro(const Node& node, const ScopePtr& scope);
  std::string RenderToString(const Body& body, const ScopePtr& scope);
  Value ApplyPlaceholderFilters(const Expr& chain, std::string text, const ScopePtr& scope);
  Value CallMacro(const Node& macro, const ScopePtr& defining, CallArgs& args, Value caller);
  void Append(std::string* out, absl::string_view text) const;

  Value EvalCall(const Expr& e, const ScopePtr& scope);
  Value EvalFilter(const Expr& e, const ScopePtr& scope);
  Value EvalTest(const Expr& e, const ScopePtr& scope);
  Value EvalBinary(const Expr& e, const ScopePtr& scope);
  Value EvalCompare(const Expr& e, const ScopePtr& scope);
  Value EvalSlice(const Expr& e, const ScopePtr& scope);
  CallArgs EvalArgs(const Expr& e, size_t first, const ScopePtr& scope);

  RenderLimits limits_;
  std::time_t now_;
  int64_t steps_ = 0;
  int call_depth_ = 0;
};

// Python's a + b, a - b ... for the operators Jinja exposes.
Value Arithmetic(Interpreter& in, const std::string& op, const Value& a, const Value& b);
// Python's `item in container`.
bool Contains(const Value& container, const Value& item);
// Fails as Jinja does when an undefined value is used.
void RequireDefined(const Value& v);
// The items `for x in v` visits: list items, dict keys, string characters; nothing for undefined.
std::vector<Value> Iterate(const Value& v);

}  // namespace switchyard::jinja

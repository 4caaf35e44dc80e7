// The syntax tree of a parsed template: expressions and statements, each with its source line.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/jinja/value.h"

namespace switchyard::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,   // literal
    kName,      // name
    kList,      // [children...]
    kTuple,     // (children...)
    kDict,      // {keys[i]: children[i]}
    kAttr,      // children[0].name
    kItem,      // children[0][children[1]]
    kSlice,     // children[0][children[1]:children[2]:children[3]] (null parts absent)
    kCall,      // children[0](args, kwargs)
    kFilter,    // children[0] | name(args, kwargs)
    kTest,      // children[0] is [not] name(args)
    kUnary,     // name in {"-", "+", "not"} applied to children[0]
    kBinary,    // children[0] name children[1]: + - * / // % ** ~ and or
    kCompare,   // children[0] ops[0] children[1] ops[1] children[2] ...
    kCondition  // children[1] if children[0] else children[2] (children[2] may be null)
  };
  Kind kind;
  int line = 0;
  Value literal;
  std::string name;
  std::vector<ExprPtr> children;
  std::vector<ExprPtr> keys;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
  bool negated = false;
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum class Kind {
    kText,         // text
    kOutput,       // {{ expr }}
    kIf,           // conditions[i] -> bodies[i]; else_body
    kFor,          // for targets in expr [if condition] [recursive]: bodies[0]; else_body
    kSet,          // set targets (or ns.attr: targets {ns, attr} with attribute) = expr
    kSetBlock,     // set targets[0] [| filters on a placeholder]: bodies[0]
    kMacro,        // macro name(params = defaults): bodies[0]
    kCallBlock,    // call[(params)] expr: bodies[0] as caller()
    kFilterBlock,  // filter chain applied to bodies[0]'s output
    kBreak,
    kContinue,
    kScope  // bodies[0] in the current scope (e.g. {% generation %})
  };
  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr condition;
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  Body else_body;
  std::vector<std::string> targets;
  bool attribute_target = false;
  bool recursive = false;
  bool uses_loop = true;  // for: whether anything inside may read `loop` (else it is not built)
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro / call block parameters
};

}  // namespace switchyard::jinja

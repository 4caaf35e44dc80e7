#include "engine/jinja/parser.h"

#include <cstdlib>
#include <initializer_list>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/jinja/builtins.h"
#include "engine/jinja/lexer.h"

namespace switchyard::jinja {
namespace {

// Nesting deeper than this in one template is refused: the parser and the interpreter recurse
// over it.
constexpr int kMaxDepth = 200;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  Body Template() {
    Body body = Statements({});
    if (Peek().type != Token::Type::kEof) {
      Error(absl::StrCat("unexpected '", Peek().value, "'"));
    }
    return body;
  }

 private:
  // ---- token helpers ----
  const Token& Peek(size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  const Token& Next() {
    const Token& t = Peek();
    if (pos_ < tokens_.size() - 1) ++pos_;
    return t;
  }
  bool IsOp(absl::string_view op, size_t ahead = 0) const {
    return Peek(ahead).type == Token::Type::kOp && Peek(ahead).value == op;
  }
  bool IsName(absl::string_view name, size_t ahead = 0) const {
    return Peek(ahead).type == Token::Type::kName && Peek(ahead).value == name;
  }
  bool AcceptOp(absl::string_view op) {
    if (!IsOp(op)) return false;
    Next();
    return true;
  }
  bool AcceptName(absl::string_view name) {
    if (!IsName(name)) return false;
    Next();
    return true;
  }
  [[noreturn]] void Error(const std::string& message) const {
    throw jinja::Error(Error::Kind::kSyntax, absl::StrCat(message, " (line ", Peek().line, ")"));
  }
  void ExpectOp(absl::string_view op) {
    if (!AcceptOp(op)) Error(absl::StrCat("expected '", op, "', got '", Describe(Peek()), "'"));
  }
  std::string ExpectName() {
    if (Peek().type != Token::Type::kName) {
      Error(absl::StrCat("expected a name, got '", Describe(Peek()), "'"));
    }
    return Next().value;
  }
  void ExpectBlockEnd() {
    if (Peek().type != Token::Type::kBlockEnd) {
      Error(absl::StrCat("expected the end of the tag, got '", Describe(Peek()), "'"));
    }
    Next();
  }
  static std::string Describe(const Token& t) {
    switch (t.type) {
      case Token::Type::kEof:
        return "end of template";
      case Token::Type::kBlockEnd:
        return "%}";
      case Token::Type::kVarEnd:
        return "}}";
      case Token::Type::kText:
        return "text";
      default:
        return t.value;
    }
  }

  struct DepthGuard {
    explicit DepthGuard(Parser* p) : parser(p) {
      if (++parser->depth_ > kMaxDepth) parser->Error("template nested too deeply");
    }
    ~DepthGuard() { --parser->depth_; }
    Parser* parser;
  };

  // ---- statements ----

  // Parses until a block tag whose keyword is one of `ends` (left unconsumed, at its name).
  Body Statements(std::initializer_list<absl::string_view> ends) {
    DepthGuard guard(this);
    Body body;
    while (true) {
      const Token& t = Peek();
      if (t.type == Token::Type::kEof) {
        if (ends.size() > 0) {
          Error(
              absl::StrCat("unexpected end of template; expected '{% ", *(ends.end() - 1), " %}'"));
        }
        return body;
      }
      if (t.type == Token::Type::kText) {
        auto n = MakeNode(Node::Kind::kText);
        n->text = Next().value;
        body.push_back(std::move(n));
      } else if (t.type == Token::Type::kVarBegin) {
        Next();
        auto n = MakeNode(Node::Kind::kOutput);
        n->expr = Expression();
        if (Peek().type != Token::Type::kVarEnd) {
          Error(absl::StrCat("expected '}}', got '", Describe(Peek()), "'"));
        }
        Next();
        body.push_back(std::move(n));
      } else if (t.type == Token::Type::kBlockBegin) {
        for (absl::string_view end : ends) {
          if (IsName(end, 1)) {
            Next();
            return body;
          }
        }
        Next();
        body.push_back(Statement());
      } else {
        Error(absl::StrCat("unexpected '", Describe(t), "'"));
      }
    }
  }

  NodePtr MakeNode(Node::Kind kind) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->line = Peek().line;
    return n;
  }

  void EndTag(absl::string_view keyword) {
    if (!AcceptName(keyword)) Error(absl::StrCat("expected '", keyword, "'"));
    ExpectBlockEnd();
  }

  NodePtr Statement() {
    const std::string keyword = ExpectName();
    if (keyword == "if") return If();
    if (keyword == "for") return For();
    if (keyword == "set") return Set();
    if (keyword == "macro") return Macro();
    if (keyword == "call") return CallBlock();
    if (keyword == "filter") return FilterBlock();
    if (keyword == "generation") {
      ExpectBlockEnd();
      auto n = MakeNode(Node::Kind::kScope);
      n->bodies.push_back(Statements({"endgeneration"}));
      EndTag("endgeneration");
      return n;
    }
    if (keyword == "break" || keyword == "continue") {
      if (loop_depth_ == 0) Error(absl::StrCat("'", keyword, "' outside a loop"));
      auto n = MakeNode(keyword == "break" ? Node::Kind::kBreak : Node::Kind::kContinue);
      ExpectBlockEnd();
      return n;
    }
    Error(absl::StrCat("unknown tag '", keyword, "'"));
  }

  NodePtr If() {
    auto n = MakeNode(Node::Kind::kIf);
    n->conditions.push_back(Expression());
    ExpectBlockEnd();
    while (true) {
      n->bodies.push_back(Statements({"elif", "else", "endif"}));
      if (AcceptName("elif")) {
        n->conditions.push_back(Expression());
        ExpectBlockEnd();
        continue;
      }
      if (AcceptName("else")) {
        ExpectBlockEnd();
        n->else_body = Statements({"endif"});
      }
      EndTag("endif");
      return n;
    }
  }

  std::vector<std::string> Targets() {
    std::vector<std::string> targets;
    const bool paren = AcceptOp("(");
    do {
      if (paren && IsOp(")")) break;
      targets.push_back(ExpectName());
    } while (AcceptOp(","));
    if (paren) ExpectOp(")");
    return targets;
  }

  NodePtr For() {
    auto n = MakeNode(Node::Kind::kFor);
    n->targets = Targets();
    if (!AcceptName("in")) Error("expected 'in' in a for loop");
    n->expr = Expression(/*allow_condition=*/false);
    if (AcceptName("if")) n->condition = Expression();
    n->recursive = AcceptName("recursive");
    ExpectBlockEnd();
    ++loop_depth_;
    n->bodies.push_back(Statements({"else", "endfor"}));
    --loop_depth_;
    if (AcceptName("else")) {
      ExpectBlockEnd();
      n->else_body = Statements({"endfor"});
    }
    EndTag("endfor");
    n->uses_loop = MentionsName(n->bodies[0], "loop") || MentionsName(n->else_body, "loop") ||
                   (n->condition && MentionsName(*n->condition, "loop"));
    return n;
  }

  // Whether `name` is read anywhere in the tree (conservatively: any Name node with it).
  static bool MentionsName(const Expr& e, absl::string_view name) {
    if (e.kind == Expr::Kind::kName && e.name == name) return true;
    for (const ExprPtr& c : e.children) {
      if (c && MentionsName(*c, name)) return true;
    }
    for (const ExprPtr& k : e.keys) {
      if (k && MentionsName(*k, name)) return true;
    }
    for (const auto& [unused, v] : e.kwargs) {
      if (v && MentionsName(*v, name)) return true;
    }
    return false;
  }
  static bool MentionsName(const Body& body, absl::string_view name) {
    for (const NodePtr& n : body) {
      for (const ExprPtr* e : {&n->expr, &n->condition}) {
        if (*e && MentionsName(**e, name)) return true;
      }
      for (const ExprPtr& c : n->conditions) {
        if (MentionsName(*c, name)) return true;
      }
      for (const auto& [unused, v] : n->params) {
        if (v && MentionsName(*v, name)) return true;
      }
      for (const Body& b : n->bodies) {
        if (MentionsName(b, name)) return true;
      }
      if (MentionsName(n->else_body, name)) return true;
    }
    return false;
  }

  NodePtr Set() {
    auto n = MakeNode(Node::Kind::kSet);
    if (Peek().type == Token::Type::kName && IsOp(".", 1)) {
      n->targets.push_back(Next().value);
      Next();
      n->targets.push_back(ExpectName());
      n->attribute_target = true;
    } else {
      n->targets = Targets();
    }
    if (AcceptOp("=")) {
      n->expr = TupleOrExpression();
      ExpectBlockEnd();
      return n;
    }
    if (n->attribute_target || n->targets.size() != 1) Error("a block set takes one name");
    n->kind = Node::Kind::kSetBlock;
    if (IsOp("|")) n->expr = FilterChain(BlockPlaceholder());
    ExpectBlockEnd();
    n->bodies.push_back(Statements({"endset"}));
    EndTag("endset");
    return n;
  }

  void Parameters(Node* n) {
    ExpectOp("(");
    while (!IsOp(")")) {
      std::string name = ExpectName();
      ExprPtr def;
      if (AcceptOp("=")) def = Expression();
      n->params.emplace_back(std::move(name), std::move(def));
      if (!AcceptOp(",")) break;
    }
    ExpectOp(")");
  }

  NodePtr Macro() {
    auto n = MakeNode(Node::Kind::kMacro);
    n->targets.push_back(ExpectName());
    Parameters(n.get());
    ExpectBlockEnd();
    const int saved = loop_depth_;
    loop_depth_ = 0;
    n->bodies.push_back(Statements({"endmacro"}));
    loop_depth_ = saved;
    EndTag("endmacro");
    return n;
  }

  NodePtr CallBlock() {
    auto n = MakeNode(Node::Kind::kCallBlock);
    if (IsOp("(")) Parameters(n.get());
    n->expr = Expression();
    if (n->expr->kind != Expr::Kind::kCall) Error("expected a call after 'call'");
    ExpectBlockEnd();
    n->bodies.push_back(Statements({"endcall"}));
    EndTag("endcall");
    return n;
  }

  NodePtr FilterBlock() {
    auto n = MakeNode(Node::Kind::kFilterBlock);
    n->expr = FilterChain(BlockPlaceholder(), /*first_bar=*/false);
    ExpectBlockEnd();
    n->bodies.push_back(Statements({"endfilter"}));
    EndTag("endfilter");
    return n;
  }

  ExprPtr BlockPlaceholder() {
    auto e = MakeExpr(Expr::Kind::kName);
    e->name = std::string(kBlockPlaceholder);
    return e;
  }

  // ---- expressions ----

  ExprPtr MakeExpr(Expr::Kind kind) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = Peek().line;
    return e;
  }

  ExprPtr TupleOrExpression() {
    ExprPtr first = Expression();
    if (!IsOp(",")) return first;
    auto t = MakeExpr(Expr::Kind::kTuple);
    t->children.push_back(std::move(first));
    while (AcceptOp(",")) {
      if (Peek().type == Token::Type::kBlockEnd || Peek().type == Token::Type::kVarEnd) break;
      t->children.push_back(Expression());
    }
    return t;
  }

  ExprPtr Expression(bool allow_condition = true) {
    DepthGuard guard(this);
    ExprPtr e = Or();
    if (allow_condition && AcceptName("if")) {
      auto c = MakeExpr(Expr::Kind::kCondition);
      ExprPtr condition = Or();
      ExprPtr otherwise;
      if (AcceptName("else")) otherwise = Expression();
      c->children.push_back(std::move(condition));
      c->children.push_back(std::move(e));
      c->children.push_back(std::move(otherwise));
      return c;
    }
    return e;
  }

  ExprPtr Binary(ExprPtr left, const std::string& op, ExprPtr right) {
    auto b = MakeExpr(Expr::Kind::kBinary);
    b->name = op;
    b->children.push_back(std::move(left));
    b->children.push_back(std::move(right));
    return b;
  }

  ExprPtr Or() {
    ExprPtr e = And();
    while (AcceptName("or")) e = Binary(std::move(e), "or", And());
    return e;
  }

  ExprPtr And() {
    ExprPtr e = Not();
    while (AcceptName("and")) e = Binary(std::move(e), "and", Not());
    return e;
  }

  ExprPtr Not() {
    if (IsName("not")) {
      DepthGuard guard(this);
      Next();
      auto u = MakeExpr(Expr::Kind::kUnary);
      u->name = "not";
      u->children.push_back(Not());
      return u;
    }
    return Compare();
  }

  ExprPtr Compare() {
    ExprPtr first = Math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (Peek().type == Token::Type::kOp &&
          (IsOp("==") || IsOp("!=") || IsOp("<") || IsOp(">") || IsOp("<=") || IsOp(">="))) {
        op = Next().value;
      } else if (AcceptName("in")) {
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        Next();
        Next();
        op = "notin";
      } else {
        break;
      }
      if (!cmp) {
        cmp = MakeExpr(Expr::Kind::kCompare);
        cmp->children.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->children.push_back(Math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  ExprPtr Math1() {
    ExprPtr e = Concat();
    while (IsOp("+") || IsOp("-")) {
      const std::string op = Next().value;
      e = Binary(std::move(e), op, Concat());
    }
    return e;
  }

  ExprPtr Concat() {
    ExprPtr e = Math2();
    while (AcceptOp("~")) e = Binary(std::move(e), "~", Math2());
    return e;
  }

  ExprPtr Math2() {
    ExprPtr e = Pow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const std::string op = Next().value;
      e = Binary(std::move(e), op, Pow());
    }
    return e;
  }

  ExprPtr Pow() {
    ExprPtr e = Unary();
    while (AcceptOp("**")) e = Binary(std::move(e), "**", Unary());
    return e;
  }

  ExprPtr Unary(bool with_filter = true) {
    DepthGuard guard(this);
    ExprPtr e;
    if (IsOp("-") || IsOp("+")) {
      auto u = MakeExpr(Expr::Kind::kUnary);
      u->name = Next().value;
      u->children.push_back(Unary(false));
      e = std::move(u);
    } else {
      e = Postfix(Primary());
    }
    return with_filter ? FilterTests(std::move(e)) : std::move(e);
  }

  ExprPtr Primary() {
    const Token& t = Peek();
    auto lit = [&](Value v) {
      auto e = MakeExpr(Expr::Kind::kLiteral);
      e->literal = std::move(v);
      Next();
      return e;
    };
    switch (t.type) {
      case Token::Type::kName: {
        const std::string& n = t.value;
        if (n == "true" || n == "True") return lit(Value::Bool(true));
        if (n == "false" || n == "False") return lit(Value::Bool(false));
        if (n == "none" || n == "None") return lit(Value::None());
        auto e = MakeExpr(Expr::Kind::kName);
        e->name = Next().value;
        return e;
      }
      case Token::Type::kString: {
        std::string s = t.value;
        Next();
        while (Peek().type == Token::Type::kString) s += Next().value;  // adjacent literals join
        auto e = MakeExpr(Expr::Kind::kLiteral);
        e->literal = Value::Str(std::move(s));
        return e;
      }
      case Token::Type::kInt: {
        int64_t v = 0;
        if (!absl::SimpleAtoi(t.value, &v)) {
          return lit(Value::Float(std::strtod(t.value.c_str(), nullptr)));
        }
        return lit(Value::Int(v));
      }
      case Token::Type::kFloat:
        return lit(Value::Float(std::strtod(t.value.c_str(), nullptr)));
      case Token::Type::kOp:
        if (t.value == "(") return Parenthesized();
        if (t.value == "[") return ListLiteral();
        if (t.value == "{") return DictLiteral();
        break;
      default:
        break;
    }
    Error(absl::StrCat("unexpected '", Describe(t), "'"));
  }

  ExprPtr Parenthesized() {
    DepthGuard guard(this);
    Next();
    if (AcceptOp(")")) return MakeExpr(Expr::Kind::kTuple);
    ExprPtr first = Expression();
    if (AcceptOp(")")) return first;
    auto t = MakeExpr(Expr::Kind::kTuple);
    t->children.push_back(std::move(first));
    while (AcceptOp(",")) {
      if (IsOp(")")) break;
      t->children.push_back(Expression());
    }
    ExpectOp(")");
    return t;
  }

  ExprPtr ListLiteral() {
    DepthGuard guard(this);
    auto l = MakeExpr(Expr::Kind::kList);
    Next();
    while (!IsOp("]")) {
      l->children.push_back(Expression());
      if (!AcceptOp(",")) break;
    }
    ExpectOp("]");
    return l;
  }

  ExprPtr DictLiteral() {
    DepthGuard guard(this);
    auto d = MakeExpr(Expr::Kind::kDict);
    Next();
    while (!IsOp("}")) {
      d->keys.push_back(Expression());
      ExpectOp(":");
      d->children.push_back(Expression());
      if (!AcceptOp(",")) break;
    }
    ExpectOp("}");
    return d;
  }

  ExprPtr Postfix(ExprPtr e) {
    while (true) {
      if (IsOp(".")) {
        Next();
        auto a = MakeExpr(Expr::Kind::kAttr);
        if (Peek().type == Token::Type::kInt) {
          // foo.0 is foo[0]
          a->kind = Expr::Kind::kItem;
          a->children.push_back(std::move(e));
          auto idx = MakeExpr(Expr::Kind::kLiteral);
          int64_t v = 0;
          if (!absl::SimpleAtoi(Next().value, &v)) Error("index out of range");
          idx->literal = Value::Int(v);
          a->children.push_back(std::move(idx));
        } else {
          a->name = ExpectName();
          a->children.push_back(std::move(e));
        }
        e = std::move(a);
      } else if (IsOp("[")) {
        e = Subscript(std::move(e));
      } else if (IsOp("(")) {
        auto c = MakeExpr(Expr::Kind::kCall);
        c->children.push_back(std::move(e));
        Arguments(c.get());
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  ExprPtr Subscript(ExprPtr target) {
    DepthGuard guard(this);
    Next();
    std::vector<ExprPtr> parts(3);
    bool slice = false;
    for (int i = 0; i < 3; ++i) {
      if (!IsOp(":") && !IsOp("]")) parts[i] = Expression();
      if (i < 2 && AcceptOp(":")) {
        slice = true;
        continue;
      }
      break;
    }
    ExpectOp("]");
    auto s = MakeExpr(slice ? Expr::Kind::kSlice : Expr::Kind::kItem);
    s->children.push_back(std::move(target));
    if (!slice) {
      if (!parts[0]) Error("expected an index");
      s->children.push_back(std::move(parts[0]));
    } else {
      for (auto& p : parts) s->children.push_back(std::move(p));
    }
    return s;
  }

  // (positional..., name=value...) into e->children[1..] and e->kwargs.
  void Arguments(Expr* e) {
    DepthGuard guard(this);
    ExpectOp("(");
    while (!IsOp(")")) {
      if (IsOp("*") || IsOp("**")) {
        // *args / **kwargs spread at call time; kept as keyword entries named by the operator.
        std::string spread = Next().value;
        e->kwargs.emplace_back(std::move(spread), Expression());
      } else if (Peek().type == Token::Type::kName && IsOp("=", 1)) {
        std::string name = Next().value;
        Next();
        e->kwargs.emplace_back(std::move(name), Expression());
      } else {
        if (!e->kwargs.empty() && e->kwargs.back().first != "*") {
          Error("positional argument after a keyword argument");
        }
        e->children.push_back(Expression());
      }
      if (!AcceptOp(",")) break;
    }
    ExpectOp(")");
  }

  ExprPtr FilterChain(ExprPtr e, bool first_bar = true) {
    bool need_bar = first_bar;
    while (!need_bar || AcceptOp("|")) {
      need_bar = true;
      auto f = MakeExpr(Expr::Kind::kFilter);
      f->name = ExpectName();
      while (AcceptOp(".")) absl::StrAppend(&f->name, ".", ExpectName());
      if (!IsKnownFilter(f->name)) Error(absl::StrCat("no filter named '", f->name, "'"));
      f->children.push_back(std::move(e));
      if (IsOp("(")) Arguments(f.get());
      e = std::move(f);
    }
    return e;
  }

  ExprPtr FilterTests(ExprPtr e) {
    while (true) {
      if (IsOp("|")) {
        e = FilterChain(std::move(e));
      } else if (IsName("is")) {
        Next();
        auto t = MakeExpr(Expr::Kind::kTest);
        t->negated = AcceptName("not");
        t->name = ExpectName();
        if (!IsKnownTest(t->name)) Error(absl::StrCat("no test named '", t->name, "'"));
        t->children.push_back(std::move(e));
        if (IsOp("(")) {
          Arguments(t.get());
        } else if (StartsTestArgument()) {
          t->children.push_back(Postfix(Primary()));
        }
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  // Jinja lets a test take one argument without parentheses: `x is divisibleby 3`.
  bool StartsTestArgument() const {
    const Token& t = Peek();
    switch (t.type) {
      case Token::Type::kString:
      case Token::Type::kInt:
      case Token::Type::kFloat:
        return true;
      case Token::Type::kName:
        for (absl::string_view kw : {"else", "or", "and", "is", "in", "if", "not"}) {
          if (t.value == kw) return false;
        }
        return true;
      case Token::Type::kOp:
        return t.value == "(" || t.value == "[" || t.value == "{";
      default:
        return false;
    }
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Body Parse(absl::string_view source) { return Parser(Lex(source)).Template(); }

}  // namespace switchyard::jinja

#include "engine/grammar/json_schema.h"

#include <array>
#include <cmath>
#include <map>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/core/status_macros.h"
#include "engine/grammar/regex.h"

namespace switchyard::grammar {
namespace {

using ordered_json = nlohmann::ordered_json;

constexpr int kMaxDepth = 64;
constexpr size_t kMaxSymbols = size_t{1} << 20;
// Bounds beyond this are clamped inward (the output stays inside the schema's bounds).
constexpr double kMaxBound = 1e15;

const absl::flat_hash_set<std::string>& Supported() {
  static const auto* s = new absl::flat_hash_set<std::string>{
      "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions",
      "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
      "maxItems", "minLength", "maxLength", "pattern", "format", "minimum", "maximum",
      "exclusiveMinimum", "exclusiveMaximum", "additionalItems",
      // Annotations: they describe, they do not constrain.
      "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
      "readOnly", "writeOnly", "$anchor"};
  return *s;
}

bool IsAnnotation(const std::string& key) {
  static const auto* s = new absl::flat_hash_set<std::string>{
      "title",      "description", "default",   "examples", "$schema", "$id",        "$comment",
      "deprecated", "readOnly",    "writeOnly", "$anchor",  "$defs",   "definitions"};
  return s->contains(key);
}

// Regexes (anchored) of the supported formats, written to pass ajv-formats' full checks.
std::optional<std::string> FormatRegex(const std::string& format) {
  static const std::string kDate =
      "[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]"
      "|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))";
  static const std::string kTime =
      "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):"
      "[0-5][0-9])";
  if (format == "date") return kDate;
  if (format == "time") return kTime;
  if (format == "date-time") return kDate + "T" + kTime;
  if (format == "uuid") {
    return "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
  }
  if (format == "ipv4") {
    const std::string octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
    return octet + "\\." + octet + "\\." + octet + "\\." + octet;
  }
  if (format == "email") {
    // Unbounded runs, few alternatives: bounded counts and ambiguity multiply the matcher's
    // contexts (docs/structured-output.md).
    return "[a-z0-9_+]+(?:\\.[a-z0-9_+]+){0,2}@[a-z0-9]+(?:-[a-z0-9]+)?\\.[a-z]{2,6}";
  }
  return std::nullopt;
}

std::string Digits(int64_t v) { return absl::StrCat(v); }

class SchemaCompiler {
 public:
  explicit SchemaCompiler(const ordered_json& root) : root_(root) {}

  absl::StatusOr<Grammar> Compile() {
    SY_ASSIGN_OR_RETURN(Symbol v, Value(root_, "", 0));
    const int r = b_.NewRule("root");
    b_.AddAlternative(r, {v});
    return b_.Build(r);
  }

  absl::StatusOr<Grammar> CompileAnyObject() {
    AnyValue();
    const int r = b_.NewRule("root");
    b_.AddAlternative(r, {Symbol::Rule(any_object_)});
    return b_.Build(r);
  }

 private:
  absl::Status Error(const std::string& path, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("JSON schema at '", path.empty() ? "#" : path, "': ", what));
  }

  Symbol Lit(absl::string_view s) { return b_.Group({GrammarBuilder::Literal(s)}, "literal"); }
  Symbol Ws() {
    if (ws_ < 0) {
      ws_ = b_.NewRule("ws");
      b_.AddAlternative(ws_, GrammarBuilder::Literal(" "));
      b_.AddAlternative(ws_, {});
    }
    return Symbol::Rule(ws_);
  }
  Sequence Sep(char c) { return {Symbol::Char(c), Ws()}; }
  Symbol AnyStringChar() {
    if (string_char_ < 0) {
      string_char_ = b_.NewRule("string char");
      b_.AddAlternative(string_char_, {JsonStringChar(CodePointSet().Complement(), &b_)});
    }
    return Symbol::Rule(string_char_);
  }
  Symbol Digit() { return Symbol::Class(CodePointSet::Of('0', '9')); }

  absl::StatusOr<Symbol> Value(const ordered_json& schema, const std::string& path, int depth) {
    if (depth > kMaxDepth) return Error(path, absl::StrCat("nests deeper than ", kMaxDepth));
    if (b_.size() > kMaxSymbols) return Error(path, "the schema compiles to too large a grammar");
    if (schema.is_boolean()) {
      if (!schema.get<bool>()) return Error(path, "the schema false allows no value");
      return AnyValue();
    }
    if (!schema.is_object()) return Error(path, "a schema must be an object or a boolean");
    for (const auto& [key, value] : schema.items()) {
      if (!Supported().contains(key)) {
        return Error(path,
                     absl::StrCat("keyword '", key, "' is not supported by constrained decoding"));
      }
    }
    if (auto it = schema.find("$ref"); it != schema.end()) return Ref(schema, path, depth);
    if (auto it = schema.find("allOf"); it != schema.end()) {
      SY_ASSIGN_OR_RETURN(ordered_json merged, MergeAllOf(schema, path));
      return Value(merged, path, depth + 1);
    }
    for (const char* key : {"anyOf", "oneOf"}) {
      if (auto it = schema.find(key); it != schema.end()) {
        return Alternatives(schema, key, path + "/" + key, depth);
      }
    }
    if (auto it = schema.find("const"); it != schema.end()) return Lit(it->dump());
    if (auto it = schema.find("enum"); it != schema.end()) {
      if (!it->is_array() || it->empty()) return Error(path, "enum must be a non-empty array");
      std::vector<Sequence> alts;
      for (const ordered_json& v : *it) alts.push_back(GrammarBuilder::Literal(v.dump()));
      return b_.Group(std::move(alts), "enum");
    }
    std::vector<std::string> types;
    if (auto it = schema.find("type"); it != schema.end()) {
      if (it->is_string()) {
        types.push_back(it->get<std::string>());
      } else if (it->is_array() && !it->empty()) {
        for (const auto& t : *it) {
          if (!t.is_string()) return Error(path, "type must be a string or a list of strings");
          types.push_back(t.get<std::string>());
        }
      } else {
        return Error(path, "type must be a string or a list of strings");
      }
    } else {
      const std::string inferred = InferType(schema);
      if (inferred.empty()) return AnyValue();
      types.push_back(inferred);
    }
    std::vector<Sequence> alts;
    for (const std::string& t : types) {
      SY_ASSIGN_OR_RETURN(Symbol s, Typed(schema, t, path, depth));
      alts.push_back({s});
    }
    return b_.Group(std::move(alts), "typed value");
  }

  static std::string InferType(const ordered_json& s) {
    for (const char* k : {"properties", "required", "additionalProperties"}) {
      if (s.contains(k)) return "object";
    }
    for (const char* k : {"items", "prefixItems", "minItems", "maxItems"}) {
      if (s.contains(k)) return "array";
    }
    for (const char* k : {"minLength", "maxLength", "pattern", "format"}) {
      if (s.contains(k)) return "string";
    }
    for (const char* k : {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}) {
      if (s.contains(k)) return "number";
    }
    return "";
  }

  absl::StatusOr<Symbol> Typed(const ordered_json& s, const std::string& t, const std::string& path,
                               int depth) {
    if (t == "string") return String(s, path);
    if (t == "integer") return Integer(s, path);
    if (t == "number") return Number(s, path);
    if (t == "boolean")
      return b_.Group({GrammarBuilder::Literal("true"), GrammarBuilder::Literal("false")},
                      "boolean");
    if (t == "null") return Lit("null");
    if (t == "object") return Object(s, path, depth);
    if (t == "array") return Array(s, path, depth);
    return Error(path, absl::StrCat("unknown type '", t, "'"));
  }

  // $ref: JSON pointers into this document; one rule per target, so recursion works.
  absl::StatusOr<Symbol> Ref(const ordered_json& schema, const std::string& path, int depth) {
    for (const auto& [key, value] : schema.items()) {
      if (key != "$ref" && !IsAnnotation(key)) {
        return Error(path, absl::StrCat("keyword '", key, "' beside $ref is not supported"));
      }
    }
    if (!schema["$ref"].is_string()) return Error(path, "$ref must be a string");
    const std::string ref = schema["$ref"].get<std::string>();
    if (auto it = refs_.find(ref); it != refs_.end()) return Symbol::Rule(it->second);
    SY_ASSIGN_OR_RETURN(const ordered_json* target, Resolve(ref, path));
    const int rule = b_.NewRule(ref);
    refs_.emplace(ref, rule);
    SY_ASSIGN_OR_RETURN(Symbol body, Value(*target, ref.substr(1), depth + 1));
    b_.AddAlternative(rule, {body});
    return Symbol::Rule(rule);
  }

  // A $ref: a JSON pointer into this document ("#", "#/$defs/name", ...).
  absl::StatusOr<const ordered_json*> Resolve(const std::string& ref, const std::string& path) {
    if (ref.empty() || ref[0] != '#') {
      return Error(path, absl::StrCat("$ref '", ref, "' is not inside this schema"));
    }
    const ordered_json* target = &root_;
    for (absl::string_view rest = absl::string_view(ref).substr(1); !rest.empty();) {
      if (rest[0] != '/') return Error(path, absl::StrCat("$ref '", ref, "' is not a pointer"));
      rest.remove_prefix(1);
      const size_t slash = rest.find('/');
      const absl::string_view token = rest.substr(0, slash);
      rest = slash == absl::string_view::npos ? "" : rest.substr(slash);
      std::string key;
      for (size_t i = 0; i < token.size(); ++i) {
        if (token[i] == '~' && i + 1 < token.size() &&
            (token[i + 1] == '0' || token[i + 1] == '1')) {
          key.push_back(token[i + 1] == '0' ? '~' : '/');
          ++i;
        } else {
          key.push_back(token[i]);
        }
      }
      if (target->is_object() && target->contains(key)) {
        target = &(*target)[key];
      } else if (target->is_array() && !key.empty() && key.size() < 9 &&
                 key.find_first_not_of("0123456789") == std::string::npos &&
                 std::stoul(key) < target->size()) {
        target = &(*target)[std::stoul(key)];
      } else {
        return Error(path, absl::StrCat("$ref '", ref, "' points nowhere"));
      }
    }
    return target;
  }

  absl::StatusOr<ordered_json> MergeAllOf(const ordered_json& schema, const std::string& path) {
    if (!schema["allOf"].is_array()) return Error(path, "allOf must be an array");
    ordered_json merged = schema;
    merged.erase("allOf");
    for (ordered_json part : schema["allOf"]) {
      for (int hops = 0; part.is_object() && part.contains("$ref") && part.size() == 1; ++hops) {
        if (hops == kMaxDepth) return Error(path, "allOf member $refs loop");
        const std::string ref = part["$ref"].is_string() ? part["$ref"].get<std::string>() : "";
        SY_ASSIGN_OR_RETURN(const ordered_json* target, Resolve(ref, path));
        part = *target;
      }
      if (!part.is_object()) return Error(path, "allOf members must be objects");
      for (const auto& [key, value] : part.items()) {
        if (key == "properties" && merged.contains("properties") && value.is_object()) {
          for (const auto& [p, s] : value.items()) merged["properties"][p] = s;
        } else if (key == "required" && merged.contains("required") && value.is_array()) {
          for (const auto& r : value) merged["required"].push_back(r);
        } else if (merged.contains(key) && merged[key] != value && !IsAnnotation(key)) {
          return Error(path, absl::StrCat("allOf members disagree on '", key, "'"));
        } else {
          merged[key] = value;
        }
      }
    }
    return merged;
  }

  absl::StatusOr<Symbol> Alternatives(const ordered_json& schema, const char* key,
                                      const std::string& path, int depth) {
    const ordered_json& branches = schema[key];
    if (!branches.is_array() || branches.empty()) {
      return Error(path, absl::StrCat(key, " must be a non-empty array"));
    }
    ordered_json base = schema;
    base.erase(key);
    std::vector<Sequence> alts;
    for (size_t i = 0; i < branches.size(); ++i) {
      ordered_json branch = branches[i];
      // Keywords beside anyOf apply to every branch.
      bool has_base = false;
      for (const auto& [k, v] : base.items()) has_base |= !IsAnnotation(k);
      if (has_base) {
        if (!branch.is_object())
          return Error(path, "branches beside other keywords must be objects");
        ordered_json all = ordered_json::object();
        all["allOf"] = ordered_json::array({base, branch});
        branch = std::move(all);
      }
      SY_ASSIGN_OR_RETURN(Symbol s, Value(branch, absl::StrCat(path, "/", i), depth + 1));
      alts.push_back({s});
    }
    return b_.Group(std::move(alts), key);
  }

  absl::StatusOr<int64_t> Count(const ordered_json& s, const char* key, const std::string& path,
                                int64_t fallback) {
    auto it = s.find(key);
    if (it == s.end()) return fallback;
    if (!it->is_number_integer() &&
        !(it->is_number_float() && std::floor(it->get<double>()) == it->get<double>())) {
      return Error(path, absl::StrCat(key, " must be an integer"));
    }
    const double v = it->get<double>();
    if (v < 0 || v > 100000) return Error(path, absl::StrCat(key, " must be in [0, 100000]"));
    return static_cast<int64_t>(v);
  }

  absl::StatusOr<Symbol> String(const ordered_json& s, const std::string& path) {
    SY_ASSIGN_OR_RETURN(int64_t min, Count(s, "minLength", path, 0));
    SY_ASSIGN_OR_RETURN(int64_t max, Count(s, "maxLength", path, -1));
    if (max >= 0 && max < min) return Error(path, "maxLength is below minLength");
    const bool has_length = s.contains("minLength") || s.contains("maxLength");
    Sequence body;
    if (s.contains("format") || s.contains("pattern")) {
      if (has_length) return Error(path, "minLength/maxLength beside pattern or format");
      if (s.contains("format") && s.contains("pattern"))
        return Error(path, "pattern beside format");
      RegexOptions options;
      options.json_string = true;
      std::string pattern;
      if (s.contains("format")) {
        const std::string format = s["format"].is_string() ? s["format"].get<std::string>() : "";
        std::optional<std::string> re = FormatRegex(format);
        if (!re) {
          return Error(path, absl::StrCat("format '", format, "' is not supported (supported: ",
                                          "date, time, date-time, email, uuid, ipv4)"));
        }
        pattern = *re;
      } else {
        if (!s["pattern"].is_string()) return Error(path, "pattern must be a string");
        pattern = s["pattern"].get<std::string>();
        options.search = true;
      }
      absl::StatusOr<Sequence> re = CompileRegex(pattern, options, &b_);
      if (!re.ok()) return Error(path, re.status().message());
      body = std::move(*re);
    } else {
      body.push_back(b_.Repeat({AnyStringChar()}, min, max));
    }
    Sequence out{Symbol::Char('"')};
    out.insert(out.end(), body.begin(), body.end());
    out.push_back(Symbol::Char('"'));
    return b_.Group({std::move(out)}, "string");
  }

  // [lo, hi] in the integers, from the schema's bounds (inclusive or exclusive).
  absl::Status IntegerBounds(const ordered_json& s, const std::string& path,
                             std::optional<double>* lo, std::optional<double>* hi,
                             bool* lo_exclusive, bool* hi_exclusive) {
    *lo_exclusive = *hi_exclusive = false;
    const auto number = [&](const char* key, std::optional<double>* out) -> absl::Status {
      auto it = s.find(key);
      if (it == s.end()) return absl::OkStatus();
      if (it->is_boolean()) return absl::OkStatus();  // draft 4: a flag on minimum/maximum
      if (!it->is_number()) return Error(path, absl::StrCat(key, " must be a number"));
      *out = it->get<double>();
      return absl::OkStatus();
    };
    std::optional<double> min, max, xmin, xmax;
    SY_RETURN_IF_ERROR(number("minimum", &min));
    SY_RETURN_IF_ERROR(number("maximum", &max));
    SY_RETURN_IF_ERROR(number("exclusiveMinimum", &xmin));
    SY_RETURN_IF_ERROR(number("exclusiveMaximum", &xmax));
    if (s.value("exclusiveMinimum", ordered_json()).is_boolean() &&
        s["exclusiveMinimum"].get<bool>() && min) {
      xmin = min, min.reset();
    }
    if (s.value("exclusiveMaximum", ordered_json()).is_boolean() &&
        s["exclusiveMaximum"].get<bool>() && max) {
      xmax = max, max.reset();
    }
    *lo = min, *hi = max;
    if (xmin && (!min || *xmin >= *min)) *lo = xmin, *lo_exclusive = true;
    if (xmax && (!max || *xmax <= *max)) *hi = xmax, *hi_exclusive = true;
    return absl::OkStatus();
  }

  static std::optional<int64_t> Clamp(std::optional<double> v) {
    if (!v) return std::nullopt;
    return static_cast<int64_t>(std::clamp(*v, -kMaxBound, kMaxBound));
  }

  // Integers in [lo, hi] (either side open).
  absl::StatusOr<Symbol> IntegerRange(std::optional<int64_t> lo, std::optional<int64_t> hi,
                                      const std::string& path) {
    if (lo && hi && *lo > *hi) return Error(path, "no integer lies within the bounds");
    std::vector<Sequence> alts;
    if (!hi || *hi >= 0) {
      alts.push_back({NonNegative(std::max<int64_t>(lo.value_or(0), 0), hi)});
    }
    if (!lo || *lo < 0) {
      const int64_t mag_lo = hi && *hi < 0 ? -*hi : 1;
      std::optional<int64_t> mag_hi;
      if (lo) mag_hi = -*lo;
      alts.push_back({Symbol::Char('-'), NonNegative(mag_lo, mag_hi)});
    }
    return b_.Group(std::move(alts), "integer");
  }

  // Decimal numerals without leading zeros in [lo, hi] (hi open when absent), lo >= 0.
  Symbol NonNegative(int64_t lo, std::optional<int64_t> hi) {
    std::vector<Sequence> alts;
    const size_t lo_len = Digits(lo).size();
    const size_t hi_len = hi ? Digits(*hi).size() : lo_len;
    for (size_t len = lo_len; len <= hi_len; ++len) {
      const int64_t first = len == 1 ? 0 : Pow10(len - 1);
      const int64_t last = Pow10(len) - 1;
      const int64_t a = std::max(lo, first), b = hi ? std::min(*hi, last) : last;
      if (a > b) continue;
      for (Sequence& s : SameLength(Digits(a), Digits(b))) alts.push_back(std::move(s));
    }
    if (!hi) {  // every longer numeral
      Sequence longer{Symbol::Class(CodePointSet::Of('1', '9'))};
      longer.push_back(b_.Repeat({Digit()}, static_cast<int64_t>(lo_len), -1));
      alts.push_back(std::move(longer));
    }
    return b_.Group(std::move(alts), "digits");
  }

  static int64_t Pow10(size_t n) {
    int64_t v = 1;
    for (size_t i = 0; i < n; ++i) v *= 10;
    return v;
  }

  // Numerals of one length between lo and hi (digit strings of equal length).
  std::vector<Sequence> SameLength(const std::string& lo, const std::string& hi) {
    const auto cls = [](char a, char b) { return Symbol::Class(CodePointSet::Of(a, b)); };
    if (lo.size() == 1) return {{cls(lo[0], hi[0])}};
    const std::string lo_rest = lo.substr(1), hi_rest = hi.substr(1);
    if (lo[0] == hi[0]) {
      return {{Symbol::Char(lo[0]), b_.Group(SameLength(lo_rest, hi_rest), "digits")}};
    }
    std::vector<Sequence> alts;
    const bool lo_zeros = lo_rest.find_first_not_of('0') == std::string::npos;
    const bool hi_nines = hi_rest.find_first_not_of('9') == std::string::npos;
    const char mid_lo = lo_zeros ? lo[0] : lo[0] + 1;
    const char mid_hi = hi_nines ? hi[0] : hi[0] - 1;
    if (!lo_zeros) {
      alts.push_back({Symbol::Char(lo[0]),
                      b_.Group(SameLength(lo_rest, std::string(lo_rest.size(), '9')), "digits")});
    }
    if (mid_lo <= mid_hi) {
      Sequence mid{cls(mid_lo, mid_hi)};
      for (size_t i = 0; i < lo_rest.size(); ++i) mid.push_back(Digit());
      alts.push_back(std::move(mid));
    }
    if (!hi_nines) {
      alts.push_back({Symbol::Char(hi[0]),
                      b_.Group(SameLength(std::string(hi_rest.size(), '0'), hi_rest), "digits")});
    }
    return alts;
  }

  absl::StatusOr<Symbol> Integer(const ordered_json& s, const std::string& path) {
    std::optional<double> lo, hi;
    bool lx, hx;
    SY_RETURN_IF_ERROR(IntegerBounds(s, path, &lo, &hi, &lx, &hx));
    std::optional<double> ilo, ihi;
    if (lo) ilo = lx ? std::floor(*lo) + 1 : std::ceil(*lo);
    if (hi) ihi = hx ? std::ceil(*hi) - 1 : std::floor(*hi);
    return IntegerRange(Clamp(ilo), Clamp(ihi), path);
  }

  absl::StatusOr<Symbol> Number(const ordered_json& s, const std::string& path) {
    std::optional<double> lo, hi;
    bool lx, hx;
    SY_RETURN_IF_ERROR(IntegerBounds(s, path, &lo, &hi, &lx, &hx));
    if (!lo && !hi) return AnyNumber();
    if (lo && hi && (*lo > *hi || (*lo == *hi && (lx || hx)))) {
      return Error(path, "no number lies within the bounds");
    }
    std::vector<Sequence> alts;
    // Whole numbers inside the bounds.
    std::optional<double> ilo, ihi;
    if (lo) ilo = lx ? std::floor(*lo) + 1 : std::ceil(*lo);
    if (hi) ihi = hx ? std::ceil(*hi) - 1 : std::floor(*hi);
    if (!ilo || !ihi || *ilo <= *ihi) {
      SY_ASSIGN_OR_RETURN(Symbol whole, IntegerRange(Clamp(ilo), Clamp(ihi), path));
      alts.push_back({whole});
    }
    // k.f (f not all zeros) lies strictly between k and k + 1; -k.f between -(k + 1) and -k.
    Sequence fraction{Symbol::Char('.'), b_.Star({Digit()}),
                      Symbol::Class(CodePointSet::Of('1', '9'))};
    const Symbol frac = b_.Group({fraction}, "fraction");
    std::optional<double> pos_lo = std::max(0.0, lo ? std::ceil(*lo) : 0.0), pos_hi;
    if (hi) pos_hi = std::floor(*hi) - 1;
    if (!pos_hi || *pos_lo <= *pos_hi) {
      alts.push_back({NonNegative(*Clamp(pos_lo), Clamp(pos_hi)), frac});
    }
    std::optional<double> neg_lo = std::max(0.0, hi ? std::ceil(-*hi) : 0.0), neg_hi;
    if (lo) neg_hi = std::floor(-*lo) - 1;
    if (!neg_hi || *neg_lo <= *neg_hi) {
      alts.push_back({Symbol::Char('-'), NonNegative(*Clamp(neg_lo), Clamp(neg_hi)), frac});
    }
    if (alts.empty()) return Error(path, "no number the grammar can write lies within the bounds");
    return b_.Group(std::move(alts), "number");
  }

  Symbol AnyNumber() {
    if (number_ < 0) {
      number_ = b_.NewRule("number");
      Sequence seq{b_.Optional({Symbol::Char('-')}),
                   b_.Group({{Symbol::Char('0')},
                             {Symbol::Class(CodePointSet::Of('1', '9')), b_.Star({Digit()})}},
                            "int"),
                   b_.Optional({Symbol::Char('.'), b_.Plus({Digit()})}),
                   b_.Optional({Symbol::Class([] {
                                  CodePointSet e = CodePointSet::Of('e', 'e');
                                  e.Add('E', 'E');
                                  return e;
                                }()),
                                b_.Optional({Symbol::Class([] {
                                  CodePointSet e = CodePointSet::Of('+', '+');
                                  e.Add('-', '-');
                                  return e;
                                }())}),
                                // Two exponent digits: 1e999 overflows a double, and parsers
                                // such as nlohmann's refuse it.
                                b_.Repeat({Digit()}, 1, 2)})};
      b_.AddAlternative(number_, std::move(seq));
    }
    return Symbol::Rule(number_);
  }

  Symbol AnyString() {
    return b_.Group({{Symbol::Char('"'), b_.Star({AnyStringChar()}), Symbol::Char('"')}}, "string");
  }

  // Any JSON value; also defines any_object_.
  Symbol AnyValue() {
    if (any_value_ >= 0) return Symbol::Rule(any_value_);
    any_value_ = b_.NewRule("value");
    any_object_ = b_.NewRule("object");
    const int array = b_.NewRule("array");
    const Symbol value = Symbol::Rule(any_value_);
    const Symbol string = AnyString();
    Sequence member{string, Symbol::Char(':'), Ws(), value};
    Sequence more = Sep(',');
    more.insert(more.end(), member.begin(), member.end());
    Sequence members = member;
    members.push_back(b_.Star(more));
    Sequence object{Symbol::Char('{'), b_.Optional(members), Symbol::Char('}')};
    b_.AddAlternative(any_object_, std::move(object));
    Sequence more_items = Sep(',');
    more_items.push_back(value);
    Sequence array_seq{Symbol::Char('['), b_.Optional({value, b_.Star(more_items)}),
                       Symbol::Char(']')};
    b_.AddAlternative(array, std::move(array_seq));
    for (Sequence alt : std::vector<Sequence>{{Symbol::Rule(any_object_)},
                                              {Symbol::Rule(array)},
                                              {string},
                                              {AnyNumber()},
                                              GrammarBuilder::Literal("true"),
                                              GrammarBuilder::Literal("false"),
                                              GrammarBuilder::Literal("null")}) {
      b_.AddAlternative(any_value_, std::move(alt));
    }
    return value;
  }

  absl::StatusOr<Symbol> Object(const ordered_json& s, const std::string& path, int depth) {
    const ordered_json props = s.value("properties", ordered_json::object());
    if (!props.is_object()) return Error(path, "properties must be an object");
    absl::flat_hash_set<std::string> required;
    std::vector<std::string> order;
    for (const auto& [k, v] : props.items()) order.push_back(k);
    if (auto it = s.find("required"); it != s.end()) {
      if (!it->is_array()) return Error(path, "required must be an array of strings");
      for (const auto& r : *it) {
        if (!r.is_string()) return Error(path, "required must be an array of strings");
        const std::string key = r.get<std::string>();
        if (!props.contains(key) && required.insert(key).second) order.push_back(key);
        required.insert(key);
      }
    }
    const ordered_json extra = s.value("additionalProperties", ordered_json(true));
    if (order.empty() && !(extra.is_boolean() && !extra.get<bool>())) {
      // A map: any keys, values of the additionalProperties schema.
      SY_ASSIGN_OR_RETURN(Symbol value, Value(extra, path + "/additionalProperties", depth + 1));
      Sequence member{AnyString(), Symbol::Char(':'), Ws(), value};
      Sequence more = Sep(',');
      more.insert(more.end(), member.begin(), member.end());
      Sequence members = member;
      members.push_back(b_.Star(more));
      return b_.Group({{Symbol::Char('{'), b_.Optional(members), Symbol::Char('}')}}, "map");
    }
    // Properties in the schema's order; optional ones may be skipped. rest[i][first]: the
    // members from i on, `first` when none was written yet (no comma before it).
    const size_t n = order.size();
    std::vector<std::array<Symbol, 2>> rest(n + 1);
    const int end_rule = b_.NewRule("object end");
    b_.AddAlternative(end_rule, {});
    rest[n] = {Symbol::Rule(end_rule), Symbol::Rule(end_rule)};
    for (size_t i = n; i-- > 0;) {
      const std::string& key = order[i];
      const ordered_json sub = props.contains(key) ? props[key] : ordered_json(true);
      SY_ASSIGN_OR_RETURN(Symbol value,
                          Value(sub, absl::StrCat(path, "/properties/", key), depth + 1));
      Sequence member = GrammarBuilder::Literal(ordered_json(key).dump());
      member.push_back(Symbol::Char(':'));
      member.push_back(Ws());
      member.push_back(value);
      for (int first = 0; first < 2; ++first) {
        const int r = b_.NewRule("properties");
        Sequence write = first ? Sequence{} : Sep(',');
        write.insert(write.end(), member.begin(), member.end());
        write.push_back(rest[i + 1][0]);
        b_.AddAlternative(r, std::move(write));
        if (!required.contains(key)) b_.AddAlternative(r, {rest[i + 1][first]});
        rest[i][first] = Symbol::Rule(r);
      }
    }
    return b_.Group({{Symbol::Char('{'), rest[0][1], Symbol::Char('}')}}, "object");
  }

  absl::StatusOr<Symbol> Array(const ordered_json& s, const std::string& path, int depth) {
    SY_ASSIGN_OR_RETURN(int64_t min, Count(s, "minItems", path, 0));
    SY_ASSIGN_OR_RETURN(int64_t max, Count(s, "maxItems", path, -1));
    if (max >= 0 && max < min) return Error(path, "maxItems is below minItems");
    ordered_json prefix = s.value("prefixItems", ordered_json::array());
    ordered_json items = s.value("items", ordered_json(true));
    if (items.is_array()) {  // draft 4 tuples
      prefix = items;
      items = s.value("additionalItems", ordered_json(true));
    }
    if (!prefix.is_array()) return Error(path, "prefixItems must be an array");
    const int64_t k = static_cast<int64_t>(prefix.size());
    if (max >= 0 && k > max) return Error(path, "prefixItems is longer than maxItems");
    const bool no_more = (items.is_boolean() && !items.get<bool>()) || (max >= 0 && max == k);
    if (no_more && min > k) return Error(path, "minItems exceeds the items allowed");
    Sequence seq{Symbol::Char('[')};
    for (int64_t i = 0; i < k; ++i) {
      SY_ASSIGN_OR_RETURN(Symbol v,
                          Value(prefix[i], absl::StrCat(path, "/prefixItems/", i), depth + 1));
      if (i > 0) {
        for (const Symbol& sep : Sep(',')) seq.push_back(sep);
      }
      seq.push_back(v);
    }
    if (!no_more) {
      SY_ASSIGN_OR_RETURN(Symbol item, Value(items, path + "/items", depth + 1));
      const int64_t more_min = std::max<int64_t>(0, min - k);
      const int64_t more_max = max < 0 ? -1 : max - k;
      Sequence sep_item = Sep(',');
      sep_item.push_back(item);
      if (k > 0) {
        seq.push_back(b_.Repeat(sep_item, more_min, more_max));
      } else if (more_min > 0) {
        seq.push_back(item);
        seq.push_back(b_.Repeat(sep_item, more_min - 1, more_max < 0 ? -1 : more_max - 1));
      } else if (more_max != 0) {
        seq.push_back(
            b_.Optional({item, b_.Repeat(sep_item, 0, more_max < 0 ? -1 : more_max - 1)}));
      }
    }
    seq.push_back(Symbol::Char(']'));
    return b_.Group({std::move(seq)}, "array");
  }

  const ordered_json& root_;
  GrammarBuilder b_;
  std::map<std::string, int> refs_;
  int ws_ = -1, string_char_ = -1, number_ = -1, any_value_ = -1, any_object_ = -1;
};

}  // namespace

absl::StatusOr<Grammar> JsonSchemaGrammar(const nlohmann::ordered_json& schema) {
  return SchemaCompiler(schema).Compile();
}

absl::StatusOr<Grammar> JsonObjectGrammar() {
  static const ordered_json kEmpty = ordered_json::object();
  return SchemaCompiler(kEmpty).CompileAnyObject();
}

absl::StatusOr<Grammar> ChoiceGrammar(const std::vector<std::string>& choices) {
  if (choices.empty()) return absl::InvalidArgumentError("choice must list at least one string");
  GrammarBuilder b;
  const int root = b.NewRule("root");
  for (const std::string& c : choices) b.AddAlternative(root, GrammarBuilder::Literal(c));
  return b.Build(root);
}

absl::StatusOr<Grammar> RegexGrammar(absl::string_view pattern) {
  GrammarBuilder b;
  SY_ASSIGN_OR_RETURN(Sequence body, CompileRegex(pattern, RegexOptions{}, &b));
  const int root = b.NewRule("root");
  b.AddAlternative(root, std::move(body));
  return b.Build(root);
}

}  // namespace switchyard::grammar

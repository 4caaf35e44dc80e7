// The grammar engine: regex and GBNF compilation, JSON schema grammars, and the matcher's cached
// token masks against direct walks. Regexes are checked against std::regex (ECMAScript), an
// independent implementation, in both directions.
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "engine/grammar/gbnf.h"
#include "engine/grammar/json_schema.h"
#include "engine/grammar/matcher.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace switchyard::grammar {
namespace {

using ::testing::HasSubstr;
using ordered_json = nlohmann::ordered_json;

// Every printable ASCII byte, the two bytes of "é" apart and together, and multi-byte tokens
// that cross rule boundaries.
std::shared_ptr<const TokenVocabulary> TestVocabulary() {
  std::vector<std::string> tokens{""};  // id 0: a special token
  for (int c = 0x20; c < 0x7F; ++c) tokens.emplace_back(1, static_cast<char>(c));
  for (const char* t :
       {"\n",   "\xC3", "\xA9",     "é",    "日本", "\":", "\": ", "\", \"", "\",\"", "{\"",
        "\"}",  "true", "false",    "null", "12",   "345", "-1",   "0.",     ".5",    "abc",
        "name", "age",  "\"name\"", " {",   "}}",   "]]",  "[[",   "[\"",    "\"]",   ", ",
        "\\n",  "\\\"", "2024-",    "-01",  "T12",  ":00", "Z"}) {
    tokens.emplace_back(t);
  }
  return TokenVocabulary::Create(std::move(tokens));
}

std::shared_ptr<const CompiledGrammar> Compile(absl::StatusOr<Grammar> g) {
  EXPECT_TRUE(g.ok()) << g.status();
  if (!g.ok()) return nullptr;
  static const auto vocab = TestVocabulary();
  return std::make_shared<CompiledGrammar>(std::move(*g), vocab);
}

// Whether the matcher accepts exactly `text` (fed byte by byte through single-byte tokens).
bool Matches(const std::shared_ptr<const CompiledGrammar>& g, const std::string& text) {
  StackArena arena(g->grammar());
  const int32_t start = arena.RootSet(g->grammar().root);
  const int32_t end = arena.Walk(start, text);
  const auto& m = arena.Members(end);
  return std::find(m.begin(), m.end(), StackArena::kComplete) != m.end();
}

// Samples outputs token by token with a random "model", checking every step's mask against
// direct walks of each token. Returns the texts of the finished outputs.
std::vector<std::string> SampleOutputs(const std::shared_ptr<const CompiledGrammar>& g, int count,
                                       uint32_t seed, int max_tokens = 300) {
  std::mt19937 rng(seed);
  std::vector<std::string> out;
  const TokenVocabulary& v = g->vocab();
  for (int i = 0; i < count; ++i) {
    GrammarMatcher m(g);
    std::string text;
    for (int step = 0; step < max_tokens; ++step) {
      TokenMask mask;
      m.FillMask(&mask);
      EXPECT_FALSE(m.overflowed());
      std::vector<int32_t> allowed;
      for (int32_t t = 0; t < v.size(); ++t) {
        const bool direct = m.Allows(t);
        EXPECT_EQ(MaskTest(mask, t), direct)
            << "token '" << v.bytes(t) << "' after '" << text << "'";
        if (direct) allowed.push_back(t);
      }
      // End with probability 1/4 when allowed (or when nothing else is).
      if (m.CanEnd() && (allowed.empty() || rng() % 4 == 0)) {
        out.push_back(text);
        break;
      }
      if (allowed.empty()) {
        ADD_FAILURE() << "dead end after '" << text << "'";
        return out;
      }
      const int32_t t = allowed[rng() % allowed.size()];
      EXPECT_TRUE(m.Accept(t).ok());
      text += v.bytes(t);
    }
  }
  return out;
}

TEST(RegexTest, SampledOutputsMatchStdRegexAndBack) {
  for (const std::string pattern :
       {"[a-c]{2,4}x?", "(ab|cd)+e", "\\d{3}-\\d{2}", "[^a-z]{1,3}", "(?:foo|bar)*baz",
        "[A-Z][a-z]+ \\w+", "a.c", "x{0,2}y{3}", "(\\d+\\.)?\\d+", "é+日本?"}) {
    SCOPED_TRACE(pattern);
    const auto g = Compile(RegexGrammar(pattern));
    const std::regex re(pattern, std::regex::ECMAScript);
    const auto outputs = SampleOutputs(g, 20, 7);
    EXPECT_GE(outputs.size(), 10u);
    for (const std::string& s : outputs) {
      // std::regex works on bytes: compare ASCII outputs only.
      if (std::all_of(s.begin(), s.end(), [](char c) { return c > 0; })) {
        EXPECT_TRUE(std::regex_match(s, re)) << s;
      }
    }
    // And the other way: strings std::regex accepts, the grammar accepts.
    std::mt19937 rng(3);
    const std::string alphabet = "abcdexyzfoobarbAZ-. 0123456789";
    for (int i = 0; i < 2000; ++i) {
      std::string s;
      const int len = static_cast<int>(rng() % 8);
      for (int k = 0; k < len; ++k) s.push_back(alphabet[rng() % alphabet.size()]);
      if (pattern.find('\xC3') != std::string::npos) continue;
      EXPECT_EQ(Matches(g, s), std::regex_match(s, re)) << "'" << s << "'";
    }
  }
}

TEST(RegexTest, HexEscapes) {
  const auto g = Compile(RegexGrammar("\\x41\\u00e9\\u{1F600}[\\x30-\\x32]"));
  EXPECT_TRUE(Matches(g,
                      "A\u00e9\U0001F600"
                      "1"));
  EXPECT_FALSE(Matches(g,
                       "A\u00e9\U0001F600"
                       "3"));
  for (const char* bad : {"\\x4", "\\u00g9", "\\u{110000}", "\\u{123456789}", "\\u{}"}) {
    EXPECT_FALSE(RegexGrammar(bad).ok()) << bad;
  }
  EXPECT_FALSE(ParseGbnf("root ::= \"\\uD800\"").ok());
}

TEST(RegexTest, RefusesWhatCannotBeEnforced) {
  for (const auto& [pattern, message] :
       std::vector<std::pair<std::string, std::string>>{{"(a)\\1", "backreference"},
                                                        {"a(?=b)", "lookaround"},
                                                        {"\\bword", "word boundaries"},
                                                        {"a^b", "anchor"},
                                                        {"(ab", "unclosed"},
                                                        {"[b-a]", "out of order"},
                                                        {"a{3,1}", "m < n"},
                                                        {"a{100000}", "repeats more"},
                                                        {"*a", "nothing before"}}) {
    const auto g = RegexGrammar(pattern);
    ASSERT_FALSE(g.ok()) << pattern;
    EXPECT_THAT(g.status().message(), HasSubstr(message)) << pattern;
  }
}

TEST(GbnfTest, ParsesLlamaCppGrammars) {
  const auto g = Compile(ParseGbnf(R"(
# A list of small numbers
root   ::= "[" ( num ( "," ws num )* )? "]"
num    ::= [1-9] [0-9]? | "0"
ws     ::= [ ]?
)"));
  for (const std::string& s : SampleOutputs(g, 30, 11)) {
    const auto parsed = nlohmann::json::parse(s, nullptr, false);
    ASSERT_FALSE(parsed.is_discarded()) << s;
    for (const auto& n : parsed) EXPECT_LT(n.get<int>(), 100);
  }
  EXPECT_TRUE(Matches(g, "[1, 23,0]"));
  EXPECT_FALSE(Matches(g, "[01]"));
  const auto g2 = Compile(ParseGbnf("root ::= (\n  \"a\" |\n  \"b\"\n){2} [^\\n\\x41]\n"));
  EXPECT_TRUE(Matches(g2, "abz"));
  EXPECT_FALSE(Matches(g2, "abA"));
}

TEST(GbnfTest, RefusesBadGrammarsByName) {
  for (const auto& [text, message] : std::vector<std::pair<std::string, std::string>>{
           {"start ::= \"a\"", "no 'root' rule"},
           {"root ::= foo", "'foo' is not defined"},
           {"root ::= root \"a\" | \"b\"", "left-recursive"},
           {"root ::= x\nx ::= y \"a\"\ny ::= \"\" | x", "left-recursive"},
           {"root ::= \"a", "unterminated"},
           {"root ::= [z-a]", "out of order"},
           {"root ::= \"a\"\nroot ::= \"b\"", "defined twice"},
           {"root ::= \"\\q\"", "unknown escape"},
           {"root ::= (\"a\"", "expected ')'"},
           {"root ::= \"a\"{3,2}", "n < m"}}) {
    const auto g = ParseGbnf(text);
    ASSERT_FALSE(g.ok()) << text;
    EXPECT_THAT(g.status().message(), HasSubstr(message)) << text;
  }
}

TEST(JsonSchemaTest, SampledOutputsAreValid) {
  const ordered_json schema = ordered_json::parse(R"({
    "type": "object",
    "properties": {
      "name": {"type": "string", "maxLength": 6},
      "age": {"type": "integer", "minimum": 18, "maximum": 120},
      "score": {"type": "number", "minimum": -1.5, "maximum": 2},
      "tags": {"type": "array", "items": {"enum": ["a", "b", 3]}, "minItems": 1, "maxItems": 3},
      "kind": {"anyOf": [{"type": "null"}, {"const": "x\"y"}]},
      "when": {"type": "string", "format": "date"}
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": false
  })");
  const auto g = Compile(JsonSchemaGrammar(schema));
  const auto outputs = SampleOutputs(g, 40, 5, 400);
  EXPECT_GE(outputs.size(), 30u);
  for (const std::string& s : outputs) {
    SCOPED_TRACE(s);
    const auto j = nlohmann::json::parse(s, nullptr, false);
    ASSERT_FALSE(j.is_discarded());
    ASSERT_TRUE(j.contains("name") && j.contains("age") && j.contains("tags"));
    EXPECT_LE(j["name"].get<std::string>().size(), 6u * 4);  // code points, not bytes
    EXPECT_GE(j["age"].get<int>(), 18);
    EXPECT_LE(j["age"].get<int>(), 120);
    if (j.contains("score")) {
      EXPECT_GE(j["score"].get<double>(), -1.5);
      EXPECT_LE(j["score"].get<double>(), 2.0);
    }
    EXPECT_GE(j["tags"].size(), 1u);
    EXPECT_LE(j["tags"].size(), 3u);
    for (const auto& [k, v] : j.items()) {
      EXPECT_TRUE(schema["properties"].contains(k)) << k;
    }
    if (j.contains("kind")) {
      EXPECT_TRUE(j["kind"].is_null() || j["kind"] == "x\"y");
    }
  }
}

TEST(JsonSchemaTest, IntegerRangesAreExact) {
  for (const auto& [lo, hi] : std::vector<std::pair<int, int>>{
           {-37, 105}, {0, 9}, {10, 10}, {-250, -3}, {7, 1999}, {-1, 0}}) {
    const ordered_json schema = {{"type", "integer"}, {"minimum", lo}, {"maximum", hi}};
    const auto g = Compile(JsonSchemaGrammar(schema));
    for (int v = lo - 300; v <= hi + 300; ++v) {
      EXPECT_EQ(Matches(g, std::to_string(v)), v >= lo && v <= hi)
          << v << " in " << lo << ".." << hi;
    }
    EXPECT_FALSE(Matches(g, "007"));
    EXPECT_FALSE(Matches(g, "-0"));
  }
  const auto open =
      Compile(JsonSchemaGrammar(ordered_json{{"type", "integer"}, {"exclusiveMinimum", 99}}));
  EXPECT_FALSE(Matches(open, "99"));
  EXPECT_TRUE(Matches(open, "100"));
  EXPECT_TRUE(Matches(open, "123456789012"));
}

TEST(JsonSchemaTest, NumberBoundsAreRespected) {
  const auto g = Compile(JsonSchemaGrammar(
      ordered_json{{"type", "number"}, {"exclusiveMinimum", -2}, {"maximum", 3.5}}));
  for (const char* ok : {"-1.99", "-1", "0", "0.5", "3", "2.999", "-0.25"}) {
    EXPECT_TRUE(Matches(g, ok)) << ok;
  }
  for (const char* bad : {"-2", "-2.5", "4", "3.5e0", "1e2", "01", "1.", ".5", "3.6"}) {
    EXPECT_FALSE(Matches(g, bad)) << bad;
  }
}

TEST(JsonSchemaTest, RefsAndRecursion) {
  const ordered_json schema = ordered_json::parse(R"({
    "$defs": {"node": {"type": "object", "properties": {
      "v": {"type": "integer", "minimum": 0, "maximum": 9},
      "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
      "required": ["v"], "additionalProperties": false}},
    "$ref": "#/$defs/node"})");
  const auto g = Compile(JsonSchemaGrammar(schema));
  EXPECT_TRUE(Matches(g, R"({"v":1,"kids":[{"v":2},{"v":3,"kids":[]}]})"));
  EXPECT_TRUE(Matches(g, R"({"v": 1, "kids": [{"v": 2}]})"));
  EXPECT_FALSE(Matches(g, R"({"kids":[]})"));
  EXPECT_FALSE(Matches(g, R"({"v":1,"kids":[{"v":2},{"v":3},{"v":4}]})"));
  for (const std::string& s : SampleOutputs(g, 10, 9, 400)) {
    EXPECT_FALSE(nlohmann::json::parse(s, nullptr, false).is_discarded()) << s;
  }
}

TEST(JsonSchemaTest, RefusesKeywordsItCannotEnforce) {
  for (const auto& [schema, message] : std::vector<std::pair<std::string, std::string>>{
           {R"({"type": "array", "uniqueItems": true})", "'uniqueItems'"},
           {R"({"not": {"type": "null"}})", "'not'"},
           {R"({"type": "number", "multipleOf": 3})", "'multipleOf'"},
           {R"({"type": "string", "format": "hostname"})", "format 'hostname'"},
           {R"({"type": "strin"})", "unknown type"},
           {R"({"$ref": "#/$defs/missing"})", "points nowhere"},
           {R"({"allOf": [{"$ref": "#/a~2b"}]})", "points nowhere"},
           {R"({"allOf": [{"$ref": "#/$defs/x"}], "$defs": {"x": {"$ref": "#/$defs/x"}}})", "loop"},
           {R"({"type": "string", "pattern": "(a)\\1"})", "backreference"},
           {R"({"type": "integer", "minimum": 5, "maximum": 4})", "no integer"},
           {R"(false)", "allows no value"}}) {
    const auto g = JsonSchemaGrammar(ordered_json::parse(schema));
    ASSERT_FALSE(g.ok()) << schema;
    EXPECT_THAT(g.status().message(), HasSubstr(message)) << schema;
  }
}

TEST(JsonSchemaTest, PatternsAreJsonEscaped) {
  const auto g =
      Compile(JsonSchemaGrammar(ordered_json{{"type", "string"}, {"pattern", "^a[\"\\\\\\n]b$"}}));
  EXPECT_TRUE(Matches(g, R"("a\"b")"));
  EXPECT_TRUE(Matches(g, R"("a\\b")"));
  EXPECT_TRUE(Matches(g, R"("a\nb")"));
  EXPECT_FALSE(Matches(g, "\"a\"b\""));
  // Unanchored patterns match anywhere in the string.
  const auto anywhere = Compile(JsonSchemaGrammar(ordered_json{{"pattern", "x\\d"}}));
  EXPECT_TRUE(Matches(anywhere, R"("abc x5 é")"));
  EXPECT_FALSE(Matches(anywhere, R"("abc x")"));
}

TEST(JsonObjectTest, AnyObject) {
  const auto g = Compile(JsonObjectGrammar());
  EXPECT_TRUE(Matches(g, R"({"a": [1, 2.5e-3, "x", null, true, {"b": {}}]})"));
  EXPECT_FALSE(Matches(g, R"([1])"));
  EXPECT_FALSE(Matches(g, R"({"a": 01})"));
  for (const std::string& s : SampleOutputs(g, 20, 13, 300)) {
    const auto j = nlohmann::json::parse(s, nullptr, false);
    EXPECT_TRUE(j.is_object()) << s;
  }
}

TEST(MatcherTest, FirstTokenBytesOfSentencePieceDecoders) {
  // Token 1 is " {" mid-output but "{" as the first token.
  auto vocab = TokenVocabulary::Create({"", " {", "}", "{", " "}, {"", "{", "}", "{", ""});
  auto g = std::make_shared<CompiledGrammar>(*JsonObjectGrammar(), vocab);
  GrammarMatcher m(g);
  TokenMask mask;
  m.FillMask(&mask);
  EXPECT_TRUE(MaskTest(mask, 1));
  EXPECT_TRUE(MaskTest(mask, 3));
  EXPECT_FALSE(MaskTest(mask, 4));  // writes nothing as the first token
  ASSERT_TRUE(m.Accept(1).ok());
  m.FillMask(&mask);
  EXPECT_TRUE(MaskTest(mask, 2));
  EXPECT_FALSE(MaskTest(mask, 1));  // " {" mid-object is not JSON here
  ASSERT_TRUE(m.Accept(2).ok());
  EXPECT_TRUE(m.MustEnd());
  EXPECT_FALSE(m.Accept(3).ok());
}

TEST(MatcherTest, AmbiguityIsBounded) {
  // 2^24 paths through the nullable x's, but each (element, parent) is expanded once.
  std::string text = "root ::= ";
  for (int i = 0; i < 24; ++i) text += "x ";
  text += "\"b\"\nx ::= \"\" | \"\"\n";
  const auto g = Compile(ParseGbnf(text));
  EXPECT_TRUE(Matches(g, "b"));
  EXPECT_FALSE(Matches(g, "bb"));
  // Ever more parses alive (one per count of pending "c"): the arena stops at kMaxStacks and
  // says so; a short output stays well below.
  const auto g2 = Compile(ParseGbnf("root ::= s \"b\"\ns ::= \"a\" s | \"a\" s \"c\" | \"\"\n"));
  StackArena arena(g2->grammar());
  arena.Walk(arena.RootSet(g2->grammar().root), std::string(StackArena::kMaxStacks + 10, 'a'));
  EXPECT_TRUE(arena.overflowed());
  GrammarMatcher m(g2);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(m.Accept('a' - 0x20 + 1).ok());
  TokenMask mask;
  m.FillMask(&mask);
  EXPECT_FALSE(m.overflowed());
  EXPECT_TRUE(MaskTest(mask, 'c' - 0x20 + 1));
}

TEST(ChoiceTest, NonAsciiLiteralsAreTheirOwnBytes) {
  const auto g = Compile(ChoiceGrammar({"caf\u00e9", "\u65e5\u672c", "\U0001F600!"}));
  EXPECT_TRUE(Matches(g, "caf\u00e9"));
  EXPECT_TRUE(Matches(g, "\u65e5\u672c"));
  EXPECT_TRUE(Matches(g, "\U0001F600!"));
  EXPECT_FALSE(Matches(g, "caf\u00c3\u00a9"));  // not double-encoded
  const auto schema = Compile(JsonSchemaGrammar(ordered_json::parse(
      R"({"type": "object", "properties": {"pr\u00e9nom": {"enum": ["Zo\u00e9", "\u00e9l\u00e9a"]}},
          "required": ["pr\u00e9nom"]})")));
  EXPECT_TRUE(Matches(schema, "{\"pr\u00e9nom\": \"Zo\u00e9\"}"));
  for (const std::string& s : SampleOutputs(schema, 10, 3)) {
    const auto j = nlohmann::json::parse(s);
    const std::string v = j["pr\u00e9nom"];
    EXPECT_TRUE(v == "Zo\u00e9" || v == "\u00e9l\u00e9a") << s;
  }
  const auto gbnf = Compile(ParseGbnf("root ::= \"\\x41\\u00e9\\U0001F600\" \"\u00e9\""));
  EXPECT_TRUE(Matches(gbnf, "A\u00e9\U0001F600\u00e9"));
}

TEST(ChoiceTest, ExactlyTheChoices) {
  const auto g = Compile(ChoiceGrammar({"yes", "no", "maybe not"}));
  EXPECT_TRUE(Matches(g, "maybe not"));
  EXPECT_FALSE(Matches(g, "maybe"));
  auto outputs = SampleOutputs(g, 30, 1);
  for (const std::string& s : outputs) EXPECT_TRUE(s == "yes" || s == "no" || s == "maybe not");
}

}  // namespace
}  // namespace switchyard::grammar

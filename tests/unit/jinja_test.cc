// The Jinja engine's guarantees beyond output parity (which tests/reference checks against
// python3-jinja2): errors that name their cause and line, and bounded resources for templates
// written to exhaust them.
#include <string>

#include "engine/jinja/template.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchyard::jinja {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<std::string> Render(const std::string& source,
                                   std::vector<std::pair<std::string, Value>> vars = {},
                                   RenderOptions options = {}) {
  absl::StatusOr<Template> t = Template::Parse(source);
  if (!t.ok()) return t.status();
  return t->Render(std::move(vars), options);
}

std::string Error(const absl::StatusOr<std::string>& r) {
  EXPECT_FALSE(r.ok()) << "rendered: " << (r.ok() ? *r : "");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  return std::string(r.status().message());
}

TEST(JinjaTest, RendersAConversation) {
  nlohmann::ordered_json messages = nlohmann::ordered_json::parse(
      R"([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])");
  auto out = Render(
      "{% for m in messages %}<{{ m.role }}>{{ m['content'] | trim }}\n{% endfor %}"
      "{% if add_generation_prompt %}<assistant>{% endif %}",
      {{"messages", *FromJson(messages)}, {"add_generation_prompt", Value::Bool(true)}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<user>hi\n<assistant>yo\n<assistant>");
}

TEST(JinjaTest, SyntaxErrorsNameTheLine) {
  EXPECT_THAT(Error(Render("line one\n{% if x %}\n{% endfor %}")), HasSubstr("line 3"));
  EXPECT_THAT(Error(Render("{{ 1 +* 2 }}")), HasSubstr("syntax error"));
  EXPECT_THAT(Error(Render("{{ x | nosuch }}")), HasSubstr("no filter named 'nosuch'"));
  EXPECT_THAT(Error(Render("{{ x is nosuch }}")), HasSubstr("no test named 'nosuch'"));
  EXPECT_THAT(Error(Render("{% include 'x' %}")), HasSubstr("unknown tag 'include'"));
  EXPECT_THAT(Error(Render("{{ 'open")), HasSubstr("unterminated string"));
  EXPECT_THAT(Error(Render("{# open")), HasSubstr("comment"));
  EXPECT_THAT(Error(Render("{% break %}")), HasSubstr("outside a loop"));
}

TEST(JinjaTest, RaiseExceptionCarriesTheTemplatesMessage) {
  auto r = Render("{{ raise_exception('Roles must alternate user/assistant') }}");
  EXPECT_THAT(Error(r), HasSubstr("Roles must alternate user/assistant"));
  EXPECT_TRUE(IsRaisedByTemplate(r.status()));
  EXPECT_FALSE(IsRaisedByTemplate(Render("{{ 1 / 0 }}").status()));
}

TEST(JinjaTest, UndefinedValuesFailOnlyWhereJinjaFails) {
  EXPECT_EQ(*Render("[{{ missing }}]{{ missing | length }}{{ missing is defined }}"), "[]0False");
  EXPECT_THAT(Error(Render("{{ missing.attr }}")), HasSubstr("'missing' is undefined"));
  EXPECT_THAT(Error(Render("{{ missing + 1 }}")), HasSubstr("'missing' is undefined"));
}

TEST(JinjaTest, MissingArgumentsAreErrorsNotCrashes) {
  // These once reached an unchecked variant access (a process abort).
  EXPECT_THAT(Error(Render("{{ 1 is lt }}")), HasSubstr("missing required argument 'b'"));
  EXPECT_THAT(Error(Render("{{ x is sameas }}")), HasSubstr("'other'"));
  EXPECT_THAT(Error(Render("{{ '%c' % [1] }}")), HasSubstr("%c"));
  EXPECT_THAT(Error(Render("{{ 1 is divisibleby }}")), HasSubstr("'num'"));
}

TEST(JinjaTest, MutatingMethodsAreRefusedAsInTheSandbox) {
  EXPECT_THAT(Error(Render("{% set l = [1] %}{{ l.append(2) }}")), HasSubstr("unsafe"));
  EXPECT_THAT(Error(Render("{% set d = {} %}{{ d.update({'a': 1}) }}")), HasSubstr("unsafe"));
}

TEST(JinjaTest, LoopsAndSizesAreBounded) {
  RenderOptions small;
  small.limits.max_steps = 100000;
  EXPECT_THAT(Error(Render("{% for i in range(1000000000) %}{% endfor %}")),
              HasSubstr("sequence length"));
  EXPECT_THAT(Error(Render("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}"
                           "{% endfor %}",
                           {}, small)),
              HasSubstr("evaluation steps"));
  EXPECT_THAT(Error(Render("{{ 'x' * 10000000000 }}")), HasSubstr("string size"));
  EXPECT_THAT(Error(Render("{% set s = 'x' * 1000000 %}{% for i in range(100) %}{{ s }}"
                           "{% endfor %}")),
              HasSubstr("output size"));
  EXPECT_THAT(Error(Render("{{ [1] * 100000000 }}")), HasSubstr("sequence length"));
  EXPECT_THAT(Error(Render("{{ 2 ** 64 }}")), HasSubstr("integer overflow"));
}

TEST(JinjaTest, RecursionIsBounded) {
  EXPECT_THAT(Error(Render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")),
              HasSubstr("macro call depth"));
  EXPECT_THAT(Error(Render("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}")),
              HasSubstr("nested too deeply"));
  EXPECT_THAT(Error(Render("{{ " + std::string(3000, '[') + std::string(3000, ']') + " }}")),
              HasSubstr("nested too deeply"));
  std::string nested_ifs;
  for (int i = 0; i < 500; ++i) nested_ifs += "{% if true %}";
  EXPECT_THAT(Error(Render(nested_ifs)), HasSubstr("nested too deeply"));
  // Deeply nested data from a client serialises within its own limit.
  nlohmann::ordered_json deep = 1;
  for (int i = 0; i < 2000; ++i) deep = nlohmann::ordered_json::array({deep});
  EXPECT_FALSE(FromJson(deep).ok());
  auto shallow = FromJson(deep, 4000);
  ASSERT_TRUE(shallow.ok());
  EXPECT_THAT(Error(Render("{{ x | tojson }}", {{"x", *shallow}})), HasSubstr("nesting"));
}

TEST(JinjaTest, StrftimeNowUsesTheGivenClock) {
  RenderOptions at;
  at.now = 1752148800;  // 2025-07-10 12:00:00 UTC
  setenv("TZ", "UTC", 1);
  tzset();
  EXPECT_EQ(*Render("{{ strftime_now('%d %b %Y') }}", {}, at), "10 Jul 2025");
}

}  // namespace
}  // namespace switchyard::jinja

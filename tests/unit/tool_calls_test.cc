// Tool-call parsing: each format whole and streamed at every split point, malformed calls kept as
// content, ids as the formats' templates require, and format detection on real templates.
#include "server/frontend/tool_calls.h"

#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace switchyard {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Names(const std::vector<ToolCall>& calls) {
  std::vector<std::string> out;
  for (const ToolCall& c : calls) out.push_back(c.name);
  return out;
}

std::vector<std::string> Arguments(const std::vector<ToolCall>& calls) {
  std::vector<std::string> out;
  for (const ToolCall& c : calls) out.push_back(c.arguments);
  return out;
}

// Streams `text` split at `cut` (and byte by byte) and checks the result equals the whole parse.
void ExpectStreamingAgrees(ToolCallFormat f, const std::string& text) {
  const ParsedToolOutput whole = ParseToolCalls(f, text);
  const auto streamed = [&](const std::vector<std::string>& pieces) {
    ToolCallStream s(f);
    std::string content;
    std::vector<ToolCall> calls;
    for (const std::string& p : pieces) {
      ToolCallStream::Delta d = s.Push(p);
      content += d.content;
      calls.insert(calls.end(), d.calls.begin(), d.calls.end());
    }
    ToolCallStream::Delta d = s.Finish();
    content += d.content;
    calls.insert(calls.end(), d.calls.begin(), d.calls.end());
    EXPECT_EQ(Names(calls), Names(whole.calls)) << text;
    EXPECT_EQ(Arguments(calls), Arguments(whole.calls)) << text;
    EXPECT_EQ(content, whole.content.value_or(content)) << text;
  };
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    streamed({text.substr(0, cut), text.substr(cut)});
  }
  std::vector<std::string> bytes;
  for (char c : text) bytes.emplace_back(1, c);
  streamed(bytes);
}

TEST(ToolCallsTest, Hermes) {
  const std::string one =
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
      "\"Hanoi\"}}\n</tool_call>";
  ParsedToolOutput p = ParseToolCalls(ToolCallFormat::kHermes, one);
  EXPECT_THAT(Names(p.calls), ElementsAre("get_weather"));
  EXPECT_THAT(Arguments(p.calls), ElementsAre(R"({"city":"Hanoi"})"));
  EXPECT_EQ(p.content, "Let me check.\n");
  EXPECT_TRUE(p.calls[0].id.rfind("call_", 0) == 0);
  EXPECT_EQ(p.calls[0].id.size(), 29u);

  const std::string two =
      "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>\n<tool_call>{\"name\": \"b\", "
      "\"arguments\": \"{\\\"x\\\": 1}\"}</tool_call>";
  p = ParseToolCalls(ToolCallFormat::kHermes, two);
  EXPECT_THAT(Names(p.calls), ElementsAre("a", "b"));
  EXPECT_THAT(Arguments(p.calls), ElementsAre("{}", R"({"x":1})"));
  EXPECT_FALSE(p.content.has_value());  // only whitespace outside the calls
  EXPECT_NE(p.calls[0].id, p.calls[1].id);

  for (const std::string& kept : {std::string("<tool_call>{not json}</tool_call> tail"),
                                  std::string("<tool_call>{\"name\": \"a\"} unclosed"),
                                  std::string("<tool_call>{\"arguments\": {}}</tool_call>"),
                                  std::string("plain answer, no calls <tool_")}) {
    p = ParseToolCalls(ToolCallFormat::kHermes, kept);
    EXPECT_TRUE(p.calls.empty()) << kept;
    EXPECT_EQ(p.content, kept);
  }
  // A long call streamed in small pieces: the end tag is searched for once overall.
  ToolCallStream long_call(ToolCallFormat::kHermes);
  long_call.Push("<tool_call>{\"name\": \"a\", \"arguments\": {\"s\": \"");
  for (int i = 0; i < 100000; ++i) EXPECT_TRUE(long_call.Push("xy").content.empty());
  ToolCallStream::Delta end = long_call.Push("\"}}</tool_call>");
  ASSERT_EQ(end.calls.size(), 1u);
  EXPECT_EQ(end.calls[0].arguments.size(), 200000u + 8);
  for (const std::string& t : {one, two, std::string("a <tool_call>{bad}</tool_call> b <tool_")}) {
    ExpectStreamingAgrees(ToolCallFormat::kHermes, t);
  }
}

TEST(ToolCallsTest, Llama3Json) {
  ParsedToolOutput p = ParseToolCalls(
      ToolCallFormat::kLlama3Json,
      "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"days\": 2}}");
  EXPECT_THAT(Names(p.calls), ElementsAre("get_weather"));
  EXPECT_THAT(Arguments(p.calls), ElementsAre(R"({"city":"Paris","days":2})"));
  EXPECT_FALSE(p.content.has_value());

  p = ParseToolCalls(ToolCallFormat::kLlama3Json,
                     "<|python_tag|>{\"name\": \"a\", \"parameters\": {\"s\": \"x;y\"}}; "
                     "{\"name\": \"b\", \"arguments\": {}}");
  EXPECT_THAT(Names(p.calls), ElementsAre("a", "b"));
  EXPECT_THAT(Arguments(p.calls), ElementsAre(R"({"s":"x;y"})", "{}"));

  p = ParseToolCalls(ToolCallFormat::kLlama3Json,
                     "{\"name\": \"a\", \"parameters\": {\"s\": \"};{\\\"\"}} ; {\"name\": \"b\"}");
  EXPECT_THAT(Names(p.calls), ElementsAre("a", "b"));
  EXPECT_THAT(Arguments(p.calls), ElementsAre(R"({"s":"};{\""})", "{}"));
  // A long output full of separators parses in one pass (a quadratic split would not finish).
  const std::string many =
      "{\"name\": \"a\", \"parameters\": {\"s\": \"" + std::string(200000, ';') + "\"}}";
  EXPECT_THAT(Names(ParseToolCalls(ToolCallFormat::kLlama3Json, many).calls), ElementsAre("a"));
  EXPECT_TRUE(ParseToolCalls(ToolCallFormat::kLlama3Json, "{\"x\": \"" + std::string(200000, ';'))
                  .calls.empty());

  for (const std::string& kept :
       {std::string("The weather is fine."), std::string("{\"answer\": 42}"),
        std::string("{\"name\": \"a\""), std::string("<b>bold</b>")}) {
    p = ParseToolCalls(ToolCallFormat::kLlama3Json, kept);
    EXPECT_TRUE(p.calls.empty()) << kept;
    EXPECT_EQ(p.content, kept);
  }
  for (const std::string& t :
       {std::string("  {\"name\": \"a\", \"parameters\": {}}"), std::string("Sure: {x}"),
        std::string("<|python_tag|>{\"name\": \"a\", \"parameters\": {}}")}) {
    ExpectStreamingAgrees(ToolCallFormat::kLlama3Json, t);
  }
}

TEST(ToolCallsTest, Mistral) {
  ParsedToolOutput p =
      ParseToolCalls(ToolCallFormat::kMistral,
                     "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"q\": 1}}, {\"name\": \"b\", "
                     "\"arguments\": {}}]");
  EXPECT_THAT(Names(p.calls), ElementsAre("a", "b"));
  ASSERT_EQ(p.calls.size(), 2u);
  for (const ToolCall& c : p.calls) {
    EXPECT_EQ(c.id.size(), 9u);  // Mistral's templates refuse other lengths
    for (char ch : c.id) EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(ch))) << c.id;
  }
  p = ParseToolCalls(ToolCallFormat::kMistral, "I will call.[TOOL_CALLS] [not json");
  EXPECT_TRUE(p.calls.empty());
  EXPECT_EQ(p.content, "I will call.[TOOL_CALLS] [not json");
  ExpectStreamingAgrees(ToolCallFormat::kMistral,
                        "ok [TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}]");
  ExpectStreamingAgrees(ToolCallFormat::kMistral, "[TOOL_CA no marker [TOOL_");
}

std::string TemplateOf(const std::string& name) {
  std::ifstream in(std::string(SWITCHYARD_SOURCE_DIR) +
                   "/tests/reference/chat_templates/huggingface_jinja_e2e.json");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return nlohmann::json::parse(buffer.str())[name]["template"].get<std::string>();
}

TEST(ToolCallsTest, DetectsTheFormatFromRealTemplates) {
  EXPECT_EQ(DetectToolCallFormat(TemplateOf("Qwen/Qwen2.5-7B-Instruct")), ToolCallFormat::kHermes);
  EXPECT_EQ(DetectToolCallFormat(TemplateOf("Qwen/Qwen3-0.6B")), ToolCallFormat::kHermes);
  EXPECT_EQ(DetectToolCallFormat(TemplateOf("NousResearch/Hermes-2-Pro-Llama-3-8B (JSON Schema)")),
            ToolCallFormat::kHermes);
  EXPECT_EQ(DetectToolCallFormat(TemplateOf("meta-llama/Llama-3.1-8B-Instruct")),
            ToolCallFormat::kLlama3Json);
  EXPECT_EQ(DetectToolCallFormat(TemplateOf("mistralai/Mistral-7B-Instruct-v0.3 (JSON Schema)")),
            ToolCallFormat::kMistral);
  EXPECT_EQ(
      DetectToolCallFormat(TemplateOf("HuggingFaceH4/zephyr-7b-beta (add_generation_prompt=true)")),
      ToolCallFormat::kNone);
  EXPECT_EQ(*ParseToolCallFormat("mistral", ""), ToolCallFormat::kMistral);
  EXPECT_EQ(*ParseToolCallFormat("auto", "<tool_call>"), ToolCallFormat::kHermes);
  EXPECT_FALSE(ParseToolCallFormat("xml", "").ok());
}

}  // namespace
}  // namespace switchyard

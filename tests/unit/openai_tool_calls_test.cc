// The OpenAI wire format of parsed tool calls: a response's message.tool_calls (content null,
// finish_reason "tool_calls") and a stream's delta.tool_calls (index, id, type, function).
#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/http/openai.h"
#include "tests/unit/test_util.h"

namespace switchyard::openai {
namespace {

using json = nlohmann::json;

const Tokenizer& TestTokenizer() {
  static const Tokenizer* tok = Tokenizer::Load(TinyModelDir())->release();
  return *tok;
}

ParsedRequest ChatWithTools() {
  ParsedRequest req;
  req.endpoint = Endpoint::kChat;
  req.model = "m";
  req.tool_format = ToolCallFormat::kHermes;
  return req;
}

TEST(OpenAIToolCallsTest, ResponseCarriesToolCalls) {
  ParsedRequest req = ChatWithTools();
  std::vector<ChoiceState> choices(1);
  choices[0].text =
      "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Hanoi\"}}</tool_call>"
      "<tool_call>{\"name\": \"search\", \"arguments\": {\"q\": \"x\"}}</tool_call>";
  choices[0].finish = FinishReason::kStop;
  json r = BuildResponse(req, "id", 0, choices, TestTokenizer());
  const json& choice = r["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_TRUE(choice["message"]["content"].is_null());
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 2u);
  const json& call = choice["message"]["tool_calls"][0];
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(call["function"]["arguments"].get<std::string>()),
            json({{"city", "Hanoi"}}));
  EXPECT_THAT(call["id"].get<std::string>(), ::testing::StartsWith("call_"));
  EXPECT_FALSE(call.contains("index"));

  req.parallel_tool_calls = false;
  r = BuildResponse(req, "id", 0, choices, TestTokenizer());
  EXPECT_EQ(r["choices"][0]["message"]["tool_calls"].size(), 1u);

  // Cut off by max_tokens inside a call: the text stays content, finish_reason "length".
  choices[0].text = "<tool_call>{\"name\": \"get_wea";
  choices[0].finish = FinishReason::kLength;
  r = BuildResponse(req, "id", 0, choices, TestTokenizer());
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r["choices"][0]["message"]["content"], choices[0].text);
  EXPECT_FALSE(r["choices"][0]["message"].contains("tool_calls"));
}

TEST(OpenAIToolCallsTest, StreamChunksCarryToolCallDeltas) {
  ParsedRequest req = ChatWithTools();
  req.stream = true;
  RequestEvent e;
  e.text = "";
  std::vector<ToolCall> calls = {{"call_1", "a", "{}"}, {"call_2", "b", "{\"x\":1}"}};
  json chunk = BuildChunk(req, "id", 0, 0, e, false, "", 0, TestTokenizer(), calls, 3, true);
  const json& delta = chunk["choices"][0]["delta"];
  EXPECT_FALSE(delta.contains("content"));
  ASSERT_EQ(delta["tool_calls"].size(), 2u);
  EXPECT_EQ(delta["tool_calls"][0]["index"], 3);
  EXPECT_EQ(delta["tool_calls"][1]["index"], 4);
  EXPECT_EQ(delta["tool_calls"][1]["id"], "call_2");
  EXPECT_EQ(delta["tool_calls"][1]["function"]["arguments"], "{\"x\":1}");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  e.finish = FinishReason::kStop;
  chunk = BuildChunk(req, "id", 0, 0, e, false, "", 0, TestTokenizer(), {}, 5, true);
  EXPECT_EQ(chunk["choices"][0]["finish_reason"], "tool_calls");
  chunk = BuildChunk(req, "id", 0, 0, e, false, "", 0, TestTokenizer(), {}, 0, false);
  EXPECT_EQ(chunk["choices"][0]["finish_reason"], "stop");
}

}  // namespace
}  // namespace switchyard::openai

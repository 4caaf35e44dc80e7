// Tokenizer behaviour beyond the parity suite (tests/tokenizer): refusals with clear messages,
// invalid UTF-8, streaming edge cases, chat template selection.
#include "engine/tokenizer/tokenizer.h"

#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_util.h"

namespace switchyard {
namespace {

using ::testing::HasSubstr;

// A byte-level tokenizer over a tiny vocabulary: every byte, a few merges and two specials.
nlohmann::json ByteLevelJson() {
  nlohmann::json vocab = nlohmann::json::object();
  const auto& alphabet = ByteLevelAlphabet();
  for (int b = 0; b < 256; ++b) vocab[alphabet[b]] = b;
  vocab["Ġ."] = 256;
  vocab["he"] = 257;
  vocab["hel"] = 258;
  return {
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges", {"Ġ .", "h e", "he l"}},
        {"ignore_merges", false}}},
      {"added_tokens",
       {{{"id", 300}, {"content", "<|s|>"}, {"special", true}},
        {{"id", 301}, {"content", "<tool>"}, {"special", false}, {"rstrip", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<|s|>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
        {"special_tokens", {{"<|s|>", {{"id", "<|s|>"}, {"ids", {300}}}}}}}}};
}

std::unique_ptr<Tokenizer> Make(const nlohmann::json& t, const nlohmann::json& config = {}) {
  auto tok = Tokenizer::FromJson(t.dump(), config.is_null() ? "" : config.dump());
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

TEST(TokenizerTest, EncodesWithTemplateAndAddedTokens) {
  auto tok = Make(ByteLevelJson(), {{"clean_up_tokenization_spaces", false}});
  auto ids = tok->Encode("hel <tool>  x");
  ASSERT_TRUE(ids.ok());
  // <|s|>, "hel", " " (before the added token), <tool>, rstrip eats the spaces, "x"
  EXPECT_EQ(*ids, (std::vector<int32_t>{300, 258, 32, 301, 'x'}));
  EXPECT_EQ(*tok->Encode("hel", {.add_special_tokens = false}), (std::vector<int32_t>{258}));
  // With parse_special off, special-token text is just text.
  auto literal = tok->Encode("<|s|>", {.add_special_tokens = false, .parse_special = false});
  ASSERT_TRUE(literal.ok());
  EXPECT_EQ(literal->size(), 5u);
  EXPECT_EQ(tok->Decode(*ids), "<|s|>hel <tool>x");
  EXPECT_EQ(tok->Decode(*ids, /*skip_special_tokens=*/true), "hel <tool>x");
}

TEST(TokenizerTest, RefusesInvalidUtf8NamingTheOffset) {
  auto tok = Make(ByteLevelJson());
  auto ids = tok->Encode(std::string("ok\xC3(", 4));
  ASSERT_FALSE(ids.ok());
  EXPECT_THAT(std::string(ids.status().message()), HasSubstr("not valid UTF-8 (at byte 2)"));
}

TEST(TokenizerTest, StreamsSplitCharactersAndCleanupExactly) {
  auto tok = Make(ByteLevelJson(), {{"clean_up_tokenization_spaces", true}});
  // "é" split over two byte tokens, and " ." which clean-up turns into ".".
  std::vector<int32_t> seq;
  const auto& alphabet = ByteLevelAlphabet();
  auto id_of = [&](unsigned char b) { return *tok->TokenToId(alphabet[b]); };
  seq = {id_of('x'), id_of(0xC3), id_of(0xA9), id_of(' '),
         256,        id_of(' '),  id_of('y'),  id_of(0xE2)};
  std::string streamed;
  DecodeStream s = tok->NewDecodeStream(false);
  for (int32_t id : seq) {
    std::string delta;
    s.Push(id, &delta);
    EXPECT_EQ(utf8::FirstInvalid(delta), absl::string_view::npos);
    streamed += delta;
  }
  s.Finish(&streamed);
  EXPECT_EQ(streamed, tok->Decode(seq));
  EXPECT_EQ(streamed, "xé . y\xEF\xBF\xBD");  // two spaces before " .": clean-up takes one
}

TEST(TokenizerTest, RefusesUnsupportedComponentsByName) {
  const auto error = [](nlohmann::json t) {
    auto tok = Tokenizer::FromJson(t.dump(), "");
    EXPECT_FALSE(tok.ok());
    return tok.ok() ? std::string() : std::string(tok.status().message());
  };
  nlohmann::json t = ByteLevelJson();
  t["model"]["type"] = "WordPiece";
  EXPECT_THAT(error(t), HasSubstr("model type \"WordPiece\" is not supported"));
  t = ByteLevelJson();
  t["normalizer"] = {{"type", "Precompiled"}};
  EXPECT_THAT(error(t), HasSubstr("normalizer \"Precompiled\" is not supported"));
  t = ByteLevelJson();
  t["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  EXPECT_THAT(error(t), HasSubstr("pre-tokenizer \"BertPreTokenizer\" is not supported"));
  t = ByteLevelJson();
  t["decoder"] = {{"type", "WordPiece"}};
  EXPECT_THAT(error(t), HasSubstr("decoder \"WordPiece\" is not supported"));
  t = ByteLevelJson();
  t["model"]["merges"] = {"q z"};
  EXPECT_THAT(error(t), HasSubstr("merge \"q z\""));
  t = ByteLevelJson();
  t["post_processor"] = {{"type", "BertProcessing"}};
  EXPECT_THAT(error(t), HasSubstr("post-processor \"BertProcessing\""));
  EXPECT_THAT(error(nlohmann::json::object()), HasSubstr("missing \"model\""));
}

TEST(TokenizerTest, LoadsTheDemoModelTokenizer) {
  auto tok = Tokenizer::Load(TinyModelDir());
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->Encode("Hello world");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->front(), *(*tok)->bos_id());
  EXPECT_EQ((*tok)->Decode(*ids, true), "Hello world");
  auto chat = ChatTemplate::FromTemplateText((*tok)->chat_template(), (*tok)->bos_token(),
                                             (*tok)->eos_token());
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->name(), "llama3");
}

TEST(ChatTemplateTest, RefusesUnknownTemplatesPointingAtTheNameOption) {
  auto t = ChatTemplate::FromTemplateText("{{ messages }}", "<s>", "</s>");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("--chat-template"));
  auto dated = ChatTemplate::FromTemplateText(
      "{{- bos_token }}<|start_header_id|>system<|end_header_id|>Cutting Knowledge Date", "", "");
  ASSERT_FALSE(dated.ok());
  EXPECT_THAT(std::string(dated.status().message()), HasSubstr("Llama 3.1"));
  auto none = ChatTemplate::FromTemplateText("", "", "");
  ASSERT_FALSE(none.ok());
  auto name = ChatTemplate::FromName("vicuna", "", "");
  ASSERT_FALSE(name.ok());
  EXPECT_THAT(std::string(name.status().message()), HasSubstr("llama3, chatml"));
}

TEST(ChatTemplateTest, NamedFormatsRenderAndCheckRoles) {
  auto mistral = ChatTemplate::FromName("mistral", "<s>", "</s>");
  ASSERT_TRUE(mistral.ok());
  std::vector<ChatMessage> conv = {{"user", "hi"}, {"assistant", "yo"}, {"user", "q"}};
  EXPECT_EQ(*mistral->Render(conv, {}), "<s>[INST] hi [/INST]yo</s>[INST] q [/INST]");
  std::vector<ChatMessage> bad = {{"assistant", "first"}};
  auto r = mistral->Render(bad, {});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("alternate"));
  auto chatml = ChatTemplate::FromName("chatml", "", "");
  EXPECT_EQ(*chatml->Render(conv, {.add_generation_prompt = true}),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n");
}

}  // namespace
}  // namespace switchyard

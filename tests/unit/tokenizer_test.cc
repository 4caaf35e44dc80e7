// Tokenizer behaviour beyond the parity suite (tests/tokenizer): refusals with clear messages,
// invalid UTF-8, streaming edge cases, chat templates (rendering parity is
// tests/reference/test_chat_templates.py).
#include "engine/tokenizer/tokenizer.h"

#include <cstdio>
#include <filesystem>

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

// The bytes each token writes into an output (structured output matches them).
TEST(TokenizerTest, TokenBytesAreWhatDecodingWrites) {
  auto tok = Make(ByteLevelJson());
  auto table = tok->TokenBytes();
  ASSERT_TRUE(table.ok()) << table.status();
  const auto& alphabet = ByteLevelAlphabet();
  EXPECT_EQ(table->bytes[*tok->TokenToId(alphabet[0xC3])], "\xC3");
  EXPECT_EQ(table->bytes[256], " .");
  EXPECT_EQ(table->bytes[258], "hel");
  EXPECT_EQ(table->bytes[301], "<tool>");  // added, not special
  EXPECT_EQ(table->bytes[300], "");        // special: never written by a grammar
  EXPECT_TRUE(table->first_bytes.empty());
  // As a stream without clean-up (" ." would become "."), which constrained outputs use.
  for (int32_t id : {256, 258, 301}) {
    DecodeStream s = tok->NewDecodeStream(/*skip_special_tokens=*/true, /*clean_up_spaces=*/false);
    std::string text;
    s.Push(300, &text);
    s.Push(id, &text);
    s.Finish(&text);
    EXPECT_EQ(table->bytes[id], text) << id;
  }

  // SentencePiece style: "\u2581" is a space, <0xNN> one byte, and the decoder strips the
  // output's first space.
  const nlohmann::json sp = {
      {"model",
       {{"type", "BPE"},
        {"byte_fallback", true},
        {"vocab", {{"<unk>", 0}, {"<s>", 1}, {"<0x41>", 2}, {"\u2581the", 3}, {"a", 4}}},
        {"merges", nlohmann::json::array()}}},
      {"added_tokens", {{{"id", 1}, {"content", "<s>"}, {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", nullptr},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}}};
  auto spt = Make(sp);
  ASSERT_NE(spt, nullptr);
  auto spb = spt->TokenBytes();
  ASSERT_TRUE(spb.ok()) << spb.status();
  EXPECT_EQ(spb->bytes[3], " the");
  EXPECT_EQ(spb->first_bytes[3], "the");
  EXPECT_EQ(spb->bytes[2], "A");
  EXPECT_EQ(spb->bytes[1], "");
  EXPECT_EQ(spt->Decode(std::vector<int32_t>{3, 3}), spb->first_bytes[3] + spb->bytes[3]);
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
  auto chat =
      ChatTemplate::Compile((*tok)->chat_template(), (*tok)->bos_token(), (*tok)->eos_token());
  ASSERT_TRUE(chat.ok()) << chat.status();
  const std::vector<ChatMessage> hello = {{"user", "Hello"}};
  auto prompt = chat->Render(ChatInput::FromMessages(hello));
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_EQ(*prompt,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

std::string RenderOrError(const ChatTemplate& t, const ChatInput& in) {
  absl::StatusOr<std::string> r = t.Render(in);
  return r.ok() ? *r : "error: " + std::string(r.status().message());
}

TEST(ChatTemplateTest, PreparesMessagesAsVllmDoes) {
  // Tool-call arguments arrive as a JSON string and reach the template as an object; content
  // parts are joined with newlines for a template that expects strings.
  auto t = ChatTemplate::Compile(
      "{% for m in messages %}{{ m.role }}:{{ m.content }}"
      "{% for c in m.tool_calls or [] %}[{{ c.function.arguments.city }}]{% endfor %};"
      "{% endfor %}",
      "", "");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_FALSE(t->takes_content_parts());
  ChatInput in;
  in.messages = nlohmann::ordered_json::parse(R"([
    {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    {"role": "assistant", "content": null, "tool_calls": [
      {"type": "function", "function": {"name": "w", "arguments": "{\"city\": \"Hanoi\"}"}}]}
  ])");
  EXPECT_EQ(RenderOrError(*t, in), "user:a\nb;assistant:None[Hanoi];");
  in.messages[0]["content"].push_back({{"type", "image_url"}, {"image_url", "x"}});
  EXPECT_THAT(RenderOrError(*t, in), HasSubstr("messages[0].content: only parts of type"));

  auto parts = ChatTemplate::Compile(
      "{% for m in messages %}{% for p in m['content'] %}<{{ p.text }}>{% endfor %}{% endfor %}",
      "", "");
  ASSERT_TRUE(parts.ok());
  EXPECT_TRUE(parts->takes_content_parts());
  in.messages.erase(1);
  in.messages[0]["content"].erase(2);
  EXPECT_EQ(RenderOrError(*parts, in), "<a><b>");
}

TEST(ChatTemplateTest, VariablesToolsAndKwargs) {
  auto t = ChatTemplate::Compile(
      "{{ bos_token }}|{{ eos_token is defined }}|{{ tools | tojson }}|{{ add_generation_prompt }}"
      "|{{ enable_thinking }}",
      "<s>", "");
  ASSERT_TRUE(t.ok());
  ChatInput in = ChatInput::FromMessages(std::vector<ChatMessage>{{"user", "x"}});
  EXPECT_EQ(RenderOrError(*t, in), "<s>|False|null|True|");
  in.tools = nlohmann::ordered_json::parse(R"([{"type": "function", "function": {"name": "f"}}])");
  in.add_generation_prompt = false;
  in.template_kwargs = {{"enable_thinking", false}};
  EXPECT_EQ(RenderOrError(*t, in),
            R"(<s>|False|[{"type": "function", "function": {"name": "f"}}]|False|False)");
  in.template_kwargs = {{"messages", 1}};
  EXPECT_THAT(RenderOrError(*t, in), HasSubstr("set by the request itself"));
}

TEST(ChatTemplateTest, ContinueFinalMessageLeavesItOpen) {
  // Trims contents as Llama 3.1's does, so the cut falls back to the stripped content.
  auto t = ChatTemplate::Compile(
      "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}</{{ m.role }}>{% endfor %}"
      "{% if add_generation_prompt %}<assistant>{% endif %}",
      "", "");
  ASSERT_TRUE(t.ok());
  ChatInput in = ChatInput::FromMessages(
      std::vector<ChatMessage>{{"user", "Name a colour"}, {"assistant", "The colour is "}});
  in.add_generation_prompt = false;
  in.continue_final_message = true;
  EXPECT_EQ(RenderOrError(*t, in), "<user>Name a colour</user><assistant>The colour is");
  in.add_generation_prompt = true;
  EXPECT_THAT(RenderOrError(*t, in), HasSubstr("cannot be combined with add_generation_prompt"));
  auto hides = ChatTemplate::Compile("{% for m in messages %}[{{ m.role }}]{% endfor %}", "", "");
  ASSERT_TRUE(hides.ok());
  in.add_generation_prompt = false;
  EXPECT_THAT(RenderOrError(*hides, in), HasSubstr("does not appear in the rendered prompt"));
}

TEST(ChatTemplateTest, ErrorsNameTheirCause) {
  auto broken = ChatTemplate::Compile("{% for m in messages %}", "", "");
  ASSERT_FALSE(broken.ok());
  EXPECT_THAT(std::string(broken.status().message()), HasSubstr("endfor"));
  EXPECT_FALSE(ChatTemplate::Compile("", "", "").ok());
  auto strict = ChatTemplate::Compile(
      "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}",
      "", "");
  ASSERT_TRUE(strict.ok());
  ChatInput in = ChatInput::FromMessages(std::vector<ChatMessage>{{"assistant", "x"}});
  EXPECT_THAT(RenderOrError(*strict, in), HasSubstr("first must be user"));
}

TEST(ChatTemplateTest, ResolvesTheFlagValue) {
  auto chatml = ChatTemplate::ResolveSource("chatml");
  ASSERT_TRUE(chatml.ok());
  EXPECT_THAT(*chatml, HasSubstr("<|im_start|>"));
  EXPECT_EQ(*ChatTemplate::ResolveSource("{{ messages }}"), "{{ messages }}");
  const std::string path = ::testing::TempDir() + "/template.jinja";
  std::FILE* f = std::fopen(path.c_str(), "w");
  std::fputs("{% for m in messages %}{{ m.content }}{% endfor %}", f);
  std::fclose(f);
  EXPECT_THAT(*ChatTemplate::ResolveSource(path), HasSubstr("m.content"));
  auto missing = ChatTemplate::ResolveSource("/nonexistent/template.jinja");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("--chat-template"));
}

TEST(ChatTemplateTest, ChatTemplateJinjaBesideTheConfigWins) {
  const std::string dir = ::testing::TempDir() + "/tok_with_jinja";
  std::filesystem::create_directories(dir);
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    std::filesystem::copy_file(TinyModelDir() + "/" + name, dir + "/" + name,
                               std::filesystem::copy_options::overwrite_existing);
  }
  std::FILE* f = std::fopen((dir + "/chat_template.jinja").c_str(), "w");
  std::fputs("from the file", f);
  std::fclose(f);
  auto tok = Tokenizer::Load(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->chat_template(), "from the file");
}

}  // namespace
}  // namespace switchyard

#include "server/scheduler/output_text.h"

#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace switchyard {
namespace {

class OutputTextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (TinyModelDir().empty()) GTEST_SKIP() << "SWITCHYARD_TEST_MODEL not set";
    auto t = Tokenizer::Load(TinyModelDir());
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = std::move(*t);
  }

  // Streams `text` token by token; returns the deltas joined, and the token index that stopped.
  std::string Stream(const std::string& text, std::vector<std::string> stops, bool include,
                     int* stopped_at) {
    auto ids = tokenizer_->Encode(text, {.add_special_tokens = false});
    EXPECT_TRUE(ids.ok());
    OutputText out(*tokenizer_, true, std::move(stops), include);
    std::string joined;
    *stopped_at = -1;
    for (size_t i = 0; i < ids->size(); ++i) {
      if (out.Push((*ids)[i], &joined)) {
        *stopped_at = static_cast<int>(i);
        return joined;
      }
    }
    out.Finish(&joined);
    return joined;
  }

  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(OutputTextTest, DeltasJoinToTheWholeText) {
  int stopped;
  const std::string text = "Once upon a time, the river ran north. Ünïcödé too: 日本語!";
  EXPECT_EQ(Stream(text, {}, false, &stopped), text);
  EXPECT_EQ(stopped, -1);
}

TEST_F(OutputTextTest, StopStringsSpanningTokensEndTheText) {
  int stopped;
  const std::string text = "The answer is 42. END of story, more text follows.";
  EXPECT_EQ(Stream(text, {"END of", "never"}, false, &stopped), "The answer is 42. ");
  EXPECT_GE(stopped, 0);
  EXPECT_EQ(Stream(text, {"END of"}, true, &stopped), "The answer is 42. END of");
  // The earliest match wins, whichever stop string it is.
  EXPECT_EQ(Stream(text, {"story", "42"}, false, &stopped), "The answer is ");
}

TEST_F(OutputTextTest, TextThatCouldStartAStopStringIsHeldBackUntilItCannot) {
  auto ids = tokenizer_->Encode("alpha beta gamma", {.add_special_tokens = false});
  ASSERT_TRUE(ids.ok());
  OutputText out(*tokenizer_, true, {"gamma ray"}, false);
  std::string joined;
  for (int32_t id : *ids) ASSERT_FALSE(out.Push(id, &joined));
  EXPECT_EQ(joined.find("gamma"), std::string::npos);  // could still become "gamma ray"
  out.Finish(&joined);
  EXPECT_EQ(joined, "alpha beta gamma");
}

}  // namespace
}  // namespace switchyard

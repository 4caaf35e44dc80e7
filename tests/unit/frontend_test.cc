// Frontend helpers that read the model folder: generation_config.json of any shape is read or
// ignored, never a crash.
#include "server/frontend/frontend.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace switchyard {
namespace {

using ::testing::Contains;

TEST(ModelEosTokensTest, ReadsGenerationConfigAndIgnoresMalformedOnes) {
  auto tokenizer = Tokenizer::Load(TinyModelDir());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  TempDir dir;
  const auto with = [&](const std::string& text) {
    std::ofstream(dir.path() + "/generation_config.json") << text;
    return ModelEosTokens(dir.path(), **tokenizer);
  };
  EXPECT_THAT(with(R"({"eos_token_id": [5, 7]})"), Contains(7));
  EXPECT_THAT(with(R"({"eos_token_id": 9})"), Contains(9));
  for (const char* bad : {"[1, 2]", "3", "\"x\"", "null", "{\"eos_token_id\": \"a\"}", "{"}) {
    const std::vector<int32_t> ids = with(bad);  // must not throw
    EXPECT_EQ(ids.size(), tokenizer.value()->eos_id().has_value() ? 1u : 0u) << bad;
  }
}

}  // namespace
}  // namespace switchyard

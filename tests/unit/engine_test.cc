// The engine facade on the tiny test model: malformed steps are refused with a Status, never a
// crash, and the engine keeps working afterwards.
#include "engine/engine.h"

#include <fstream>

#include "engine/core/json_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace switchyard {
namespace {

using ::testing::HasSubstr;

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EngineOptions o;
    o.model_dir = TinyModelDir();
    o.max_batch_tokens = 64;
    o.max_batch_seqs = 4;
    o.kv_cache_bytes = 4 << 20;
    auto e = Engine::Create(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
  }
  std::unique_ptr<Engine> engine_;
  std::vector<int32_t> blocks_ = {0, 1};
};

TEST_F(EngineTest, RefusesMalformedSteps) {
  const auto error = [&](StepBatch b) {
    auto out = engine_->Step(b);
    EXPECT_FALSE(out.ok());
    return out.ok() ? std::string() : std::string(out.status().message());
  };
  StepBatch empty;
  EXPECT_THAT(error(empty), HasSubstr("no tokens"));
  EXPECT_THAT(error({{1, 5000}, {{0, 2, blocks_, true}}}), HasSubstr("outside the vocabulary"));
  EXPECT_THAT(error({{1, -1}, {{0, 2, blocks_, true}}}), HasSubstr("outside the vocabulary"));
  EXPECT_THAT(error({{1, 2}, {{31, 2, blocks_, true}}}), HasSubstr("block table covers"));
  std::vector<int32_t> bad = {0, 9999};
  EXPECT_THAT(error({{1, 2}, {{0, 2, bad, true}}}), HasSubstr("names KV block 9999"));
  EXPECT_THAT(error({{1, 2, 3}, {{0, 2, blocks_, true}}}), HasSubstr("cover 2 tokens"));
  EXPECT_THAT(error({std::vector<int32_t>(65, 1), {{0, 65, blocks_, true}}}),
              HasSubstr("max_batch_tokens"));
  // Still serves.
  auto ok = engine_->Step({{1, 2, 3}, {{0, 3, blocks_, true}}});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->logits.dim(0), 1);
  EXPECT_EQ(ok->logits.dim(1), engine_->config().vocab_size);
}

TEST(EngineOptionsTest, ParsesMatmulPrecisionAndNamesTheFlagWhenWrong) {
  EXPECT_EQ(*ParseMatmulPrecision("f32"), MatmulPrecision::kF32);
  EXPECT_EQ(*ParseMatmulPrecision("bf16"), MatmulPrecision::kBF16);
  EXPECT_EQ(*ParseMatmulPrecision("auto"), MatmulPrecision::kAuto);
  absl::StatusOr<MatmulPrecision> bad = ParseMatmulPrecision("fp8");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("--matmul_precision"));
}

TEST(EngineCreateTest, ReportsMissingModelFolder) {
  EngineOptions o;
  o.model_dir = "/nonexistent/model";
  auto e = Engine::Create(o);
  ASSERT_FALSE(e.ok());
  EXPECT_THAT(std::string(e.status().message()), HasSubstr("/nonexistent/model/config.json"));
}

TEST(EngineCreateTest, RefusesAMissingTensorByName) {
  TempDir dir;
  const std::string src = TinyModelDir();
  std::filesystem::copy(
      src, dir.path(),
      std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing);
  // Same config, but no layer 2 in the weights: claim one layer more than the file holds.
  auto text = ReadFile(dir.path() + "/config.json");
  ASSERT_TRUE(text.ok());
  nlohmann::json j = nlohmann::json::parse(*text);
  j["num_hidden_layers"] = j["num_hidden_layers"].get<int>() + 1;
  std::ofstream(dir.path() + "/config.json") << j.dump();
  EngineOptions o;
  o.model_dir = dir.path();
  auto e = Engine::Create(o);
  ASSERT_FALSE(e.ok());
  EXPECT_THAT(std::string(e.status().message()), HasSubstr("missing tensor \"model.layers."));
}

}  // namespace
}  // namespace switchyard

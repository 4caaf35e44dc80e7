#include "engine/model/config.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace switchyard {
namespace {

using ::testing::HasSubstr;

nlohmann::json Llama() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"vocab_size", 1000},
          {"hidden_size", 64},
          {"intermediate_size", 128},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"max_position_embeddings", 512},
          {"rms_norm_eps", 1e-5},
          {"eos_token_id", {1, 2}},
          {"bos_token_id", 0}};
}

std::string Error(const nlohmann::json& j) {
  auto c = ModelConfig::FromJson(j.dump());
  EXPECT_FALSE(c.ok());
  return c.ok() ? "" : std::string(c.status().message());
}

TEST(ModelConfigTest, ParsesLlama) {
  auto c = ModelConfig::FromJson(Llama().dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kLlama);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{1, 2}));
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_EQ(c->sliding_window, (std::vector<int>{0, 0}));
}

TEST(ModelConfigTest, Qwen2HasQkvBiasAndWindowsUpperLayers) {
  nlohmann::json j = Llama();
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["sliding_window"] = 32;
  j["use_sliding_window"] = true;
  j["max_window_layers"] = 1;
  auto c = ModelConfig::FromJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_FALSE(c->o_bias);
  EXPECT_EQ(c->sliding_window, (std::vector<int>{0, 32}));
}

TEST(ModelConfigTest, MistralWindowsEveryLayer) {
  nlohmann::json j = Llama();
  j["architectures"] = {"MistralForCausalLM"};
  j["sliding_window"] = 8;
  auto c = ModelConfig::FromJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, (std::vector<int>{8, 8}));
}

TEST(ModelConfigTest, RefusesWithTheKeyNamed) {
  nlohmann::json j = Llama();
  j["architectures"] = {"GPT2LMHeadModel"};
  EXPECT_THAT(Error(j), HasSubstr("architecture \"GPT2LMHeadModel\" is not supported"));
  j = Llama();
  j.erase("hidden_size");
  EXPECT_THAT(Error(j), HasSubstr("missing \"hidden_size\""));
  j = Llama();
  j["num_attention_heads"] = "four";
  EXPECT_THAT(Error(j), HasSubstr("\"num_attention_heads\" must be an integer"));
  j = Llama();
  j["num_key_value_heads"] = 3;
  EXPECT_THAT(Error(j), HasSubstr("multiple of num_key_value_heads"));
  j = Llama();  // found by model_config_fuzz: the RoPE table alone would need petabytes
  j["hidden_size"] = int64_t{888888888888864};
  EXPECT_THAT(Error(j), HasSubstr("hidden_size of 888888888888864 exceeds the supported"));
  j = Llama();
  j["head_dim"] = 1 << 20;
  EXPECT_THAT(Error(j), HasSubstr("head_dim must be positive, even and <= 4096"));
  j = Llama();
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  EXPECT_THAT(Error(j), HasSubstr("rope_scaling type \"yarn\" is not supported"));
  j = Llama();
  j["hidden_act"] = "swiglu2";
  EXPECT_THAT(Error(j), HasSubstr("hidden_act"));
  EXPECT_THAT(Error(nlohmann::json::array()), HasSubstr("not a JSON object"));
  auto bad = ModelConfig::FromJson("{\"architectures\": [");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("invalid JSON"));
}

TEST(ModelConfigTest, Llama3RopeScalingFollowsTransformers) {
  nlohmann::json j = Llama();
  j["rope_theta"] = 500000.0;
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 64}};
  auto c = ModelConfig::FromJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<float> inv = c->RopeInverseFrequencies();
  ASSERT_EQ(inv.size(), 8u);
  // High frequencies (short wavelengths) are kept; the lowest is divided by the factor.
  EXPECT_FLOAT_EQ(inv[0], 1.0f);
  const float base = 1.0f / std::pow(500000.0f, 14.0f / 16.0f);
  EXPECT_NEAR(inv[7], base / 8.0f, 1e-12);
}

}  // namespace
}  // namespace switchyard

#include "engine/sampling/sampler.h"

#include <cmath>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace switchyard {
namespace {

using ::testing::HasSubstr;

std::vector<float> Logits() { return {1.0f, 3.0f, 2.0f, 0.5f, 2.9f}; }

TEST(SamplingParamsTest, RefusesOutOfRangeValuesNamingTheField) {
  const auto error = [](auto mutate) {
    SamplingParams p;
    mutate(p);
    const absl::Status s = p.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    return std::string(s.message());
  };
  EXPECT_THAT(error([](auto& p) { p.temperature = -1; }), HasSubstr("temperature must be >= 0"));
  EXPECT_THAT(error([](auto& p) { p.temperature = NAN; }), HasSubstr("temperature"));
  EXPECT_THAT(error([](auto& p) { p.top_p = 0; }), HasSubstr("top_p must be in (0, 1]"));
  EXPECT_THAT(error([](auto& p) { p.top_p = 1.5f; }), HasSubstr("top_p"));
  EXPECT_THAT(error([](auto& p) { p.top_k = -2; }), HasSubstr("top_k"));
  EXPECT_THAT(error([](auto& p) { p.min_p = 2; }), HasSubstr("min_p"));
  EXPECT_THAT(error([](auto& p) { p.repetition_penalty = 0; }), HasSubstr("repetition_penalty"));
  EXPECT_THAT(error([](auto& p) { p.presence_penalty = 3; }), HasSubstr("presence_penalty"));
  EXPECT_THAT(error([](auto& p) { p.frequency_penalty = -3; }), HasSubstr("frequency_penalty"));
  EXPECT_THAT(error([](auto& p) { p.logprobs = 21; }), HasSubstr("logprobs"));
  EXPECT_THAT(error([](auto& p) {
                p.logit_bias = {{1, 101.0f}};
              }),
              HasSubstr("logit_bias must be in [-100, 100]"));
  EXPECT_THAT(error([](auto& p) { p.logit_bias = {{1, NAN}}; }), HasSubstr("logit_bias"));
  EXPECT_THAT(error([](auto& p) { p.logit_bias = {{-1, 1.0f}}; }), HasSubstr("token ids"));
  EXPECT_THAT(error([](auto& p) {
                p.logit_bias.assign(1025, {1, 1.0f});
              }),
              HasSubstr("at most 1024"));
  EXPECT_TRUE(SamplingParams().Validate().ok());
}

TEST(SamplerTest, LogitBiasShiftsTokensBeforeSampling) {
  SamplingParams p;
  p.temperature = 0;
  p.logit_bias = {{1, -100.0f}, {3, 2.0f}};  // ban the argmax; 0.5 + 2 = 2.5 < 2.9
  EXPECT_EQ(Sampler(p, {}, 0).Sample(Logits()).token, 4);
  p.logit_bias = {{0, 100.0f}, {99, 5.0f}};  // out-of-vocabulary ids are ignored here
  EXPECT_EQ(Sampler(p, {}, 0).Sample(Logits()).token, 0);
  // Sampled, a banned token never appears; log-probs stay those of the raw logits.
  SamplingParams q;
  q.logit_bias = {{1, -100.0f}, {2, -100.0f}, {4, -100.0f}};
  q.logprobs = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    q.seed = seed;
    const SampledToken t = Sampler(q, {}, 0).Sample(Logits());
    EXPECT_TRUE(t.token == 0 || t.token == 3) << t.token;
  }
}

TEST(SamplerTest, GreedyPicksTheArgmax) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p, {}, 0);
  EXPECT_EQ(s.Sample(Logits()).token, 1);
}

TEST(SamplerTest, TopKOneAndTinyTopPAreGreedy) {
  for (int i = 0; i < 20; ++i) {
    SamplingParams k1;
    k1.top_k = 1;
    k1.seed = i;
    EXPECT_EQ(Sampler(k1, {}, 0).Sample(Logits()).token, 1);
    SamplingParams p;
    p.top_p = 0.01f;
    p.seed = i;
    EXPECT_EQ(Sampler(p, {}, 0).Sample(Logits()).token, 1);
  }
}

TEST(SamplerTest, SameSeedSameTokensAndIndependentOfHistory) {
  SamplingParams p;
  p.seed = 42;
  Sampler a(p, {}, 0), b(p, {}, 0);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.Sample(Logits()).token, b.Sample(Logits()).token);
}

TEST(SamplerTest, FrequenciesFollowTheSoftmax) {
  SamplingParams p;
  p.temperature = 1.0f;
  std::map<int, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    p.seed = i;
    ++counts[Sampler(p, {}, 0).Sample(Logits()).token];
  }
  const std::vector<float> l = Logits();
  double z = 0;
  for (float v : l) z += std::exp(v);
  for (int t = 0; t < 5; ++t) {
    const double want = std::exp(l[t]) / z;
    EXPECT_NEAR(counts[t] / double(n), want, 0.015) << "token " << t;
  }
}

TEST(SamplerTest, TopPAndMinPCutTheTail) {
  // Probabilities of Logits(): token 1 (.36), 4 (.33), 2 (.13), 0 (.05), 3 (.03) roughly; top_p
  // 0.6 keeps {1, 4}; min_p 0.5 keeps tokens with p >= half the best: {1, 4}.
  for (auto set :
       {+[](SamplingParams& p) { p.top_p = 0.6f; }, +[](SamplingParams& p) { p.min_p = 0.5f; }}) {
    for (int i = 0; i < 200; ++i) {
      SamplingParams p;
      p.seed = i;
      set(p);
      const int t = Sampler(p, {}, 0).Sample(Logits()).token;
      EXPECT_TRUE(t == 1 || t == 4) << t;
    }
  }
}

TEST(SamplerTest, PenaltiesSteerAwayFromRepeats) {
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 10.0f;
  // Token 1 is in the prompt: divided by 10, so token 4 wins.
  EXPECT_EQ(Sampler(p, std::vector<int32_t>{1}, 0).Sample(Logits()).token, 4);
  SamplingParams f;
  f.temperature = 0;
  f.frequency_penalty = 2.0f;
  Sampler s(f, {}, 0);
  EXPECT_EQ(s.Sample(Logits()).token, 1);
  EXPECT_EQ(s.Sample(Logits()).token, 4);  // 3.0 - 2 < 2.9
}

TEST(SamplerTest, LogprobsAreTheRawLogSoftmax) {
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = 2;
  const SampledToken t = Sampler(p, {}, 0).Sample(Logits());
  double z = 0;
  for (float v : Logits()) z += std::exp(v);
  EXPECT_NEAR(t.logprob, 3.0 - std::log(z), 1e-5);
  ASSERT_EQ(t.top_logprobs.size(), 2u);
  EXPECT_EQ(t.top_logprobs[0].first, 1);
  EXPECT_EQ(t.top_logprobs[1].first, 4);
  EXPECT_NEAR(t.top_logprobs[1].second, 2.9 - std::log(z), 1e-5);
}

TEST(SamplerTest, TopPOverALargeVocabularyUsesTheWholeTail) {
  // A flat distribution over 50k tokens: top_p 0.9 needs far more than the 1024-token prefix.
  std::vector<float> flat(50000, 0.0f);
  SamplingParams p;
  p.top_p = 0.9f;
  std::map<bool, int> beyond_prefix;
  for (int i = 0; i < 300; ++i) {
    p.seed = i;
    beyond_prefix[Sampler(p, {}, 0).Sample(flat).token >= 1024]++;
  }
  EXPECT_GT(beyond_prefix[true], 250);
}

}  // namespace
}  // namespace switchyard

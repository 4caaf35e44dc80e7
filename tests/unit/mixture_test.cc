// Adapter mixtures in the engine (docs/adapters.md "Mixtures"): a mixture of one adapter at weight
// 1 is that adapter exactly, weight 0 is the base model exactly, a mixture's logits do not depend
// on what shares its batch, each member's routing is reported as its own, and malformed mixtures
// are refused with a Status.
#include <cmath>
#include <limits>
#include <map>

#include "engine/engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace switchyard {
namespace {

using ::testing::HasSubstr;

class MixtureTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    EngineOptions o;
    o.model_dir = TinyModelDir();
    o.kv_cache_bytes = 8 << 20;
    o.moe_lora.record_decisions = true;
    engine_ = std::move(*Engine::Create(o));
    const char* dir = std::getenv("SWITCHYARD_TEST_ADAPTERS");
    for (const char* name : {"mixlora", "loramoe", "mhmoe", "lora", "router"}) {
      auto a = engine_->LoadAdapter(std::string(dir != nullptr ? dir : "") + "/" + name);
      ASSERT_TRUE(a.ok()) << name << ": " << a.status();
      (*a)->name = name;
      adapters_[name] = std::move(*a);
    }
  }
  static void TearDownTestSuite() {
    adapters_.clear();
    engine_.reset();
  }
  static const AdapterWeights* A(const std::string& name) { return adapters_.at(name).get(); }

  // One prefill step of `prompt` per sequence (each with its own blocks): the last row's logits.
  struct Seq {
    const AdapterWeights* adapter = nullptr;
    std::vector<AdapterMember> mixture;
  };
  // Each sequence's logits (copied: a StepOutput's are valid until the next step) and the
  // step's routing.
  struct Result {
    std::vector<std::vector<float>> rows;
    RoutingStats routing;
  };
  absl::StatusOr<Result> Prefill(const std::vector<Seq>& seqs) {
    StepBatch batch;
    tables_.assign(seqs.size(), {});
    for (size_t i = 0; i < seqs.size(); ++i) {
      for (int b = 0; b < 2; ++b) tables_[i].push_back(static_cast<int32_t>(2 * i + b));
      batch.tokens.insert(batch.tokens.end(), prompt_.begin(), prompt_.end());
      StepSequence s;
      s.num_tokens = static_cast<int64_t>(prompt_.size());
      s.block_table = tables_[i];
      s.want_logits = true;
      s.adapter = seqs[i].adapter;
      s.mixture = seqs[i].mixture;
      s.record_routing = true;
      batch.sequences.push_back(s);
    }
    absl::StatusOr<StepOutput> out = engine_->Step(batch);
    if (!out.ok()) return out.status();
    Result r;
    for (int64_t i = 0; i < out->logits.dim(0); ++i) {
      const float* p = out->logits.data<float>() + i * out->logits.dim(1);
      r.rows.emplace_back(p, p + out->logits.dim(1));
    }
    r.routing = std::move(out->routing);
    return r;
  }
  static const std::vector<float>& Row(const Result& r, size_t i) { return r.rows[i]; }
  static float MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
    float m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
    return m;
  }

  static std::unique_ptr<Engine> engine_;
  static std::map<std::string, std::unique_ptr<AdapterWeights>> adapters_;
  std::vector<int32_t> prompt_ = {3, 17, 5, 90, 41, 7, 12};
  std::vector<std::vector<int32_t>> tables_;
};
std::unique_ptr<Engine> MixtureTest::engine_;
std::map<std::string, std::unique_ptr<AdapterWeights>> MixtureTest::adapters_;

TEST_F(MixtureTest, OneMemberAtWeightOneIsTheAdapterAndWeightZeroIsTheBase) {
  for (const char* name : {"mixlora", "loramoe", "mhmoe", "lora"}) {
    auto plain = Prefill({{A(name), {}}});
    auto one = Prefill({{nullptr, {{A(name), 1.0f}}}});
    auto zero = Prefill({{nullptr, {{A(name), 0.0f}}}});
    auto base = Prefill({{nullptr, {}}});
    ASSERT_TRUE(plain.ok() && one.ok() && zero.ok() && base.ok()) << name;
    EXPECT_EQ(Row(*one, 0), Row(*plain, 0)) << name;
    EXPECT_EQ(Row(*zero, 0), Row(*base, 0)) << name;
    EXPECT_GT(MaxDiff(Row(*plain, 0), Row(*base, 0)), 1e-3) << name << " moves nothing";
  }
}

TEST_F(MixtureTest, AMixtureIsNeitherMemberAndIgnoresItsBatch) {
  const std::vector<AdapterMember> mix = {{A("mixlora"), 0.5f}, {A("loramoe"), 0.5f}};
  auto alone = Prefill({{nullptr, mix}});
  ASSERT_TRUE(alone.ok()) << alone.status();
  auto a = Prefill({{A("mixlora"), {}}}), b = Prefill({{A("loramoe"), {}}});
  EXPECT_GT(MaxDiff(Row(*alone, 0), Row(*a, 0)), 1e-3);
  EXPECT_GT(MaxDiff(Row(*alone, 0), Row(*b, 0)), 1e-3);
  // Beside its members alone, the base, and another mixture sharing a member at another weight.
  const std::vector<AdapterMember> other = {
      {A("loramoe"), -0.25f}, {A("mhmoe"), 1.0f}, {A("mixlora"), 2.0f}};
  auto crowd = Prefill(
      {{A("mixlora"), {}}, {nullptr, other}, {nullptr, mix}, {nullptr, {}}, {A("loramoe"), {}}});
  ASSERT_TRUE(crowd.ok()) << crowd.status();
  EXPECT_LE(MaxDiff(Row(*crowd, 2), Row(*alone, 0)), 1e-5);
  EXPECT_LE(MaxDiff(Row(*crowd, 0), Row(*a, 0)), 1e-5);
  EXPECT_LE(MaxDiff(Row(*crowd, 4), Row(*b, 0)), 1e-5);
}

TEST_F(MixtureTest, EachMemberRoutesUnderItsOwnNameAndIndex) {
  const std::vector<AdapterMember> mix = {{A("loramoe"), 0.3f}, {A("mixlora"), 0.7f}};
  auto out = Prefill({{nullptr, mix}});
  ASSERT_TRUE(out.ok()) << out.status();
  std::map<std::string, int64_t> tokens;
  for (const AdapterRoutingStats& a : out->routing.adapters) {
    for (const SiteRoutingStats& s : a.sites) tokens[a.adapter] += s.tokens;
  }
  EXPECT_GT(tokens["loramoe"], 0);
  EXPECT_GT(tokens["mixlora"], 0);
  std::map<int, int> per_member;
  for (const RoutingDecision& d : out->routing.decisions) {
    ++per_member[d.member];
    // MixLoRA routes its FFN block (site 7); LoRAMoE its linear sites.
    EXPECT_EQ(d.site == kFfnBlockSite, d.member == 1) << "member " << int{d.member};
  }
  EXPECT_GT(per_member[0], 0);
  EXPECT_GT(per_member[1], 0);
}

// A router over adapters runs only the members it picks: per token and layer, members route
// (and compute) exactly where the router chose them; its statistics count members as experts.
TEST_F(MixtureTest, ARouterOverAdaptersRunsOnlyThePickedMembers) {
  auto routed = Prefill({{A("router"), {}}});
  auto base = Prefill({{nullptr, {}}});
  ASSERT_TRUE(routed.ok() && base.ok()) << routed.status();
  EXPECT_GT(MaxDiff(Row(*routed, 0), Row(*base, 0)), 1e-3);
  std::map<std::pair<int, int>, std::vector<int16_t>> picked;  // (token, layer) -> members
  for (const RoutingDecision& d : routed->routing.decisions) {
    if (d.gated_member < 0) {
      EXPECT_EQ(d.site, kFfnBlockSite);
      EXPECT_EQ(d.experts.size(), 2u);  // top-2 of 3
      picked[{d.token, d.layer}] = d.experts;
    }
  }
  EXPECT_EQ(picked.size(), prompt_.size() * 3);
  std::map<std::pair<int, int>, std::vector<int16_t>> ran;
  for (const RoutingDecision& d : routed->routing.decisions) {
    if (d.gated_member >= 0) ran[{d.token, d.layer}].push_back(d.gated_member);
  }
  EXPECT_EQ(ran, picked);
  ASSERT_EQ(routed->routing.adapters.size(), 1u);
  EXPECT_EQ(routed->routing.adapters[0].adapter, "router");
  for (const SiteRoutingStats& s : routed->routing.adapters[0].sites) {
    EXPECT_EQ(s.num_experts, 3);
    EXPECT_EQ(s.tokens, static_cast<int64_t>(prompt_.size()));
    EXPECT_EQ(s.experts_per_token[2], s.tokens);
  }
  // Beside other adapters and inside a request mixture, the same logits.
  auto crowd = Prefill({{A("mixlora"), {}},
                        {A("router"), {}},
                        {nullptr, {}},
                        {nullptr, {{A("router"), 0.5f}, {A("lora"), 0.5f}}}});
  ASSERT_TRUE(crowd.ok()) << crowd.status();
  EXPECT_LE(MaxDiff(Row(*crowd, 1), Row(*routed, 0)), 1e-5);
  auto half = Prefill({{nullptr, {{A("router"), 0.5f}, {A("lora"), 0.5f}}}});
  ASSERT_TRUE(half.ok());
  EXPECT_LE(MaxDiff(Row(*crowd, 3), Row(*half, 0)), 1e-5);
}

TEST_F(MixtureTest, RefusesMalformedMixtures) {
  const auto error = [&](Seq s) {
    auto out = Prefill({s});
    EXPECT_FALSE(out.ok());
    return out.ok() ? std::string() : std::string(out.status().message());
  };
  EXPECT_THAT(error({A("lora"), {{A("mixlora"), 1.0f}}}), HasSubstr("both an adapter and"));
  EXPECT_THAT(error({nullptr, {{A("lora"), std::numeric_limits<float>::infinity()}}}),
              HasSubstr("not finite"));
  EXPECT_THAT(error({nullptr, {{A("lora"), std::nanf("")}}}), HasSubstr("not finite"));
  EXPECT_THAT(error({nullptr, {{nullptr, 1.0f}}}), HasSubstr("no adapter"));
  EXPECT_THAT(
      error({nullptr, std::vector<AdapterMember>(kMaxMixtureMembers + 1, {A("lora"), 0.1f})}),
      HasSubstr("at most"));
  // Still serves.
  EXPECT_TRUE(Prefill({{nullptr, {{A("lora"), 0.5f}}}}).ok());
}

}  // namespace
}  // namespace switchyard

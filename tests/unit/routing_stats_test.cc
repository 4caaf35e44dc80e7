#include "engine/adapters/routing_stats.h"

#include <cmath>
#include <map>
#include <thread>

#include "engine/adapters/routing_window.h"
#include "gtest/gtest.h"

namespace switchyard {
namespace {

SiteRoutingStats Site(int layer, int site, int experts) {
  SiteRoutingStats s;
  s.layer = layer;
  s.site = site;
  s.num_experts = experts;
  return s.EmptyLike();
}

// `rows` rows that each select `expert` (weight 1) with the given full softmax.
void Route(SiteRoutingStats& s, int rows, int expert, const std::vector<double>& probs,
           double lse) {
  for (int r = 0; r < rows; ++r) {
    ++s.tokens;
    ++s.selections[expert];
    s.gate_sum[expert] += 1.0;
    double h = 0;
    for (int e = 0; e < s.num_experts; ++e) {
      s.prob_sum[e] += probs[e];
      if (probs[e] > 0) h -= probs[e] * std::log(probs[e]);
    }
    s.entropy_sum += h;
    s.z_sum += lse * lse;
    ++s.experts_per_token[1];
  }
}

TEST(RoutingHealthTest, BalancedRoutingScoresOne) {
  SiteRoutingStats s = Site(0, 7, 4);
  const std::vector<double> uniform(4, 0.25);
  for (int e = 0; e < 4; ++e) Route(s, 10, e, uniform, 2.0);
  const RoutingHealth h = ComputeRoutingHealth(s);
  EXPECT_EQ(h.tokens, 40);
  EXPECT_EQ(h.dead_experts, 0);
  EXPECT_NEAR(h.load_cv, 0.0, 1e-12);
  EXPECT_NEAR(h.balancedness, 1.0, 1e-12);
  EXPECT_NEAR(h.switch_aux_loss, 1.0, 1e-12);
  EXPECT_NEAR(h.importance_loss, 0.0, 1e-12);
  EXPECT_NEAR(h.router_entropy, 1.0, 1e-12);  // uniform softmax: log E / log E
  EXPECT_NEAR(h.z_loss, 4.0, 1e-12);
  EXPECT_NEAR(h.experts_per_token, 1.0, 1e-12);
  for (double f : h.load) EXPECT_NEAR(f, 0.25, 1e-12);
}

TEST(RoutingHealthTest, CollapsedRoutingIsFlagged) {
  SiteRoutingStats s = Site(3, 7, 4);
  Route(s, 30, 2, {0.0, 0.0, 1.0, 0.0}, 1.0);
  const RoutingHealth h = ComputeRoutingHealth(s);
  EXPECT_EQ(h.dead_experts, 3);
  EXPECT_NEAR(h.load_cv, std::sqrt(3.0), 1e-12);  // counts {0,0,30,0}: std 13, mean 7.5
  EXPECT_NEAR(h.balancedness, 0.25, 1e-12);
  EXPECT_NEAR(h.switch_aux_loss, 4.0, 1e-12);  // E * f_2 * P_2 = 4 * 1 * 1
  EXPECT_NEAR(h.router_entropy, 0.0, 1e-12);
}

TEST(RoutingHealthTest, DenseFamiliesCallAnExpertDeadByItsProbability) {
  SiteRoutingStats s = Site(0, 0, 3);
  s.dense = true;
  // Dense routing selects every expert; one of them gets almost no weight.
  for (int r = 0; r < 10; ++r) {
    ++s.tokens;
    const double p[] = {0.6, 0.3999, 0.0001};
    for (int e = 0; e < 3; ++e) {
      ++s.selections[e];
      s.gate_sum[e] += p[e];
      s.prob_sum[e] += p[e];
    }
    ++s.experts_per_token[3];
  }
  const RoutingHealth h = ComputeRoutingHealth(s);
  EXPECT_EQ(h.dead_experts, 1);
  EXPECT_NEAR(h.experts_per_token, 3.0, 1e-12);
  EXPECT_GT(h.importance_loss, 0.3);
}

TEST(RoutingHealthTest, NothingRoutedIsAllZero) {
  const RoutingHealth h = ComputeRoutingHealth(Site(0, 7, 8));
  EXPECT_EQ(h.tokens, 0);
  EXPECT_EQ(h.dead_experts, 0);
  EXPECT_EQ(h.load.size(), 8u);
}

RoutingStats Step(const std::string& adapter, uint64_t version, int rows, int expert) {
  RoutingStats step;
  AdapterRoutingStats a{adapter, version, {}};
  for (int layer = 1; layer >= 0; --layer) {  // out of order on purpose
    SiteRoutingStats s = Site(layer, 7, 4);
    Route(s, rows, expert, {0.25, 0.25, 0.25, 0.25}, 1.0);
    a.sites.push_back(std::move(s));
  }
  step.adapters.push_back(std::move(a));
  return step;
}

TEST(RoutingWindowTest, WindowSlidesWhileTotalsKeepEverything) {
  RoutingWindow window({.window_tokens = 100, .buckets = 4});
  for (int i = 0; i < 4; ++i) window.Add(Step("a", 1, 25, 0));  // 100 rows to expert 0
  std::optional<RoutingSnapshot> snap = window.Snapshot("a");
  ASSERT_TRUE(snap.has_value());
  ASSERT_EQ(snap->window.size(), 2u);
  EXPECT_EQ(snap->window[0].layer, 0);
  EXPECT_EQ(snap->window[1].layer, 1);
  EXPECT_TRUE(snap->window_full);
  EXPECT_EQ(snap->window[0].selections[0], 100);
  // 100 more rows to expert 3 push expert 0 out of the window, not out of the totals.
  for (int i = 0; i < 4; ++i) window.Add(Step("a", 1, 25, 3));
  snap = window.Snapshot("a");
  EXPECT_EQ(snap->window[0].selections[0], 0);
  EXPECT_EQ(snap->window[0].selections[3], 100);
  EXPECT_EQ(snap->window[0].tokens, 100);
  // Steps that do not divide the buckets keep the window between 3/4 of it and it plus a step.
  for (int i = 0; i < 50; ++i) {
    window.Add(Step("a", 1, 7, 1));
    const int64_t rows = window.Snapshot("a")->window[1].tokens;
    EXPECT_GE(rows, 75);
    EXPECT_LE(rows, 100 + 4 * 7);
  }
  EXPECT_EQ(snap->total[0].selections[0], 100);
  EXPECT_EQ(snap->total[0].selections[3], 100);
  EXPECT_EQ(ComputeRoutingHealth(snap->window[0]).dead_experts, 3);
}

TEST(RoutingWindowTest, ANewVersionStartsFreshAndOldStepsAreIgnored) {
  RoutingWindow window({.window_tokens = 1000, .buckets = 4});
  window.Add(Step("a", 1, 10, 0));
  EXPECT_FALSE(window.Snapshot("a")->window_full);
  window.Add(Step("a", 2, 5, 1));
  window.Add(Step("a", 1, 10, 0));  // a request still finishing on version 1
  const RoutingSnapshot snap = *window.Snapshot("a");
  EXPECT_EQ(snap.version, 2u);
  EXPECT_EQ(snap.total[0].tokens, 5);
  EXPECT_EQ(snap.total[0].selections[0], 0);
  window.Forget("a");
  EXPECT_FALSE(window.Snapshot("a").has_value());
  EXPECT_FALSE(window.Snapshot("never").has_value());
}

TEST(RoutingWindowTest, TheVersionBeforeASwapIsKeptForComparison) {
  RoutingWindow window({.window_tokens = 1000, .buckets = 4});
  window.Add(Step("a", 1, 10, 0));
  EXPECT_FALSE(window.PreviousSnapshot("a").has_value());
  window.Add(Step("a", 2, 5, 1));
  window.Add(Step("a", 1, 4, 2));  // a request still finishing on version 1: counted there
  std::optional<RoutingSnapshot> old = window.PreviousSnapshot("a");
  ASSERT_TRUE(old.has_value());
  EXPECT_EQ(old->version, 1u);
  EXPECT_EQ(old->total[0].tokens, 14);
  EXPECT_EQ(old->total[0].selections[0], 10);
  EXPECT_EQ(old->total[0].selections[2], 4);
  EXPECT_EQ(window.Snapshot("a")->total[0].tokens, 5);
  // Version 3 arrives: 2 becomes the previous one; 1 is gone, so its late steps are dropped.
  window.Add(Step("a", 3, 6, 3));
  window.Add(Step("a", 1, 9, 0));
  old = window.PreviousSnapshot("a");
  EXPECT_EQ(old->version, 2u);
  EXPECT_EQ(old->total[0].tokens, 5);
  EXPECT_EQ(window.Snapshot("a")->total[0].tokens, 6);
  window.Forget("a");
  EXPECT_FALSE(window.PreviousSnapshot("a").has_value());
}

TEST(RoutingWindowTest, ReadersAndTheEngineThreadRunConcurrently) {
  RoutingWindow window({.window_tokens = 64, .buckets = 8});
  std::thread writer([&] {
    for (int i = 0; i < 2000; ++i) window.Add(Step(i % 2 ? "a" : "b", 1, 3, i % 4));
  });
  std::map<std::string, int64_t> last_total;
  for (int i = 0; i < 2000; ++i) {
    for (const RoutingSnapshot& s : window.SnapshotAll()) {
      for (const SiteRoutingStats& w : s.window) {
        int64_t sum = 0;
        for (int64_t c : w.selections) sum += c;
        EXPECT_EQ(sum, w.tokens);         // a snapshot is never torn
        EXPECT_LE(w.tokens, 64 + 8 * 3);  // the window never holds more than it plus a step
      }
      int64_t total = 0;
      for (const SiteRoutingStats& t : s.total) total += t.tokens;
      EXPECT_GE(total, last_total[s.adapter]) << "totals never go backwards";
      last_total[s.adapter] = total;
    }
  }
  writer.join();
  EXPECT_EQ(window.Snapshot("a")->total[0].tokens, 3000);
}

}  // namespace
}  // namespace switchyard

// The CPU backend's MoE-LoRA ops against a scalar reference written here from the definitions
// (moe_ops.h, backend.h): every routing rule's selections and weights, the routing statistics,
// the stable segment sort, the segmented LoRA products and the combine back into each row, over
// the ragged, mixed scenario of moe_ops_scenario.h.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/backends/cpu/cpu_backend.h"
#include "gtest/gtest.h"
#include "tests/unit/moe_ops_scenario.h"

namespace switchyard {
namespace {

using testing::MoeRun;
using testing::MoeScenario;
using testing::ScenarioUnit;

struct Choice {
  int expert;
  double weight;
};

// The rule's selection, in the order the op writes its slots.
std::vector<Choice> Select(const RouterSpec& spec, const float* logits) {
  const int E = spec.num_experts;
  if (spec.routing == Routing::kSingle) return {{0, 1.0}};
  double mx = logits[0], sum = 0;
  for (int e = 1; e < E; ++e) mx = std::max<double>(mx, logits[e]);
  std::vector<double> p(E);
  for (int e = 0; e < E; ++e) sum += p[e] = std::exp(logits[e] - mx);
  for (double& v : p) v /= sum;
  std::vector<int> by(E);
  std::iota(by.begin(), by.end(), 0);
  std::stable_sort(by.begin(), by.end(), [&](int a, int b) { return p[a] > p[b]; });
  std::vector<Choice> out;
  switch (spec.routing) {
    case Routing::kDense:
      for (int e = 0; e < E; ++e) out.push_back({e, p[e]});
      break;
    case Routing::kSwitch:
      out.push_back({by[0], p[by[0]]});
      break;
    case Routing::kTopK:
    case Routing::kTopKRaw: {
      double total = 0;
      for (int i = 0; i < spec.top_k; ++i) total += p[by[i]];
      for (int i = 0; i < spec.top_k; ++i) {
        out.push_back({by[i], spec.routing == Routing::kTopK ? p[by[i]] / total : p[by[i]]});
      }
      break;
    }
    case Routing::kTopP: {
      double cum = 0;
      for (int i = 0; i < E; ++i) {
        const double w = spec.temperature > 0 ? p[by[i]] / spec.temperature : p[by[i]];
        out.push_back({by[i], w});
        cum += w;
        if (cum > spec.top_p) break;
      }
      break;
    }
    default:
      break;
  }
  return out;
}

class MoeOpsTest : public ::testing::TestWithParam<uint64_t> {};

TEST_P(MoeOpsTest, TheCpuChainMatchesAScalarReference) {
  const MoeScenario s = MoeScenario::Make(GetParam());
  std::unique_ptr<Backend> cpu = CreateCpuBackend({});
  const MoeRun run = testing::RunMoeChain(*cpu, s);

  Tensor want_y = testing::Copy(*cpu, s.y0);
  Tensor want_act = testing::Copy(*cpu, s.y0);
  std::vector<int> per_segment(s.segments, 0);
  for (size_t i = 0; i < s.units.size(); ++i) {
    const ScenarioUnit& u = s.units[i];
    const RouteUnit& r = s.route[i];
    const int E = u.spec.num_experts;
    const int64_t in = MoeScenario::kIn / u.heads, out = MoeScenario::kOut / u.heads;
    std::vector<double> record(static_cast<size_t>(RoutingRecordSize(E)), 0.0);
    for (int64_t row = 0; row < r.rows; ++row) {
      const std::vector<Choice> want =
          Select(u.spec, s.logits.data<float>() + (r.logits_row + row) * s.max_e);
      const int64_t slot0 = r.slot_off + row * r.slots;
      for (int j = 0; j < r.slots; ++j) {
        const int32_t got = run.expert[slot0 + j];
        if (j >= static_cast<int>(want.size())) {
          EXPECT_EQ(got, -1) << "unit " << i << " row " << row << " slot " << j;
          EXPECT_EQ(run.position[slot0 + j], -1);
          continue;
        }
        ASSERT_EQ(got, want[j].expert) << "unit " << i << " row " << row << " slot " << j;
        EXPECT_NEAR(run.weight[slot0 + j], want[j].weight, 1e-6) << "unit " << i;
        ++per_segment[r.seg_base + got];
        record[3 + 2 * E + got] += 1;
        record[3 + E + got] += want[j].weight;
      }
      record[0] += 1;
      record[3 + 3 * E + want.size()] += 1;
      // The row's LoRA, by ascending expert, into its destination (heads side by side).
      const float* xs = s.x.data<float>() + (u.x_off * u.heads + row) * in;
      const int64_t token = s.ints[s.combine[i].dst_rows_off + row / u.heads];
      float* dst = want_y.data<float>() + token * MoeScenario::kOut + (row % u.heads) * out;
      float* act = want_act.data<float>() + token * MoeScenario::kOut;
      if (u.heads == 1) {
        for (int64_t o = 0; o < out; ++o) act[o] *= testing::kActKeep;
      }
      for (const Choice& c : want) {
        const Tensor& A = u.a[c.expert];
        const Tensor& B = u.b[c.expert];
        for (int64_t o = 0; o < out; ++o) {
          double v = 0;
          for (int q = 0; q < u.rank; ++q) {
            double mid = 0;
            for (int64_t k = 0; k < in; ++k) mid += double{A.data<float>()[q * in + k]} * xs[k];
            v += double{B.data<float>()[o * u.rank + q]} * mid;
          }
          dst[o] += static_cast<float>(c.weight * v);
          if (u.heads == 1) act[o] += static_cast<float>(testing::kActScale * c.weight * v);
        }
      }
    }
    if (r.stats_off < 0) continue;
    const double* got = run.stats.data() + r.stats_off;
    EXPECT_EQ(got[0], record[0]) << "unit " << i << ": rows";
    for (int e = 0; e < E; ++e) {
      EXPECT_EQ(got[3 + 2 * E + e], record[3 + 2 * E + e]) << "unit " << i << " selections " << e;
      EXPECT_NEAR(got[3 + E + e], record[3 + E + e], 1e-5) << "unit " << i << " gate sum " << e;
    }
    for (int c = 0; c <= E; ++c) {
      EXPECT_EQ(got[3 + 3 * E + c], record[3 + 3 * E + c]) << "unit " << i << " histogram " << c;
    }
    double prob_total = 0;
    for (int e = 0; e < E; ++e) prob_total += got[3 + e];
    EXPECT_NEAR(prob_total, record[0], 1e-4) << "unit " << i << ": probabilities sum per row";
  }

  // The sort: segment sizes, stability (slots ascending within a segment), the inverse.
  for (int32_t g = 0; g < s.segments; ++g) {
    ASSERT_EQ(run.seg_start[g + 1] - run.seg_start[g], per_segment[g]) << "segment " << g;
    for (int32_t k = run.seg_start[g] + 1; k < run.seg_start[g + 1]; ++k) {
      EXPECT_LT(run.order[k - 1], run.order[k]) << "segment " << g << " is not stable";
    }
  }
  for (size_t k = 0; k < run.order.size(); ++k) EXPECT_EQ(run.position[run.order[k]], k);

  const auto near = [](const Tensor& want, const Tensor& got, double tol, const char* what) {
    for (int64_t i = 0; i < want.numel(); ++i) {
      ASSERT_NEAR(want.data<float>()[i], got.data<float>()[i], tol) << what << " at " << i;
    }
  };
  near(want_y, run.y, 1e-4, "y");
  near(want_act, run.act, 1e-4, "kept and weighted rows");

  // GatherSorted and the activations of each range.
  const int64_t half = MoeScenario::kIn / 2, F = MoeScenario::kIn / 4;
  for (size_t k = 0; k < run.order.size(); ++k) {
    const int32_t src = s.ints[s.slot_xrow_off + run.order[k]];
    for (int64_t c = 0; c < half; ++c) {
      ASSERT_EQ(run.gathered.data<float>()[k * half + c], s.x.data<float>()[src * half + c]);
    }
    const bool second = static_cast<int32_t>(k) >= run.seg_start[s.segments / 2];
    for (int64_t c = 0; c < F; ++c) {
      const double g = run.gathered.data<float>()[k * half + c];
      const double up = run.gathered.data<float>()[k * half + F + c];
      const double a =
          second ? 0.5 * g * (1 + std::tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)))
                 : g / (1 + std::exp(-g));
      EXPECT_NEAR(run.activated.data<float>()[k * F + c], a * up, 1e-5);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, MoeOpsTest, ::testing::Values(1, 2, 3, 4, 5, 6));

TEST(MoeOpsTest, ScatterAddRowsAddsEachRowIntoItsDestination) {
  std::unique_ptr<Backend> cpu = CreateCpuBackend({});
  std::mt19937_64 rng(7);
  Tensor x = MoeScenario::Random({3, 6}, rng, 1.0f);
  Tensor dst = MoeScenario::Random({5, 10}, rng, 1.0f);
  Tensor want = testing::Copy(*cpu, dst);
  std::vector<int32_t> rows = {4, 0, 2};
  Tensor r = Tensor::Wrap(rows.data(), DType::kI32, {3}, nullptr);
  cpu->ScatterAddRows(x, 4, r, 3, dst);
  for (int i = 0; i < 3; ++i) {
    for (int c = 0; c < 4; ++c)
      want.data<float>()[rows[i] * 10 + 3 + c] += x.data<float>()[i * 6 + c];
  }
  for (int64_t i = 0; i < want.numel(); ++i) EXPECT_EQ(want.data<float>()[i], dst.data<float>()[i]);
}

}  // namespace
}  // namespace switchyard

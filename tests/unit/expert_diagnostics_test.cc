#include "engine/adapters/expert_diagnostics.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace switchyard {
namespace {

Tensor Random(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  Tensor t = Tensor::Empty(DType::kF32, {rows, cols});
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal(rng);
  return t;
}

// The full delta B A, [out, in], in double.
std::vector<double> Delta(const HostLora& p) {
  const int64_t out = p.b.dim(0), in = p.a.dim(1), r = p.a.dim(0);
  std::vector<double> d(size_t(out * in), 0.0);
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t k = 0; k < r; ++k) {
      const double b = p.b.data<float>()[o * r + k];
      for (int64_t i = 0; i < in; ++i) d[o * in + i] += b * p.a.data<float>()[k * in + i];
    }
  }
  return d;
}

Tensor Copy(const Tensor& t) {
  Tensor c = Tensor::Empty(t.dtype(), t.shape());
  std::memcpy(c.raw(), t.raw(), t.nbytes());
  return c;
}

double Dot(const std::vector<double>& x, const std::vector<double>& y) {
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
  return s;
}

TEST(ExpertDiagnosticsTest, EigenvaluesOfAKnownMatrix) {
  // [[2, 1], [1, 2]]: eigenvalues 1 and 3.
  const std::vector<double> values = SymmetricEigenvalues({2, 1, 1, 2}, 2);
  ASSERT_EQ(values.size(), 2u);
  EXPECT_NEAR(values[0], 1.0, 1e-12);
  EXPECT_NEAR(values[1], 3.0, 1e-12);
}

TEST(ExpertDiagnosticsTest, SimilarityAndRankMatchTheFullDeltas) {
  std::mt19937 rng(7);
  const int64_t in = 24, out = 20;
  std::vector<HostLora> experts;
  for (int r : {4, 4, 3}) experts.push_back({Random(r, in, rng), Random(out, r, rng)});
  // Expert 3 is expert 0 scaled by -2 (cosine -1); expert 4 has rank 1 in a rank-4 pair.
  HostLora scaled{Copy(experts[0].a), Copy(experts[0].b)};
  for (int64_t i = 0; i < scaled.b.numel(); ++i) scaled.b.data<float>()[i] *= -2.0f;
  experts.push_back(scaled);
  HostLora rank_one{Random(4, in, rng), Random(out, 4, rng)};
  for (int64_t o = 0; o < out; ++o) {
    for (int k = 1; k < 4; ++k) rank_one.b.data<float>()[o * 4 + k] = 0.0f;
  }
  experts.push_back(rank_one);
  const Tensor router = Random(5, in, rng);

  const SiteDiagnostics d = DiagnoseSite(2, "up_proj", experts, router);
  ASSERT_EQ(d.experts, 5);
  EXPECT_EQ(d.layer, 2);
  EXPECT_EQ(d.rank, (std::vector<int>{4, 4, 3, 4, 4}));
  std::vector<std::vector<double>> full;
  for (const HostLora& p : experts) full.push_back(Delta(p));
  for (int i = 0; i < 5; ++i) {
    EXPECT_NEAR(d.norm[i], std::sqrt(Dot(full[i], full[i])), 1e-4 * d.norm[i]);
    for (int j = 0; j < 5; ++j) {
      const double cos =
          Dot(full[i], full[j]) / std::sqrt(Dot(full[i], full[i]) * Dot(full[j], full[j]));
      EXPECT_NEAR(d.Similarity(i, j), cos, 1e-5) << i << "," << j;
    }
  }
  EXPECT_NEAR(d.Similarity(0, 3), -1.0, 1e-6);
  EXPECT_NEAR(d.effective_rank[0], d.effective_rank[3], 1e-6);  // scaling keeps the spectrum shape
  EXPECT_NEAR(d.effective_rank[4], 1.0, 1e-6);
  // The singular values of the full delta: eigenvalues of dW dW^T (out x out).
  for (int e = 0; e < 3; ++e) {
    std::vector<double> gram(size_t(out * out));
    for (int64_t i = 0; i < out; ++i) {
      for (int64_t j = 0; j < out; ++j) {
        double s = 0;
        for (int64_t k = 0; k < in; ++k) s += full[e][i * in + k] * full[e][j * in + k];
        gram[i * out + j] = s;
      }
    }
    double total = 0, entropy = 0;
    std::vector<double> sigma;
    for (double v : SymmetricEigenvalues(gram, int(out)))
      sigma.push_back(std::sqrt(std::max(v, 0.0)));
    for (double s : sigma) total += s;
    for (double s : sigma) {
      if (s / total > 1e-12) entropy -= s / total * std::log(s / total);
    }
    EXPECT_NEAR(d.effective_rank[e], std::exp(entropy), 1e-4) << e;
    EXPECT_GT(d.effective_rank[e], 1.5);
    EXPECT_LE(d.effective_rank[e], d.rank[e] + 1e-9);
  }
  ASSERT_EQ(d.router_norm.size(), 5u);
  double row0 = 0;
  for (int64_t k = 0; k < in; ++k) row0 += std::pow(router.data<float>()[k], 2);
  EXPECT_NEAR(d.router_norm[0], std::sqrt(row0), 1e-9);
}

TEST(ExpertDiagnosticsTest, RedundantPairsAndSummary) {
  std::mt19937 rng(3);
  std::vector<HostLora> experts;
  for (int e = 0; e < 3; ++e) experts.push_back({Random(2, 16, rng), Random(8, 2, rng)});
  experts.push_back({Copy(experts[1].a), Copy(experts[1].b)});  // a duplicate of expert 1
  AdapterDiagnostics all;
  all.sites.push_back(DiagnoseSite(0, "ffn.gate_proj", experts, Tensor()));
  all.sites.push_back(
      DiagnoseSite(1, "q_proj", std::span<const HostLora>(experts).first(1), Tensor()));
  const std::vector<RedundantPair> pairs = all.RedundantPairs(0.95);
  ASSERT_EQ(pairs.size(), 1u);
  EXPECT_EQ(pairs[0].layer, 0);
  EXPECT_EQ(pairs[0].site, "ffn.gate_proj");
  EXPECT_EQ(pairs[0].first, 1);
  EXPECT_EQ(pairs[0].second, 3);
  EXPECT_NEAR(pairs[0].similarity, 1.0, 1e-6);
  EXPECT_TRUE(all.sites[0].router_norm.empty());
  const DiagnosticsSummary s = all.Summary();
  EXPECT_EQ(s.sites, 2);
  EXPECT_NEAR(s.max_similarity, 1.0, 1e-6);
  EXPECT_GT(s.min_effective_rank, 1.0);
  EXPECT_LE(s.min_effective_rank, s.mean_effective_rank);
  EXPECT_LE(s.mean_effective_rank, 2.0 + 1e-9);
}

TEST(ExpertDiagnosticsTest, AZeroDeltaHasNoSimilarityAndRankZero) {
  std::mt19937 rng(5);
  std::vector<HostLora> experts{{Random(2, 8, rng), Random(6, 2, rng)},
                                {Random(2, 8, rng), Tensor::Zeros(DType::kF32, {6, 2})}};
  const SiteDiagnostics d = DiagnoseSite(0, "v_proj", experts, Tensor());
  EXPECT_EQ(d.norm[1], 0.0);
  EXPECT_EQ(d.effective_rank[1], 0.0);
  EXPECT_EQ(d.Similarity(0, 1), 0.0);
  EXPECT_NEAR(d.Similarity(0, 0), 1.0, 1e-9);
}

TEST(ExpertDiagnosticsTest, ExtremeButFiniteWeightsEndWithoutHanging) {
  // The loader admits any finite value: products of 1e30 overflow to Inf and NaN, which must
  // leave figures that are not numbers, not a crash or an endless eigenvalue loop.
  std::vector<HostLora> experts{
      {Tensor::Empty(DType::kF32, {3, 8}), Tensor::Empty(DType::kF32, {6, 3})},
      {Tensor::Empty(DType::kF32, {3, 8}), Tensor::Empty(DType::kF32, {6, 3})}};
  for (HostLora& p : experts) {
    for (Tensor* t : {&p.a, &p.b}) {
      for (int64_t i = 0; i < t->numel(); ++i) t->data<float>()[i] = (i % 3 ? 1e30f : -3e38f);
    }
  }
  const SiteDiagnostics d = DiagnoseSite(0, "o_proj", experts, Tensor());
  EXPECT_EQ(d.experts, 2);
  AdapterDiagnostics all;
  all.sites.push_back(d);
  EXPECT_TRUE(all.RedundantPairs(0.9).size() <= 1);
  (void)all.Summary();
}

}  // namespace
}  // namespace switchyard

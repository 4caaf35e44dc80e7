#include "engine/adapters/routing_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/core/check.h"

namespace switchyard {
namespace {

// Population coefficient of variation; 0 for an all-zero or empty vector.
template <typename T>
double CoefficientOfVariation(const std::vector<T>& v) {
  if (v.empty()) return 0;
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  if (mean <= 0) return 0;
  double var = 0;
  for (const T& x : v) var += (static_cast<double>(x) - mean) * (static_cast<double>(x) - mean);
  return std::sqrt(var / static_cast<double>(v.size())) / mean;
}

}  // namespace

void SiteRoutingStats::Merge(const SiteRoutingStats& other) {
  SY_CHECK(other.num_experts == num_experts && other.layer == layer && other.site == site);
  tokens += other.tokens;
  for (int e = 0; e < num_experts; ++e) {
    selections[e] += other.selections[e];
    gate_sum[e] += other.gate_sum[e];
    prob_sum[e] += other.prob_sum[e];
  }
  entropy_sum += other.entropy_sum;
  z_sum += other.z_sum;
  for (size_t i = 0; i < experts_per_token.size(); ++i) {
    experts_per_token[i] += other.experts_per_token[i];
  }
}

SiteRoutingStats SiteRoutingStats::EmptyLike() const {
  SiteRoutingStats s;
  s.layer = layer;
  s.site = site;
  s.num_experts = num_experts;
  s.dense = dense;
  s.selections.assign(num_experts, 0);
  s.gate_sum.assign(num_experts, 0.0);
  s.prob_sum.assign(num_experts, 0.0);
  s.experts_per_token.assign(num_experts + 1, 0);
  return s;
}

RoutingHealth ComputeRoutingHealth(const SiteRoutingStats& s, double dead_probability) {
  RoutingHealth h;
  const int E = s.num_experts;
  h.tokens = s.tokens;
  h.load.assign(E, 0.0);
  h.mean_prob.assign(E, 0.0);
  h.mean_gate.assign(E, 0.0);
  if (s.tokens == 0 || E == 0) return h;
  const double rows = static_cast<double>(s.tokens);
  const int64_t total = std::accumulate(s.selections.begin(), s.selections.end(), int64_t{0});
  int64_t most = 0;
  for (int e = 0; e < E; ++e) {
    h.load[e] = total > 0 ? static_cast<double>(s.selections[e]) / static_cast<double>(total) : 0;
    h.mean_prob[e] = s.prob_sum[e] / rows;
    h.mean_gate[e] = s.gate_sum[e] / rows;
    h.switch_aux_loss += h.load[e] * h.mean_prob[e];
    most = std::max(most, s.selections[e]);
    const bool dead = s.dense ? h.mean_prob[e] < dead_probability : s.selections[e] == 0;
    if (dead) h.dead.push_back(e);
  }
  h.dead_experts = static_cast<int>(h.dead.size());
  h.switch_aux_loss *= E;
  h.load_cv = CoefficientOfVariation(s.selections);
  h.balancedness =
      most > 0 ? static_cast<double>(total) / static_cast<double>(E) / static_cast<double>(most)
               : 0;
  const double importance_cv = CoefficientOfVariation(s.gate_sum);
  h.importance_loss = importance_cv * importance_cv;
  h.router_entropy = E > 1 ? s.entropy_sum / rows / std::log(static_cast<double>(E)) : 0;
  h.z_loss = s.z_sum / rows;
  h.experts_per_token = static_cast<double>(total) / rows;
  return h;
}

}  // namespace switchyard

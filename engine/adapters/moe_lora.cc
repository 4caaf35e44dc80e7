#include "engine/adapters/moe_lora.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/core/check.h"

namespace switchyard {
namespace {

// y[0, n) += w * x[0, n)
inline void Axpy(float w, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += w * x[i];
}

Tensor HostView(float* p, int64_t rows, int64_t cols) {
  return Tensor::Wrap(p, DType::kF32, {rows, cols}, nullptr);
}

}  // namespace

MoeLoraExecutor::MoeLoraExecutor(Backend& backend, const ModelConfig& model,
                                 const ModelWeights& weights, MoeLoraOptions options)
    : backend_(backend), model_(model), weights_(weights), options_(options) {}

float* MoeLoraExecutor::Scratch(std::vector<float>& buf, size_t n) {
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

bool MoeLoraExecutor::BeginStep(std::span<const AdapterWeights* const> adapter_of_token,
                                std::span<const uint8_t> decisions_of_token, RoutingStats* stats) {
  groups_.clear();
  stats_ = options_.record_stats ? stats : nullptr;
  decisions_of_token_ = decisions_of_token;
  const bool any_decisions = options_.record_decisions ||
                             std::find(decisions_of_token.begin(), decisions_of_token.end(), 1) !=
                                 decisions_of_token.end();
  decisions_ = any_decisions ? stats : nullptr;
  if (decisions_ != nullptr) decisions_->decisions.clear();
  if (stats_ != nullptr) stats_->adapters.clear();
  for (int32_t t = 0; t < static_cast<int32_t>(adapter_of_token.size()); ++t) {
    const AdapterWeights* a = adapter_of_token[t];
    if (a == nullptr) continue;
    auto it = std::find_if(groups_.begin(), groups_.end(),
                           [&](const Group& g) { return g.adapter == a; });
    if (it == groups_.end()) {
      groups_.push_back({a, {}, -1});
      it = groups_.end() - 1;
      if (stats_ != nullptr) {
        it->stats_index = static_cast<int>(stats_->adapters.size());
        stats_->adapters.push_back({a->name, a->version, {}});
      }
    }
    it->tokens.push_back(t);
  }
  return !groups_.empty();
}

SiteRoutingStats* MoeLoraExecutor::StatsFor(int group, int layer, int site,
                                            const RouterSpec& spec) {
  if (stats_ == nullptr || groups_[group].stats_index < 0) return nullptr;
  auto& sites = stats_->adapters[groups_[group].stats_index].sites;
  for (SiteRoutingStats& s : sites) {
    if (s.layer == layer && s.site == site) return &s;
  }
  SiteRoutingStats shape;
  shape.layer = layer;
  shape.site = site;
  shape.num_experts = spec.num_experts;
  shape.dense = spec.routing == Routing::kDense;
  sites.push_back(shape.EmptyLike());
  return &sites.back();
}

void MoeLoraExecutor::Route(const RouterSpec& spec, int group, const float* logits, int64_t ld,
                            int64_t rows, int heads, int layer, int site, SiteRoutingStats* stats) {
  const int E = spec.num_experts;
  probs_.resize(E);
  const std::vector<int32_t>& tokens = groups_[group].tokens;
  for (int64_t r = 0; r < rows; ++r) {
    const float* l = logits + r * ld;
    // Softmax in F32, as the reference does.
    float mx = l[0];
    for (int e = 1; e < E; ++e) mx = std::max(mx, l[e]);
    float sum = 0.0f;
    for (int e = 0; e < E; ++e) {
      probs_[e] = std::exp(l[e] - mx);
      sum += probs_[e];
    }
    for (int e = 0; e < E; ++e) probs_[e] /= sum;
    const int32_t token = tokens[r / heads];
    const size_t first = assign_.size();
    const auto push = [&](int e, float w) {
      assign_.push_back({group, e, static_cast<int32_t>(r), token, w});
    };
    switch (spec.routing) {
      case Routing::kSingle:
        push(0, 1.0f);
        break;
      case Routing::kDense:
        for (int e = 0; e < E; ++e) push(e, probs_[e]);
        break;
      case Routing::kSwitch: {
        int best = 0;
        for (int e = 1; e < E; ++e) {
          if (probs_[e] > probs_[best]) best = e;
        }
        push(best, probs_[best]);
        break;
      }
      case Routing::kTopK:
      case Routing::kTopKRaw: {
        sorted_.clear();
        for (int e = 0; e < E; ++e) sorted_.emplace_back(probs_[e], e);
        const int k = std::min(spec.top_k, E);
        std::partial_sort(sorted_.begin(), sorted_.begin() + k, sorted_.end(),
                          [](const auto& a, const auto& b) {
                            return a.first > b.first || (a.first == b.first && a.second < b.second);
                          });
        float total = 0.0f;
        for (int i = 0; i < k; ++i) total += sorted_[i].first;
        for (int i = 0; i < k; ++i) {
          push(sorted_[i].second,
               spec.routing == Routing::kTopK ? sorted_[i].first / total : sorted_[i].first);
        }
        break;
      }
      case Routing::kTopP: {
        // MoE-PEFT's _dynamic_top_p: a positive temperature divides the probabilities, and the
        // divided values are the weights; keep the sorted prefix up to the first cumulative sum
        // above top_p (all of them when none is).
        sorted_.clear();
        for (int e = 0; e < E; ++e) {
          sorted_.emplace_back(spec.temperature > 0 ? probs_[e] / spec.temperature : probs_[e], e);
        }
        std::stable_sort(sorted_.begin(), sorted_.end(),
                         [](const auto& a, const auto& b) { return a.first > b.first; });
        float cum = 0.0f;
        int keep = E;
        for (int i = 0; i < E; ++i) {
          cum += sorted_[i].first;
          if (cum > spec.top_p) {
            keep = i + 1;
            break;
          }
        }
        for (int i = 0; i < keep; ++i) push(sorted_[i].second, sorted_[i].first);
        break;
      }
    }
    if (decisions_ != nullptr && spec.routing != Routing::kSingle &&
        (options_.record_decisions || decisions_of_token_[token] != 0)) {
      RoutingDecision d{token,
                        static_cast<int16_t>(layer),
                        static_cast<int8_t>(site),
                        static_cast<int16_t>(r % heads),
                        {}};
      for (size_t i = first; i < assign_.size(); ++i)
        d.experts.push_back(static_cast<int16_t>(assign_[i].expert));
      std::sort(d.experts.begin(), d.experts.end());
      decisions_->decisions.push_back(std::move(d));
    }
    if (stats != nullptr) {
      ++stats->tokens;
      double entropy = 0;
      for (int e = 0; e < E; ++e) {
        stats->prob_sum[e] += probs_[e];
        if (probs_[e] > 0) entropy -= probs_[e] * std::log(static_cast<double>(probs_[e]));
      }
      stats->entropy_sum += entropy;
      const double lse = mx + std::log(static_cast<double>(sum));
      stats->z_sum += lse * lse;
      for (size_t i = first; i < assign_.size(); ++i) {
        ++stats->selections[assign_[i].expert];
        stats->gate_sum[assign_[i].expert] += assign_[i].weight;
      }
      ++stats->experts_per_token[assign_.size() - first];
    }
  }
}

void MoeLoraExecutor::SortAssignments() {
  order_.resize(assign_.size());
  for (size_t i = 0; i < order_.size(); ++i) order_[i] = static_cast<int32_t>(i);
  std::stable_sort(order_.begin(), order_.end(), [&](int32_t a, int32_t b) {
    const Assignment& x = assign_[a];
    const Assignment& y = assign_[b];
    return x.group != y.group ? x.group < y.group : x.expert < y.expert;
  });
  // Segments [k0, k1) of one (group, expert).
  segments_.clear();
  const int64_t A = static_cast<int64_t>(order_.size());
  for (int64_t k0 = 0; k0 < A;) {
    const Assignment& first = assign_[order_[k0]];
    int64_t k1 = k0 + 1;
    while (k1 < A && assign_[order_[k1]].group == first.group &&
           assign_[order_[k1]].expert == first.expert) {
      ++k1;
    }
    segments_.emplace_back(k0, k1);
    k0 = k1;
  }
}

void MoeLoraExecutor::AfterLinear(int layer, Linear which, const Tensor& x, Tensor& y) {
  const int64_t d = model_.hidden_size, q = model_.num_heads * model_.head_dim;
  const int64_t kv = model_.num_kv_heads * model_.head_dim, F = model_.intermediate_size;
  switch (which) {
    case Linear::kQkv: {
      const SiteOutput s[] = {
          {LinearSite::kQ, 0, q}, {LinearSite::kK, q, kv}, {LinearSite::kV, q + kv, kv}};
      RunSites(layer, s, x, y);
      return;
    }
    case Linear::kO: {
      const SiteOutput s[] = {{LinearSite::kO, 0, d}};
      RunSites(layer, s, x, y);
      return;
    }
    case Linear::kGateUp: {
      const SiteOutput s[] = {{LinearSite::kGate, 0, F}, {LinearSite::kUp, F, F}};
      RunSites(layer, s, x, y);
      return;
    }
    case Linear::kDown: {
      const SiteOutput s[] = {{LinearSite::kDown, 0, d}};
      RunSites(layer, s, x, y);
      // MixLoRA's rank-r down corrections, per token in expert order.
      const int64_t ld = y.dim(1);
      const int64_t n = static_cast<int64_t>(mix_tokens_.size());
      const Tensor& bias = weights_.layers[layer].down_bias;
#pragma omp parallel for schedule(static) if (n > 8)
      for (int64_t i = 0; i < n; ++i) {
        float* row = y.data<float>() + static_cast<int64_t>(mix_tokens_[i]) * ld;
        float weight_sum = 0.0f;
        for (int32_t j = mix_row_start_[i]; j < mix_row_start_[i + 1]; ++j) {
          const int32_t k = mix_row_assign_[j];  // sorted position
          weight_sum += mix_assign_[k].weight;
          Axpy(mix_assign_[k].weight, down_delta_.data() + static_cast<int64_t>(k) * d, row, d);
        }
        // Each expert's FFN carries the down bias: sum_e w_e b, and the base added b once.
        if (bias.defined() && options_.down_projection_once) {
          Axpy(weight_sum - 1.0f, bias.data<float>(), row, d);
        }
      }
      mix_tokens_.clear();
      return;
    }
  }
}

void MoeLoraExecutor::RunSites(int layer, std::span<const SiteOutput> sites, const Tensor& x,
                               Tensor& y) {
  std::vector<Unit>& units = units_;
  units.clear();
  std::vector<int64_t>& group_x_off = group_off_;
  group_x_off.assign(groups_.size(), -1);
  int64_t rows = 0, sub_rows = 0;
  for (const SiteOutput& so : sites) {
    for (int g = 0; g < static_cast<int>(groups_.size()); ++g) {
      const RoutedLora* lora =
          groups_[g].adapter->layers[layer].sites[static_cast<int>(so.site)].get();
      if (lora == nullptr) continue;
      const int64_t n = static_cast<int64_t>(groups_[g].tokens.size());
      if (group_x_off[g] < 0 || lora->head.rank > 0) {
        // A head projection changes the rows: such a unit gets rows of its own.
        group_x_off[g] = rows;
        units.push_back({g, lora, so.col, so.out, rows, sub_rows});
        rows += n;
      } else {
        units.push_back({g, lora, so.col, so.out, group_x_off[g], sub_rows});
      }
      sub_rows += n * lora->heads;
    }
  }
  if (units.empty()) return;
  const int64_t in = x.dim(1), ldy = y.dim(1);

  // Stage 0: the input rows of each group (MH-MoE: plus the head projection).
  float* xg = Scratch(xg_, static_cast<size_t>(rows * in));
  for (size_t u = 0; u < units.size(); ++u) {
    const Unit& un = units[u];
    if (u > 0 && std::any_of(units.begin(), units.begin() + u,
                             [&](const Unit& o) { return o.x_off == un.x_off; })) {
      continue;  // rows already gathered
    }
    const auto& tokens = groups_[un.group].tokens;
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::memcpy(xg + (un.x_off + static_cast<int64_t>(i)) * in,
                  x.data<float>() + static_cast<int64_t>(tokens[i]) * in, in * sizeof(float));
    }
  }
  int max_head = 0, max_merge = 0, max_e = 1, rmax = 1;
  int64_t omax = 1, max_out = 1;
  for (const Unit& u : units) {
    max_head = std::max(max_head, u.lora->head.rank);
    max_merge = std::max(max_merge, u.lora->merge.rank);
    max_e = std::max(max_e, u.lora->spec.num_experts);
    max_out = std::max(max_out, u.out);
    for (const LoraPair& e : u.lora->experts) {
      rmax = std::max(rmax, e.rank);
      omax = std::max<int64_t>(omax, e.b.rows);
    }
  }
  const auto unit_rows = [&](const Unit& u) {
    return static_cast<int64_t>(groups_[u.group].tokens.size());
  };
  if (max_head > 0) {
    float* h = Scratch(head_, static_cast<size_t>(rows * max_head));
    jobs_.clear();
    for (const Unit& u : units) {
      if (u.lora->head.rank == 0) continue;
      jobs_.push_back({&u.lora->head.a, xg + u.x_off * in, in, unit_rows(u), h + u.x_off * max_head,
                       max_head, false});
    }
    backend_.GroupedLinear(jobs_);
    jobs_.clear();
    for (const Unit& u : units) {
      if (u.lora->head.rank == 0) continue;
      jobs_.push_back({&u.lora->head.b, h + u.x_off * max_head, max_head, unit_rows(u),
                       xg + u.x_off * in, in, true});
    }
    backend_.GroupedLinear(jobs_);
  }

  // Stage 1: routers, on each routed row (an input row, or one of its heads).
  float* logits = Scratch(logits_, static_cast<size_t>(sub_rows * max_e));
  jobs_.clear();
  for (const Unit& u : units) {
    if (u.lora->spec.routing == Routing::kSingle) continue;
    jobs_.push_back({&u.lora->router, xg + u.x_off * in, in / u.lora->heads,
                     unit_rows(u) * u.lora->heads, logits + u.sub_off * max_e, max_e, false});
  }
  if (!jobs_.empty()) backend_.GroupedLinear(jobs_);

  // Stage 2: selection. Assignment::group holds the unit here.
  assign_.clear();
  for (int ui = 0; ui < static_cast<int>(units.size()); ++ui) {
    const Unit& u = units[ui];
    const int site = static_cast<int>(sites[0].site);
    int s = site;
    for (const SiteOutput& so : sites) {
      if (so.col == u.col) s = static_cast<int>(so.site);
    }
    SiteRoutingStats* st = u.lora->spec.routing == Routing::kSingle
                               ? nullptr
                               : StatsFor(u.group, layer, s, u.lora->spec);
    const size_t first = assign_.size();
    Route(u.lora->spec, u.group, logits + u.sub_off * max_e, max_e, unit_rows(u) * u.lora->heads,
          u.lora->heads, layer, s, st);
    for (size_t i = first; i < assign_.size(); ++i) assign_[i].group = ui;
  }
  SortAssignments();
  const int64_t A = static_cast<int64_t>(assign_.size());

  // Stage 3: shrink, per (unit, expert) segment; HydraLoRA's shared A once per row.
  float* shrink = Scratch(shrink_, static_cast<size_t>(A * rmax));
  float* hydra = Scratch(shrink2_, static_cast<size_t>(sub_rows * rmax));
  x_rows_.resize(static_cast<size_t>(A));
  jobs_.clear();
  for (const Unit& u : units) {
    if (!u.lora->shared_a) continue;
    jobs_.push_back({&u.lora->experts[0].a, xg + u.x_off * in, in / u.lora->heads,
                     unit_rows(u) * u.lora->heads, hydra + u.sub_off * rmax, rmax, false});
  }
  const std::vector<std::pair<int64_t, int64_t>>& segments = segments_;
  for (const auto& [k0, k1] : segments) {
    const Assignment& first = assign_[order_[k0]];
    const Unit& u = units[first.group];
    if (!u.lora->shared_a) {
      // Rows of xg seen as [.., in / heads]: the unit's sub-rows start at x_off * heads.
      for (int64_t k = k0; k < k1; ++k) {
        x_rows_[k] = static_cast<int32_t>(u.x_off * u.lora->heads + assign_[order_[k]].row);
      }
      jobs_.push_back({&u.lora->experts[first.expert].a, xg, in / u.lora->heads, k1 - k0,
                       shrink + k0 * rmax, rmax, false, x_rows_.data() + k0});
    }
  }
  backend_.GroupedLinear(jobs_);
  for (int64_t k = 0; k < A; ++k) {
    const Assignment& as = assign_[order_[k]];
    const Unit& u = units[as.group];
    if (!u.lora->shared_a) continue;
    std::memcpy(shrink + k * rmax, hydra + (u.sub_off + as.row) * rmax,
                u.lora->experts[0].rank * sizeof(float));
  }

  // Stage 4: expand.
  float* expand = Scratch(expand_, static_cast<size_t>(A * omax));
  jobs_.clear();
  for (const auto& [k0, k1] : segments) {
    const Assignment& first = assign_[order_[k0]];
    jobs_.push_back({&units[first.group].lora->experts[first.expert].b, shrink + k0 * rmax, rmax,
                     k1 - k0, expand + k0 * omax, omax, false});
  }
  backend_.GroupedLinear(jobs_);

  // Stage 5: reduce per routed row, in expert order (CSR over sorted positions).
  row_start_.assign(static_cast<size_t>(sub_rows) + 1, 0);
  for (int64_t k = 0; k < A; ++k) {
    const Assignment& as = assign_[order_[k]];
    ++row_start_[units[as.group].sub_off + as.row + 1];
  }
  for (int64_t r = 0; r < sub_rows; ++r) row_start_[r + 1] += row_start_[r];
  row_assign_.resize(static_cast<size_t>(A));
  row_fill_.assign(row_start_.begin(), row_start_.end() - 1);
  for (int64_t k = 0; k < A; ++k) {
    const Assignment& as = assign_[order_[k]];
    row_assign_[row_fill_[units[as.group].sub_off + as.row]++] = static_cast<int32_t>(k);
  }
  // MH-MoE with a merge projection gathers the heads of a token first.
  float* merged = nullptr;
  std::vector<int64_t>& merge_off = merge_off_;
  merge_off.assign(units.size(), -1);
  if (max_merge > 0) {
    int64_t m = 0;
    for (size_t u = 0; u < units.size(); ++u) {
      if (units[u].lora->merge.rank == 0) continue;
      merge_off[u] = m;
      m += unit_rows(units[u]);
    }
    merged = Scratch(merge_, static_cast<size_t>(m * max_out));
    std::memset(merged, 0, m * max_out * sizeof(float));
  }
#pragma omp parallel for schedule(static) if (sub_rows > 64)
  for (int64_t r = 0; r < sub_rows; ++r) {
    if (row_start_[r] == row_start_[r + 1]) continue;
    const Assignment& as0 = assign_[order_[row_assign_[row_start_[r]]]];
    const Unit& u = units[as0.group];
    const int64_t oh = u.out / u.lora->heads;
    const int j = as0.row % u.lora->heads;
    float* dst = u.lora->merge.rank > 0
                     ? merged + (merge_off[as0.group] + as0.row / u.lora->heads) * max_out + j * oh
                     : y.data<float>() + static_cast<int64_t>(as0.token) * ldy + u.col + j * oh;
    for (int32_t i = row_start_[r]; i < row_start_[r + 1]; ++i) {
      const int32_t k = row_assign_[i];
      Axpy(assign_[order_[k]].weight, expand + static_cast<int64_t>(k) * omax, dst, oh);
    }
  }
  if (max_merge > 0) {
    float* mm = Scratch(head_, static_cast<size_t>(rows * std::max(max_merge, 1) + 1));
    jobs_.clear();
    for (size_t u = 0; u < units.size(); ++u) {
      if (merge_off[u] < 0) continue;
      jobs_.push_back({&units[u].lora->merge.a, merged + merge_off[u] * max_out, max_out,
                       unit_rows(units[u]), mm + merge_off[u] * max_merge, max_merge, false});
    }
    backend_.GroupedLinear(jobs_);
    jobs_.clear();
    for (size_t u = 0; u < units.size(); ++u) {
      if (merge_off[u] < 0) continue;
      jobs_.push_back({&units[u].lora->merge.b, mm + merge_off[u] * max_merge, max_merge,
                       unit_rows(units[u]), merged + merge_off[u] * max_out, max_out, true});
    }
    backend_.GroupedLinear(jobs_);
    for (size_t u = 0; u < units.size(); ++u) {
      if (merge_off[u] < 0) continue;
      const auto& tokens = groups_[units[u].group].tokens;
      for (size_t i = 0; i < tokens.size(); ++i) {
        Axpy(1.0f, merged + (merge_off[u] + static_cast<int64_t>(i)) * max_out,
             y.data<float>() + static_cast<int64_t>(tokens[i]) * ldy + units[u].col, units[u].out);
      }
    }
  }
}

void MoeLoraExecutor::BeforeDown(int layer, const Tensor& x, const Tensor& gate_up, Tensor& act) {
  mix_tokens_.clear();
  std::vector<MixActive>& active = mix_active_;
  active.clear();
  int64_t rows = 0;
  int max_e = 1;
  for (int g = 0; g < static_cast<int>(groups_.size()); ++g) {
    const MixLoraBlock* block = groups_[g].adapter->layers[layer].ffn.get();
    if (block == nullptr) continue;
    active.push_back({g, block, rows});
    rows += static_cast<int64_t>(groups_[g].tokens.size());
    max_e = std::max(max_e, block->spec.num_experts);
  }
  if (active.empty()) return;
  const int64_t d = model_.hidden_size, F = model_.intermediate_size;
  const int64_t ldgu = gate_up.dim(1);

  // Router on the FFN input.
  float* xg = Scratch(xg_, static_cast<size_t>(rows * d));
  for (const MixActive& a : active) {
    const auto& tokens = groups_[a.group].tokens;
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::memcpy(xg + (a.x_off + static_cast<int64_t>(i)) * d,
                  x.data<float>() + static_cast<int64_t>(tokens[i]) * d, d * sizeof(float));
    }
  }
  float* logits = Scratch(logits_, static_cast<size_t>(rows * max_e));
  jobs_.clear();
  for (const MixActive& a : active) {
    jobs_.push_back({&a.block->router, xg + a.x_off * d, d,
                     static_cast<int64_t>(groups_[a.group].tokens.size()), logits + a.x_off * max_e,
                     max_e, false});
  }
  backend_.GroupedLinear(jobs_);
  assign_.clear();
  std::vector<const MixLoraBlock*>& block_of = block_of_;
  block_of.assign(groups_.size(), nullptr);
  std::vector<int64_t>& x_off = group_off_;
  x_off.assign(groups_.size(), 0);
  for (const MixActive& a : active) {
    block_of[a.group] = a.block;
    x_off[a.group] = a.x_off;
    Route(a.block->spec, a.group, logits + a.x_off * max_e, max_e,
          static_cast<int64_t>(groups_[a.group].tokens.size()), 1, layer, kFfnBlockSite,
          StatsFor(a.group, layer, kFfnBlockSite, a.block->spec));
  }
  SortAssignments();
  const int64_t A = static_cast<int64_t>(assign_.size());

  // Per (token, expert), in segment order: its row of x, and a copy of the base gate/up row that
  // the expert's corrections then add to.
  x_rows_.resize(static_cast<size_t>(A));
  float* gu = Scratch(gu_, static_cast<size_t>(A * 2 * F));
#pragma omp parallel for schedule(static) if (A > 64)
  for (int64_t k = 0; k < A; ++k) {
    const Assignment& as = assign_[order_[k]];
    x_rows_[k] = static_cast<int32_t>(x_off[as.group] + as.row);
    std::memcpy(gu + k * 2 * F, gate_up.data<float>() + static_cast<int64_t>(as.token) * ldgu,
                2 * F * sizeof(float));
  }
  int rmax = 1;
  for (const MixActive& a : active) {
    for (const MixLoraExpert& e : a.block->experts) {
      for (const LoraPair& p : e.lora) rmax = std::max(rmax, p.rank);
    }
  }
  float* sg = Scratch(shrink_, static_cast<size_t>(A * rmax));
  float* su = Scratch(shrink2_, static_cast<size_t>(A * rmax));
  const std::vector<std::pair<int64_t, int64_t>>& segments = segments_;
  const auto expert_of = [&](int64_t k) -> const MixLoraExpert& {
    const Assignment& as = assign_[order_[k]];
    return block_of[as.group]->experts[as.expert];
  };
  jobs_.clear();
  for (const auto& [k0, k1] : segments) {
    const MixLoraExpert& e = expert_of(k0);
    if (e.lora[0].rank > 0) {
      jobs_.push_back(
          {&e.lora[0].a, xg, d, k1 - k0, sg + k0 * rmax, rmax, false, x_rows_.data() + k0});
    }
    if (e.lora[1].rank > 0) {
      jobs_.push_back(
          {&e.lora[1].a, xg, d, k1 - k0, su + k0 * rmax, rmax, false, x_rows_.data() + k0});
    }
  }
  backend_.GroupedLinear(jobs_);
  jobs_.clear();
  for (const auto& [k0, k1] : segments) {
    const MixLoraExpert& e = expert_of(k0);
    if (e.lora[0].rank > 0) {
      jobs_.push_back({&e.lora[0].b, sg + k0 * rmax, rmax, k1 - k0, gu + k0 * 2 * F, 2 * F, true});
    }
    if (e.lora[1].rank > 0) {
      jobs_.push_back(
          {&e.lora[1].b, su + k0 * rmax, rmax, k1 - k0, gu + k0 * 2 * F + F, 2 * F, true});
    }
  }
  backend_.GroupedLinear(jobs_);

  // Each expert's activation; groups may use different activation functions.
  float* as_act = Scratch(act_, static_cast<size_t>(A * F));
  for (int64_t k0 = 0; k0 < A;) {
    const int g = assign_[order_[k0]].group;
    int64_t k1 = k0 + 1;
    while (k1 < A && assign_[order_[k1]].group == g) ++k1;
    Tensor in = HostView(gu + k0 * 2 * F, k1 - k0, 2 * F);
    Tensor out = HostView(as_act + k0 * F, k1 - k0, F);
    backend_.GatedActivation(in, block_of[g]->act, out);
    k0 = k1;
  }

  // Per token, in expert order: the FFN activation becomes sum_e w_e a_e.
  mix_assign_.resize(static_cast<size_t>(A));
  for (int64_t k = 0; k < A; ++k) mix_assign_[k] = assign_[order_[k]];
  mix_row_assign_.resize(static_cast<size_t>(A));
  // Tokens in group order (rows of xg); each token's sorted positions, in expert order, by a
  // counting sort.
  mix_row_start_.assign(static_cast<size_t>(rows) + 1, 0);
  for (int64_t k = 0; k < A; ++k) {
    const Assignment& as = assign_[order_[k]];
    ++mix_row_start_[x_off[as.group] + as.row + 1];
  }
  for (int64_t r = 0; r < rows; ++r) mix_row_start_[r + 1] += mix_row_start_[r];
  row_fill_.assign(mix_row_start_.begin(), mix_row_start_.end() - 1);
  for (int64_t k = 0; k < A; ++k) {
    const Assignment& as = assign_[order_[k]];
    mix_row_assign_[row_fill_[x_off[as.group] + as.row]++] = static_cast<int32_t>(k);
  }
  mix_tokens_.resize(static_cast<size_t>(rows));
  for (const MixActive& a : active) {
    const auto& tokens = groups_[a.group].tokens;
    for (size_t i = 0; i < tokens.size(); ++i)
      mix_tokens_[a.x_off + static_cast<int64_t>(i)] = tokens[i];
  }
  const int64_t T = static_cast<int64_t>(mix_tokens_.size());
  const int64_t ldact = act.dim(1);
#pragma omp parallel for schedule(static) if (T > 8)
  for (int64_t i = 0; i < T; ++i) {
    float* row = act.data<float>() + static_cast<int64_t>(mix_tokens_[i]) * ldact;
    std::memset(row, 0, F * sizeof(float));
    if (!options_.down_projection_once) continue;  // the naive path sums W2 a_e itself
    for (int32_t j = mix_row_start_[i]; j < mix_row_start_[i + 1]; ++j) {
      const int32_t k = mix_row_assign_[j];
      Axpy(mix_assign_[k].weight, as_act + static_cast<int64_t>(k) * F, row, F);
    }
  }

  // Rank-r down corrections per (token, expert), applied after the base down projection.
  float* sd = Scratch(shrink_, static_cast<size_t>(A * rmax));
  float* dd = Scratch(down_delta_, static_cast<size_t>(A * d));
  std::memset(dd, 0, A * d * sizeof(float));
  jobs_.clear();
  for (const auto& [k0, k1] : segments) {
    const MixLoraExpert& e = expert_of(k0);
    if (e.lora[2].rank > 0) {
      jobs_.push_back({&e.lora[2].a, as_act + k0 * F, F, k1 - k0, sd + k0 * rmax, rmax, false});
    }
  }
  backend_.GroupedLinear(jobs_);
  jobs_.clear();
  for (const auto& [k0, k1] : segments) {
    const MixLoraExpert& e = expert_of(k0);
    if (e.lora[2].rank > 0) {
      jobs_.push_back({&e.lora[2].b, sd + k0 * rmax, rmax, k1 - k0, dd + k0 * d, d, true});
    }
  }
  if (!options_.down_projection_once) {
    // The reference implementations' cost: W2 a_e for every (token, expert).
    for (const auto& [k0, k1] : segments) {
      jobs_.push_back(
          {&weights_.layers[layer].down, as_act + k0 * F, F, k1 - k0, dd + k0 * d, d, true});
    }
  }
  backend_.GroupedLinear(jobs_);
}

}  // namespace switchyard

#include "engine/adapters/moe_lora_plan.h"

#include <algorithm>
#include <initializer_list>

namespace switchyard {
namespace {

using Linear = LayerHooks::Linear;

struct SiteOfCall {
  LinearSite site;
  int64_t col, out;
};

// The sites each AfterLinear call covers, with their columns in its output.
std::vector<SiteOfCall> CallSites(const ModelConfig& m, Linear which) {
  const int64_t d = m.hidden_size, q = m.num_heads * m.head_dim;
  const int64_t kv = m.num_kv_heads * m.head_dim, F = m.intermediate_size;
  switch (which) {
    case Linear::kQkv:
      return {{LinearSite::kQ, 0, q}, {LinearSite::kK, q, kv}, {LinearSite::kV, q + kv, kv}};
    case Linear::kO:
      return {{LinearSite::kO, 0, d}};
    case Linear::kGateUp:
      return {{LinearSite::kGate, 0, F}, {LinearSite::kUp, F, F}};
    case Linear::kDown:
      return {{LinearSite::kDown, 0, d}};
  }
  return {};
}

int64_t CallInput(const ModelConfig& m, Linear which) {
  switch (which) {
    case Linear::kQkv:
    case Linear::kGateUp:
      return m.hidden_size;
    case Linear::kO:
      return m.num_heads * m.head_dim;
    case Linear::kDown:
      return m.intermediate_size;
  }
  return 0;
}

class PlanBuilder {
 public:
  PlanBuilder(const ModelConfig& model, RoutingStats* stats) : model_(model), stats_(stats) {}

  MoeLoraPlan Build(std::span<const std::span<const AdapterMember>> members_of_token) && {
    num_tokens_ = static_cast<int64_t>(members_of_token.size());
    GroupTokens(members_of_token);
    if (plan_.groups.empty()) return std::move(plan_);
    plan_.layers.resize(static_cast<size_t>(model_.num_layers));
    for (int layer = 0; layer < model_.num_layers; ++layer) {
      // In the order the forward pass runs them, so statistics records come in that order.
      LayerPlan& lp = plan_.layers[layer];
      lp.calls[static_cast<int>(Linear::kQkv)] = BuildSiteCall(layer, Linear::kQkv);
      lp.calls[static_cast<int>(Linear::kO)] = BuildSiteCall(layer, Linear::kO);
      lp.gate = BuildGateCall(layer);
      lp.calls[static_cast<int>(Linear::kGateUp)] = BuildSiteCall(layer, Linear::kGateUp);
      lp.mix = BuildMixCall(layer);
      lp.calls[static_cast<int>(Linear::kDown)] = BuildSiteCall(layer, Linear::kDown);
    }
    return std::move(plan_);
  }

 private:
  void GroupTokens(std::span<const std::span<const AdapterMember>> members_of_token) {
    std::vector<PlanGroup>& groups = plan_.groups;
    for (int32_t t = 0; t < static_cast<int32_t>(members_of_token.size()); ++t) {
      const std::span<const AdapterMember> members = members_of_token[t];
      for (int k = 0; k < static_cast<int>(members.size()); ++k) {
        const AdapterMember& m = members[k];
        if (m.adapter == nullptr) continue;
        AddToken(t, m.adapter, k, m.weight, 0, nullptr);
        if (m.adapter->router == nullptr) continue;
        const auto& gated = m.adapter->router->members;
        for (int i = 0; i < static_cast<int>(gated.size()); ++i) {
          AddToken(t, gated[i].get(), k, m.weight, i + 1, m.adapter);
        }
      }
    }
    std::stable_sort(groups.begin(), groups.end(),
                     [](const PlanGroup& a, const PlanGroup& b) { return a.pass() < b.pass(); });
    for (PlanGroup& g : groups) {
      g.tokens_off = static_cast<int64_t>(plan_.ints.size());
      plan_.ints.insert(plan_.ints.end(), g.tokens.begin(), g.tokens.end());
      if (g.gated_by != nullptr) {
        g.gate_group = static_cast<int>(std::find_if(groups.begin(), groups.end(),
                                                     [&](const PlanGroup& o) {
                                                       return o.adapter == g.gated_by &&
                                                              o.member == g.member &&
                                                              o.weight == g.weight;
                                                     }) -
                                        groups.begin());
      }
      // A router's members route only the rows it picks them for: no statistics of their own.
      if (stats_ == nullptr || g.gated_by != nullptr) continue;
      const auto same = std::find_if(groups.begin(), groups.end(), [&](const PlanGroup& o) {
        return o.adapter == g.adapter && o.stats_index >= 0;
      });
      if (same != groups.end()) {
        g.stats_index = same->stats_index;
      } else {
        g.stats_index = static_cast<int>(stats_->adapters.size());
        stats_->adapters.push_back({g.adapter->name, g.adapter->version, {}});
      }
    }
  }

  void AddToken(int32_t t, const AdapterWeights* adapter, int member, float weight, int sub,
                const AdapterWeights* gated_by) {
    std::vector<PlanGroup>& groups = plan_.groups;
    auto it = std::find_if(groups.begin(), groups.end(), [&](const PlanGroup& g) {
      return g.adapter == adapter && g.member == member && g.weight == weight &&
             g.gated_by == gated_by;
    });
    if (it == groups.end()) {
      groups.push_back({adapter, member, weight, {}, 0, -1, sub, gated_by, -1});
      it = groups.end() - 1;
    }
    it->tokens.push_back(t);
  }

  // The routers over adapters of `layer`; records where each token's gate slots start.
  GateCall BuildGateCall(int layer) {
    GateCall c;
    gate_base_.assign(plan_.groups.size(), {});
    c.x_src_off = static_cast<int64_t>(plan_.ints.size());
    for (int g = 0; g < static_cast<int>(plan_.groups.size()); ++g) {
      const PlanGroup& group = plan_.groups[g];
      const AdapterRouter* router = group.adapter->router.get();
      if (router == nullptr || !router->routers[layer].defined()) continue;
      const int64_t n = static_cast<int64_t>(group.tokens.size());
      const int S = SlotsPerRow(router->spec);
      c.groups.push_back(g);
      c.route.push_back({router->spec, n, c.rows, c.slots, S, 0,
                         AddRecord(group, layer, kFfnBlockSite, router->spec)});
      gate_base_[g].assign(static_cast<size_t>(num_tokens_), -1);
      for (int64_t r = 0; r < n; ++r) {
        gate_base_[g][group.tokens[r]] = static_cast<int32_t>(c.slots + r * S);
      }
      AppendRows(group);
      c.rows += n;
      c.slots += n * S;
      c.max_e = std::max(c.max_e, router->spec.num_experts);
    }
    PlanCapacity& cap = plan_.capacity;
    cap.x = std::max(cap.x, c.rows * model_.hidden_size);
    cap.logits = std::max(cap.logits, c.rows * c.max_e);
    cap.gate_slots = std::max(cap.gate_slots, c.slots);
    return c;
  }

  // Gates a unit of a router's member: its tokens' gate slot starts, into ints.
  void Gate(const PlanGroup& g, const std::vector<int32_t>& tokens, int heads, RouteUnit& r) {
    if (g.gate_group < 0) return;
    const AdapterRouter& router = *plan_.groups[g.gate_group].adapter->router;
    r.gate_rows_off = static_cast<int64_t>(plan_.ints.size());
    for (int32_t t : tokens) plan_.ints.push_back(gate_base_[g.gate_group][t]);
    r.gate_heads = heads;
    r.gate_slots = SlotsPerRow(router.spec);
    r.gate_member = g.sub - 1;
  }

  // A routing record for (group, layer, site), or -1 without statistics. Groups of one adapter
  // share the site's entry (each unit has a record of its own: EndStep adds them up).
  int64_t AddRecord(const PlanGroup& g, int layer, int site, const RouterSpec& spec) {
    if (stats_ == nullptr || g.stats_index < 0 || spec.routing == Routing::kSingle) return -1;
    std::vector<SiteRoutingStats>& sites = stats_->adapters[g.stats_index].sites;
    auto entry = std::find_if(sites.begin(), sites.end(), [&](const SiteRoutingStats& s) {
      return s.layer == layer && s.site == site;
    });
    if (entry == sites.end()) {
      SiteRoutingStats shape;
      shape.layer = layer;
      shape.site = site;
      shape.num_experts = spec.num_experts;
      shape.dense = spec.routing == Routing::kDense;
      sites.push_back(shape.EmptyLike());
      entry = sites.end() - 1;
    }
    const int64_t offset = plan_.stats_size;
    plan_.records.push_back(
        {g.stats_index, static_cast<int>(entry - sites.begin()), offset, spec.num_experts});
    plan_.stats_size += RoutingRecordSize(spec.num_experts);
    return offset;
  }

  int64_t Reserve(int64_t n) {
    const int64_t off = static_cast<int64_t>(plan_.ints.size());
    plan_.ints.resize(static_cast<size_t>(off + n));
    return off;
  }

  void AppendRows(const PlanGroup& g) {
    plan_.ints.insert(plan_.ints.end(), g.tokens.begin(), g.tokens.end());
  }

  SiteCall BuildSiteCall(int layer, Linear which) {
    SiteCall c;
    c.in = CallInput(model_, which);
    c.x_src_off = static_cast<int64_t>(plan_.ints.size());
    std::vector<int64_t> plain_rows(plan_.groups.size(), -1);
    for (const SiteOfCall& so : CallSites(model_, which)) {
      for (int g = 0; g < static_cast<int>(plan_.groups.size()); ++g) {
        const RoutedLora* lora =
            plan_.groups[g].adapter->layers[layer].sites[static_cast<int>(so.site)].get();
        if (lora == nullptr) continue;
        const int64_t n = static_cast<int64_t>(plan_.groups[g].tokens.size());
        SiteUnit u{g, lora, static_cast<int>(so.site), so.col, so.out, 0, c.sub_rows, -1};
        // A head projection changes its rows: such a unit gets rows of its own.
        if (lora->head.rank > 0 || plain_rows[g] < 0) {
          u.x_off = c.rows;
          if (lora->head.rank == 0) plain_rows[g] = c.rows;
          AppendRows(plan_.groups[g]);
          c.rows += n;
        } else {
          u.x_off = plain_rows[g];
        }
        c.sub_rows += n * lora->heads;
        c.units.push_back(u);
      }
    }
    if (c.units.empty()) return c;
    std::vector<int> y_pass;
    for (SiteUnit& u : c.units) {
      LayoutSiteUnit(layer, u, c);
      const PlanGroup& g = plan_.groups[u.group];
      Gate(g, g.tokens, u.lora->heads, c.route.back());
      if (u.merge_off < 0) y_pass.push_back(g.pass());
    }
    c.y_passes = OrderByPass(y_pass, {&c.combine_y});
    FillSiteSlots(c);
    PlanCapacity& cap = plan_.capacity;
    cap.x = std::max(cap.x, c.rows * c.in);
    cap.logits = std::max(cap.logits, c.sub_rows * c.max_e);
    cap.slots = std::max(cap.slots, c.slots);
    cap.segments = std::max<int64_t>(cap.segments, c.segments + 1);
    cap.shrink = std::max(cap.shrink, c.slots * c.rmax);
    cap.shared = std::max(cap.shared, c.sub_rows * c.rmax);
    cap.expand = std::max(cap.expand, c.slots * c.omax);
    cap.head = std::max(cap.head, c.rows * c.max_head);
    cap.merge = std::max(cap.merge, c.merge_rows * c.max_out);
    cap.merge_mid = std::max(cap.merge_mid, c.merge_rows * c.max_merge);
    return c;
  }

  // The unit's slots, segments, statistics record and combine target.
  void LayoutSiteUnit(int layer, SiteUnit& u, SiteCall& c) {
    const RoutedLora& lora = *u.lora;
    const PlanGroup& g = plan_.groups[u.group];
    const int64_t n = static_cast<int64_t>(g.tokens.size());
    const int E = lora.spec.num_experts, S = SlotsPerRow(lora.spec);
    if (std::none_of(c.shrink.begin(), c.shrink.end(),
                     [&](const auto& h) { return h.first == lora.heads; })) {
      c.shrink.emplace_back(lora.heads, std::vector<const Weight*>(c.segments, nullptr));
    }
    RouteUnit r{lora.spec,
                n * lora.heads,
                u.sub_off,
                c.slots,
                S,
                c.segments,
                AddRecord(g, layer, u.site, lora.spec)};
    c.route.push_back(r);
    CombineUnit comb{n * lora.heads,     c.slots,  S,   lora.heads, g.tokens_off, 0, u.col,
                     u.out / lora.heads, g.weight, 1.0f};
    if (lora.merge.rank > 0) {
      u.merge_off = c.merge_rows;
      comb.dst_rows_off = -1;
      comb.dst_row_base = c.merge_rows;
      comb.col = 0;
      c.merge_rows += n;
      c.combine_merge.push_back(comb);
    } else {
      c.combine_y.push_back(comb);
    }
    for (int e = 0; e < E; ++e) {
      const LoraPair* p = e < static_cast<int>(lora.experts.size()) ? &lora.experts[e] : nullptr;
      for (auto& [heads, weights] : c.shrink) {
        weights.push_back(heads == lora.heads && p != nullptr && !lora.shared_a ? &p->a : nullptr);
      }
      c.expand.push_back(p != nullptr && !lora.shared_a ? &p->b : nullptr);
      c.expand_shared.push_back(p != nullptr && lora.shared_a ? &p->b : nullptr);
      if (p != nullptr) {
        c.rmax = std::max(c.rmax, p->rank);
        c.omax = std::max<int64_t>(c.omax, p->b.rows);
      }
    }
    c.slots += n * lora.heads * S;
    c.segments += E;
    c.max_e = std::max(c.max_e, E);
    c.max_head = std::max(c.max_head, lora.head.rank);
    c.max_merge = std::max(c.max_merge, lora.merge.rank);
    c.max_out = std::max(c.max_out, u.out);
    c.shared_a |= lora.shared_a;
  }

  // Per slot: its row of the gathered input (seen as [.., in / heads]) and its routed row.
  void FillSiteSlots(SiteCall& c) {
    c.slot_xrow_off = Reserve(c.slots);
    c.slot_sub_off = Reserve(c.slots);
    for (size_t i = 0; i < c.units.size(); ++i) {
      const SiteUnit& u = c.units[i];
      const RouteUnit& r = c.route[i];
      for (int64_t row = 0; row < r.rows; ++row) {
        for (int j = 0; j < r.slots; ++j) {
          const int64_t s = r.slot_off + row * r.slots + j;
          plan_.ints[c.slot_xrow_off + s] = static_cast<int32_t>(u.x_off * u.lora->heads + row);
          plan_.ints[c.slot_sub_off + s] = static_cast<int32_t>(u.sub_off + row);
        }
      }
    }
  }

  // The units of a MixLoRA layer: per group, its tokens split by `keep` (see MixUnit).
  std::vector<MixUnit> MixUnits(int layer) {
    std::vector<float> total(static_cast<size_t>(num_tokens_), 0.0f);
    std::vector<int> opener(static_cast<size_t>(num_tokens_), -1);
    for (int g = 0; g < static_cast<int>(plan_.groups.size()); ++g) {
      const PlanGroup& group = plan_.groups[g];
      if (group.adapter->layers[layer].ffn == nullptr) continue;
      // A router's members (all with blocks here, or none) count its weight once: their gates
      // sum to 1.
      const bool counted = group.gated_by == nullptr || group.sub == 1;
      for (int32_t t : group.tokens) {
        if (counted) total[t] += group.weight;
        if (opener[t] < 0) opener[t] = g;  // groups come by pass
      }
    }
    std::vector<MixUnit> units;
    for (int g = 0; g < static_cast<int>(plan_.groups.size()); ++g) {
      const MixLoraBlock* block = plan_.groups[g].adapter->layers[layer].ffn.get();
      if (block == nullptr) continue;
      const size_t first = units.size();
      for (int32_t t : plan_.groups[g].tokens) {
        const float keep = opener[t] == g ? 1.0f - total[t] : 1.0f;
        auto it = std::find_if(units.begin() + first, units.end(),
                               [&](const MixUnit& u) { return u.keep == keep; });
        if (it == units.end()) {
          units.push_back({g, block, 0, keep, {}, 0});
          it = units.end() - 1;
        }
        it->tokens.push_back(t);
      }
    }
    return units;
  }

  MixCall BuildMixCall(int layer) {
    MixCall c;
    c.units = MixUnits(layer);
    if (c.units.empty()) return c;
    const int64_t d = model_.hidden_size, F = model_.intermediate_size;
    // The units' token lists, back to back, are also the rows the routers read.
    c.x_src_off = static_cast<int64_t>(plan_.ints.size());
    for (MixUnit& u : c.units) {
      u.x_off = c.rows;
      u.tokens_off = c.x_src_off + c.rows;
      plan_.ints.insert(plan_.ints.end(), u.tokens.begin(), u.tokens.end());
      c.rows += static_cast<int64_t>(u.tokens.size());
    }
    std::vector<int> pass;
    for (const MixUnit& u : c.units) {
      const PlanGroup& g = plan_.groups[u.group];
      const int64_t n = static_cast<int64_t>(u.tokens.size());
      const int E = u.block->spec.num_experts, S = SlotsPerRow(u.block->spec);
      c.route.push_back({u.block->spec, n, u.x_off, c.slots, S, c.segments,
                         AddRecord(g, layer, kFfnBlockSite, u.block->spec)});
      Gate(g, u.tokens, 1, c.route.back());
      c.combine_act.push_back({n, c.slots, S, 1, u.tokens_off, 0, 0, F, g.weight, u.keep});
      c.combine_down.push_back({n, c.slots, S, 1, u.tokens_off, 0, 0, d, g.weight, 1.0f});
      pass.push_back(g.pass());
      c.acts.push_back({c.segments, c.segments + E, u.block->act});
      for (int e = 0; e < E; ++e) {
        const MixLoraExpert* x =
            e < static_cast<int>(u.block->experts.size()) ? &u.block->experts[e] : nullptr;
        for (int p = 0; p < 3; ++p) {
          const bool has = x != nullptr && x->lora[p].rank > 0;
          c.a[p].push_back(has ? &x->lora[p].a : nullptr);
          c.b[p].push_back(has ? &x->lora[p].b : nullptr);
          if (has) c.rmax = std::max(c.rmax, x->lora[p].rank);
        }
      }
      c.slots += n * S;
      c.segments += E;
      c.max_e = std::max(c.max_e, E);
    }
    c.passes = OrderByPass(pass, {&c.combine_act, &c.combine_down});
    c.slot_xrow_off = Reserve(c.slots);
    c.slot_token_off = Reserve(c.slots);
    for (size_t i = 0; i < c.units.size(); ++i) {
      const RouteUnit& r = c.route[i];
      const std::vector<int32_t>& tokens = c.units[i].tokens;
      for (int64_t row = 0; row < r.rows; ++row) {
        for (int j = 0; j < r.slots; ++j) {
          const int64_t s = r.slot_off + row * r.slots + j;
          plan_.ints[c.slot_xrow_off + s] = static_cast<int32_t>(c.units[i].x_off + row);
          plan_.ints[c.slot_token_off + s] = tokens[row];
        }
      }
    }
    PlanCapacity& cap = plan_.capacity;
    cap.x = std::max(cap.x, c.rows * d);
    cap.logits = std::max(cap.logits, c.rows * c.max_e);
    cap.segments = std::max<int64_t>(cap.segments, c.segments + 1);
    cap.shrink = std::max(cap.shrink, c.slots * c.rmax);
    cap.shared = std::max(cap.shared, c.slots * c.rmax);
    cap.gate_up = std::max(cap.gate_up, c.slots * 2 * F);
    cap.act = std::max(cap.act, c.slots * F);
    cap.down = std::max(cap.down, c.slots * d);
    cap.slots = std::max(cap.slots, c.slots);
    return c;
  }

  // Orders the combine lists (parallel, one entry per pass[i]) by pass, stably, and returns the
  // end of each pass's run: one CombineSlots each. Lists already in order (MixLoRA's units, which
  // come by group) are left as they are.
  static std::vector<size_t> OrderByPass(const std::vector<int>& pass,
                                         std::initializer_list<std::vector<CombineUnit>*> lists) {
    std::vector<size_t> order(pass.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    if (!std::is_sorted(pass.begin(), pass.end())) {
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t a, size_t b) { return pass[a] < pass[b]; });
      for (std::vector<CombineUnit>* list : lists) {
        std::vector<CombineUnit> sorted;
        for (size_t i : order) sorted.push_back((*list)[i]);
        *list = std::move(sorted);
      }
    }
    std::vector<size_t> ends;
    for (size_t i = 0; i < order.size(); ++i) {
      if (i + 1 == order.size() || pass[order[i + 1]] != pass[order[i]]) ends.push_back(i + 1);
    }
    return ends;
  }

  const ModelConfig& model_;
  RoutingStats* stats_;
  int64_t num_tokens_ = 0;
  // Per router group of the layer being planned: each token's first gate slot (-1: none).
  std::vector<std::vector<int32_t>> gate_base_;
  MoeLoraPlan plan_;
};

}  // namespace

MoeLoraPlan BuildMoeLoraPlan(const ModelConfig& model,
                             std::span<const std::span<const AdapterMember>> members_of_token,
                             RoutingStats* stats) {
  return PlanBuilder(model, stats).Build(members_of_token);
}

}  // namespace switchyard

#include "engine/adapters/moe_lora.h"

#include <algorithm>

#include "engine/core/check.h"
#include "engine/core/status_macros.h"

namespace switchyard {

MoeLoraExecutor::MoeLoraExecutor(Backend& backend, const ModelConfig& model,
                                 const ModelWeights& weights, MoeLoraOptions options)
    : backend_(backend), model_(model), weights_(weights), options_(options) {}

absl::StatusOr<bool> MoeLoraExecutor::BeginStep(
    std::span<const std::span<const AdapterMember>> members_of_token,
    std::span<const uint8_t> decisions_of_token, RoutingStats* stats) {
  if (!options_.down_projection_once) {
    // That path zeroes the activation and runs W2 per expert: it has no base to keep.
    for (std::span<const AdapterMember> members : members_of_token) {
      if (members.size() > 1 || (members.size() == 1 && members[0].weight != 1.0f)) {
        return absl::UnimplementedError(
            "adapter mixtures need MoeLoraOptions::down_projection_once");
      }
    }
  }
  status_ = absl::OkStatus();
  stats_ = options_.record_stats ? stats : nullptr;
  decisions_of_token_ = decisions_of_token;
  const bool any_decisions = options_.record_decisions ||
                             std::find(decisions_of_token.begin(), decisions_of_token.end(), 1) !=
                                 decisions_of_token.end();
  decisions_ = any_decisions ? stats : nullptr;
  if (decisions_ != nullptr) decisions_->decisions.clear();
  if (stats_ != nullptr) stats_->adapters.clear();
  plan_ = BuildMoeLoraPlan(model_, members_of_token, stats_);
  if (plan_.empty()) return false;
  SY_RETURN_IF_ERROR(PrepareBuffers());
  return true;
}

absl::Status MoeLoraExecutor::Grow(Tensor& t, DType dtype, int64_t numel) {
  if (t.defined() && t.numel() >= numel) return absl::OkStatus();
  SY_ASSIGN_OR_RETURN(t, backend_.Allocate(dtype, {std::max<int64_t>(numel, 1)}));
  return absl::OkStatus();
}

absl::Status MoeLoraExecutor::PrepareBuffers() {
  const PlanCapacity& c = plan_.capacity;
  const int64_t n = static_cast<int64_t>(plan_.ints.size());
  SY_ASSIGN_OR_RETURN(buf_.ints,
                      backend_.Upload(Tensor::Wrap(plan_.ints.data(), DType::kI32, {n}, nullptr)));
  if (plan_.stats_size > 0) {
    SY_RETURN_IF_ERROR(Grow(buf_.stats, DType::kF64, plan_.stats_size));
    Tensor stats = buf_.stats.Rows(0, plan_.stats_size);
    backend_.ZeroFill(stats);
  }
  const struct {
    Tensor* t;
    DType dtype;
    int64_t numel;
  } sizes[] = {
      {&buf_.x, DType::kF32, c.x},
      {&buf_.logits, DType::kF32, c.logits},
      {&buf_.expert, DType::kI32, c.slots},
      {&buf_.weight, DType::kF32, c.slots},
      {&buf_.order, DType::kI32, c.slots},
      {&buf_.position, DType::kI32, c.slots},
      {&buf_.seg_start, DType::kI32, c.segments},
      {&buf_.shrink, DType::kF32, c.shrink},
      {&buf_.shared, DType::kF32, c.shared},
      {&buf_.expand, DType::kF32, c.expand},
      {&buf_.head, DType::kF32, c.head},
      {&buf_.merge, DType::kF32, c.merge},
      {&buf_.merge_mid, DType::kF32, c.merge_mid},
      {&buf_.mix_expert, DType::kI32, c.slots},
      {&buf_.mix_weight, DType::kF32, c.slots},
      {&buf_.mix_position, DType::kI32, c.slots},
      {&buf_.gate_up, DType::kF32, c.gate_up},
      {&buf_.act, DType::kF32, c.act},
      {&buf_.down, DType::kF32, c.down},
      {&buf_.gate_expert, DType::kI32, c.gate_slots},
      {&buf_.gate_weight, DType::kF32, c.gate_slots},
  };
  for (const auto& s : sizes) SY_RETURN_IF_ERROR(Grow(*s.t, s.dtype, s.numel));
  gates_ = {buf_.gate_expert.data<int32_t>(), buf_.gate_weight.data<float>(),
            buf_.ints.data<int32_t>()};
  return absl::OkStatus();
}

absl::Status MoeLoraExecutor::EndStep() {
  if (!status_.ok()) return status_;
  if (stats_ == nullptr || plan_.stats_size == 0) return absl::OkStatus();
  if (!host_stats_.defined() || host_stats_.numel() < plan_.stats_size) {
    host_stats_ = Tensor::Empty(DType::kF64, {plan_.stats_size});
  }
  Tensor host = host_stats_.Rows(0, plan_.stats_size);
  SY_RETURN_IF_ERROR(backend_.CopyToHost(buf_.stats.Rows(0, plan_.stats_size), host));
  SY_RETURN_IF_ERROR(backend_.Synchronize());
  for (const StatsRecord& rec : plan_.records) {
    SiteRoutingStats& s = stats_->adapters[rec.adapter].sites[rec.site];
    const double* p = host.data<double>() + rec.offset;
    const int E = rec.num_experts;
    s.tokens += static_cast<int64_t>(p[0]);
    s.entropy_sum += p[1];
    s.z_sum += p[2];
    for (int e = 0; e < E; ++e) {
      s.prob_sum[e] += p[3 + e];
      s.gate_sum[e] += p[3 + E + e];
      s.selections[e] += static_cast<int64_t>(p[3 + 2 * E + e]);
    }
    for (int i = 0; i <= E; ++i) s.experts_per_token[i] += static_cast<int64_t>(p[3 + 3 * E + i]);
  }
  return absl::OkStatus();
}

Tensor MoeLoraExecutor::View(const Tensor& buffer, int64_t rows, int64_t cols) {
  return buffer.Rows(0, rows * cols).Reshaped({rows, cols});
}

Tensor MoeLoraExecutor::Ints(int64_t offset, int64_t count) const {
  return buf_.ints.Rows(offset, count);
}

namespace {

// The tensor from element `offset` on (a column offset inside rows of a wider buffer).
Tensor From(const Tensor& t, int64_t offset) {
  return t.Reshaped({t.numel()}).Rows(offset, t.numel() - offset);
}

}  // namespace

void MoeLoraExecutor::AfterLinear(int layer, Linear which, const Tensor& x, Tensor& y) {
  if (!status_.ok()) return;
  const LayerPlan& lp = plan_.layers[layer];
  if (which == Linear::kGateUp && !lp.gate.route.empty()) RunGates(layer, lp.gate, x);
  const SiteCall& call = lp.calls[static_cast<int>(which)];
  if (!call.units.empty()) RunSites(layer, call, x, y);
  if (which == Linear::kDown) MixDown(layer, y);
}

void MoeLoraExecutor::RunSites(int layer, const SiteCall& c, const Tensor& x, Tensor& y) {
  Tensor xg = View(buf_.x, c.rows, c.in);
  backend_.GatherRows(x, Ints(c.x_src_off, c.rows), xg);
  if (c.max_head > 0) HeadProjection(c, xg);
  RoutersAndRoute(layer, c, xg);
  const Tensor expand = View(buf_.expand, c.slots, c.omax);
  ShrinkExpand(c, xg, expand);
  CombineByMember(expand, buf_.expert, buf_.weight, buf_.position, c.combine_y, c.y_passes, nullptr,
                  y);
  if (!c.combine_merge.empty()) {
    Tensor merged = View(buf_.merge, c.merge_rows, c.max_out);
    backend_.ZeroFill(merged);
    backend_.CombineSlots(expand, buf_.expert, buf_.weight, buf_.position, c.combine_merge, nullptr,
                          nullptr, Backend::Combine::kAdd, merged);
    Merge(c, merged, y);
  }
}

// MH-MoE's head projection: x + head(x), on the unit's own rows.
void MoeLoraExecutor::HeadProjection(const SiteCall& c, Tensor& xg) {
  float* h = buf_.head.data<float>();
  float* x = xg.data<float>();
  const int64_t in = c.in, hr = c.max_head;
  for (bool expand : {false, true}) {
    jobs_.clear();
    for (size_t i = 0; i < c.units.size(); ++i) {
      const SiteUnit& u = c.units[i];
      if (u.lora->head.rank == 0) continue;
      const int64_t n = c.route[i].rows / u.lora->heads;
      if (!expand) {
        jobs_.push_back({&u.lora->head.a, x + u.x_off * in, in, n, h + u.x_off * hr, hr, false});
      } else {
        jobs_.push_back({&u.lora->head.b, h + u.x_off * hr, hr, n, x + u.x_off * in, in, true});
      }
    }
    backend_.GroupedLinear(jobs_);
  }
}

void MoeLoraExecutor::CombineByMember(const Tensor& src, const Tensor& slot_expert,
                                      const Tensor& slot_weight, const Tensor& position,
                                      std::span<const CombineUnit> units,
                                      std::span<const size_t> passes, const Tensor* bias,
                                      Tensor& dst) {
  size_t begin = 0;
  for (size_t end : passes) {
    backend_.CombineSlots(src, slot_expert, slot_weight, position,
                          units.subspan(begin, end - begin), &buf_.ints, bias,
                          Backend::Combine::kAdd, dst);
    begin = end;
  }
}

std::pair<Tensor, Tensor> MoeLoraExecutor::GatherFfnInput(const Tensor& x, int64_t x_src_off,
                                                          int64_t rows, int max_e) {
  Tensor xg = View(buf_.x, rows, model_.hidden_size);
  backend_.GatherRows(x, Ints(x_src_off, rows), xg);
  jobs_.clear();
  return {xg, View(buf_.logits, rows, max_e)};
}

void MoeLoraExecutor::RunGates(int layer, const GateCall& c, const Tensor& x) {
  const int64_t d = model_.hidden_size;
  const auto [xg, logits] = GatherFfnInput(x, c.x_src_off, c.rows, c.max_e);
  for (size_t i = 0; i < c.groups.size(); ++i) {
    const RouteUnit& r = c.route[i];
    jobs_.push_back({&plan_.groups[c.groups[i]].adapter->router->routers[layer],
                     xg.data<float>() + r.logits_row * d, d, r.rows,
                     logits.data<float>() + r.logits_row * c.max_e, c.max_e, false});
  }
  backend_.GroupedLinear(jobs_);
  backend_.Route(logits, c.route, buf_.gate_expert, buf_.gate_weight,
                 plan_.stats_size > 0 ? &buf_.stats : nullptr, nullptr);
  if (decisions_ != nullptr) {
    std::vector<DecisionUnit> units;
    for (size_t i = 0; i < c.groups.size(); ++i) {
      const PlanGroup& g = plan_.groups[c.groups[i]];
      units.push_back(Decision(c.route[i], g, g.tokens, kFfnBlockSite, 1));
    }
    RecordDecisions(layer, units, buf_.gate_expert, c.slots);
  }
}

MoeLoraExecutor::DecisionUnit MoeLoraExecutor::Decision(const RouteUnit& route, const PlanGroup& g,
                                                        const std::vector<int32_t>& tokens,
                                                        int site, int heads) const {
  return {&route, &tokens, g.member, site, heads, g.gated_by != nullptr ? g.sub - 1 : -1};
}

void MoeLoraExecutor::RoutersAndRoute(int layer, const SiteCall& c, const Tensor& xg) {
  const Tensor logits = View(buf_.logits, c.sub_rows, c.max_e);
  jobs_.clear();
  for (size_t i = 0; i < c.units.size(); ++i) {
    const SiteUnit& u = c.units[i];
    if (u.lora->spec.routing == Routing::kSingle) continue;
    jobs_.push_back({&u.lora->router, xg.data<float>() + u.x_off * c.in, c.in / u.lora->heads,
                     c.route[i].rows, logits.data<float>() + u.sub_off * c.max_e, c.max_e, false});
  }
  if (!jobs_.empty()) backend_.GroupedLinear(jobs_);
  backend_.Route(logits, c.route, buf_.expert, buf_.weight,
                 plan_.stats_size > 0 ? &buf_.stats : nullptr, &gates_);
  if (decisions_ != nullptr) {
    std::vector<DecisionUnit> units;
    for (size_t i = 0; i < c.units.size(); ++i) {
      const PlanGroup& g = plan_.groups[c.units[i].group];
      units.push_back(Decision(c.route[i], g, g.tokens, c.units[i].site, c.units[i].lora->heads));
    }
    RecordDecisions(layer, units, buf_.expert, c.slots);
  }
  backend_.SortSegments(buf_.expert, c.route, c.segments, buf_.order, buf_.position,
                        buf_.seg_start);
}

void MoeLoraExecutor::ShrinkExpand(const SiteCall& c, const Tensor& xg, const Tensor& expand) {
  Tensor shrink = View(buf_.shrink, c.slots, c.rmax);
  const Tensor slot_xrow = Ints(c.slot_xrow_off, c.slots);
  for (const auto& [heads, weights] : c.shrink) {
    backend_.SegmentedLinear(weights, buf_.seg_start, xg, c.in / heads, &buf_.order, &slot_xrow,
                             shrink, c.rmax, false);
  }
  Tensor out = expand;
  backend_.SegmentedLinear(c.expand, buf_.seg_start, shrink, c.rmax, nullptr, nullptr, out, c.omax,
                           false);
  if (!c.shared_a) return;
  // HydraLoRA: one shared A per routed row, then each selected expert's B on it.
  Tensor shared = View(buf_.shared, c.sub_rows, c.rmax);
  jobs_.clear();
  for (size_t i = 0; i < c.units.size(); ++i) {
    const SiteUnit& u = c.units[i];
    if (!u.lora->shared_a) continue;
    jobs_.push_back({&u.lora->experts[0].a, xg.data<float>() + u.x_off * c.in, c.in / u.lora->heads,
                     c.route[i].rows, shared.data<float>() + u.sub_off * c.rmax, c.rmax, false});
  }
  backend_.GroupedLinear(jobs_);
  const Tensor slot_sub = Ints(c.slot_sub_off, c.slots);
  backend_.SegmentedLinear(c.expand_shared, buf_.seg_start, shared, c.rmax, &buf_.order, &slot_sub,
                           out, c.omax, false);
}

// MH-MoE's merge projection on the concatenated heads, then into y.
void MoeLoraExecutor::Merge(const SiteCall& c, Tensor& merged, Tensor& y) {
  float* m = merged.data<float>();
  float* mid = buf_.merge_mid.data<float>();
  const int64_t wo = c.max_out, wm = c.max_merge;
  for (bool expand : {false, true}) {
    jobs_.clear();
    for (size_t i = 0; i < c.units.size(); ++i) {
      const SiteUnit& u = c.units[i];
      if (u.merge_off < 0) continue;
      const int64_t n = c.route[i].rows / u.lora->heads;
      if (!expand) {
        jobs_.push_back(
            {&u.lora->merge.a, m + u.merge_off * wo, wo, n, mid + u.merge_off * wm, wm, false});
      } else {
        jobs_.push_back(
            {&u.lora->merge.b, mid + u.merge_off * wm, wm, n, m + u.merge_off * wo, wo, true});
      }
    }
    backend_.GroupedLinear(jobs_);
  }
  for (size_t i = 0; i < c.units.size(); ++i) {
    const SiteUnit& u = c.units[i];
    if (u.merge_off < 0) continue;
    const PlanGroup& g = plan_.groups[u.group];
    const int64_t n = static_cast<int64_t>(g.tokens.size());
    backend_.ScatterAddRows(merged.Rows(u.merge_off, n), u.out, Ints(g.tokens_off, n), u.col, y);
  }
}

void MoeLoraExecutor::BeforeDown(int layer, const Tensor& x, const Tensor& gate_up, Tensor& act) {
  if (!status_.ok()) return;
  const MixCall& c = plan_.layers[layer].mix;
  if (c.units.empty()) return;
  const int64_t d = model_.hidden_size, F = model_.intermediate_size;

  // Routers on the FFN input.
  const auto [xg, logits] = GatherFfnInput(x, c.x_src_off, c.rows, c.max_e);
  for (size_t i = 0; i < c.units.size(); ++i) {
    const MixUnit& u = c.units[i];
    jobs_.push_back({&u.block->router, xg.data<float>() + u.x_off * d, d, c.route[i].rows,
                     logits.data<float>() + u.x_off * c.max_e, c.max_e, false});
  }
  backend_.GroupedLinear(jobs_);
  backend_.Route(logits, c.route, buf_.mix_expert, buf_.mix_weight,
                 plan_.stats_size > 0 ? &buf_.stats : nullptr, &gates_);
  if (decisions_ != nullptr) {
    std::vector<DecisionUnit> units;
    for (size_t i = 0; i < c.units.size(); ++i) {
      units.push_back(Decision(c.route[i], plan_.groups[c.units[i].group], c.units[i].tokens,
                               kFfnBlockSite, 1));
    }
    RecordDecisions(layer, units, buf_.mix_expert, c.slots);
  }
  backend_.SortSegments(buf_.mix_expert, c.route, c.segments, buf_.order, buf_.mix_position,
                        buf_.seg_start);

  // Per (token, expert), in segment order: the base gate/up row, plus the expert's corrections.
  Tensor gu = View(buf_.gate_up, c.slots, 2 * F);
  const Tensor slot_xrow = Ints(c.slot_xrow_off, c.slots);
  backend_.GatherSorted(gate_up, buf_.order, Ints(c.slot_token_off, c.slots),
                        buf_.seg_start.Rows(0, c.segments + 1), gu);
  Tensor sg = View(buf_.shrink, c.slots, c.rmax), su = View(buf_.shared, c.slots, c.rmax);
  backend_.SegmentedLinear(c.a[0], buf_.seg_start, xg, d, &buf_.order, &slot_xrow, sg, c.rmax,
                           false);
  backend_.SegmentedLinear(c.a[1], buf_.seg_start, xg, d, &buf_.order, &slot_xrow, su, c.rmax,
                           false);
  backend_.SegmentedLinear(c.b[0], buf_.seg_start, sg, c.rmax, nullptr, nullptr, gu, 2 * F, true);
  Tensor up = From(gu, F);
  backend_.SegmentedLinear(c.b[1], buf_.seg_start, su, c.rmax, nullptr, nullptr, up, 2 * F, true);

  // Each expert's activation (adapters may use different functions); then per token, in expert
  // order, the FFN activation becomes sum_e w_e a_e.
  Tensor as_act = View(buf_.act, c.slots, F);
  backend_.SegmentedGatedActivation(gu, buf_.seg_start, c.acts, as_act);
  if (options_.down_projection_once) {
    CombineByMember(as_act, buf_.mix_expert, buf_.mix_weight, buf_.mix_position, c.combine_act,
                    c.passes, nullptr, act);
  } else {
    backend_.CombineSlots(as_act, buf_.mix_expert, buf_.mix_weight, buf_.mix_position,
                          c.combine_act, &buf_.ints, nullptr, Backend::Combine::kZero, act);
  }

  // Rank-r down corrections per (token, expert), added after the base down projection.
  Tensor sd = View(buf_.shrink, c.slots, c.rmax);
  Tensor dd = View(buf_.down, c.slots, d);
  backend_.ZeroFill(dd);
  backend_.SegmentedLinear(c.a[2], buf_.seg_start, as_act, F, nullptr, nullptr, sd, c.rmax, false);
  backend_.SegmentedLinear(c.b[2], buf_.seg_start, sd, c.rmax, nullptr, nullptr, dd, d, true);
  if (!options_.down_projection_once) {
    // The reference implementations' cost: W2 a_e for every (token, expert).
    down_base_.assign(static_cast<size_t>(c.segments), &weights_.layers[layer].down);
    backend_.SegmentedLinear(down_base_, buf_.seg_start, as_act, F, nullptr, nullptr, dd, d, true);
  }
}

void MoeLoraExecutor::MixDown(int layer, Tensor& y) {
  const MixCall& c = plan_.layers[layer].mix;
  if (c.units.empty()) return;
  const Tensor& bias = weights_.layers[layer].down_bias;
  const bool with_bias = bias.defined() && options_.down_projection_once;
  CombineByMember(View(buf_.down, c.slots, model_.hidden_size), buf_.mix_expert, buf_.mix_weight,
                  buf_.mix_position, c.combine_down, c.passes, with_bias ? &bias : nullptr, y);
}

void MoeLoraExecutor::RecordDecisions(int layer, std::span<const DecisionUnit> units,
                                      const Tensor& slot_expert, int64_t slots) {
  Tensor host = Tensor::Empty(DType::kI32, {std::max<int64_t>(slots, 1)});
  Tensor view = host.Rows(0, slots);
  absl::Status s = backend_.CopyToHost(slot_expert.Rows(0, slots), view);
  if (s.ok()) s = backend_.Synchronize();
  if (!s.ok()) {
    status_ = s;
    return;
  }
  const int32_t* expert = host.data<int32_t>();
  for (const DecisionUnit& u : units) {
    if (u.route->spec.routing == Routing::kSingle) continue;
    for (int64_t r = 0; r < u.route->rows; ++r) {
      const int32_t token = (*u.tokens)[r / u.heads];
      if (!options_.record_decisions && decisions_of_token_[token] == 0) continue;
      RoutingDecision d{token,
                        static_cast<int16_t>(layer),
                        static_cast<int8_t>(u.site),
                        static_cast<int16_t>(r % u.heads),
                        static_cast<int8_t>(u.member),
                        static_cast<int8_t>(u.gated_member),
                        {}};
      for (int j = 0; j < u.route->slots; ++j) {
        const int32_t e = expert[u.route->slot_off + r * u.route->slots + j];
        if (e >= 0) d.experts.push_back(static_cast<int16_t>(e));
      }
      if (d.experts.empty()) continue;  // a router's member its router did not pick
      std::sort(d.experts.begin(), d.experts.end());
      decisions_->decisions.push_back(std::move(d));
    }
  }
}

}  // namespace switchyard

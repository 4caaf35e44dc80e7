// A step's worth of MoE-LoRA op inputs for the op tests: many units of every routing rule with
// mixed expert counts, ranks and MH-MoE head counts over ragged row counts, and the chain of
// backend ops the executor runs on them (route, sort, shrink, expand, combine, and MixLoRA's
// gather / activation / overwrite / scatter), run on any backend with the results copied back.
// moe_ops_test checks the CPU chain against a scalar reference; cuda_backend_test checks the
// CUDA chain against the CPU's.
#pragma once

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "engine/backends/backend.h"
#include "engine/core/activation.h"
#include "engine/core/check.h"

namespace switchyard::testing {

struct ScenarioUnit {
  RouterSpec spec;
  int heads = 1;
  int64_t n = 0;      // destination rows (tokens)
  int64_t x_off = 0;  // first row of x
  int rank = 4;
  std::vector<Tensor> a, b;  // per expert: A [rank, in / heads], B [out / heads, rank]
};

struct MoeScenario {
  static constexpr int64_t kIn = 48, kOut = 40, kTokens = 97;
  std::vector<ScenarioUnit> units;
  std::vector<RouteUnit> route;
  std::vector<CombineUnit> combine;
  std::vector<int32_t> ints;  // dst rows of each unit, then slot x rows
  int64_t slot_xrow_off = 0;
  int64_t rows = 0, x_rows = 0, slots = 0, stats_size = 0;
  int32_t segments = 0;
  int max_e = 1, rmax = 1;
  Tensor logits, x, y0;  // y0: what y holds before the combine

  static MoeScenario Make(uint64_t seed) {
    std::mt19937_64 rng(seed);
    MoeScenario s;
    const auto spec = [](Routing r, int e, int k, float p = 1.0f, float t = 0.0f) {
      RouterSpec x;
      x.routing = r;
      x.num_experts = e;
      x.top_k = k;
      x.top_p = p;
      x.temperature = t;
      return x;
    };
    const std::vector<std::pair<RouterSpec, int>> kinds = {
        {spec(Routing::kSingle, 1, 1), 1},           {spec(Routing::kTopK, 8, 2), 1},
        {spec(Routing::kTopKRaw, 4, 3), 2},          {spec(Routing::kTopP, 6, 6, 0.6f), 1},
        {spec(Routing::kTopP, 5, 5, 0.9f, 1.5f), 2}, {spec(Routing::kDense, 3, 3), 1},
        {spec(Routing::kSwitch, 5, 1), 1},           {spec(Routing::kTopK, 16, 4), 1}};
    std::normal_distribution<float> normal(0.0f, 1.0f);
    int64_t dst_base = 0;
    for (size_t i = 0; i < kinds.size(); ++i) {
      ScenarioUnit u;
      u.spec = kinds[i].first;
      u.heads = kinds[i].second;
      u.n = 1 + static_cast<int64_t>(rng() % 9);
      u.rank = 2 + static_cast<int>(rng() % 7);
      u.x_off = s.x_rows;
      s.x_rows += u.n;
      const int64_t in = kIn / u.heads, out = kOut / u.heads;
      for (int e = 0; e < u.spec.num_experts; ++e) {
        u.a.push_back(Random({u.rank, in}, rng, 0.3f));
        u.b.push_back(Random({out, u.rank}, rng, 0.3f));
      }
      const int S = SlotsPerRow(u.spec);
      const int64_t rows = u.n * u.heads;
      RouteUnit r{u.spec, rows, s.rows, s.slots, S, s.segments, -1};
      if (u.spec.routing != Routing::kSingle) {
        r.stats_off = s.stats_size;
        s.stats_size += RoutingRecordSize(u.spec.num_experts);
      }
      s.route.push_back(r);
      // Destination rows: tokens scattered over [0, kTokens), each unit's its own (units of a
      // call never share an output cell).
      const int64_t dst_off = static_cast<int64_t>(s.ints.size());
      for (int64_t t = 0; t < u.n; ++t, ++dst_base) {
        s.ints.push_back(static_cast<int32_t>(dst_base * 13 % kTokens));
      }
      s.combine.push_back({rows, s.slots, S, u.heads, dst_off, 0, 0, out});
      s.rows += rows;
      s.slots += rows * S;
      s.segments += u.spec.num_experts;
      s.max_e = std::max(s.max_e, u.spec.num_experts);
      s.rmax = std::max(s.rmax, u.rank);
      s.units.push_back(std::move(u));
    }
    s.slot_xrow_off = static_cast<int64_t>(s.ints.size());
    for (size_t i = 0; i < s.units.size(); ++i) {
      const RouteUnit& r = s.route[i];
      for (int64_t row = 0; row < r.rows; ++row) {
        for (int j = 0; j < r.slots; ++j) {
          s.ints.push_back(static_cast<int32_t>(s.units[i].x_off * s.units[i].heads + row));
        }
      }
    }
    s.logits = Random({s.rows, s.max_e}, rng, 2.0f);
    s.x = Random({s.x_rows, kIn}, rng, 1.0f);
    s.y0 = Random({kTokens, kOut}, rng, 1.0f);
    return s;
  }

  static Tensor Random(const Shape& shape, std::mt19937_64& rng, float scale) {
    Tensor t = Tensor::Empty(DType::kF32, shape);
    std::normal_distribution<float> n(0.0f, scale);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = n(rng);
    return t;
  }
};

inline constexpr float kActKeep = 0.25f, kActScale = -0.75f;

// What the chain produced, on the host.
struct MoeRun {
  std::vector<int32_t> expert, order, position, seg_start;
  std::vector<float> weight;
  std::vector<double> stats;
  Tensor y;  // y0 plus every unit's routed LoRA
  // y0 combined with keep kActKeep and scale kActScale: the expanded rows of the heads-1 units
  // into [kTokens, kOut] (a mixture member's pass).
  Tensor act;
  Tensor gathered;   // GatherSorted of x by slot x rows
  Tensor activated;  // SegmentedGatedActivation of the gathered rows
};

inline Tensor Copy(Backend& b, const Tensor& dev) {
  SY_CHECK_OK(b.Synchronize());
  Tensor host = Tensor::Empty(dev.dtype(), dev.shape());
  SY_CHECK_OK(b.CopyToHost(dev, host));
  SY_CHECK_OK(b.Synchronize());
  return host;
}

template <typename T>
std::vector<T> CopyVector(Backend& b, const Tensor& dev, int64_t n) {
  const Tensor host = Copy(b, dev.Rows(0, n));
  return std::vector<T>(host.data<T>(), host.data<T>() + n);
}

inline Tensor Clone(const Tensor& host) {
  Tensor t = Tensor::Empty(host.dtype(), host.shape());
  std::memcpy(t.raw(), host.raw(), host.nbytes());
  return t;
}

inline MoeRun RunMoeChain(Backend& b, const MoeScenario& s) {
  // The CPU's Upload aliases its argument: upload clones, so the scenario stays as made.
  const auto up = [&](const Tensor& host) { return *b.Upload(Clone(host)); };
  const auto alloc = [&](DType t, Shape shape) { return *b.Allocate(t, std::move(shape)); };
  Tensor ints = up(Tensor::Wrap(const_cast<int32_t*>(s.ints.data()), DType::kI32,
                                {static_cast<int64_t>(s.ints.size())}, nullptr));
  Tensor logits = up(s.logits), x = up(s.x), y = up(s.y0);
  Tensor expert = alloc(DType::kI32, {s.slots}), weight = alloc(DType::kF32, {s.slots});
  Tensor order = alloc(DType::kI32, {s.slots}), position = alloc(DType::kI32, {s.slots});
  Tensor seg_start = alloc(DType::kI32, {s.segments + 1});
  Tensor stats = alloc(DType::kF64, {s.stats_size});
  b.ZeroFill(stats);
  b.Route(logits, s.route, expert, weight, &stats, nullptr);
  b.SortSegments(expert, s.route, s.segments, order, position, seg_start);

  // Weights per segment, per head count (the input is read as [.., in / heads]).
  std::vector<Weight> storage;
  storage.reserve(s.segments * 2);
  std::map<int, std::vector<const Weight*>> shrink;
  std::vector<const Weight*> expand;
  for (const ScenarioUnit& u : s.units) {
    if (!shrink.contains(u.heads)) shrink[u.heads].assign(expand.size(), nullptr);
    for (int e = 0; e < u.spec.num_experts; ++e) {
      storage.push_back(*b.PrepareWeight(u.a[e]));
      const Weight* a = &storage.back();
      for (auto& [h, list] : shrink) list.push_back(h == u.heads ? a : nullptr);
      storage.push_back(*b.PrepareWeight(u.b[e], WeightUse::kExpand));
      expand.push_back(&storage.back());
    }
  }
  Tensor shrunk = alloc(DType::kF32, {s.slots, s.rmax});
  Tensor expanded = alloc(DType::kF32, {s.slots, MoeScenario::kOut});
  const Tensor slot_xrow = ints.Rows(s.slot_xrow_off, s.slots);
  for (const auto& [h, list] : shrink) {
    b.SegmentedLinear(list, seg_start, x, MoeScenario::kIn / h, &order, &slot_xrow, shrunk, s.rmax,
                      false);
  }
  b.SegmentedLinear(expand, seg_start, shrunk, s.rmax, nullptr, nullptr, expanded,
                    MoeScenario::kOut, false);
  b.CombineSlots(expanded, expert, weight, position, s.combine, &ints, nullptr,
                 Backend::Combine::kAdd, y);

  // MixLoRA's movements on the same layout: a weighted combine over the old rows (units with one
  // head), gather, activation.
  std::vector<CombineUnit> single_head;
  for (size_t i = 0; i < s.units.size(); ++i) {
    if (s.units[i].heads != 1) continue;
    single_head.push_back(s.combine[i]);
    single_head.back().keep = kActKeep;
    single_head.back().scale = kActScale;
  }
  Tensor act = up(s.y0);
  b.CombineSlots(expanded, expert, weight, position, single_head, &ints, nullptr,
                 Backend::Combine::kAdd, act);
  Tensor gathered = alloc(DType::kF32, {s.slots, MoeScenario::kIn / 2});
  Tensor x_rows_view = x.Reshaped({s.x_rows * 2, MoeScenario::kIn / 2});
  b.GatherSorted(x_rows_view, order, slot_xrow, seg_start, gathered);
  Tensor activated = alloc(DType::kF32, {s.slots, MoeScenario::kIn / 4});
  b.ZeroFill(activated);
  std::vector<SegmentActivation> ranges = {{0, s.segments / 2, Activation::kSilu},
                                           {s.segments / 2, s.segments, Activation::kGeluTanh}};
  b.SegmentedGatedActivation(gathered, seg_start, ranges, activated);

  MoeRun run;
  run.expert = CopyVector<int32_t>(b, expert, s.slots);
  run.weight = CopyVector<float>(b, weight, s.slots);
  run.position = CopyVector<int32_t>(b, position, s.slots);
  run.seg_start = CopyVector<int32_t>(b, seg_start, s.segments + 1);
  run.order = CopyVector<int32_t>(b, order, run.seg_start.back());
  run.stats = CopyVector<double>(b, stats, s.stats_size);
  run.y = Copy(b, y);
  run.act = Copy(b, act);
  run.gathered = Copy(b, gathered);
  run.activated = Copy(b, activated);
  return run;
}

}  // namespace switchyard::testing

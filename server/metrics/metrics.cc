#include "server/metrics/metrics.h"

#include <algorithm>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"
#include "server/frontend/frontend.h"

namespace switchyard {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

// vLLM's buckets (vllm/v1/metrics/loggers.py), so dashboards built for vLLM read ours unchanged.
const prometheus::Histogram::BucketBoundaries kTtftBuckets = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
    1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
const prometheus::Histogram::BucketBoundaries kInterTokenBuckets = {
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
    0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
const prometheus::Histogram::BucketBoundaries kRequestLatencyBuckets = {
    0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
// Switchyard's own.
const prometheus::Histogram::BucketBoundaries kStepBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0};
const prometheus::Histogram::BucketBoundaries kAdapterCountBuckets = {0, 1,  2,  3,  4,  6,
                                                                      8, 12, 16, 24, 32, 64};
const prometheus::Histogram::BucketBoundaries kLoadBuckets = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                              1.0,  2.5,   5.0,  10., 30.,  60.};

prometheus::Histogram::BucketBoundaries Powers(double first, double last) {
  prometheus::Histogram::BucketBoundaries b;
  for (double v = first; v <= last; v *= 2) b.push_back(v);
  return b;
}

constexpr absl::string_view kBase = "_base";
constexpr absl::string_view kOther = "_other";

// Builds the families the state collector reports on each scrape.
class FamilyBuilder {
 public:
  MetricFamily& Family(const std::string& name, const std::string& help, MetricType type) {
    for (MetricFamily& f : families_) {
      if (f.name == name) return f;
    }
    families_.push_back({name, help, type, {}});
    return families_.back();
  }
  void Gauge(const std::string& name, const std::string& help, Labels labels, double value) {
    ClientMetric m;
    m.label = std::move(labels);
    m.gauge.value = value;
    Family(name, help, MetricType::Gauge).metric.push_back(std::move(m));
  }
  void Counter(const std::string& name, const std::string& help, Labels labels, double value) {
    ClientMetric m;
    m.label = std::move(labels);
    m.counter.value = value;
    Family(name, help, MetricType::Counter).metric.push_back(std::move(m));
  }
  std::vector<MetricFamily> Take() { return std::move(families_); }

 private:
  std::vector<MetricFamily> families_;  // few (tens): a linear search is fine
};

Labels With(Labels labels, std::string name, std::string value) {
  labels.push_back({std::move(name), std::move(value)});
  return labels;
}

}  // namespace

absl::Status ParseRoutingDetail(absl::string_view text, RoutingDetail* out) {
  if (text == "expert") {
    *out = RoutingDetail::kExpert;
  } else if (text == "layer") {
    *out = RoutingDetail::kLayer;
  } else if (text == "adapter") {
    *out = RoutingDetail::kAdapter;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--metrics_routing_detail: \"",
                                                   std::string(text),
                                                   "\" (expected expert, layer or adapter)"));
  }
  return absl::OkStatus();
}

struct Metrics::PerAdapter {
  std::string label;
  prometheus::Histogram* ttft;
  prometheus::Histogram* e2e;
  prometheus::Histogram* queue_time;
  prometheus::Counter* requests;
  prometheus::Counter* prompt_tokens;
  prometheus::Counter* generation_tokens;
};

// Reads the scheduler, the registry and the routing windows when scraped.
class Metrics::State {
 public:
  explicit State(const Metrics* metrics, const Scheduler* scheduler,
                 const AdapterRegistry* registry, const RoutingWindow* routing)
      : m_(metrics), scheduler_(scheduler), registry_(registry), routing_(routing) {}

  std::vector<MetricFamily> Collect() const {
    FamilyBuilder out;
    const MetricsOptions& o = m_->options_;
    const Labels model = {{"model_name", o.model_name}};
    const SchedulerStats st = scheduler_->stats();

    // The Gateway API Inference Extension's protocol, exactly as vLLM emits it.
    out.Gauge("vllm:num_requests_running", "Number of requests in model execution batches.", model,
              static_cast<double>(st.running));
    out.Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", model,
              static_cast<double>(st.waiting));
    out.Gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", model,
              st.kv_usage);
    out.Gauge("vllm:gpu_cache_usage_perc",
              "KV-cache usage (the older name). 1 means 100 percent usage.", model, st.kv_usage);
    out.Gauge("vllm:cache_config_info", "Information of the KV cache configuration.",
              {{"block_size", absl::StrCat(o.kv_block_size)},
               {"num_gpu_blocks", absl::StrCat(o.kv_blocks)}},
              1);
    out.Gauge("vllm:lora_requests_info", "Running stats on LoRA requests.",
              {{"max_lora", absl::StrCat(o.max_lora)},
               {"running_lora_adapters", absl::StrJoin(st.running_adapters, ",")},
               {"waiting_lora_adapters", absl::StrJoin(st.waiting_adapters, ",")}},
              absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
    out.Counter("vllm:num_preemptions_total", "Cumulative number of preemptions.", model,
                static_cast<double>(st.preemptions));
    out.Counter("vllm:prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.",
                model, static_cast<double>(st.prefix_query_tokens));
    out.Counter("vllm:prefix_cache_hits_total", "Prompt tokens found in the prefix cache.", model,
                static_cast<double>(st.prefix_hit_tokens));

    out.Gauge("switchyard_requests_outstanding", "Requests submitted and not yet finished.", {},
              static_cast<double>(st.outstanding));
    for (const auto& [state, n] :
         {std::pair<const char*, int>{"used", st.kv_blocks_used},
          {"cached", st.kv_blocks_cached},
          {"free", st.kv_blocks - st.kv_blocks_used - st.kv_blocks_cached}}) {
      out.Gauge("switchyard_kv_blocks",
                "KV cache blocks: used by sequences, cached prefixes nobody holds, free.",
                {{"state", state}}, n);
    }

    // Adapters in the registry.
    const std::vector<AdapterInfo> adapters = registry_->List();
    for (const AdapterInfo& a : adapters) {
      const Labels l = {{"adapter", a.name}};
      out.Gauge("switchyard_adapter_resident",
                "1 when the adapter's weights are in memory (0: evicted, reloaded on demand).", l,
                a.resident ? 1 : 0);
      out.Gauge("switchyard_adapter_bytes", "Bytes of the adapter's weights.", l,
                static_cast<double>(a.bytes));
      out.Gauge("switchyard_adapter_in_use", "Requests holding the adapter's current version.", l,
                static_cast<double>(a.in_use));
      out.Gauge("switchyard_adapter_version", "The adapter's current version number.", l,
                static_cast<double>(a.version));
      out.Counter("switchyard_adapter_evictions_total",
                  "Evictions under the adapter memory budget.", l,
                  static_cast<double>(a.evictions));
      if (a.diagnostics) CollectDiagnostics(*a.diagnostics, l, out);
    }
    const AdapterRegistryCounters rc = registry_->counters();
    for (const auto& [event, n] : {std::pair<const char*, int64_t>{"load", rc.loads},
                                   {"unload", rc.unloads},
                                   {"swap", rc.swaps},
                                   {"eviction", rc.evictions},
                                   {"reload", rc.reloads}}) {
      out.Counter("switchyard_adapter_registry_events_total",
                  "Adapter registry events over all adapters.", {{"event", event}},
                  static_cast<double>(n));
    }

    CollectRouting(adapters, out);
    return out.Take();
  }

 private:
  // Per adapter only (bounded by the adapters loaded): the per-site detail is served by
  // GET /v1/adapters/{name}/experts.
  static void CollectDiagnostics(const AdapterDiagnostics& d, const Labels& l, FamilyBuilder& out) {
    const DiagnosticsSummary s = d.Summary();
    out.Gauge("switchyard_adapter_expert_similarity_max",
              "Largest cosine similarity between two experts' weight deltas at one site.", l,
              s.max_similarity);
    out.Gauge("switchyard_adapter_redundant_expert_pairs",
              "Pairs of experts at one site whose weight deltas have cosine similarity >= 0.9.", l,
              static_cast<double>(d.RedundantPairs(kDefaultRedundantSimilarity).size()));
    out.Gauge("switchyard_adapter_expert_effective_rank_min",
              "Smallest effective rank (exp of the singular-value entropy) of an expert's delta.",
              l, s.min_effective_rank);
    out.Gauge("switchyard_adapter_expert_effective_rank_mean",
              "Mean effective rank of the experts' weight deltas over all sites.", l,
              s.mean_effective_rank);
  }

  void CollectRouting(const std::vector<AdapterInfo>& adapters, FamilyBuilder& out) const {
    absl::flat_hash_map<std::string, uint64_t> current;
    for (const AdapterInfo& a : adapters) current[a.name] = a.version;
    for (const RoutingSnapshot& snap : routing_->SnapshotAll()) {
      auto it = current.find(snap.adapter);
      if (it == current.end() || it->second != snap.version) continue;  // unloaded or replaced
      const RoutingDetail detail =
          m_->Detailed(snap.adapter) ? m_->options_.routing_detail : RoutingDetail::kAdapter;
      const Labels adapter = {{"adapter", snap.adapter}};
      int dead = 0;
      int64_t tokens = 0;
      double sums[6] = {0, 0, 0, 0, 0, 0};
      int sites = 0;
      for (size_t i = 0; i < snap.total.size(); ++i) {
        const SiteRoutingStats& total = snap.total[i];
        const SiteRoutingStats& window = snap.window[i];
        const Labels site = With(With(adapter, "layer", absl::StrCat(total.layer)), "site",
                                 RoutingSiteName(total.site));
        tokens += total.tokens;
        if (detail != RoutingDetail::kAdapter) {
          out.Counter("switchyard_routing_tokens_total",
                      "Rows routed at a site (MH-MoE: sub-tokens).", site,
                      static_cast<double>(total.tokens));
        }
        if (detail == RoutingDetail::kExpert) {
          for (int e = 0; e < total.num_experts; ++e) {
            const Labels ex = With(site, "expert", absl::StrCat(e));
            out.Counter("switchyard_expert_routed_tokens_total", "Rows that selected the expert.",
                        ex, static_cast<double>(total.selections[e]));
            out.Counter("switchyard_expert_gate_weight_total",
                        "Sum of the expert's combine weights (importance).", ex, total.gate_sum[e]);
          }
        }
        if (window.tokens == 0) continue;
        const RoutingHealth h = ComputeRoutingHealth(window);
        ++sites;
        if (snap.window_full) dead += h.dead_experts;
        const double values[6] = {h.load_cv,        h.switch_aux_loss, h.importance_loss,
                                  h.router_entropy, h.z_loss,          h.experts_per_token};
        for (int k = 0; k < 6; ++k) sums[k] += values[k];
        if (detail == RoutingDetail::kAdapter) continue;
        out.Gauge("switchyard_routing_window_tokens", "Rows in the sliding window.", site,
                  static_cast<double>(window.tokens));
        if (snap.window_full) {
          out.Gauge("switchyard_routing_dead_experts",
                    "Experts with no load in the full window (dense families: mean probability "
                    "under 1e-3).",
                    site, h.dead_experts);
        }
        EmitBalance(out, site, values);
        if (detail == RoutingDetail::kExpert) {
          for (int e = 0; e < window.num_experts; ++e) {
            out.Gauge("switchyard_expert_load",
                      "Share of the window's selections that went to the expert (f_i).",
                      With(site, "expert", absl::StrCat(e)), h.load[e]);
          }
        }
      }
      out.Gauge("switchyard_adapter_window_full",
                "1 once the adapter's routing window holds enough rows to judge dead experts.",
                adapter, snap.window_full ? 1 : 0);
      if (snap.window_full) {
        out.Gauge("switchyard_adapter_dead_experts", "Dead experts summed over layers and sites.",
                  adapter, dead);
      }
      if (detail == RoutingDetail::kAdapter) {
        out.Counter("switchyard_routing_tokens_total",
                    "Rows routed at a site (MH-MoE: sub-tokens).", adapter,
                    static_cast<double>(tokens));
        if (sites > 0) {
          double mean[6];
          for (int k = 0; k < 6; ++k) mean[k] = sums[k] / sites;
          EmitBalance(out, adapter, mean);
        }
      }
    }
  }

  static void EmitBalance(FamilyBuilder& out, const Labels& labels, const double v[6]) {
    out.Gauge("switchyard_routing_load_cv",
              "Coefficient of variation of the experts' load over the window (0 = balanced).",
              labels, v[0]);
    out.Gauge("switchyard_routing_switch_aux_loss",
              "Switch Transformer auxiliary loss N * sum_i f_i * P_i over the window (1 = "
              "balanced).",
              labels, v[1]);
    out.Gauge("switchyard_routing_importance_loss",
              "Importance loss CV(gate-weight sums)^2 over the window.", labels, v[2]);
    out.Gauge("switchyard_routing_entropy",
              "Mean router entropy over the window, divided by log N (1 = uniform).", labels, v[3]);
    out.Gauge("switchyard_routing_z_loss", "Router z-loss: mean of logsumexp(logits)^2.", labels,
              v[4]);
    out.Gauge("switchyard_routing_experts_per_token", "Mean experts selected per row.", labels,
              v[5]);
  }

  const Metrics* const m_;
  const Scheduler* const scheduler_;
  const AdapterRegistry* const registry_;
  const RoutingWindow* const routing_;
};

Metrics::Metrics(const Scheduler* scheduler, const AdapterRegistry* registry,
                 const RoutingWindow* routing, MetricsOptions options)
    : options_(std::move(options)),
      state_(std::make_unique<State>(this, scheduler, registry, routing)) {
  prometheus::Registry& r = registry_;
  ttft_ = &prometheus::BuildHistogram()
               .Name("vllm:time_to_first_token_seconds")
               .Help("Histogram of time to first token in seconds.")
               .Register(r);
  e2e_ = &prometheus::BuildHistogram()
              .Name("vllm:e2e_request_latency_seconds")
              .Help("Histogram of end to end request latency in seconds.")
              .Register(r);
  queue_time_ = &prometheus::BuildHistogram()
                     .Name("vllm:request_queue_time_seconds")
                     .Help("Histogram of time spent waiting in the queue in seconds.")
                     .Register(r);
  prompt_tokens_ = &prometheus::BuildCounter()
                        .Name("vllm:prompt_tokens_total")
                        .Help("Number of prefill tokens processed (counted as requests finish).")
                        .Register(r);
  generation_tokens_ = &prometheus::BuildCounter()
                            .Name("vllm:generation_tokens_total")
                            .Help("Number of generation tokens processed.")
                            .Register(r);
  success_ = &prometheus::BuildCounter()
                  .Name("vllm:request_success_total")
                  .Help("Count of successfully processed requests.")
                  .Register(r);
  adapter_requests_ = &prometheus::BuildCounter()
                           .Name("switchyard_adapter_requests_total")
                           .Help("Requests finished, by adapter.")
                           .Register(r);
  adapter_prompt_tokens_ = &prometheus::BuildCounter()
                                .Name("switchyard_adapter_prompt_tokens_total")
                                .Help("Prompt tokens of finished requests, by adapter.")
                                .Register(r);
  adapter_generation_tokens_ = &prometheus::BuildCounter()
                                    .Name("switchyard_adapter_generation_tokens_total")
                                    .Help("Tokens generated for finished requests, by adapter.")
                                    .Register(r);
  errors_ = &prometheus::BuildCounter()
                 .Name("switchyard_request_errors_total")
                 .Help(
                     "Requests refused (bad input, unknown adapter, full queue) or ended "
                     "abnormally (cancelled, deadline, internal), by gRPC status code.")
                 .Register(r);
  adapter_admin_ = &prometheus::BuildCounter()
                        .Name("switchyard_adapter_admin_total")
                        .Help("Adapter loads, swaps and unloads, by adapter and result.")
                        .Register(r);
  adapter_load_seconds_ = &prometheus::BuildHistogram()
                               .Name("switchyard_adapter_load_seconds")
                               .Help("Time to load or swap an adapter.")
                               .Register(r);
  const prometheus::Labels model = {{"model_name", options_.model_name}};
  inter_token_ = &prometheus::BuildHistogram()
                      .Name("vllm:inter_token_latency_seconds")
                      .Help("Histogram of inter-token latency in seconds.")
                      .Register(r)
                      .Add(model, kInterTokenBuckets);
  step_seconds_ = &prometheus::BuildHistogram()
                       .Name("switchyard_step_seconds")
                       .Help("Time of one scheduler step (planning, engine, sampling, delivery).")
                       .Register(r)
                       .Add({}, kStepBuckets);
  step_tokens_ = &prometheus::BuildHistogram()
                      .Name("switchyard_step_tokens")
                      .Help("Tokens in one step's batch (prefill chunks and decode tokens).")
                      .Register(r)
                      .Add({}, Powers(1, 16384));
  step_sequences_ = &prometheus::BuildHistogram()
                         .Name("switchyard_step_sequences")
                         .Help("Sequences in one step's batch.")
                         .Register(r)
                         .Add({}, Powers(1, 1024));
  step_adapters_ = &prometheus::BuildHistogram()
                        .Name("switchyard_step_adapters")
                        .Help("Distinct adapters in one step's batch (the base model not counted).")
                        .Register(r)
                        .Add({}, kAdapterCountBuckets);
  steps_ = &prometheus::BuildCounter()
                .Name("switchyard_steps_total")
                .Help("Scheduler steps run.")
                .Register(r)
                .Add({});
  // Series that exist before the first event, so rates and absent() behave from the start.
  prompt_total_ = &prompt_tokens_->Add(model);
  generation_total_ = &generation_tokens_->Add(model);
  const char* reasons[3] = {"stop", "length", "abort"};
  for (int i = 0; i < 3; ++i) {
    finished_[i] =
        &success_->Add({{"model_name", options_.model_name}, {"finished_reason", reasons[i]}});
  }
}

Metrics::~Metrics() = default;

bool Metrics::Detailed(const std::string& adapter) const {
  absl::MutexLock lock(&mu_);
  auto it = adapters_.find(adapter);
  return it != adapters_.end() && it->second->label == adapter;
}

Metrics::PerAdapter& Metrics::Adapter(const std::string& adapter) {
  absl::MutexLock lock(&mu_);
  auto it = adapters_.find(adapter);
  if (it != adapters_.end()) return *it->second;
  std::string label = adapter.empty() ? std::string(kBase) : adapter;
  if (!adapter.empty()) {
    if (detailed_ < options_.max_detailed_adapters) {
      ++detailed_;
    } else {
      label = std::string(kOther);
    }
  }
  auto p = std::make_unique<PerAdapter>();
  p->label = label;
  const prometheus::Labels l = {{"model_name", options_.model_name}, {"adapter", label}};
  p->ttft = &ttft_->Add(l, kTtftBuckets);
  p->e2e = &e2e_->Add(l, kRequestLatencyBuckets);
  p->queue_time = &queue_time_->Add(l, kRequestLatencyBuckets);
  p->requests = &adapter_requests_->Add({{"adapter", label}});
  p->prompt_tokens = &adapter_prompt_tokens_->Add({{"adapter", label}});
  p->generation_tokens = &adapter_generation_tokens_->Add({{"adapter", label}});
  return *adapters_.emplace(adapter, std::move(p)).first->second;
}

void Metrics::OnRequestFinished(const std::string& adapter, const RequestEvent& last) {
  const RequestUsage& u = last.usage;
  PerAdapter& a = Adapter(adapter);
  if (u.first_token != absl::InfinitePast()) {
    a.ttft->Observe(absl::ToDoubleSeconds(u.first_token - u.arrival));
  }
  a.e2e->Observe(absl::ToDoubleSeconds(u.finish - u.arrival));
  if (u.scheduled != absl::InfinitePast()) {
    a.queue_time->Observe(absl::ToDoubleSeconds(u.scheduled - u.arrival));
  }
  a.requests->Increment();
  a.prompt_tokens->Increment(static_cast<double>(u.prompt_tokens));
  a.generation_tokens->Increment(static_cast<double>(u.completion_tokens));
  prompt_total_->Increment(static_cast<double>(u.prompt_tokens));
  int reason = 2;  // abort
  absl::StatusCode code = absl::StatusCode::kOk;
  switch (last.finish) {
    case FinishReason::kStop:
    case FinishReason::kStopString:
      reason = 0;
      break;
    case FinishReason::kLength:
      reason = 1;
      break;
    case FinishReason::kCancelled:
      code = absl::StatusCode::kCancelled;
      break;
    case FinishReason::kDeadline:
      code = absl::StatusCode::kDeadlineExceeded;
      break;
    default:
      code = last.error.ok() ? absl::StatusCode::kInternal : last.error.code();
  }
  finished_[reason]->Increment();
  if (code != absl::StatusCode::kOk) OnRequestRefused(code);
}

void Metrics::OnRequestRefused(absl::StatusCode code) {
  errors_->Add({{"code", absl::StatusCodeToString(code)}}).Increment();
}

void Metrics::OnAdapterAdmin(const std::string& adapter, absl::string_view action,
                             absl::Duration took, const absl::Status& status) {
  adapter_admin_
      ->Add({{"adapter", adapter},
             {"action", std::string(action)},
             {"result", status.ok() ? "ok" : absl::StatusCodeToString(status.code())}})
      .Increment();
  if (status.ok() && action != "unload") {
    adapter_load_seconds_->Add({{"action", std::string(action)}}, kLoadBuckets)
        .Observe(absl::ToDoubleSeconds(took));
  }
}

void Metrics::OnStep(const StepRecord& step) {
  steps_->Increment();
  step_seconds_->Observe(absl::ToDoubleSeconds(step.step_time));
  step_tokens_->Observe(static_cast<double>(step.tokens));
  step_sequences_->Observe(static_cast<double>(step.sequences));
  step_adapters_->Observe(step.distinct_adapters);
  generation_total_->Increment(static_cast<double>(step.sampled_tokens));
  if (step.inter_token_s.empty()) return;
  // One observation of the whole step's gaps: one lock per step, not per token.
  std::vector<double> counts(kInterTokenBuckets.size() + 1, 0);
  double sum = 0;
  for (double gap : step.inter_token_s) {
    const size_t b = static_cast<size_t>(
        std::lower_bound(kInterTokenBuckets.begin(), kInterTokenBuckets.end(), gap) -
        kInterTokenBuckets.begin());
    counts[b] += 1;
    sum += gap;
  }
  inter_token_->ObserveMultiple(counts, sum);
}

std::string Metrics::Render() const {
  std::vector<MetricFamily> families = registry_.Collect();
  std::vector<MetricFamily> state = state_->Collect();
  families.insert(families.end(), std::make_move_iterator(state.begin()),
                  std::make_move_iterator(state.end()));
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace switchyard

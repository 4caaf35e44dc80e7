// Prometheus metrics: routing health per adapter, layer and expert (Switchyard's own), the
// Gateway API Inference Extension's vLLM metrics, and serving latency and queue metrics with
// vLLM's names and buckets. docs/metrics.md lists every series with its formula.
//
// Two sources, one registry view:
//   * events (requests finishing, engine steps, adapter admin) are recorded as they happen into
//     prometheus-cpp counters and histograms: per request or per step, never per token (a step's
//     inter-token gaps go into the histogram in one batched observation);
//   * state (queue, KV cache, adapters, routing windows) is read when scraped, from the
//     scheduler's published stats, the adapter registry and the engine's RoutingWindow, so the
//     engine thread does no metrics work for it at all.
//
// Thread-safety: the On* hooks may run on any thread; Render and scrapes run concurrently.
#pragma once

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/adapters/registry.h"
#include "engine/adapters/routing_window.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/scheduler/scheduler.h"

namespace switchyard {

// How much routing detail to export (series count: docs/metrics.md).
enum class RoutingDetail {
  kExpert,   // per adapter, layer and site, and per expert
  kLayer,    // per adapter, layer and site (no per-expert series)
  kAdapter,  // per adapter only (balance figures averaged over its routed sites)
};
absl::Status ParseRoutingDetail(absl::string_view text, RoutingDetail* out);

struct MetricsOptions {
  std::string model_name;  // vLLM's model_name label: the served model name
  RoutingDetail routing_detail = RoutingDetail::kExpert;
  // Adapters with per-layer/per-expert routing series and their own request-metric labels: the
  // first this many to receive requests; later ones fold into adapter="_other" (request metrics)
  // and export adapter-level routing series only.
  int max_detailed_adapters = 16;
  int max_lora = 8;        // lora_requests_info's max_lora: the distinct adapters per step
  int kv_block_size = 16;  // cache_config_info
  int kv_blocks = 0;
};

class Metrics {
 public:
  // None is owned; all must outlive the metrics.
  Metrics(const Scheduler* scheduler, const AdapterRegistry* registry, const RoutingWindow* routing,
          MetricsOptions options);
  ~Metrics();

  // Hooks (see FrontendObserver and Scheduler::set_step_observer).
  void OnRequestFinished(const std::string& adapter, const RequestEvent& last);
  void OnRequestRefused(absl::StatusCode code);
  void OnAdapterAdmin(const std::string& adapter, absl::string_view action, absl::Duration took,
                      const absl::Status& status);
  void OnStep(const StepRecord& step);

  // The text exposition (/metrics on the metrics port and the HTTP port).
  std::string Render() const;

 private:
  class State;
  struct PerAdapter;
  // The label value for `adapter` ("_base", its name, or "_other" beyond the detailed ones).
  PerAdapter& Adapter(const std::string& adapter);
  // Whether `adapter` has its own label (one of the first max_detailed_adapters with traffic).
  bool Detailed(const std::string& adapter) const;

  const MetricsOptions options_;
  prometheus::Registry registry_;
  std::unique_ptr<State> state_;

  prometheus::Family<prometheus::Histogram>* ttft_;
  prometheus::Family<prometheus::Histogram>* e2e_;
  prometheus::Family<prometheus::Histogram>* queue_time_;
  prometheus::Family<prometheus::Counter>* prompt_tokens_;
  prometheus::Family<prometheus::Counter>* generation_tokens_;
  prometheus::Family<prometheus::Counter>* success_;
  prometheus::Family<prometheus::Counter>* adapter_requests_;
  prometheus::Family<prometheus::Counter>* adapter_prompt_tokens_;
  prometheus::Family<prometheus::Counter>* adapter_generation_tokens_;
  prometheus::Family<prometheus::Counter>* errors_;
  prometheus::Family<prometheus::Counter>* adapter_admin_;
  prometheus::Family<prometheus::Histogram>* adapter_load_seconds_;
  prometheus::Histogram* inter_token_;
  prometheus::Histogram* step_seconds_;
  prometheus::Histogram* step_tokens_;
  prometheus::Histogram* step_sequences_;
  prometheus::Histogram* step_adapters_;
  prometheus::Counter* steps_;
  prometheus::Counter* prompt_total_;
  prometheus::Counter* generation_total_;
  prometheus::Counter* finished_[3];  // stop, length, abort

  mutable absl::Mutex mu_;  // the per-adapter handles (taken once per finished request)
  absl::flat_hash_map<std::string, std::unique_ptr<PerAdapter>> adapters_ ABSL_GUARDED_BY(mu_);
  int detailed_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace switchyard

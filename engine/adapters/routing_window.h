// Routing statistics over time: merges the engine's per-step RoutingStats into, per adapter and
// routed site, a lifetime total (for Prometheus counters) and a sliding window of about the last
// `window_tokens` routed rows (for balance gauges and dead-expert detection).
//
// The window is a ring of `buckets` buckets of window_tokens / buckets rows each; a step's rows go
// into the newest bucket, and once it is full the next step starts a new bucket in place of the
// oldest. Steps are not split, so a bucket may overshoot by less than one step's rows: the window
// holds between window_tokens * (1 - 1/buckets) rows and window_tokens plus `buckets` steps' rows,
// in constant memory per site whatever the traffic.
//
// A new version of an adapter (hot swap) starts fresh statistics; steps of older versions still
// finishing are not mixed into the new version's figures.
//
// Thread-safety: all methods are thread-safe (the engine thread adds, readers snapshot). Add never
// waits for a reader: it queues the step under a lock held only to append, and merges the queue
// only when the state is free; a reader merges what is queued before it looks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "engine/adapters/routing_stats.h"

namespace switchyard {

struct RoutingWindowOptions {
  int64_t window_tokens = 4096;
  int buckets = 8;
};

struct RoutingSnapshot {
  std::string adapter;
  uint64_t version = 0;
  int64_t window_tokens = 0;  // the configured window
  // Per site, ordered by (layer, site): the sums over the window and over the version's life.
  std::vector<SiteRoutingStats> window;
  std::vector<SiteRoutingStats> total;
  // Whether the window has seen window_tokens rows (dead-expert counts mean something only then).
  bool window_full = false;
};

class RoutingWindow {
 public:
  explicit RoutingWindow(RoutingWindowOptions options = {});

  void Add(const RoutingStats& step);
  std::optional<RoutingSnapshot> Snapshot(absl::string_view adapter) const;
  // The version before the current one, as it stood when the swap's first step arrived (plus
  // the steps its last requests ran after): for comparing an adapter before and after a swap.
  // Only a version that routed anything is kept.
  std::optional<RoutingSnapshot> PreviousSnapshot(absl::string_view adapter) const;
  std::vector<RoutingSnapshot> SnapshotAll() const;
  // Drops an adapter's statistics (after unload).
  void Forget(absl::string_view adapter);

 private:
  struct Site {
    SiteRoutingStats total;
    std::vector<SiteRoutingStats> ring;  // `buckets` buckets
    int newest = 0;
  };
  struct Adapter {
    uint64_t version = 0;
    std::vector<Site> sites;  // sorted by (layer, site)
  };
  void AddSite(Site& site, const SiteRoutingStats& step) const;
  // Merging queued steps changes no observable state (a snapshot always includes them): const.
  void Merge(const AdapterRoutingStats& a) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DrainPending() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  RoutingSnapshot MakeSnapshot(const std::string& name, const Adapter& a) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const RoutingWindowOptions options_;
  const int64_t bucket_rows_;
  mutable absl::Mutex mu_;
  mutable absl::flat_hash_map<std::string, Adapter> adapters_ ABSL_GUARDED_BY(mu_);
  mutable absl::flat_hash_map<std::string, Adapter> previous_ ABSL_GUARDED_BY(mu_);
  mutable absl::Mutex pending_mu_;
  mutable std::vector<AdapterRoutingStats> pending_ ABSL_GUARDED_BY(pending_mu_);
};

}  // namespace switchyard

#include "engine/adapters/routing_window.h"

#include <algorithm>
#include <utility>

namespace switchyard {

RoutingWindow::RoutingWindow(RoutingWindowOptions options)
    : options_(options),
      bucket_rows_(std::max<int64_t>(1, options.window_tokens / std::max(1, options.buckets))) {}

void RoutingWindow::AddSite(Site& site, const SiteRoutingStats& step) const {
  site.total.Merge(step);
  SiteRoutingStats* bucket = &site.ring[site.newest];
  if (bucket->tokens >= bucket_rows_) {
    site.newest = (site.newest + 1) % static_cast<int>(site.ring.size());
    bucket = &site.ring[site.newest];
    *bucket = bucket->EmptyLike();
  }
  bucket->Merge(step);
}

void RoutingWindow::Add(const RoutingStats& step) {
  if (step.adapters.empty()) return;
  {
    absl::MutexLock lock(&pending_mu_);
    pending_.insert(pending_.end(), step.adapters.begin(), step.adapters.end());
  }
  if (mu_.TryLock()) {  // a reader holds the state: it merges the queue before it looks
    DrainPending();
    mu_.Unlock();
  }
}

void RoutingWindow::DrainPending() const {
  std::vector<AdapterRoutingStats> queued;
  {
    absl::MutexLock lock(&pending_mu_);
    queued.swap(pending_);
  }
  for (const AdapterRoutingStats& a : queued) Merge(a);
}

void RoutingWindow::Merge(const AdapterRoutingStats& a) const {
  Adapter* target = &adapters_[a.adapter];
  if (a.version < target->version) {
    // An older version still finishing after a swap: into the previous version's statistics.
    auto prev = previous_.find(a.adapter);
    if (prev == previous_.end() || prev->second.version != a.version) return;
    target = &prev->second;
  } else if (a.version > target->version) {
    if (!target->sites.empty()) previous_[a.adapter] = std::move(*target);
    *target = Adapter{a.version, {}};
  }
  Adapter& entry = *target;
  for (const SiteRoutingStats& s : a.sites) {
    const auto key = std::make_pair(s.layer, s.site);
    auto it = std::lower_bound(entry.sites.begin(), entry.sites.end(), key,
                               [](const Site& x, const std::pair<int, int>& k) {
                                 return std::make_pair(x.total.layer, x.total.site) < k;
                               });
    if (it == entry.sites.end() || it->total.layer != s.layer || it->total.site != s.site) {
      Site fresh;
      fresh.total = s.EmptyLike();
      fresh.ring.assign(std::max(1, options_.buckets), s.EmptyLike());
      it = entry.sites.insert(it, std::move(fresh));
    }
    AddSite(*it, s);
  }
}

RoutingSnapshot RoutingWindow::MakeSnapshot(const std::string& name, const Adapter& a) const {
  RoutingSnapshot snap;
  snap.adapter = name;
  snap.version = a.version;
  snap.window_tokens = options_.window_tokens;
  snap.window_full = !a.sites.empty();
  for (const Site& site : a.sites) {
    SiteRoutingStats window = site.total.EmptyLike();
    for (const SiteRoutingStats& bucket : site.ring) window.Merge(bucket);
    snap.window_full = snap.window_full && site.total.tokens >= options_.window_tokens;
    snap.window.push_back(std::move(window));
    snap.total.push_back(site.total);
  }
  return snap;
}

std::optional<RoutingSnapshot> RoutingWindow::Snapshot(absl::string_view adapter) const {
  absl::MutexLock lock(&mu_);
  DrainPending();
  auto it = adapters_.find(adapter);
  if (it == adapters_.end()) return std::nullopt;
  return MakeSnapshot(it->first, it->second);
}

std::optional<RoutingSnapshot> RoutingWindow::PreviousSnapshot(absl::string_view adapter) const {
  absl::MutexLock lock(&mu_);
  DrainPending();
  auto it = previous_.find(adapter);
  if (it == previous_.end()) return std::nullopt;
  return MakeSnapshot(it->first, it->second);
}

std::vector<RoutingSnapshot> RoutingWindow::SnapshotAll() const {
  absl::MutexLock lock(&mu_);
  DrainPending();
  std::vector<RoutingSnapshot> out;
  for (const auto& [name, a] : adapters_) out.push_back(MakeSnapshot(name, a));
  std::sort(out.begin(), out.end(), [](const RoutingSnapshot& x, const RoutingSnapshot& y) {
    return x.adapter < y.adapter;
  });
  return out;
}

void RoutingWindow::Forget(absl::string_view adapter) {
  absl::MutexLock lock(&mu_);
  DrainPending();
  adapters_.erase(adapter);
  previous_.erase(adapter);
}

}  // namespace switchyard

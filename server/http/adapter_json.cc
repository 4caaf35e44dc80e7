#include "server/http/adapter_json.h"

#include <vector>

#include "absl/strings/str_split.h"

namespace switchyard {
namespace {

using json = nlohmann::json;

json SitesJson(const std::vector<SiteRoutingStats>& stats) {
  json out = json::array();
  for (const SiteRoutingStats& s : stats) {
    const RoutingHealth h = ComputeRoutingHealth(s);
    out.push_back({{"layer", s.layer},
                   {"site", RoutingSiteName(s.site)},
                   {"tokens", s.tokens},
                   {"selections", s.selections},
                   {"load", h.load},
                   {"mean_prob", h.mean_prob},
                   {"gate_sum", s.gate_sum},
                   {"experts_per_token_histogram", s.experts_per_token},
                   {"dead_experts", h.dead_experts},
                   {"load_cv", h.load_cv},
                   {"balancedness", h.balancedness},
                   {"switch_aux_loss", h.switch_aux_loss},
                   {"importance_loss", h.importance_loss},
                   {"router_entropy", h.router_entropy},
                   {"z_loss", h.z_loss},
                   {"experts_per_token", h.experts_per_token}});
  }
  return out;
}

json SiteDiagnosticsJson(const SiteDiagnostics& d) {
  json similarity = json::array();
  for (int i = 0; i < d.experts; ++i) {
    similarity.push_back(std::vector<double>(d.similarity.begin() + size_t(i) * d.experts,
                                             d.similarity.begin() + size_t(i + 1) * d.experts));
  }
  json out = {{"layer", d.layer},
              {"site", d.site},
              {"experts", d.experts},
              {"rank", d.rank},
              {"norm", d.norm},
              {"effective_rank", d.effective_rank},
              {"similarity", std::move(similarity)}};
  if (!d.router_norm.empty()) out["router_norm"] = d.router_norm;
  return out;
}

}  // namespace

json RoutingSnapshotJson(const RoutingSnapshot& snap) {
  return {{"adapter", snap.adapter},
          {"version", snap.version},
          {"window_tokens", snap.window_tokens},
          {"window_full", snap.window_full},
          {"window", SitesJson(snap.window)},
          {"total", SitesJson(snap.total)}};
}

json ExpertReportJson(const ExpertReport& report) {
  json sites = json::array();
  for (const SiteDiagnostics& d : report.diagnostics->sites)
    sites.push_back(SiteDiagnosticsJson(d));
  json redundant = json::array();
  for (const RedundantPair& p : report.redundant) {
    redundant.push_back({{"layer", p.layer},
                         {"site", p.site},
                         {"experts", {p.first, p.second}},
                         {"similarity", p.similarity}});
  }
  json dead = json::array();
  for (const ExpertReport::DeadExperts& d : report.dead) {
    dead.push_back({{"layer", d.layer}, {"site", d.site}, {"experts", d.experts}});
  }
  return {{"adapter", report.adapter},
          {"version", report.version},
          {"similarity_threshold", report.similarity_threshold},
          {"summary",
           {{"sites", report.summary.sites},
            {"max_similarity", report.summary.max_similarity},
            {"min_effective_rank", report.summary.min_effective_rank},
            {"mean_effective_rank", report.summary.mean_effective_rank},
            {"redundant_pairs", report.redundant.size()}}},
          {"sites", std::move(sites)},
          {"redundant_pairs", std::move(redundant)},
          {"window_full", report.window_full},
          {"dead_experts", std::move(dead)}};
}

std::optional<std::string> QueryParameter(absl::string_view target, absl::string_view key) {
  const size_t q = target.find('?');
  if (q == absl::string_view::npos) return std::nullopt;
  for (absl::string_view part : absl::StrSplit(target.substr(q + 1), '&')) {
    const size_t eq = part.find('=');
    if (part.substr(0, eq) != key) continue;
    return std::string(eq == absl::string_view::npos ? absl::string_view() : part.substr(eq + 1));
  }
  return std::nullopt;
}

}  // namespace switchyard

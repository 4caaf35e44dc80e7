#include "client/inspect.h"

#include <cmath>
#include <cstdio>
#include <map>

#include "absl/strings/str_cat.h"
#include "client/connection.h"
#include "google/protobuf/util/json_util.h"

namespace switchyard::client {
namespace {

int Error(const grpc::Status& s) {
  std::fprintf(stderr, "error: %s: %s\n", StatusCodeName(s.error_code()),
               s.error_message().c_str());
  return 1;
}

// One heatmap cell (two columns) for a similarity: blocks by |cos|, or a 256-colour background
// from white (0) to deep red (1), blue-tinted for negative values.
std::string Cell(double cos, bool diagonal, bool colour) {
  if (diagonal) return colour ? "\x1b[48;5;236m  \x1b[0m" : "··";
  const double a = std::min(1.0, std::abs(cos));
  if (!colour) {
    static const char* kBlocks[] = {"  ", "░░", "▒▒", "▓▓", "██"};
    return kBlocks[std::min(4, static_cast<int>(a * 5))];
  }
  static const int kReds[] = {231, 224, 217, 210, 203, 196, 160};
  static const int kBlues[] = {231, 189, 153, 117, 81, 45, 33};
  const int step = std::min(6, static_cast<int>(a * 7));
  return absl::StrCat("\x1b[48;5;", cos < 0 ? kBlues[step] : kReds[step], "m  \x1b[0m");
}

void PrintSite(const v1::SiteDiagnostics& s, bool colour) {
  const int E = s.experts();
  std::printf("\nlayer %d %s: %d expert%s, rank %d\n", s.layer(), s.site().c_str(), E,
              E == 1 ? "" : "s", s.rank_size() > 0 ? s.rank(0) : 0);
  if (E > 1) {
    std::printf("  similarity  ");
    for (int j = 0; j < E; ++j) std::printf("%-2d", j % 100);
    std::printf("\n");
    for (int i = 0; i < E; ++i) {
      std::printf("  e%-3d        ", i);
      for (int j = 0; j < E; ++j) {
        std::printf("%s", Cell(s.similarity(i * E + j), i == j, colour).c_str());
      }
      double most = -1;
      int with = -1;
      for (int j = 0; j < E; ++j) {
        if (j != i && s.similarity(i * E + j) > most) most = s.similarity(i * E + j), with = j;
      }
      std::printf("  max %+.2f (e%d)\n", most, with);
    }
  }
  std::printf("  effective rank");
  for (double r : s.effective_rank()) std::printf(" %5.2f", r);
  std::printf("\n  |dW|_F        ");
  for (double n : s.norm()) std::printf(" %5.3g", n);
  std::printf("\n");
  if (s.router_norm_size() > 0) {
    std::printf("  router norm   ");
    for (double n : s.router_norm()) std::printf(" %5.2f", n);
    std::printf("\n");
  }
}

}  // namespace

void PrintJson(const google::protobuf::Message& m) {
  std::string json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.always_print_primitive_fields = true;
  opts.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &json, opts);
  std::printf("%s", json.c_str());
}

int Inspect(v1::Switchyard::Stub& stub, const std::string& adapter, const InspectOptions& o) {
  grpc::ClientContext ctx;
  ConfigureContext(&ctx, false);
  v1::GetExpertDiagnosticsRequest req;
  req.set_adapter(adapter);
  req.set_similarity_threshold(o.similarity_threshold);
  v1::GetExpertDiagnosticsResponse resp;
  const grpc::Status s = stub.GetExpertDiagnostics(&ctx, req, &resp);
  if (!s.ok()) return Error(s);
  if (o.json) {
    PrintJson(resp);
    return 0;
  }
  std::printf(
      "adapter %s v%llu: %d sites; max expert similarity %.3f; effective rank min %.2f, "
      "mean %.2f\n",
      resp.adapter().c_str(), static_cast<unsigned long long>(resp.version()), resp.sites_size(),
      resp.max_similarity(), resp.min_effective_rank(), resp.mean_effective_rank());
  std::printf("heatmap: cosine similarity of the experts' weight deltas, %s\n",
              o.colour ? "white 0 to red 1 (blue: negative)"
                       : "'  ' <0.2 '░░' <0.4 '▒▒' <0.6 '▓▓' <0.8 '██' (absolute value)");
  for (const v1::SiteDiagnostics& site : resp.sites()) {
    if (o.layer < 0 || site.layer() == o.layer) PrintSite(site, o.colour);
  }
  std::printf("\nredundant pairs (similarity >= %.2f): %d\n", resp.similarity_threshold(),
              resp.redundant_pairs_size());
  for (const v1::RedundantExpertPair& p : resp.redundant_pairs()) {
    std::printf("  layer %d %s: e%d ~ e%d (%.3f)\n", p.layer(), p.site().c_str(), p.first(),
                p.second(), p.similarity());
  }
  if (!resp.window_full()) {
    std::printf("dead experts: the routing window is not yet full\n");
    return 0;
  }
  std::printf("dead experts (routing window): %s\n", resp.dead_experts().empty() ? "none" : "");
  for (const v1::DeadExperts& d : resp.dead_experts()) {
    std::printf("  layer %d %s:", d.layer(), d.site().c_str());
    for (int e : d.experts()) std::printf(" e%d", e);
    std::printf("\n");
  }
  return 0;
}

int CompareStats(v1::Switchyard::Stub& stub, const std::string& adapter, bool total, bool json) {
  v1::GetRoutingStatsResponse versions[2];  // previous, current
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext ctx;
    ConfigureContext(&ctx, false);
    v1::GetRoutingStatsRequest req;
    req.set_adapter(adapter);
    req.set_previous(i == 0);
    const grpc::Status s = stub.GetRoutingStats(&ctx, req, &versions[i]);
    if (!s.ok()) return Error(s);
  }
  if (json) {
    std::printf("{\"previous\": ");
    PrintJson(versions[0]);
    std::printf(", \"current\": ");
    PrintJson(versions[1]);
    std::printf("}\n");
    return 0;
  }
  std::map<std::pair<int, std::string>, const v1::SiteStats*> before;
  for (const v1::SiteStats& s : total ? versions[0].total() : versions[0].window()) {
    before[{s.layer(), s.site()}] = &s;
  }
  std::printf("adapter %s: load per expert (%% of selections), v%llu -> v%llu, %s\n",
              adapter.c_str(), static_cast<unsigned long long>(versions[0].version()),
              static_cast<unsigned long long>(versions[1].version()),
              total ? "since each was loaded" : "each version's window");
  const auto& after = total ? versions[1].total() : versions[1].window();
  if (after.empty()) std::printf("the current version has routed no tokens yet\n");
  for (const v1::SiteStats& s : after) {
    auto it = before.find({s.layer(), s.site()});
    std::printf("layer %2d %-9s", s.layer(), s.site().c_str());
    for (int e = 0; e < s.experts_size(); ++e) {
      const bool same_shape = it != before.end() && it->second->experts_size() == s.experts_size();
      const std::string old =
          same_shape ? absl::StrCat(std::lround(100 * it->second->experts(e).load())) : "-";
      std::printf("  e%d %3s>%-3ld", e, old.c_str(), std::lround(100 * s.experts(e).load()));
    }
    if (it != before.end()) {
      std::printf("  CV %.2f>%.2f dead %d>%d", it->second->load_cv(), s.load_cv(),
                  it->second->dead_experts(), s.dead_experts());
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace switchyard::client

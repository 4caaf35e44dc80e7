// switchyard-cli: talks to switchyard-server over gRPC.
//
//   switchyard-cli [--target HOST:PORT] generate [--adapter A | --mix A:W,B:W] [--max_tokens N]
//                  PROMPT
//   switchyard-cli chat [--adapter A] [--system TEXT]
//   switchyard-cli adapters list | load NAME PATH [--pin] | swap NAME PATH | unload NAME [--drain]
//   switchyard-cli stats ADAPTER [--total] [--compare]
//   switchyard-cli inspect ADAPTER [--similarity_threshold X] [--layer N]
//   switchyard-cli health | info
//   switchyard-cli bench [--mode closed|poisson] ...   (the load generator,
//   client/load_generator.h)
//
// Admin calls send $SWITCHYARD_ADMIN_TOKEN (or --admin_token) as "authorization: Bearer".
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "client/connection.h"
#include "client/inspect.h"
#include "client/load_generator.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "switchyard/v1/switchyard.grpc.pb.h"

ABSL_FLAG(std::string, adapter, "", "adapter name (empty: the base model)");
ABSL_FLAG(std::string, mix, "",
          "instead of --adapter: a mixture of adapters, NAME:WEIGHT,... (one member: a scale)");
ABSL_FLAG(int, max_tokens, 256, "tokens to generate");
ABSL_FLAG(double, temperature, 0.7, "sampling temperature (0: greedy)");
ABSL_FLAG(double, top_p, 1.0, "nucleus sampling threshold");
ABSL_FLAG(int, top_k, 0, "top-k sampling (0: off)");
ABSL_FLAG(int64_t, seed, -1, "sampling seed (-1: none)");
ABSL_FLAG(std::vector<std::string>, stop, {}, "stop strings (comma-separated)");
ABSL_FLAG(bool, routing, false, "generate: print which experts the request used per layer");
ABSL_FLAG(bool, echo, false, "generate: print the prompt first");
ABSL_FLAG(std::string, system, "", "chat: system message");
ABSL_FLAG(bool, pin, false, "adapters load/swap: never evict the adapter");
ABSL_FLAG(bool, drain, false, "adapters unload: wait for running requests instead of refusing");
ABSL_FLAG(bool, total, false, "stats: since the adapter was loaded instead of the recent window");
ABSL_FLAG(bool, compare, false,
          "stats: the version before the last swap beside the current one (load per expert)");
ABSL_FLAG(double, similarity_threshold, 0.9, "inspect: flag expert pairs at least this similar");
ABSL_FLAG(int, layer, -1, "inspect: one layer only (-1: all)");
ABSL_FLAG(bool, json, false, "print JSON where there is a table");
ABSL_FLAG(std::string, service, "", "health: service name (empty: the server as a whole)");

namespace switchyard::client {
namespace {

namespace v1 = ::switchyard::v1;

int Error(const grpc::Status& s) {
  std::fprintf(stderr, "error: %s: %s\n", StatusCodeName(s.error_code()),
               s.error_message().c_str());
  return 1;
}

int Usage() {
  std::fprintf(stderr, "%s\n", std::string(absl::ProgramUsageMessage()).c_str());
  return 2;
}

// --mix's NAME:WEIGHT,... into req.adapters; false (with a message) when malformed.
bool AddMixture(const std::string& spec, v1::GenerateRequest* req) {
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    const size_t colon = part.rfind(':');
    float weight = 1.0f;
    if (colon == absl::string_view::npos || colon == 0 ||
        !absl::SimpleAtof(part.substr(colon + 1), &weight)) {
      std::fprintf(stderr, "--mix: \"%s\" is not NAME:WEIGHT\n", std::string(part).c_str());
      return false;
    }
    v1::AdapterWeight* a = req->add_adapters();
    a->set_name(std::string(part.substr(0, colon)));
    a->set_weight(weight);
  }
  return true;
}

v1::GenerateRequest BaseRequest() {
  v1::GenerateRequest req;
  req.set_adapter(absl::GetFlag(FLAGS_adapter));
  if (!AddMixture(absl::GetFlag(FLAGS_mix), &req)) std::exit(2);
  req.set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  v1::SamplingParams* s = req.mutable_sampling();
  s->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  s->set_top_p(static_cast<float>(absl::GetFlag(FLAGS_top_p)));
  s->set_top_k(absl::GetFlag(FLAGS_top_k));
  if (absl::GetFlag(FLAGS_seed) >= 0) s->set_seed(static_cast<uint64_t>(absl::GetFlag(FLAGS_seed)));
  for (const std::string& stop : absl::GetFlag(FLAGS_stop)) req.add_stop(stop);
  return req;
}

// Streams one generation to stdout; returns the text and the last message.
grpc::Status Stream(v1::Switchyard::Stub& stub, const v1::GenerateRequest& req, std::string* text,
                    v1::GenerateStreamResponse* last) {
  grpc::ClientContext ctx;
  ConfigureContext(&ctx, /*admin=*/false);
  auto reader = stub.GenerateStream(&ctx, req);
  v1::GenerateStreamResponse msg;
  while (reader->Read(&msg)) {
    if (!msg.prompt_text().empty()) std::fputs(msg.prompt_text().c_str(), stdout);
    std::fputs(msg.text().c_str(), stdout);
    std::fflush(stdout);
    text->append(msg.text());
    *last = msg;
  }
  return reader->Finish();
}

void PrintFinish(const v1::GenerateStreamResponse& last) {
  const v1::Usage& u = last.usage();
  std::fprintf(stderr,
               "\n[%s: %lld prompt tokens (%lld cached), %lld generated, first token %.0f ms, "
               "total %.2f s]\n",
               v1::FinishReason_Name(last.finish_reason()).c_str() + 14,
               static_cast<long long>(u.prompt_tokens()),
               static_cast<long long>(u.cached_prompt_tokens()),
               static_cast<long long>(u.completion_tokens()), u.time_to_first_token_s() * 1e3,
               u.total_time_s());
}

void PrintRouting(const v1::RoutingSummary& routing) {
  for (const v1::SiteRouting& s : routing.sites()) {
    if (!s.adapter().empty()) std::fprintf(stderr, "  %-12s", s.adapter().c_str());
    std::fprintf(stderr, "  layer %2d %-9s", s.layer(), s.site().c_str());
    for (int64_t n : s.expert_tokens()) std::fprintf(stderr, " %5lld", static_cast<long long>(n));
    std::fprintf(stderr, "\n");
  }
}

int Generate(v1::Switchyard::Stub& stub, const std::vector<std::string>& args) {
  if (args.empty()) return Usage();
  v1::GenerateRequest req = BaseRequest();
  req.set_text(absl::StrJoin(args, " "));
  req.set_echo(absl::GetFlag(FLAGS_echo));
  req.set_include_routing(absl::GetFlag(FLAGS_routing));
  std::string text;
  v1::GenerateStreamResponse last;
  const grpc::Status s = Stream(stub, req, &text, &last);
  if (!s.ok()) return Error(s);
  PrintFinish(last);
  if (absl::GetFlag(FLAGS_routing)) {
    std::fprintf(stderr, "experts used (tokens per expert):\n");
    PrintRouting(last.routing());
  }
  return 0;
}

int Chat(v1::Switchyard::Stub& stub) {
  v1::ChatMessages conversation;
  if (!absl::GetFlag(FLAGS_system).empty()) {
    v1::ChatMessage* m = conversation.add_messages();
    m->set_role("system");
    m->set_content(absl::GetFlag(FLAGS_system));
  }
  const bool tty = isatty(0);
  std::string line;
  for (;;) {
    if (tty) std::fputs("\n> ", stdout);
    std::fflush(stdout);
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    v1::ChatMessage* user = conversation.add_messages();
    user->set_role("user");
    user->set_content(line);
    v1::GenerateRequest req = BaseRequest();
    *req.mutable_messages() = conversation;
    std::string reply;
    v1::GenerateStreamResponse last;
    const grpc::Status s = Stream(stub, req, &reply, &last);
    std::fputs("\n", stdout);
    if (!s.ok()) {
      Error(s);
      conversation.mutable_messages()->RemoveLast();
      continue;
    }
    v1::ChatMessage* assistant = conversation.add_messages();
    assistant->set_role("assistant");
    assistant->set_content(reply);
  }
  return 0;
}

void PrintAdapter(const v1::AdapterInfo& a) {
  std::printf("%-24s v%-4llu %-11s %-8.1f MB %-9s %-6s in use %-4lld %s (%s)\n", a.name().c_str(),
              static_cast<unsigned long long>(a.version()), a.family().c_str(), a.bytes() / 1e6,
              a.resident() ? "resident" : "evicted", a.pinned() ? "pinned" : "",
              static_cast<long long>(a.in_use()), a.path().c_str(), a.format().c_str());
}

int Adapters(v1::Switchyard::Stub& stub, const std::vector<std::string>& args) {
  const std::string verb = args.empty() ? "list" : args[0];
  grpc::ClientContext ctx;
  ConfigureContext(&ctx, /*admin=*/verb != "list");
  if (verb == "list") {
    v1::ListAdaptersResponse resp;
    const grpc::Status s = stub.ListAdapters(&ctx, {}, &resp);
    if (!s.ok()) return Error(s);
    if (resp.adapters().empty()) std::printf("no adapters loaded\n");
    for (const v1::AdapterInfo& a : resp.adapters()) PrintAdapter(a);
    return 0;
  }
  if ((verb == "load" || verb == "swap") && args.size() == 3) {
    v1::LoadAdapterRequest req;
    req.set_name(args[1]);
    req.set_path(args[2]);
    req.set_replace(verb == "swap");
    req.set_pin(absl::GetFlag(FLAGS_pin));
    v1::LoadAdapterResponse resp;
    const grpc::Status s = stub.LoadAdapter(&ctx, req, &resp);
    if (!s.ok()) return Error(s);
    PrintAdapter(resp.adapter());
    return 0;
  }
  if (verb == "unload" && args.size() == 2) {
    v1::UnloadAdapterRequest req;
    req.set_name(args[1]);
    req.set_drain(absl::GetFlag(FLAGS_drain));
    v1::UnloadAdapterResponse resp;
    const grpc::Status s = stub.UnloadAdapter(&ctx, req, &resp);
    if (!s.ok()) return Error(s);
    std::printf("unloaded %s\n", args[1].c_str());
    return 0;
  }
  return Usage();
}

// A background colour for an expert's share of the load relative to a fair share (1.0).
std::string Shade(double relative, bool colour) {
  if (!colour) return "";
  int c;
  if (relative <= 0) {
    c = 196;  // dead: red
  } else if (relative < 0.5) {
    c = 214;  // starved: orange
  } else if (relative < 0.8) {
    c = 149;
  } else if (relative <= 1.25) {
    c = 34;  // balanced: green
  } else if (relative <= 2) {
    c = 38;
  } else {
    c = 63;  // hot: blue-violet
  }
  return absl::StrCat("\x1b[48;5;", c, "m\x1b[38;5;16m");
}

int Stats(v1::Switchyard::Stub& stub, const std::vector<std::string>& args) {
  if (args.size() != 1) return Usage();
  if (absl::GetFlag(FLAGS_compare)) {
    return CompareStats(stub, args[0], absl::GetFlag(FLAGS_total), absl::GetFlag(FLAGS_json));
  }
  grpc::ClientContext ctx;
  ConfigureContext(&ctx, false);
  v1::GetRoutingStatsRequest req;
  req.set_adapter(args[0]);
  v1::GetRoutingStatsResponse resp;
  const grpc::Status s = stub.GetRoutingStats(&ctx, req, &resp);
  if (!s.ok()) return Error(s);
  const auto& sites = absl::GetFlag(FLAGS_total) ? resp.total() : resp.window();
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(resp);
    return 0;
  }
  std::printf("adapter %s v%llu, %s (%s)\n", resp.adapter().c_str(),
              static_cast<unsigned long long>(resp.version()),
              absl::GetFlag(FLAGS_total)
                  ? "since loaded"
                  : absl::StrCat("last ~", resp.window_tokens(), " routed tokens").c_str(),
              resp.window_full() || absl::GetFlag(FLAGS_total) ? "full" : "window not yet full");
  if (sites.empty()) {
    std::printf("no routed tokens yet\n");
    return 0;
  }
  const bool colour = isatty(1) && std::getenv("NO_COLOR") == nullptr;
  std::string current;
  for (const v1::SiteStats& site : sites) {
    const int E = site.experts_size();
    if (site.site() != current) {
      current = site.site();
      std::printf("\n%s: load per expert, %% of all selections (fair share %.0f%%)\n",
                  current.c_str(), 100.0 / std::max(1, E));
      std::printf("layer ");
      for (int e = 0; e < E; ++e) std::printf(" e%-3d", e);
      std::printf("   tokens     CV   aux  entropy  dead\n");
    }
    std::printf("%5d ", site.layer());
    for (const v1::ExpertLoad& x : site.experts()) {
      const double rel = x.load() * E;
      std::printf(" %s%4.0f%s", Shade(rel, colour).c_str(), 100 * x.load(),
                  colour ? "\x1b[0m" : "");
    }
    // Dead experts mean something only once the window is full (or over the whole life).
    const std::string dead =
        resp.window_full() || absl::GetFlag(FLAGS_total) ? absl::StrCat(site.dead_experts()) : "-";
    std::printf(" %8lld %6.2f %5.2f %8.2f %5s\n", static_cast<long long>(site.tokens()),
                site.load_cv(), site.switch_aux_loss(), site.router_entropy(), dead.c_str());
  }
  return 0;
}

int Health(grpc::Channel* channel) {
  auto stub = grpc::health::v1::Health::NewStub(
      std::shared_ptr<grpc::Channel>(channel, [](grpc::Channel*) {}));
  grpc::ClientContext ctx;
  ConfigureContext(&ctx, false);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse resp;
  const grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) return Error(s);
  std::printf("%s\n",
              grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()).c_str());
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

int Info(v1::Switchyard::Stub& stub) {
  grpc::ClientContext ctx;
  ConfigureContext(&ctx, false);
  v1::GetServerInfoResponse resp;
  const grpc::Status s = stub.GetServerInfo(&ctx, {}, &resp);
  if (!s.ok()) return Error(s);
  std::string json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(resp, &json, opts);
  std::printf("%s", json.c_str());
  return 0;
}

int Main(const std::vector<char*>& positional) {
  if (positional.size() < 2) return Usage();
  const std::string command = positional[1];
  std::vector<std::string> args(positional.begin() + 2, positional.end());
  std::shared_ptr<grpc::Channel> channel = Connect();
  auto stub = v1::Switchyard::NewStub(channel);
  if (command == "generate") return Generate(*stub, args);
  if (command == "chat") return Chat(*stub);
  if (command == "adapters") return Adapters(*stub, args);
  if (command == "stats") return Stats(*stub, args);
  if (command == "inspect" && args.size() == 1) {
    return Inspect(*stub, args[0],
                   {absl::GetFlag(FLAGS_similarity_threshold), absl::GetFlag(FLAGS_layer),
                    absl::GetFlag(FLAGS_json), isatty(1) && std::getenv("NO_COLOR") == nullptr});
  }
  if (command == "health") return Health(channel.get());
  if (command == "info") return Info(*stub);
  if (command == "bench") return RunLoadGenerator(channel);
  return Usage();
}

}  // namespace
}  // namespace switchyard::client

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "switchyard-cli [--target HOST:PORT] COMMAND ...\n"
      "  generate [--adapter A | --mix A:0.6,B:0.4] [--max_tokens N] [--routing] PROMPT...\n"
      "  chat [--adapter A] [--system TEXT]\n"
      "  adapters list | load NAME PATH [--pin] | swap NAME PATH | unload NAME [--drain]\n"
      "  stats ADAPTER [--total] [--compare] [--json]\n"
      "  inspect ADAPTER [--similarity_threshold X] [--layer N] [--json]\n"
      "  health | info\n"
      "  bench [--mode closed|poisson] [--concurrency N | --rate R] [--duration_s S] "
      "[--adapters A,B,...] [--zipf S] [--prompt_tokens MIN:MAX] [--output_tokens MIN:MAX] "
      "[--json]");
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  return switchyard::client::Main(positional);
}

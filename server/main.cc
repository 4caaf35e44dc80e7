// switchyard-server: one base model, many MoE-LoRA adapters, continuous batching; gRPC, the
// OpenAI-compatible HTTP API and Prometheus metrics.
//
//   switchyard-server --model DIR --adapter-root DIR [--adapter NAME=SUBDIR ...] [flags]
//
// Flags may also come from a file: --flagfile=FILE (one --flag=value per line). Flag names take
// '-' or '_' alike, and --adapter may be repeated.
#include <arpa/inet.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/core/log.h"
#include "server/frontend/frontend.h"
#include "server/grpc/grpc_service.h"
#include "server/http/http_server.h"
#include "server/metrics/metrics.h"

ABSL_FLAG(std::string, model, "",
          "base model: a folder (config.json, *.safetensors, tokenizer.json) or a .gguf file");
ABSL_FLAG(std::string, quantization, "none",
          "quantize a folder's weights at load: none, int8 (Q8_0) or int4 (Q4_0); CPU only "
          "(docs/quantization.md)");
ABSL_FLAG(std::string, served_model_name, "",
          "the base model's name for clients (default: the "
          "model folder's name)");
ABSL_FLAG(std::string, adapter_root, "", "folder that every adapter path must lie below");
ABSL_FLAG(std::vector<std::string>, adapter, {},
          "adapters to load at start, NAME=SUBDIR below the adapter root (repeatable)");
ABSL_FLAG(std::string, host, "0.0.0.0", "address to listen on");
ABSL_FLAG(int, grpc_port, 50051, "gRPC port (0: any free port)");
ABSL_FLAG(int, http_port, 8000, "HTTP (OpenAI-compatible) port (0: any free port; -1: off)");
ABSL_FLAG(int, http_threads, 2, "HTTP I/O threads");
ABSL_FLAG(int64_t, http_max_body_bytes, 8 << 20, "larger HTTP request bodies get 413");
ABSL_FLAG(int, http_max_concurrent, 4096, "HTTP generation requests at once; more get 429");
ABSL_FLAG(int, http_max_connections, 4096,
          "open HTTP connections (API and metrics ports each); more are answered 503 and closed");
ABSL_FLAG(int, http_max_connections_per_client, 256,
          "open HTTP connections from one client address; more are answered 503 and closed");
ABSL_FLAG(double, http_request_timeout_s, 60,
          "seconds a request's header and body may take to arrive, and an idle keep-alive "
          "connection may stay open (streamed answers are not limited)");
ABSL_FLAG(int, grpc_max_streams_per_connection, 1024,
          "concurrent gRPC calls on one connection (HTTP/2 MAX_CONCURRENT_STREAMS); the client "
          "queues more");
ABSL_FLAG(int, max_pending_adapter_loads, 4,
          "adapter loads queued or running at once (they run one at a time); more get "
          "RESOURCE_EXHAUSTED / 429");
ABSL_FLAG(std::string, ports_file, "", "write the ports actually bound to this file (JSON)");
ABSL_FLAG(int64_t, kv_cache_mib, 1024, "KV cache memory budget (MiB)");
ABSL_FLAG(int, block_size, 16, "tokens per KV cache block");
ABSL_FLAG(int, kv_cache_blocks, 0,
          "KV cache blocks, overriding --kv-cache-mib (0: from the budget), as vLLM's "
          "--num-gpu-blocks-override; small values force preemption in tests");
ABSL_FLAG(int64_t, adapter_memory_mib, 0,
          "memory budget for resident adapters (MiB; 0: unlimited); idle adapters beyond it are "
          "evicted least recently used first and reloaded on demand");
ABSL_FLAG(int64_t, adapter_host_cache_mib, -1,
          "host tier: adapters' files kept in host memory (MiB) so that an evicted adapter is "
          "rebuilt without reading its files again; -1: 4096 on a GPU engine, 0 (off) on the CPU, "
          "where the resident weights are host memory already");
ABSL_FLAG(int64_t, max_batch_tokens, 2048, "tokens per engine step (chunked prefill budget)");
ABSL_FLAG(int64_t, max_batch_seqs, 256, "sequences per engine step");
ABSL_FLAG(int, max_adapters_per_step, 8, "distinct adapters per engine step");
ABSL_FLAG(int64_t, max_waiting, 1024, "requests waiting for admission before RESOURCE_EXHAUSTED");
ABSL_FLAG(bool, prefix_caching, true, "reuse the KV blocks of common prompt prefixes");
ABSL_FLAG(int, threads, 0, "compute threads (0: SWITCHYARD_THREADS or all cores)");
ABSL_FLAG(std::string, matmul_precision, "auto",
          "prefill math for BF16 and quantized weights: f32 (exact), bf16 (BF16 products) or auto "
          "(bf16 where the CPU has BF16 dot-product instructions, else f32)");
ABSL_FLAG(std::string, kv_cache_dtype, "auto",
          "KV cache element type: auto (f32 for F32 models and on CUDA, bf16 otherwise), f32, "
          "bf16 or f16");
ABSL_FLAG(std::string, quantized_activations, "int8",
          "activations of quantized weights' decode products: int8 (integer dot products, as "
          "llama.cpp) or f32 (exact products of the dequantized weights)");
ABSL_FLAG(std::string, device, "auto",
          "cpu, cuda, or auto (cuda when this build has it and a GPU is visible; docs/cuda.md)");
ABSL_FLAG(std::string, chat_template, "",
          "Jinja chat template overriding the model's: a file, the template text, or chatml");
ABSL_FLAG(std::string, tool_call_parser, "auto",
          "how tool calls are read from output: auto (by the chat template), hermes, "
          "llama3_json, mistral or none");
ABSL_FLAG(std::string, admin_token, "",
          "token admin calls must present (default: $SWITCHYARD_ADMIN_TOKEN; empty: admin is open "
          "on a loopback --host only, unless --insecure-admin)");
ABSL_FLAG(bool, insecure_admin, false,
          "leave adapter admin open without a token on a server that listens beyond loopback "
          "(without a token it is otherwise open on loopback only)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve gRPC, HTTP and the metrics port over TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls_cert");
ABSL_FLAG(double, shutdown_grace_s, 30, "on SIGTERM/SIGINT, seconds in-flight requests may finish");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(int, metrics_port, 9400,
          "Prometheus /metrics port (0: any free port; -1: off); /metrics is on the HTTP port too");
ABSL_FLAG(std::string, metrics_routing_detail, "expert",
          "routing series: expert (per expert), layer (per layer and site) or adapter");
ABSL_FLAG(int, metrics_max_adapters, 16,
          "adapters with their own request labels and detailed routing series (the first with "
          "traffic); the rest fold into adapter=\"_other\"");
ABSL_FLAG(int64_t, routing_window_tokens, 4096,
          "routed rows in the sliding window behind the routing balance gauges and dead experts");

namespace switchyard {
namespace {

void ApplyConnectionLimits(HttpServerOptions* o) {
  o->max_connections = absl::GetFlag(FLAGS_http_max_connections);
  o->max_connections_per_client = absl::GetFlag(FLAGS_http_max_connections_per_client);
  o->request_timeout = absl::Seconds(absl::GetFlag(FLAGS_http_request_timeout_s));
  o->tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  o->tls_key_file = absl::GetFlag(FLAGS_tls_key);
}

// Whether `host` accepts connections from this machine only.
bool IsLoopbackHost(absl::string_view host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  in_addr v4{};
  return inet_pton(AF_INET, std::string(host).c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

// Adapter admin (load, swap, unload) without a token is open only where nobody else can reach it,
// unless the operator asks otherwise, as vLLM gates runtime LoRA loading behind a setting.
void ApplyAdminPolicy(const std::string& host, bool insecure_admin, FrontendOptions* fo) {
  const bool loopback = IsLoopbackHost(host);
  fo->admin_open_without_token = loopback || insecure_admin;
  if (!fo->admin_token.empty()) return;
  if (loopback) {
    SY_LOG(kInfo, "adapter admin is open without a token: the server listens on %s only", host);
  } else if (insecure_admin) {
    SY_LOG(kWarning,
           "adapter admin is OPEN to anyone who can reach %s (--insecure-admin): anyone can load, "
           "swap and unload adapters; set --admin-token to close it",
           host);
  } else {
    SY_LOG(kInfo,
           "adapter admin is off: --host %s reaches beyond loopback and no --admin-token is set "
           "(--insecure-admin leaves it open)",
           host);
  }
}

// Abseil flags are named with '_' and take the last of repeated flags; the documented interface
// uses '-' (--adapter-root) and repeats --adapter, on the command line and in flag files alike.
// Rewrites the arguments to Abseil's form, reading --flagfile files here (one argument per line;
// blank lines and lines starting with '#' skipped) so that their lines get the same treatment.
absl::StatusOr<std::vector<std::string>> NormalizeArgs(int argc, char** argv) {
  std::vector<std::string> out = {argv[0]};
  std::vector<std::string> adapters;
  std::vector<std::string> pending(argv + 1, argv + argc);
  int files = 0;
  for (size_t i = 0; i < pending.size(); ++i) {
    std::string arg = pending[i];
    if (arg == "--") {
      out.insert(out.end(), pending.begin() + static_cast<std::ptrdiff_t>(i), pending.end());
      break;
    }
    if (absl::StartsWith(arg, "--")) {
      const size_t eq = arg.find('=');
      std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
      std::replace(name.begin(), name.end(), '-', '_');
      const bool has_value = eq != std::string::npos;
      if (name == "adapter" || name == "flagfile") {
        std::string value;
        if (has_value) {
          value = arg.substr(eq + 1);
        } else if (i + 1 < pending.size()) {
          value = pending[++i];
        }
        if (name == "adapter") {
          adapters.push_back(value);
          continue;
        }
        std::ifstream in(value);
        if (!in || ++files > 16) {
          return absl::InvalidArgumentError(absl::StrCat("--flagfile: cannot read \"", value, "\"",
                                                         in ? " (nested too deep)" : ""));
        }
        std::vector<std::string> lines;
        for (std::string line; std::getline(in, line);) {
          line = std::string(absl::StripAsciiWhitespace(line));
          if (!line.empty() && line[0] != '#') lines.push_back(line);
        }
        pending.insert(pending.begin() + static_cast<std::ptrdiff_t>(i) + 1, lines.begin(),
                       lines.end());
        continue;
      }
      arg = "--" + name + (has_value ? arg.substr(eq) : "");
    }
    out.push_back(arg);
  }
  if (!adapters.empty()) out.push_back("--adapter=" + absl::StrJoin(adapters, ","));
  return out;
}

int Fail(const absl::Status& s) {
  SY_LOG(kError, "switchyard-server: %s", s.ToString());
  return 1;
}

int Main() {
  LogLevel level;
  if (!ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level)) {
    return Fail(absl::InvalidArgumentError("--log_level: use debug, info, warning or error"));
  }
  SetLogLevel(level);
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) return Fail(absl::InvalidArgumentError("--model is required"));
  if (absl::GetFlag(FLAGS_threads) > 0) {
    setenv("SWITCHYARD_THREADS", absl::StrCat(absl::GetFlag(FLAGS_threads)).c_str(), 1);
  }

  // Signals go to the waiting main thread only: block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // HTTP first: while the model loads, /health says 503 "loading" (readiness probes) and
  // /version answers (liveness probes).
  std::unique_ptr<HttpServer> http;
  if (absl::GetFlag(FLAGS_http_port) >= 0) {
    HttpServerOptions ho;
    ho.host = absl::GetFlag(FLAGS_host);
    ho.port = absl::GetFlag(FLAGS_http_port);
    ho.io_threads = absl::GetFlag(FLAGS_http_threads);
    ho.max_body_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_http_max_body_bytes));
    ho.max_concurrent_requests = absl::GetFlag(FLAGS_http_max_concurrent);
    ApplyConnectionLimits(&ho);
    absl::StatusOr<std::unique_ptr<HttpServer>> started = HttpServer::Start(std::move(ho));
    if (!started.ok()) return Fail(started.status());
    http = std::move(*started);
  }

  EngineOptions eo;
  eo.model_dir = model_dir;
  eo.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_mib) << 20;
  eo.kv_cache_blocks = absl::GetFlag(FLAGS_kv_cache_blocks);
  eo.block_size = absl::GetFlag(FLAGS_block_size);
  eo.routing_window.window_tokens = absl::GetFlag(FLAGS_routing_window_tokens);
  if (eo.routing_window.window_tokens < eo.routing_window.buckets) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--routing_window_tokens: at least ", eo.routing_window.buckets, " rows")));
  }
  MetricsOptions mo;
  if (absl::Status s =
          ParseRoutingDetail(absl::GetFlag(FLAGS_metrics_routing_detail), &mo.routing_detail);
      !s.ok()) {
    return Fail(s);
  }
  mo.max_detailed_adapters = absl::GetFlag(FLAGS_metrics_max_adapters);
  eo.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  eo.max_batch_seqs = absl::GetFlag(FLAGS_max_batch_seqs);
  if (const std::string device = absl::GetFlag(FLAGS_device); device == "cuda") {
    eo.device = Device::kCuda;
  } else if (device == "auto") {
    eo.device = DefaultDevice();
  } else if (device != "cpu") {
    return Fail(absl::InvalidArgumentError("--device: use cpu, cuda or auto"));
  }
  absl::StatusOr<MatmulPrecision> precision =
      ParseMatmulPrecision(absl::GetFlag(FLAGS_matmul_precision));
  if (!precision.ok()) return Fail(precision.status());
  eo.matmul_precision = *precision;
  if (absl::Status s = ParseNumerics(absl::GetFlag(FLAGS_quantization),
                                     absl::GetFlag(FLAGS_quantized_activations),
                                     absl::GetFlag(FLAGS_kv_cache_dtype), &eo);
      !s.ok()) {
    return Fail(s);
  }
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(eo);
  if (!engine.ok()) return Fail(engine.status());
  SY_LOG(kInfo, "engine: %s", (*engine)->Describe());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadModelTokenizer(model_dir);
  if (!tokenizer.ok()) return Fail(tokenizer.status());

  AdapterRegistryOptions ro;
  ro.root = absl::GetFlag(FLAGS_adapter_root);
  ro.memory_budget_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_adapter_memory_mib)) << 20;
  const int64_t host_cache_mib = absl::GetFlag(FLAGS_adapter_host_cache_mib);
  ro.host_cache_bytes =
      static_cast<size_t>(host_cache_mib >= 0 ? host_cache_mib
                                              : (eo.device == Device::kCuda ? 4096 : 0))
      << 20;
  Engine* e = engine->get();
  AdapterRegistry registry(ro, AdapterRegistry::TieredLoader{
                                   [e](const ConfinedDir& dir) { return e->ReadAdapterFiles(dir); },
                                   [e](const AdapterFiles& files, bool diagnose) {
                                     return e->BuildAdapter(files, diagnose);
                                   }});

  std::unique_ptr<StepExecutor> executor = MakeEngineExecutor(**engine);
  SchedulerOptions so;
  so.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  so.max_batch_seqs = absl::GetFlag(FLAGS_max_batch_seqs);
  so.max_adapters_per_step = absl::GetFlag(FLAGS_max_adapters_per_step);
  so.max_waiting = absl::GetFlag(FLAGS_max_waiting);
  so.prefix_caching = absl::GetFlag(FLAGS_prefix_caching);
  so.eos_token_ids = ModelEosTokens(model_dir, **tokenizer);
  absl::StatusOr<std::unique_ptr<Scheduler>> scheduler =
      Scheduler::Create(executor.get(), tokenizer->get(), so);
  if (!scheduler.ok()) return Fail(scheduler.status());

  FrontendOptions fo;
  fo.model_dir = model_dir;
  fo.served_model_name = absl::GetFlag(FLAGS_served_model_name);
  if (fo.served_model_name.empty()) {
    const std::filesystem::path path = std::filesystem::path(model_dir).lexically_normal();
    fo.served_model_name = (path.extension() == ".gguf" ? path.stem() : path.filename()).string();
    if (fo.served_model_name.empty()) {
      fo.served_model_name = std::filesystem::path(model_dir).parent_path().filename().string();
    }
  }
  fo.admin_token = absl::GetFlag(FLAGS_admin_token);
  if (fo.admin_token.empty() && std::getenv("SWITCHYARD_ADMIN_TOKEN") != nullptr) {
    fo.admin_token = std::getenv("SWITCHYARD_ADMIN_TOKEN");
  }
  ApplyAdminPolicy(absl::GetFlag(FLAGS_host), absl::GetFlag(FLAGS_insecure_admin), &fo);
  fo.chat_template = absl::GetFlag(FLAGS_chat_template);
  fo.tool_call_parser = absl::GetFlag(FLAGS_tool_call_parser);
  fo.max_pending_adapter_loads = absl::GetFlag(FLAGS_max_pending_adapter_loads);
  absl::StatusOr<std::unique_ptr<Frontend>> frontend =
      Frontend::Create(engine->get(), scheduler->get(), &registry, tokenizer->get(), fo);
  if (!frontend.ok()) return Fail(frontend.status());

  mo.model_name = fo.served_model_name;
  mo.max_lora = so.max_adapters_per_step;
  mo.kv_block_size = (*engine)->block_size();
  mo.kv_blocks = (*engine)->num_kv_blocks();
  Metrics metrics(scheduler->get(), &registry, &(*engine)->routing_window(), mo);
  (*frontend)->set_observer(
      {.request_finished = [&metrics](
                               const std::string& adapter,
                               const RequestEvent& e) { metrics.OnRequestFinished(adapter, e); },
       .request_refused = [&metrics](absl::StatusCode code) { metrics.OnRequestRefused(code); },
       .adapter_admin =
           [&metrics](const std::string& adapter, absl::string_view action, absl::Duration took,
                      const absl::Status& status) {
             metrics.OnAdapterAdmin(adapter, action, took, status);
           }});
  (*scheduler)->set_step_observer([&metrics](const StepRecord& r) { metrics.OnStep(r); });
  // The metrics port: the same HTTP server code with /metrics only. (Not prometheus-cpp's
  // civetweb exposer: its 100 KiB thread stacks cannot hold cuBLASLt's static TLS, so its
  // threads fail to start in a process linked with CUDA.)
  std::unique_ptr<HttpServer> metrics_http;
  if (absl::GetFlag(FLAGS_metrics_port) >= 0) {
    HttpServerOptions mh;
    mh.host = absl::GetFlag(FLAGS_host);
    mh.port = absl::GetFlag(FLAGS_metrics_port);
    mh.io_threads = 1;
    mh.metrics_only = true;
    ApplyConnectionLimits(&mh);
    absl::StatusOr<std::unique_ptr<HttpServer>> started = HttpServer::Start(std::move(mh));
    if (!started.ok()) return Fail(started.status());
    metrics_http = std::move(*started);
    metrics_http->Serve(frontend->get(), [&metrics] { return metrics.Render(); });
  }

  for (const std::string& spec : absl::GetFlag(FLAGS_adapter)) {
    std::pair<std::string, std::string> kv = absl::StrSplit(spec, absl::MaxSplits('=', 1));
    if (kv.second.empty()) kv.second = kv.first;  // NAME alone: the folder of that name
    absl::StatusOr<AdapterInfo> info = (*frontend)->LoadAdapter(kv.first, kv.second, false, false);
    if (!info.ok()) return Fail(info.status());
  }

  (*scheduler)->Start();
  GrpcServerOptions go;
  go.address = absl::StrCat(absl::GetFlag(FLAGS_host), ":", absl::GetFlag(FLAGS_grpc_port));
  go.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  go.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  go.max_concurrent_streams = absl::GetFlag(FLAGS_grpc_max_streams_per_connection);
  absl::StatusOr<std::unique_ptr<GrpcServer>> grpc = GrpcServer::Start(frontend->get(), go);
  if (!grpc.ok()) return Fail(grpc.status());
  if (http) http->Serve(frontend->get(), [&metrics] { return metrics.Render(); });
  const auto where = [](const std::unique_ptr<HttpServer>& s) {
    return s ? absl::StrCat("on ", absl::GetFlag(FLAGS_host), ":", s->port(),
                            absl::GetFlag(FLAGS_tls_cert).empty() ? "" : " (TLS)")
             : std::string("off");
  };
  SY_LOG(kInfo, "serving %s (%s) with %d adapters: gRPC on %s:%d%s, HTTP %s, metrics %s",
         fo.served_model_name, model_dir, registry.List().size(), absl::GetFlag(FLAGS_host),
         (*grpc)->port(), go.tls_cert_file.empty() ? "" : " (TLS)", where(http),
         where(metrics_http));
  if (const std::string path = absl::GetFlag(FLAGS_ports_file); !path.empty()) {
    std::ofstream f(path + ".tmp");
    f << "{\"grpc\": " << (*grpc)->port() << ", \"http\": " << (http ? http->port() : -1)
      << ", \"metrics\": " << (metrics_http ? metrics_http->port() : -1) << "}\n";
    f.close();
    std::filesystem::rename(path + ".tmp", path);
  }

  int sig = 0;
  sigwait(&signals, &sig);
  const absl::Duration grace = absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s));
  SY_LOG(kInfo, "signal %d: draining (up to %s)", sig, absl::FormatDuration(grace));
  (*grpc)->SetNotServing();
  if (http) http->SetDraining();
  (*scheduler)->Shutdown(grace);  // refuses new requests; finishes or cancels the rest
  if (http) http->Shutdown();
  if (metrics_http) metrics_http->Shutdown();
  (*grpc)->Shutdown(absl::Seconds(1));
  SY_LOG(kInfo, "stopped");
  return 0;
}

}  // namespace
}  // namespace switchyard

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "switchyard-server --model DIR --adapter-root DIR [--adapter NAME=SUBDIR ...]");
  absl::StatusOr<std::vector<std::string>> args = switchyard::NormalizeArgs(argc, argv);
  if (!args.ok()) {
    std::fprintf(stderr, "switchyard-server: %s\n", std::string(args.status().message()).c_str());
    return 2;
  }
  std::vector<char*> ptrs;
  for (std::string& a : *args) ptrs.push_back(a.data());
  absl::ParseCommandLine(static_cast<int>(ptrs.size()), ptrs.data());
  return switchyard::Main();
}

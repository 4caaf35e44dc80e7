// The OpenAI-compatible HTTP API on Boost.Beast over Asio: a few I/O threads serve every
// connection (no thread per connection); streamed responses are Server-Sent Events written as
// chunks as the engine thread hands over tokens; a client that disconnects has its request
// cancelled within a step.
//
//   POST /v1/completions, /v1/chat/completions   (stream or not; `model` picks an adapter)
//   GET  /v1/models
//   POST /v1/load_lora_adapter, /v1/unload_lora_adapter   (vLLM's bodies; admin token)
//   GET  /v1/adapters/{name}/routing                        (routing statistics as JSON)
//   POST /tokenize, /detokenize                             (vLLM's)
//   GET  /health (503 while loading or draining), /version, /metrics
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/frontend/frontend.h"

namespace switchyard {

struct HttpServerOptions {
  std::string host = "0.0.0.0";
  int port = 8000;  // 0: any free port
  int io_threads = 2;
  size_t max_body_bytes = 8 << 20;     // larger bodies: 413
  int max_concurrent_requests = 4096;  // generation requests at once; more: 429
  bool metrics_only = false;           // serve GET /metrics alone (the metrics port)
  // Open connections, in all and from one client address; past either, a new connection gets
  // 503 with Retry-After and is closed.
  int max_connections = 4096;
  int max_connections_per_client = 256;
  // A request's header and body must arrive within this, and an idle keep-alive connection is
  // closed after it (slowloris); a streamed answer is not limited.
  absl::Duration request_timeout = absl::Seconds(60);
  // PEM certificate chain and key: serve HTTPS (TLS 1.2+) instead of plain HTTP.
  std::string tls_cert_file;
  std::string tls_key_file;
};

class HttpServer {
 public:
  // Listens at once: until Serve, /health and /version answer (503 "loading" and the version)
  // and everything else gets 503, so orchestrators see a server that is loading its model.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(HttpServerOptions options);
  ~HttpServer();

  // Serves the API from now on; `metrics` renders /metrics (empty: 404). Call once.
  void Serve(Frontend* frontend, std::function<std::string()> metrics);

  int port() const;
  // /health answers 503 from now on.
  void SetDraining();
  // Stops accepting and closes every connection.
  void Shutdown();

  class Impl;  // opaque (connections in http_server.cc reach it)

 private:
  HttpServer() = default;
  std::unique_ptr<Impl> impl_;
};

}  // namespace switchyard

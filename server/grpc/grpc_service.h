// The gRPC API (proto/switchyard/v1/switchyard.proto) over the Frontend, on gRPC's callback API:
// no thread per stream; the engine thread hands events to reactors without ever blocking, and a
// stream whose client reads slowly gets its pending tokens merged into fewer messages.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/frontend/frontend.h"

namespace grpc {
class Server;
}

namespace switchyard {

struct GrpcServerOptions {
  std::string address = "0.0.0.0:50051";  // port 0 picks a free port
  std::string tls_cert_file;              // PEM; with tls_key_file, serve TLS
  std::string tls_key_file;
  int max_concurrent_streams = 0;  // per connection; 0: gRPC's default
};

class GrpcServer {
 public:
  // Starts serving (the Switchyard service, grpc.health.v1 and reflection).
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(Frontend* frontend,
                                                           const GrpcServerOptions& options);
  ~GrpcServer();

  int port() const { return port_; }
  // Marks the server NOT_SERVING for health checks (draining).
  void SetNotServing();
  // Stops accepting calls and cancels those still open after `grace`.
  void Shutdown(absl::Duration grace);

 private:
  GrpcServer() = default;
  class Service;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace switchyard

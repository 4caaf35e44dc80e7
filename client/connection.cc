#include "client/connection.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, target, "localhost:50051", "server address");
ABSL_FLAG(bool, tls, false, "connect with TLS");
ABSL_FLAG(std::string, tls_ca, "", "PEM file of the CA that signed the server (with --tls)");
ABSL_FLAG(std::string, admin_token, "", "token for admin calls (default: $SWITCHYARD_ADMIN_TOKEN)");
ABSL_FLAG(double, timeout_s, 0, "deadline of each call in seconds (0: none)");

namespace switchyard::client {

std::shared_ptr<grpc::Channel> Connect() {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (absl::GetFlag(FLAGS_tls)) {
    grpc::SslCredentialsOptions ssl;
    if (const std::string ca = absl::GetFlag(FLAGS_tls_ca); !ca.empty()) {
      std::ifstream f(ca);
      std::stringstream ss;
      ss << f.rdbuf();
      ssl.pem_root_certs = ss.str();
    }
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target), creds, args);
}

void ConfigureContext(grpc::ClientContext* ctx, bool admin) {
  if (const double t = absl::GetFlag(FLAGS_timeout_s); t > 0) {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::microseconds(static_cast<int64_t>(t * 1e6)));
  }
  if (!admin) return;
  std::string token = absl::GetFlag(FLAGS_admin_token);
  if (token.empty() && std::getenv("SWITCHYARD_ADMIN_TOKEN") != nullptr) {
    token = std::getenv("SWITCHYARD_ADMIN_TOKEN");
  }
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
}

const char* StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "?";
  }
}

}  // namespace switchyard::client

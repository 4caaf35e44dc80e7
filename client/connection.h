// The channel and per-call settings every switchyard-cli command shares (--target, TLS, the
// admin token, a deadline).
#pragma once

#include <memory>

#include "grpcpp/grpcpp.h"

namespace switchyard::client {

std::shared_ptr<grpc::Channel> Connect();
// Sets the call deadline (--timeout_s) and, for admin calls, the admin token.
void ConfigureContext(grpc::ClientContext* ctx, bool admin);
const char* StatusCodeName(grpc::StatusCode code);

}  // namespace switchyard::client

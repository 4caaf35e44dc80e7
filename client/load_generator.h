// The gRPC load generator behind `switchyard-cli bench`: closed-loop (N clients, each sending its
// next request when the last one ends) or open-loop Poisson arrivals; adapters drawn with a Zipf
// popularity; prompt and output lengths drawn uniformly from ranges. Every request streams; each
// stream is a callback reactor, so thousands of streams need no thousands of threads.
//
// Reports throughput, time to first token, inter-token latency, end-to-end latency (p50/p90/p99),
// errors by status code, the most streams open at once, and the transport overhead per streamed
// message: the client-observed time of a message minus the server's own time for it (the
// server stamps each message with the time since the request arrived).
#pragma once

#include <memory>

#include "grpcpp/grpcpp.h"

namespace switchyard::client {

// Runs the load described by the bench flags; prints a table (or JSON with --json). Returns the
// process exit code (1 when any request failed).
int RunLoadGenerator(std::shared_ptr<grpc::Channel> channel);

}  // namespace switchyard::client

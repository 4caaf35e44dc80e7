#include "server/grpc/grpc_service.h"

#include <fstream>
#include <mutex>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "engine/core/log.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/grpc/grpc_convert.h"
#include "switchyard/v1/switchyard.grpc.pb.h"

namespace switchyard {
namespace {

namespace v1 = ::switchyard::v1;

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// The status a finished request ends its call with.
grpc::Status FinishStatus(const RequestEvent& e) {
  switch (e.finish) {
    case FinishReason::kCancelled:
      return grpc::Status(grpc::StatusCode::CANCELLED, "the request was cancelled");
    case FinishReason::kDeadline:
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          "the deadline passed before the request finished");
    case FinishReason::kError:
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          absl::StrCat("generation failed: ", e.error.message()));
    default:
      return grpc::Status::OK;
  }
}

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kStopString:
      return v1::FINISH_REASON_STOP_STRING;
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    default:
      return v1::FINISH_REASON_UNSPECIFIED;
  }
}

void FillUsage(const RequestUsage& u, v1::Usage* out) {
  out->set_prompt_tokens(u.prompt_tokens);
  out->set_completion_tokens(u.completion_tokens);
  out->set_cached_prompt_tokens(u.cached_prompt_tokens);
  out->set_preemptions(u.preemptions);
  if (u.first_token > u.arrival) {
    out->set_time_to_first_token_s(absl::ToDoubleSeconds(u.first_token - u.arrival));
  }
  out->set_total_time_s(absl::ToDoubleSeconds(u.finish - u.arrival));
}

void FillRouting(const std::vector<RequestRouting>& routing, v1::RoutingSummary* out) {
  for (const RequestRouting& r : routing) {
    v1::SiteRouting* s = out->add_sites();
    s->set_adapter(r.adapter);
    s->set_layer(r.layer);
    s->set_site(RoutingSiteName(r.site));
    for (int64_t n : r.expert_tokens) s->add_expert_tokens(n);
  }
}

void AddLogprobs(const std::vector<SampledToken>& logprobs,
                 google::protobuf::RepeatedPtrField<v1::TokenLogprob>* out) {
  for (const SampledToken& t : logprobs) {
    v1::TokenLogprob* p = out->Add();
    p->set_token_id(t.token);
    p->set_logprob(t.logprob);
    for (const auto& [id, lp] : t.top_logprobs) {
      v1::TopLogprob* top = p->add_top();
      top->set_token_id(id);
      top->set_logprob(lp);
    }
  }
}

void FillAdapterInfo(const AdapterInfo& a, v1::AdapterInfo* out) {
  out->set_name(a.name);
  out->set_path(a.path);
  out->set_family(a.family);
  out->set_format(a.format);
  out->set_version(a.version);
  out->set_bytes(a.bytes);
  out->set_resident(a.resident);
  out->set_pinned(a.pinned);
  out->set_in_use(a.in_use);
}

void FillSiteStats(const SiteRoutingStats& s, v1::SiteStats* out) {
  const RoutingHealth h = ComputeRoutingHealth(s);
  out->set_layer(s.layer);
  out->set_site(RoutingSiteName(s.site));
  out->set_tokens(s.tokens);
  for (int e = 0; e < s.num_experts; ++e) {
    v1::ExpertLoad* x = out->add_experts();
    x->set_selections(s.selections[e]);
    x->set_load(h.load[e]);
    x->set_mean_prob(h.mean_prob[e]);
    x->set_gate_sum(s.gate_sum[e]);
  }
  out->set_dead_experts(h.dead_experts);
  out->set_load_cv(h.load_cv);
  out->set_balancedness(h.balancedness);
  out->set_switch_aux_loss(h.switch_aux_loss);
  out->set_importance_loss(h.importance_loss);
  out->set_router_entropy(h.router_entropy);
  out->set_z_loss(h.z_loss);
  out->set_experts_per_token(h.experts_per_token);
}

std::optional<absl::Time> Deadline(const grpc::CallbackServerContext& ctx) {
  const auto deadline = ctx.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return std::nullopt;
  return absl::FromChrono(deadline);
}

std::optional<absl::string_view> BearerToken(const grpc::CallbackServerContext& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return std::nullopt;
  absl::string_view v(it->second.data(), it->second.size());
  absl::ConsumePrefix(&v, "Bearer ");
  return v;
}

// Unary Generate: collects the events and finishes the call once both the last event has come
// (engine thread) and the handler has filled in the prompt fields (Begin).
class GenerateCollector final : public RequestSink {
 public:
  GenerateCollector(grpc::ServerUnaryReactor* reactor, v1::GenerateResponse* response)
      : reactor_(reactor), response_(response) {}

  void Deliver(RequestEvent e) override {
    std::unique_lock<std::mutex> lock(mu_);
    response_->mutable_token_ids()->Add(e.tokens.begin(), e.tokens.end());
    response_->mutable_text()->append(e.text);
    AddLogprobs(e.logprobs, response_->mutable_logprobs());
    if (!e.finished()) return;
    response_->set_finish_reason(ToProto(e.finish));
    FillUsage(e.usage, response_->mutable_usage());
    FillRouting(e.routing, response_->mutable_routing());
    status_ = FinishStatus(e);
    finished_ = true;
    MaybeFinish(lock);
  }

  void Begin(const Submitted& sub, bool echo) {
    std::unique_lock<std::mutex> lock(mu_);
    if (echo) {
      response_->set_prompt_text(sub.prompt_text);
      response_->mutable_prompt_token_ids()->Add(sub.prompt.begin(), sub.prompt.end());
    }
    response_->set_adapter_version(sub.adapter_version);
    begun_ = true;
    MaybeFinish(lock);
  }

 private:
  void MaybeFinish(std::unique_lock<std::mutex>& lock) {
    if (!begun_ || !finished_) return;
    lock.unlock();
    reactor_->Finish(status_);  // nothing touches the reactor or the response after this
  }

  grpc::ServerUnaryReactor* const reactor_;
  v1::GenerateResponse* const response_;
  std::mutex mu_;
  bool begun_ = false, finished_ = false;
  grpc::Status status_;
};

class UnaryReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit UnaryReactor(Frontend* frontend) : frontend_(frontend) {}
  void set_request(uint64_t id) { id_.store(id); }
  void OnCancel() override {
    if (uint64_t id = id_.load(); id != 0) frontend_->Cancel(id);
  }
  void OnDone() override { delete this; }

 private:
  Frontend* const frontend_;
  std::atomic<uint64_t> id_{0};
};

// GenerateStream: a queue between the engine thread and gRPC's writes. One write is in flight at
// a time; events that arrive meanwhile are merged into the next message.
class StreamReactor final : public grpc::ServerWriteReactor<v1::GenerateStreamResponse> {
 public:
  class Sink final : public RequestSink {
   public:
    explicit Sink(StreamReactor* reactor) : reactor_(reactor) {}
    void Deliver(RequestEvent e) override { reactor_->OnEvent(std::move(e)); }

   private:
    StreamReactor* const reactor_;  // valid until the call's Finish, which follows the last event
  };

  explicit StreamReactor(Frontend* frontend) : frontend_(frontend), arrival_(absl::Now()) {}

  void Begin(const Submitted& submitted, bool echo) {
    std::unique_lock<std::mutex> lock(mu_);
    id_ = submitted.id;
    if (!submitted.adapter_version.empty()) {
      pending_.set_adapter_version(submitted.adapter_version);
      has_pending_ = true;
    }
    if (echo) {
      pending_.set_prompt_text(submitted.prompt_text);
      pending_.mutable_prompt_token_ids()->Add(submitted.prompt.begin(), submitted.prompt.end());
      has_pending_ = true;
    }
    begun_ = true;
    MaybeWrite(lock);
  }

  void OnEvent(RequestEvent e) {
    std::unique_lock<std::mutex> lock(mu_);
    pending_.mutable_token_ids()->Add(e.tokens.begin(), e.tokens.end());
    pending_.mutable_text()->append(e.text);
    AddLogprobs(e.logprobs, pending_.mutable_logprobs());
    pending_.set_server_time_s(absl::ToDoubleSeconds(absl::Now() - arrival_));
    has_pending_ = true;
    if (e.finished()) {
      finished_ = true;
      status_ = FinishStatus(e);
      if (status_.ok()) {
        pending_.set_finish_reason(ToProto(e.finish));
        FillUsage(e.usage, pending_.mutable_usage());
        FillRouting(e.routing, pending_.mutable_routing());
      }
    }
    MaybeWrite(lock);
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) broken_ = true;  // the client went away; OnCancel cancels the request
    MaybeWrite(lock);
  }

  void OnCancel() override {
    uint64_t id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      id = id_;
    }
    if (id != 0) frontend_->Cancel(id);
  }

  void OnDone() override { delete this; }

  // Finishes at once (the request was refused before it started).
  void Refuse(const absl::Status& s) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    Finish(ToGrpc(s));
  }

 private:
  // Starts the next write or the finish, outside the lock (a reaction may run inline).
  void MaybeWrite(std::unique_lock<std::mutex>& lock) {
    if (!begun_ || writing_ || done_) return;
    const bool write = has_pending_ && !broken_ && (status_.ok() || !finished_);
    if (write) {
      out_.Swap(&pending_);
      pending_.Clear();
      has_pending_ = false;
      writing_ = true;
      lock.unlock();
      StartWrite(&out_);
      return;
    }
    if (finished_) {
      done_ = true;
      const grpc::Status status = broken_ && status_.ok()
                                      ? grpc::Status(grpc::StatusCode::CANCELLED, "client gone")
                                      : status_;
      lock.unlock();
      Finish(status);
    }
  }

  Frontend* const frontend_;
  std::mutex mu_;
  uint64_t id_ = 0;
  absl::Time arrival_;
  v1::GenerateStreamResponse pending_, out_;
  bool begun_ = false;  // the handler has returned the submission (events may come before)
  bool has_pending_ = false, writing_ = false, finished_ = false, broken_ = false, done_ = false;
  grpc::Status status_;
};

}  // namespace

class GrpcServer::Service final : public v1::Switchyard::CallbackService {
 public:
  explicit Service(Frontend* frontend) : frontend_(frontend) {}

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* ctx,
                                     const v1::GenerateRequest* req,
                                     v1::GenerateResponse* resp) override {
    auto* reactor = new UnaryReactor(frontend_);
    absl::StatusOr<GenerateInput> in = GenerateInputFromProto(*req, Deadline(*ctx));
    if (!in.ok()) {
      reactor->Finish(ToGrpc(in.status()));
      return reactor;
    }
    const bool echo = in->echo;
    auto sink = std::make_shared<GenerateCollector>(reactor, resp);
    absl::StatusOr<Submitted> sub = frontend_->Submit(std::move(*in), sink);
    if (!sub.ok()) {
      reactor->Finish(ToGrpc(sub.status()));
      return reactor;
    }
    reactor->set_request(sub->id);
    sink->Begin(*sub, echo);
    return reactor;
  }

  grpc::ServerWriteReactor<v1::GenerateStreamResponse>* GenerateStream(
      grpc::CallbackServerContext* ctx, const v1::GenerateRequest* req) override {
    auto* reactor = new StreamReactor(frontend_);
    absl::StatusOr<GenerateInput> in = GenerateInputFromProto(*req, Deadline(*ctx));
    if (!in.ok()) {
      reactor->Refuse(in.status());
      return reactor;
    }
    const bool echo = in->echo;
    absl::StatusOr<Submitted> sub =
        frontend_->Submit(std::move(*in), std::make_shared<StreamReactor::Sink>(reactor));
    if (!sub.ok()) {
      reactor->Refuse(sub.status());
      return reactor;
    }
    reactor->Begin(*sub, echo);
    return reactor;
  }

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx,
                                     const v1::TokenizeRequest* req,
                                     v1::TokenizeResponse* resp) override {
    absl::StatusOr<std::vector<int32_t>> ids = frontend_->Tokenize(
        req->text(), !req->has_add_special_tokens() || req->add_special_tokens());
    if (ids.ok()) resp->mutable_token_ids()->Add(ids->begin(), ids->end());
    return Done(
        ctx, ids.ok() ? absl::OkStatus()
                      : absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message())));
  }

  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* ctx,
                                       const v1::DetokenizeRequest* req,
                                       v1::DetokenizeResponse* resp) override {
    const std::vector<int32_t> ids(req->token_ids().begin(), req->token_ids().end());
    absl::StatusOr<std::string> text =
        frontend_->Detokenize(ids, !req->has_skip_special_tokens() || req->skip_special_tokens());
    if (text.ok()) resp->set_text(*text);
    return Done(ctx, text.status());
  }

  grpc::ServerUnaryReactor* ListAdapters(grpc::CallbackServerContext* ctx,
                                         const v1::ListAdaptersRequest*,
                                         v1::ListAdaptersResponse* resp) override {
    for (const AdapterInfo& a : frontend_->ListAdapters()) FillAdapterInfo(a, resp->add_adapters());
    return Done(ctx, absl::OkStatus());
  }

  grpc::ServerUnaryReactor* LoadAdapter(grpc::CallbackServerContext* ctx,
                                        const v1::LoadAdapterRequest* req,
                                        v1::LoadAdapterResponse* resp) override {
    if (absl::Status s = frontend_->Authorize(BearerToken(*ctx)); !s.ok()) return Done(ctx, s);
    if (req->name().empty()) return Done(ctx, absl::InvalidArgumentError("name: empty"));
    if (req->path().empty()) return Done(ctx, absl::InvalidArgumentError("path: empty"));
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    frontend_->LoadAdapterAsync(req->name(), req->path(), req->replace(), req->pin(),
                                [reactor, resp](absl::StatusOr<AdapterInfo> info) {
                                  if (info.ok()) FillAdapterInfo(*info, resp->mutable_adapter());
                                  reactor->Finish(ToGrpc(info.status()));
                                });
    return reactor;
  }

  grpc::ServerUnaryReactor* UnloadAdapter(grpc::CallbackServerContext* ctx,
                                          const v1::UnloadAdapterRequest* req,
                                          v1::UnloadAdapterResponse*) override {
    if (absl::Status s = frontend_->Authorize(BearerToken(*ctx)); !s.ok()) return Done(ctx, s);
    return Done(ctx, frontend_->UnloadAdapter(req->name(), req->drain()));
  }

  grpc::ServerUnaryReactor* GetRoutingStats(grpc::CallbackServerContext* ctx,
                                            const v1::GetRoutingStatsRequest* req,
                                            v1::GetRoutingStatsResponse* resp) override {
    absl::StatusOr<RoutingSnapshot> snap = req->previous()
                                               ? frontend_->PreviousRoutingStats(req->adapter())
                                               : frontend_->RoutingStats(req->adapter());
    if (snap.ok()) {
      resp->set_adapter(snap->adapter);
      resp->set_version(snap->version);
      resp->set_window_tokens(snap->window_tokens);
      resp->set_window_full(snap->window_full);
      for (const SiteRoutingStats& s : snap->window) FillSiteStats(s, resp->add_window());
      for (const SiteRoutingStats& s : snap->total) FillSiteStats(s, resp->add_total());
    }
    return Done(ctx, snap.status());
  }

  grpc::ServerUnaryReactor* GetExpertDiagnostics(grpc::CallbackServerContext* ctx,
                                                 const v1::GetExpertDiagnosticsRequest* req,
                                                 v1::GetExpertDiagnosticsResponse* resp) override {
    absl::StatusOr<ExpertReport> report = frontend_->ExpertDiagnostics(
        req->adapter(), req->has_similarity_threshold() ? req->similarity_threshold()
                                                        : kDefaultRedundantSimilarity);
    if (report.ok()) ExpertReportToProto(*report, resp);
    return Done(ctx, report.status());
  }

  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* ctx,
                                          const v1::GetServerInfoRequest*,
                                          v1::GetServerInfoResponse* resp) override {
    const ServerInfo info = frontend_->Info();
    resp->set_version(info.version);
    resp->set_model(info.model);
    resp->set_model_path(info.model_path);
    resp->set_engine(info.engine);
    resp->set_max_model_len(info.max_model_len);
    resp->set_max_batch_tokens(info.scheduler.max_batch_tokens);
    resp->set_max_batch_seqs(info.scheduler.max_batch_seqs);
    resp->set_max_adapters_per_step(info.scheduler.max_adapters_per_step);
    resp->set_max_waiting(info.scheduler.max_waiting);
    resp->set_kv_blocks(info.kv_blocks);
    resp->set_kv_block_size(info.kv_block_size);
    resp->set_chat_template(info.chat_template);
    resp->set_waiting(info.stats.waiting);
    resp->set_running(info.stats.running);
    resp->set_outstanding(info.stats.outstanding);
    resp->set_kv_usage(info.stats.kv_usage);
    resp->set_preemptions(info.stats.preemptions);
    resp->set_prefix_hit_tokens(info.stats.prefix_hit_tokens);
    resp->set_prefix_query_tokens(info.stats.prefix_query_tokens);
    resp->set_vocab_size(frontend_->tokenizer().vocab_size());
    return Done(ctx, absl::OkStatus());
  }

 private:
  static grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, const absl::Status& s) {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(ToGrpc(s));
    return reactor;
  }

  Frontend* const frontend_;
};

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(Frontend* frontend,
                                                              const GrpcServerOptions& options) {
  std::unique_ptr<GrpcServer> server(new GrpcServer());
  server->service_ = std::make_unique<Service>(frontend);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
    const auto read = [](const std::string& path) -> absl::StatusOr<std::string> {
      std::ifstream f(path);
      if (!f) return absl::NotFoundError(absl::StrCat("cannot read ", path));
      std::stringstream ss;
      ss << f.rdbuf();
      return ss.str();
    };
    absl::StatusOr<std::string> cert = read(options.tls_cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = read(options.tls_key_file);
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    creds = grpc::SslServerCredentials(ssl);
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.address, creds, &server->port_);
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(64 << 20);
  if (options.max_concurrent_streams > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  }
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.address));
  }
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  server->server_->GetHealthCheckService()->SetServingStatus(v1::Switchyard::service_full_name(),
                                                             true);
  return server;
}

GrpcServer::~GrpcServer() { Shutdown(absl::ZeroDuration()); }

void GrpcServer::SetNotServing() {
  if (server_) server_->GetHealthCheckService()->SetServingStatus(false);
}

void GrpcServer::Shutdown(absl::Duration grace) {
  if (!server_) return;
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
  server_.reset();
}

}  // namespace switchyard

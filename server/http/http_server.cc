#include "server/http/http_server.h"

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "boost/asio.hpp"
#include "boost/asio/ssl.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "boost/beast/ssl.hpp"
#include "engine/core/log.h"
#include "engine/core/status_macros.h"
#include "server/http/adapter_json.h"
#include "server/http/openai.h"

namespace switchyard {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using json = nlohmann::json;

std::string RandomId(absl::string_view prefix) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrCat(prefix, absl::Hex(rng(), absl::kZeroPad16));
}

int64_t UnixNow() { return absl::ToUnixSeconds(absl::Now()); }

}  // namespace

// Open connections, in all and per client address. Shared with every connection's slot: a
// session can outlive the server (its last handlers are destroyed with the io_context).
class ConnectionCounts {
 public:
  ConnectionCounts(int max_total, int max_per_client)
      : max_total_(max_total), max_per_client_(max_per_client) {}
  bool Acquire(const net::ip::address& client) {
    std::lock_guard<std::mutex> lock(mu_);
    int& mine = per_client_[client];
    if (total_ >= max_total_ || mine >= max_per_client_) {
      if (mine == 0) per_client_.erase(client);
      return false;
    }
    ++total_;
    ++mine;
    return true;
  }
  void Release(const net::ip::address& client) {
    std::lock_guard<std::mutex> lock(mu_);
    --total_;
    if (--per_client_[client] == 0) per_client_.erase(client);
  }

 private:
  const int max_total_, max_per_client_;
  std::mutex mu_;
  int total_ = 0;
  std::map<net::ip::address, int> per_client_;
};

// A connection's place under the connection limits, given back when the connection ends.
class ConnectionSlot {
 public:
  ConnectionSlot(std::shared_ptr<ConnectionCounts> counts, net::ip::address client)
      : counts_(std::move(counts)), client_(std::move(client)) {}
  ConnectionSlot(const ConnectionSlot&) = delete;
  ConnectionSlot& operator=(const ConnectionSlot&) = delete;
  ~ConnectionSlot() { counts_->Release(client_); }

 private:
  std::shared_ptr<ConnectionCounts> counts_;
  net::ip::address client_;
};

class HttpServer::Impl {
 public:
  explicit Impl(HttpServerOptions options) : options_(std::move(options)), acceptor_(ioc_) {}

  absl::Status Listen();
  absl::Status LoadTls();
  void Stop();
  // A slot for a new connection from `client`, or null past a connection limit.
  std::unique_ptr<ConnectionSlot> Admit(const net::ip::address& client) {
    if (!connections_->Acquire(client)) return nullptr;
    return std::make_unique<ConnectionSlot>(connections_, client);
  }

  // Null while the model loads; set once by Serve (after `metrics`, which it publishes).
  std::atomic<Frontend*> frontend_{nullptr};
  std::function<std::string()> metrics_;
  const HttpServerOptions options_;
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  std::vector<std::thread> threads_;
  std::atomic<bool> draining_{false};
  std::atomic<int> in_flight_{0};  // generations not yet answered in full
  const std::shared_ptr<ConnectionCounts> connections_ = std::make_shared<ConnectionCounts>(
      options_.max_connections, options_.max_connections_per_client);
  std::optional<net::ssl::context> tls_;  // set with --tls-cert: every connection speaks TLS
  std::atomic<int> writes_{0};            // writes whose handlers have not run
  int port_ = 0;

 private:
  void Accept();
};

namespace {

// One connection: reads requests one at a time (keep-alive), answers simple ones at once and
// generation requests as the engine produces them. All handlers run on the connection's strand.
// `Stream` is beast::tcp_stream, or a TLS stream over one (--tls-cert).
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  // `stream_args`: what constructs the stream (the socket, and the TLS context).
  template <class... StreamArgs>
  Session(HttpServer::Impl* server, std::unique_ptr<ConnectionSlot> slot,
          StreamArgs&&... stream_args)
      : stream_(std::forward<StreamArgs>(stream_args)...),
        executor_(stream_.get_executor()),
        server_(server),
        slot_(std::move(slot)) {}

  void Run() {
    if constexpr (kTls) {
      // The handshake is bounded by the request timeout, like the header that follows it.
      Lowest().expires_after(absl::ToChronoSeconds(server_->options_.request_timeout));
      stream_.async_handshake(net::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) return self->Close();
                                self->DoRead();
                              });
    } else {
      net::dispatch(stream_.get_executor(),
                    beast::bind_front_handler(&Session::DoRead, this->shared_from_this()));
    }
  }

  // An event of choice `index` of generation `serial`, from the engine thread.
  void Post(uint64_t serial, int index, RequestEvent event) {
    net::post(executor_,
              [self = this->shared_from_this(), serial, index, e = std::move(event)]() mutable {
                try {
                  self->OnEvent(serial, index, std::move(e));
                } catch (const std::exception& ex) {  // a bug must cost one request, not the server
                  SY_LOG(kError, "HTTP response: %s", ex.what());
                  self->Close();
                }
              });
  }

 private:
  struct Generation {
    uint64_t serial = 0;
    openai::ParsedRequest req;
    std::string id;
    int64_t created = 0;
    std::vector<openai::ChoiceState> choices;
    std::vector<bool> started;
    std::vector<uint64_t> request_ids;
    int remaining = 0;
    absl::Status failure;  // the first abnormal finish
    bool client_gone = false;
  };

  void DoRead() {
    parser_.emplace();
    parser_->body_limit(server_->options_.max_body_bytes);
    parser_->header_limit(64 << 10);
    Lowest().expires_after(absl::ToChronoSeconds(server_->options_.request_timeout));
    http::async_read_header(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&Session::OnHeader, this->shared_from_this()));
  }

  // The header is in: refuse an announced body over the cap at once, and answer
  // "Expect: 100-continue" (curl sends it for large bodies and otherwise waits a second).
  void OnHeader(beast::error_code ec, size_t n) {
    if (ec) return OnRead(ec, n);
    const auto& h = parser_->get();
    if (parser_->content_length().value_or(0) > server_->options_.max_body_bytes) {
      return OnRead(http::error::body_limit, 0);
    }
    const auto expect = h.find(http::field::expect);
    if (expect != h.end() && beast::iequals(expect->value(), "100-continue")) {
      auto reply =
          std::make_shared<http::response<http::empty_body>>(http::status::continue_, h.version());
      return http::async_write(
          stream_, *reply, [self = this->shared_from_this(), reply](beast::error_code ec, size_t) {
            if (ec) return self->Close();
            self->ReadBody();
          });
    }
    ReadBody();
  }

  void ReadBody() {
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::OnRead, this->shared_from_this()));
  }

  void OnRead(beast::error_code ec, size_t) {
    if (ec == http::error::end_of_stream || ec == net::error::operation_aborted ||
        ec == beast::error::timeout) {
      return Close();
    }
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      return SendError(absl::Status(absl::StatusCode::kInvalidArgument,
                                    absl::StrCat("the request body is over ",
                                                 server_->options_.max_body_bytes, " bytes")),
                       413);
    }
    if (ec) {
      keep_alive_ = false;
      return SendError(
          absl::InvalidArgumentError(absl::StrCat("malformed HTTP request: ", ec.message())), 400);
    }
    req_ = parser_->release();
    keep_alive_ = req_.keep_alive();
    try {
      Route();
    } catch (const std::exception& e) {  // a bug must cost one request, not the server
      SY_LOG(kError, "HTTP %s: %s", std::string(req_.target()), e.what());
      keep_alive_ = false;
      SendError(absl::InternalError(absl::StrCat("internal error: ", e.what())));
    }
  }

  void Route() {
    const absl::string_view target(req_.target().data(), req_.target().size());
    const absl::string_view path = target.substr(0, target.find('?'));
    const http::verb verb = req_.method();
    const bool loading = server_->frontend_.load(std::memory_order_acquire) == nullptr;
    if (server_->options_.metrics_only) {
      if (verb == http::verb::get && path == "/metrics" && !loading) {
        return SendText(http::status::ok, server_->metrics_(),
                        "text/plain; version=0.0.4; charset=utf-8");
      }
      return SendError(loading ? absl::UnavailableError("the server is loading its model")
                               : absl::NotFoundError(absl::StrCat(
                                     "no route for ", std::string(req_.method_string()), " ", path,
                                     " (this port serves GET /metrics)")),
                       loading ? 503 : 404);
    }
    if (verb == http::verb::get && path == "/health") {
      if (loading || server_->draining_) {
        return SendJson(http::status::service_unavailable,
                        {{"status", loading ? "loading" : "draining"}});
      }
      return SendJson(http::status::ok, {{"status", "ok"}});
    }
    if (verb == http::verb::get && path == "/version") {
      return SendJson(http::status::ok, {{"version", SWITCHYARD_VERSION}});
    }
    if (loading) {
      return SendError(absl::UnavailableError("the server is loading its model; retry later"));
    }
    if (verb == http::verb::get && path == "/metrics" && server_->metrics_) {
      return SendText(http::status::ok, server_->metrics_(),
                      "text/plain; version=0.0.4; charset=utf-8");
    }
    if (verb == http::verb::get && path == "/v1/models") {
      return SendJson(http::status::ok, openai::BuildModelList(*frontend(), UnixNow()));
    }
    if (verb == http::verb::post && path == "/v1/completions") {
      return StartGeneration(openai::Endpoint::kCompletions);
    }
    if (verb == http::verb::post && path == "/v1/chat/completions") {
      return StartGeneration(openai::Endpoint::kChat);
    }
    if (verb == http::verb::post && (path == "/tokenize" || path == "/detokenize")) {
      absl::StatusOr<json> out = path == "/tokenize" ? openai::Tokenize(req_.body(), *frontend())
                                                     : openai::Detokenize(req_.body(), *frontend());
      if (!out.ok()) return SendError(out.status());
      return SendJson(http::status::ok, *out);
    }
    if (verb == http::verb::post &&
        (path == "/v1/load_lora_adapter" || path == "/v1/unload_lora_adapter")) {
      return Admin(path == "/v1/load_lora_adapter");
    }
    if (verb == http::verb::get && absl::StartsWith(path, "/v1/adapters/")) {
      absl::string_view name = path;
      absl::ConsumePrefix(&name, "/v1/adapters/");
      if (absl::ConsumeSuffix(&name, "/routing")) return Routing(std::string(name), target);
      if (absl::ConsumeSuffix(&name, "/experts")) return Experts(std::string(name), target);
    }
    static const absl::string_view kPaths[] = {"/health",
                                               "/version",
                                               "/v1/models",
                                               "/v1/completions",
                                               "/v1/chat/completions",
                                               "/v1/load_lora_adapter",
                                               "/v1/unload_lora_adapter",
                                               "/tokenize",
                                               "/detokenize"};
    const bool known = std::find(std::begin(kPaths), std::end(kPaths), path) != std::end(kPaths);
    SendError(absl::NotFoundError(absl::StrCat(known ? "method not allowed for " : "no route for ",
                                               std::string(req_.method_string()), " ", path)),
              known ? 405 : 404);
  }

  // Only once serving (Route answers 503 before).
  Frontend* frontend() { return server_->frontend_.load(std::memory_order_acquire); }

  // Counts a write until its handler has run, so that a shutdown lets answers go out first.
  template <class Handler>
  auto Tracked(Handler handler) {
    ++server_->writes_;
    return
        [server = server_, handler = std::move(handler)](beast::error_code ec, size_t n) mutable {
          --server->writes_;
          handler(ec, n);
        };
  }

  std::optional<absl::string_view> Bearer() const {
    auto it = req_.find(http::field::authorization);
    if (it == req_.end()) return std::nullopt;
    absl::string_view v(it->value().data(), it->value().size());
    absl::ConsumePrefix(&v, "Bearer ");
    return v;
  }

  void Admin(bool load) {
    if (absl::Status s = frontend()->Authorize(Bearer()); !s.ok()) return SendError(s);
    const json body = json::parse(req_.body(), nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      return SendError(absl::InvalidArgumentError("the body is not a JSON object"));
    }
    const json name = body.value("lora_name", json());
    if (!name.is_string() || name.get<std::string>().empty()) {
      return SendError(absl::InvalidArgumentError("lora_name: a non-empty string is required"));
    }
    if (!load) {
      const absl::Status s = frontend()->UnloadAdapter(name.get<std::string>(), false);
      if (!s.ok()) return SendError(s);
      return SendText(http::status::ok,
                      absl::StrCat("Success: LoRA adapter '", name.get<std::string>(),
                                   "' removed successfully."),
                      "text/plain; charset=utf-8");
    }
    const json path = body.value("lora_path", json());
    if (!path.is_string() || path.get<std::string>().empty()) {
      return SendError(absl::InvalidArgumentError("lora_path: a non-empty string is required"));
    }
    const json inplace = body.value("load_inplace", json(false));
    if (!inplace.is_boolean()) {
      return SendError(absl::InvalidArgumentError("load_inplace: must be true or false"));
    }
    // Loads take seconds: off the I/O threads, back on this connection's strand when done.
    frontend()->LoadAdapterAsync(
        name.get<std::string>(), path.get<std::string>(), inplace.get<bool>(), false,
        [self = this->shared_from_this(),
         n = name.get<std::string>()](absl::StatusOr<AdapterInfo> r) {
          net::post(self->executor_, [self, n, r = std::move(r)] {
            if (!r.ok()) return self->SendError(r.status());
            self->SendText(http::status::ok,
                           absl::StrCat("Success: LoRA adapter '", n, "' added successfully."),
                           "text/plain; charset=utf-8");
          });
        });
  }

  // ?version=previous: the version before the last swap, to compare with.
  void Routing(const std::string& name, absl::string_view target) {
    const std::optional<std::string> version = QueryParameter(target, "version");
    if (version.has_value() && *version != "current" && *version != "previous") {
      return SendError(absl::InvalidArgumentError(
          absl::StrCat("version must be current or previous, got \"", *version, "\"")));
    }
    absl::StatusOr<RoutingSnapshot> snap = version == "previous"
                                               ? frontend()->PreviousRoutingStats(name)
                                               : frontend()->RoutingStats(name);
    if (!snap.ok()) return SendError(snap.status());
    SendJson(http::status::ok, RoutingSnapshotJson(*snap));
  }

  // ?similarity_threshold=X flags pairs at or above X (default 0.9).
  void Experts(const std::string& name, absl::string_view target) {
    double threshold = kDefaultRedundantSimilarity;
    if (std::optional<std::string> t = QueryParameter(target, "similarity_threshold")) {
      if (!absl::SimpleAtod(*t, &threshold)) {
        return SendError(absl::InvalidArgumentError(
            absl::StrCat("similarity_threshold is not a number: \"", *t, "\"")));
      }
    }
    absl::StatusOr<ExpertReport> report = frontend()->ExpertDiagnostics(name, threshold);
    if (!report.ok()) return SendError(report.status());
    SendJson(http::status::ok, ExpertReportJson(*report));
  }

  // -- generation --

  void StartGeneration(openai::Endpoint endpoint) {
    if (server_->in_flight_.fetch_add(1) >= server_->options_.max_concurrent_requests) {
      --server_->in_flight_;
      return SendError(absl::ResourceExhaustedError(
          absl::StrCat("too many concurrent requests (", server_->options_.max_concurrent_requests,
                       "); retry later")));
    }
    absl::StatusOr<openai::ParsedRequest> parsed =
        openai::ParseRequest(endpoint, req_.body(), *frontend());
    if (!parsed.ok()) {
      --server_->in_flight_;
      return SendError(parsed.status());
    }
    gen_ = std::make_unique<Generation>();
    Generation& g = *gen_;
    g.serial = ++serial_;
    g.req = std::move(*parsed);
    g.id = RandomId(endpoint == openai::Endpoint::kChat ? "chatcmpl-" : "cmpl-");
    g.created = UnixNow();
    g.choices.resize(g.req.choices.size());
    g.started.assign(g.req.choices.size(), false);
    g.remaining = static_cast<int>(g.req.choices.size());
    Lowest().expires_never();
    for (size_t i = 0; i < g.req.choices.size(); ++i) {
      auto sink =
          std::make_shared<ChoiceSink>(this->shared_from_this(), g.serial, static_cast<int>(i));
      absl::StatusOr<Submitted> sub = frontend()->Submit(std::move(g.req.choices[i]), sink);
      if (!sub.ok()) {
        // Nothing was streamed yet: cancel what was submitted and answer with the error.
        for (uint64_t id : g.request_ids) frontend()->Cancel(id);
        gen_.reset();
        --server_->in_flight_;
        return SendError(sub.status());
      }
      g.request_ids.push_back(sub->id);
      g.choices[i].prompt_text = sub->prompt_text;
    }
    if (g.req.stream) {
      http::response<http::empty_body> head{http::status::ok, req_.version()};
      head.set(http::field::server, "switchyard");
      head.set(http::field::content_type, "text/event-stream");
      head.set(http::field::cache_control, "no-cache");
      head.keep_alive(keep_alive_);
      head.chunked(true);
      stream_head_ = std::make_shared<http::response<http::empty_body>>(std::move(head));
      stream_serializer_ =
          std::make_shared<http::response_serializer<http::empty_body>>(*stream_head_);
      writing_ = true;
      http::async_write_header(
          stream_, *stream_serializer_,
          Tracked(beast::bind_front_handler(&Session::OnChunkWritten, this->shared_from_this())));
    }
    WatchForDisconnect();
  }

  class ChoiceSink final : public RequestSink {
   public:
    ChoiceSink(std::shared_ptr<Session> session, uint64_t serial, int index)
        : session_(std::move(session)), serial_(serial), index_(index) {}
    void Deliver(RequestEvent e) override {
      const bool last = e.finished();
      session_->Post(serial_, index_, std::move(e));
      if (last) session_.reset();  // the last event: let the connection go when it is done
    }

   private:
    std::shared_ptr<Session> session_;
    const uint64_t serial_;
    const int index_;
  };

  // A read while the response is produced: it completes only if the client closes (or sends a
  // pipelined request), and then the generation is cancelled.
  void WatchForDisconnect() {
    watching_ = true;
    stream_.async_read_some(
        buffer_.prepare(4096), [self = this->shared_from_this()](beast::error_code ec, size_t n) {
          self->watching_ = false;
          if (!ec) {
            self->buffer_.commit(n);  // a pipelined request: keep it for the next read
          } else if (ec != net::error::operation_aborted && self->gen_) {
            self->gen_->client_gone = true;
            for (uint64_t id : self->gen_->request_ids) self->frontend()->Cancel(id);
          }
          if (self->read_after_watch_) {
            self->read_after_watch_ = false;
            if (ec && ec != net::error::operation_aborted) return self->Close();
            self->DoRead();
          }
        });
  }

  void OnEvent(uint64_t serial, int index, RequestEvent e) {
    if (!gen_ || gen_->serial != serial) return;  // a generation already answered
    Generation& g = *gen_;
    openai::ChoiceState& c = g.choices[index];
    c.text += e.text;
    c.tokens.insert(c.tokens.end(), e.tokens.begin(), e.tokens.end());
    c.logprobs.insert(c.logprobs.end(), e.logprobs.begin(), e.logprobs.end());
    const bool normal = e.finish == FinishReason::kNone || e.finish == FinishReason::kStop ||
                        e.finish == FinishReason::kStopString || e.finish == FinishReason::kLength;
    if (e.finished()) {
      c.finish = e.finish;
      c.usage = e.usage;
      --g.remaining;
      if (!normal && g.failure.ok()) {
        g.failure =
            e.finish == FinishReason::kError
                ? absl::InternalError(absl::StrCat("generation failed: ", e.error.message()))
            : e.finish == FinishReason::kDeadline
                ? absl::DeadlineExceededError("the request's deadline passed")
                : absl::UnavailableError("the request was cancelled (server shutting down)");
      }
    }
    if (g.client_gone) {
      if (g.remaining == 0) EndGeneration(/*close=*/true);
      return;
    }
    if (g.req.stream) {
      const bool first = !g.started[index];
      g.started[index] = true;
      // Completions' log-probs give each token's offset in the whole text.
      const int64_t sent = static_cast<int64_t>(c.text.size() - e.text.size()) +
                           (first ? 0 : static_cast<int64_t>(c.prompt_text.size()));
      std::vector<ToolCall> calls;
      if (g.req.tool_format != ToolCallFormat::kNone) {
        // The text goes through the tool-call parser: what may be part of a call is held back.
        if (!c.tool_stream)
          c.tool_stream = std::make_shared<ToolCallStream>(g.req.tool_format, g.req.tool_name);
        ToolCallStream::Delta d = c.tool_stream->Push(e.text);
        if (e.finished()) {
          ToolCallStream::Delta rest = c.tool_stream->Finish();
          d.content += rest.content;
          d.calls.insert(d.calls.end(), rest.calls.begin(), rest.calls.end());
        }
        e.text = std::move(d.content);
        calls = std::move(d.calls);
        if (!g.req.parallel_tool_calls) {
          calls.resize(std::min<size_t>(calls.size(), c.tool_calls_sent == 0 ? 1 : 0));
        }
      }
      if (normal &&
          (first || e.finished() || !e.text.empty() || !e.logprobs.empty() || !calls.empty())) {
        Queue(openai::BuildChunk(g.req, g.id, g.created, index, e, first, c.prompt_text, sent,
                                 frontend()->tokenizer(), calls, c.tool_calls_sent,
                                 c.tool_calls_sent + static_cast<int>(calls.size()) > 0));
        c.tool_calls_sent += static_cast<int>(calls.size());
      }
      if (g.remaining == 0) {
        if (!g.failure.ok()) Queue(openai::ErrorBody(g.failure));
        if (g.req.include_usage && g.failure.ok()) {
          Queue(openai::BuildUsageChunk(g.req, g.id, g.created, g.choices));
        }
        pending_.push_back("data: [DONE]\n\n");
        finishing_ = true;
      }
      return WriteNext();
    }
    if (g.remaining > 0) return;
    if (!g.failure.ok()) {
      SendError(g.failure);
    } else {
      SendJson(http::status::ok,
               openai::BuildResponse(g.req, g.id, g.created, g.choices, frontend()->tokenizer()));
    }
    FinishGeneration();
  }

  void Queue(const json& chunk) {
    pending_.push_back(absl::StrCat("data: ", openai::Dump(chunk), "\n\n"));
  }

  void WriteNext() {
    if (writing_) return;
    if (!pending_.empty()) {
      writing_ = true;
      chunk_ = std::move(pending_.front());
      pending_.pop_front();
      net::async_write(
          stream_, http::make_chunk(net::buffer(chunk_)),
          Tracked(beast::bind_front_handler(&Session::OnChunkWritten, this->shared_from_this())));
      return;
    }
    if (finishing_) {
      finishing_ = false;
      writing_ = true;
      net::async_write(stream_, http::make_chunk_last(),
                       Tracked([self = this->shared_from_this()](beast::error_code ec, size_t) {
                         self->writing_ = false;
                         self->FinishGeneration();
                         self->EndGeneration(ec.failed() || !self->keep_alive_);
                       }));
    }
  }

  void OnChunkWritten(beast::error_code ec, size_t) {
    writing_ = false;
    if (ec && gen_ && !gen_->client_gone) {
      gen_->client_gone = true;
      for (uint64_t id : gen_->request_ids) frontend()->Cancel(id);
      pending_.clear();
      finishing_ = false;
      if (gen_->remaining == 0) EndGeneration(true);
      return;
    }
    WriteNext();
  }

  // The generation is answered (its response may still be being written).
  void FinishGeneration() {
    if (!gen_) return;
    gen_.reset();
    --server_->in_flight_;
  }

  // After a streamed response (or a vanished client): next request or close.
  void EndGeneration(bool close) {
    if (gen_) FinishGeneration();
    stream_serializer_.reset();
    stream_head_.reset();
    if (close) return Close();
    ReadNextAfterWatch();
  }

  void ReadNextAfterWatch() {
    if (watching_) {
      read_after_watch_ = true;
      Lowest().socket().cancel();
      return;
    }
    DoRead();
  }

  // -- plain responses --

  void SendJson(http::status status, const json& body, int retry_after = 0) {
    SendText(status, openai::Dump(body), "application/json", retry_after);
  }

  void SendError(const absl::Status& s, int http_status = 0) {
    const int code = http_status != 0 ? http_status : openai::HttpStatus(s);
    SendJson(static_cast<http::status>(code), openai::ErrorBody(s, code), code == 429 ? 1 : 0);
  }

  void SendText(http::status status, std::string body, const char* type, int retry_after = 0) {
    auto res = std::make_shared<http::response<http::string_body>>(status, req_.version());
    res->set(http::field::server, "switchyard");
    res->set(http::field::content_type, type);
    if (retry_after > 0) res->set(http::field::retry_after, absl::StrCat(retry_after));
    res->keep_alive(keep_alive_);
    res->body() = std::move(body);
    res->prepare_payload();
    response_ = res;
    http::async_write(stream_, *res,
                      Tracked([self = this->shared_from_this(), close = !keep_alive_](
                                  beast::error_code ec, size_t) {
                        self->response_.reset();
                        if (ec || close) return self->Close();
                        self->ReadNextAfterWatch();
                      }));
  }

  void Close() {
    if constexpr (kTls) {
      if (!tls_closing_ && Lowest().socket().is_open()) {
        // close_notify, so clients can tell the end from a truncation; bounded in time.
        tls_closing_ = true;
        Lowest().expires_after(std::chrono::seconds(5));
        return stream_.async_shutdown(
            [self = this->shared_from_this()](beast::error_code) { self->CloseSocket(); });
      }
    }
    CloseSocket();
  }

  void CloseSocket() {
    beast::error_code ec;
    Lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    Lowest().socket().close(ec);
  }

  beast::tcp_stream& Lowest() { return beast::get_lowest_layer(stream_); }

  Stream stream_;
  bool tls_closing_ = false;
  const net::any_io_executor executor_;  // the strand; safe to use from the engine thread
  HttpServer::Impl* const server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> req_;
  bool keep_alive_ = true;
  std::shared_ptr<void> response_;
  std::unique_ptr<Generation> gen_;
  uint64_t serial_ = 0;
  std::shared_ptr<http::response<http::empty_body>> stream_head_;
  std::shared_ptr<http::response_serializer<http::empty_body>> stream_serializer_;
  std::deque<std::string> pending_;
  std::string chunk_;
  bool writing_ = false, finishing_ = false, watching_ = false, read_after_watch_ = false;
  std::unique_ptr<ConnectionSlot> slot_;
};

// Answers 503 to a connection over a limit and closes it, reading nothing.
void RefuseConnection(tcp::socket socket, absl::string_view why) {
  const std::string body = openai::Dump(openai::ErrorBody(absl::UnavailableError(why)));
  auto text = std::make_shared<std::string>(absl::StrCat(
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
      "Connection: close\r\nContent-Length: ",
      body.size(), "\r\n\r\n", body));
  auto s = std::make_shared<tcp::socket>(std::move(socket));
  net::async_write(*s, net::buffer(*text), [s, text](beast::error_code, size_t) {
    beast::error_code ec;
    s->shutdown(tcp::socket::shutdown_send, ec);
    s->close(ec);
  });
}

}  // namespace

absl::Status HttpServer::Impl::Listen() {
  if (!options_.tls_cert_file.empty() || !options_.tls_key_file.empty()) {
    SY_RETURN_IF_ERROR(LoadTls());
  }
  beast::error_code ec;
  const auto address = net::ip::make_address(options_.host, ec);
  if (ec)
    return absl::InvalidArgumentError(absl::StrCat("--host ", options_.host, ": ", ec.message()));
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(options_.port));
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.host, ":", options_.port, ": ", ec.message()));
  }
  port_ = acceptor_.local_endpoint().port();
  Accept();
  for (int i = 0; i < std::max(1, options_.io_threads); ++i) {
    threads_.emplace_back([this] { ioc_.run(); });
  }
  return absl::OkStatus();
}

void HttpServer::Impl::Accept() {
  acceptor_.async_accept(net::make_strand(ioc_), [this](beast::error_code ec, tcp::socket s) {
    if (ec) {
      if (ec == net::error::operation_aborted) return;
    } else {
      beast::error_code peer_ec;
      const tcp::endpoint peer = s.remote_endpoint(peer_ec);
      if (peer_ec) {
        s.close(peer_ec);
      } else if (std::unique_ptr<ConnectionSlot> slot = Admit(peer.address()); slot == nullptr) {
        if (tls_) {  // a plain-text answer means nothing to a TLS client
          s.close(peer_ec);
        } else {
          RefuseConnection(std::move(s),
                           absl::StrCat("too many connections (at most ", options_.max_connections,
                                        ", ", options_.max_connections_per_client,
                                        " per client address); retry later"));
        }
      } else if (tls_) {
        std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(this, std::move(slot),
                                                                        std::move(s), *tls_)
            ->Run();
      } else {
        std::make_shared<Session<beast::tcp_stream>>(this, std::move(slot), std::move(s))->Run();
      }
    }
    Accept();
  });
}

absl::Status HttpServer::Impl::LoadTls() {
  if (options_.tls_cert_file.empty() || options_.tls_key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both --tls-cert and --tls-key");
  }
  tls_.emplace(net::ssl::context::tls_server);
  tls_->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                    net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                    net::ssl::context::no_tlsv1_1);
  beast::error_code ec;
  tls_->use_certificate_chain_file(options_.tls_cert_file, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert ", options_.tls_cert_file, ": ", ec.message()));
  }
  tls_->use_private_key_file(options_.tls_key_file, net::ssl::context::pem, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-key ", options_.tls_key_file, ": ", ec.message()));
  }
  return absl::OkStatus();
}

void HttpServer::Impl::Stop() {
  net::post(ioc_, [this] {
    beast::error_code ec;
    acceptor_.close(ec);
  });
  // The scheduler has finished (or cancelled) every request by now; let their last events and
  // answers reach the clients, for a bounded time (a client that reads nothing cannot hold us).
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while ((in_flight_ > 0 || writes_ > 0) && absl::Now() < deadline && !threads_.empty()) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ioc_.stop();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options) {
  std::unique_ptr<HttpServer> server(new HttpServer());
  server->impl_ = std::make_unique<Impl>(std::move(options));
  if (absl::Status s = server->impl_->Listen(); !s.ok()) return s;
  return server;
}

HttpServer::~HttpServer() { Shutdown(); }

int HttpServer::port() const { return impl_->port_; }

void HttpServer::Serve(Frontend* frontend, std::function<std::string()> metrics) {
  SY_CHECK(frontend != nullptr && impl_->frontend_.load() == nullptr);
  impl_->metrics_ = std::move(metrics);
  impl_->frontend_.store(frontend, std::memory_order_release);
}

void HttpServer::SetDraining() { impl_->draining_ = true; }

void HttpServer::Shutdown() {
  if (impl_) impl_->Stop();
}

}  // namespace switchyard

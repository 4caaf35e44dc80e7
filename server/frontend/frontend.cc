#include "server/frontend/frontend.h"

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/core/json_util.h"
#include "engine/core/log.h"
#include "engine/core/status_macros.h"

#ifndef SWITCHYARD_VERSION
#define SWITCHYARD_VERSION "dev"
#endif

namespace switchyard {
namespace {

// Forwards a request's events and logs one line when it finishes.
class LoggingSink final : public RequestSink {
 public:
  // `adapter` names the request's adapter or mixture in the log; `observed` for the observer.
  LoggingSink(std::shared_ptr<RequestSink> inner, std::string adapter, std::string observed,
              const FrontendObserver* observer)
      : inner_(std::move(inner)),
        adapter_(std::move(adapter)),
        observed_(std::move(observed)),
        observer_(observer) {}

  void Deliver(RequestEvent e) override {
    if (e.finished()) {
      if (observer_->request_finished) observer_->request_finished(observed_, e);
      const RequestUsage& u = e.usage;
      const double ttft =
          u.first_token > u.arrival ? absl::ToDoubleMilliseconds(u.first_token - u.arrival) : -1;
      SY_LOG(kInfo,
             "request id=%d adapter=%s finish=%s prompt_tokens=%d cached_tokens=%d "
             "completion_tokens=%d preemptions=%d ttft_ms=%.1f total_ms=%.1f%s%s",
             e.request_id, adapter_.empty() ? "-" : adapter_, FinishReasonName(e.finish),
             u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens, u.preemptions, ttft,
             absl::ToDoubleMilliseconds(u.finish - u.arrival),
             e.error.ok() ? "" : " error=", e.error.ok() ? "" : std::string(e.error.message()));
    }
    inner_->Deliver(std::move(e));
  }

 private:
  std::shared_ptr<RequestSink> inner_;
  std::string adapter_, observed_;
  const FrontendObserver* observer_;
};

std::optional<AdapterInfo> FindAdapter(const AdapterRegistry& registry, const std::string& name) {
  for (AdapterInfo& a : registry.List()) {
    if (a.name == name) return std::move(a);
  }
  return std::nullopt;
}

absl::Status NotLoaded(const std::string& adapter) {
  return absl::NotFoundError(absl::StrCat("adapter \"", adapter, "\" is not loaded"));
}

}  // namespace

std::string RoutingSiteName(int site) {
  if (site == kFfnBlockSite) return "ffn";
  if (site < 0 || site >= kNumLinearSites) return "?";
  return std::string(LinearSiteName(static_cast<LinearSite>(site)));
}

std::vector<int32_t> ModelEosTokens(const std::string& model_dir, const Tokenizer& tokenizer) {
  std::vector<int32_t> ids;
  if (tokenizer.eos_id().has_value()) ids.push_back(*tokenizer.eos_id());
  const std::string path = model_dir + "/generation_config.json";
  if (std::filesystem::exists(path)) {
    if (absl::StatusOr<std::string> text = ReadFile(path); text.ok()) {
      absl::StatusOr<nlohmann::json> j = json_util::Parse(*text, path);
      if (j.ok() && j->is_object()) {  // value() throws on anything else
        const nlohmann::json& eos = j->value("eos_token_id", nlohmann::json());
        if (eos.is_number_integer()) ids.push_back(eos.get<int32_t>());
        if (eos.is_array()) {
          for (const auto& e : eos) {
            if (e.is_number_integer()) ids.push_back(e.get<int32_t>());
          }
        }
      }
    }
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

// Runs adapter loads one at a time on a thread of its own.
class Frontend::Loader {
 public:
  Loader() : thread_([this] { Run(); }) {}
  ~Loader() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  // False when `max_queued` tasks are already waiting or running (the task is dropped).
  bool Post(std::function<void()> task, int max_queued) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (static_cast<int>(tasks_.size()) + running_ >= max_queued) return false;
      tasks_.push_back(std::move(task));
    }
    cv_.notify_all();
    return true;
  }

 private:
  void Run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
        running_ = 1;
      }
      task();
      std::lock_guard<std::mutex> lock(mu_);
      running_ = 0;
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  int running_ = 0;
  std::thread thread_;
};

Frontend::~Frontend() = default;

void Frontend::LoadAdapterAsync(std::string name, std::string path, bool replace, bool pin,
                                std::function<void(absl::StatusOr<AdapterInfo>)> done) {
  auto task = [this, name, path, replace, pin, done] {
    done(LoadAdapter(name, path, replace, pin));
  };
  if (!loader_->Post(std::move(task), options_.max_pending_adapter_loads)) {
    const absl::Status busy = absl::ResourceExhaustedError(
        absl::StrCat("adapter loads: ", options_.max_pending_adapter_loads,
                     " are already queued or running; retry later"));
    if (observer_.adapter_admin) observer_.adapter_admin(name, "load", absl::ZeroDuration(), busy);
    done(busy);
  }
}

Frontend::Frontend(Engine* engine, Scheduler* scheduler, AdapterRegistry* registry,
                   const Tokenizer* tokenizer, FrontendOptions options,
                   std::optional<ChatTemplate> chat_template)
    : engine_(engine),
      scheduler_(scheduler),
      registry_(registry),
      tokenizer_(tokenizer),
      options_(std::move(options)),
      chat_template_(std::move(chat_template)),
      constraints_(tokenizer),
      loader_(std::make_unique<Loader>()) {}

absl::StatusOr<std::unique_ptr<Frontend>> Frontend::Create(Engine* engine, Scheduler* scheduler,
                                                           AdapterRegistry* registry,
                                                           const Tokenizer* tokenizer,
                                                           FrontendOptions options) {
  std::optional<ChatTemplate> chat;
  if (!options.chat_template.empty()) {
    SY_ASSIGN_OR_RETURN(std::string source, ChatTemplate::ResolveSource(options.chat_template));
    absl::StatusOr<ChatTemplate> t =
        ChatTemplate::Compile(source, tokenizer->bos_token(), tokenizer->eos_token());
    if (!t.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--chat-template: ", t.status().message()));
    }
    chat = std::move(*t);
  } else if (!tokenizer->chat_template().empty()) {
    absl::StatusOr<ChatTemplate> t = ChatTemplate::Compile(
        tokenizer->chat_template(), tokenizer->bos_token(), tokenizer->eos_token());
    if (t.ok()) {
      chat = std::move(*t);
    } else {
      SY_LOG(kWarning, "chat requests will be refused: the model's chat template: %s",
             t.status().message());
    }
  }
  SY_ASSIGN_OR_RETURN(
      const ToolCallFormat tools,
      ParseToolCallFormat(options.tool_call_parser, chat ? chat->source() : std::string()));
  auto frontend = std::unique_ptr<Frontend>(
      new Frontend(engine, scheduler, registry, tokenizer, std::move(options), std::move(chat)));
  frontend->tool_call_format_ = tools;
  return frontend;
}

absl::StatusOr<std::vector<int32_t>> Frontend::Tokenize(absl::string_view text,
                                                        bool add_special_tokens) const {
  return tokenizer_->Encode(text, {.add_special_tokens = add_special_tokens});
}

absl::StatusOr<std::string> Frontend::Detokenize(std::span<const int32_t> ids,
                                                 bool skip_special_tokens) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= tokenizer_->vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat("token_ids[", i, "]: ", ids[i],
                                                     " is outside the vocabulary [0, ",
                                                     tokenizer_->vocab_size(), ")"));
    }
  }
  return tokenizer_->Decode(ids, skip_special_tokens);
}

absl::StatusOr<std::string> Frontend::RenderChat(const ChatInput& chat) const {
  if (!chat_template_.has_value()) {
    return absl::InvalidArgumentError(
        "messages: the model has no usable chat template; start the server with "
        "--chat-template=FILE (a Jinja template, or chatml) or send a text prompt");
  }
  if (chat.messages.empty()) return absl::InvalidArgumentError("messages: empty");
  return chat_template_->Render(chat);
}

absl::StatusOr<Submitted> Frontend::Submit(GenerateInput input, std::shared_ptr<RequestSink> sink) {
  absl::StatusOr<Submitted> out = SubmitUnobserved(std::move(input), std::move(sink));
  if (!out.ok() && observer_.request_refused) observer_.request_refused(out.status().code());
  return out;
}

absl::StatusOr<Submitted> Frontend::SubmitUnobserved(GenerateInput input,
                                                     std::shared_ptr<RequestSink> sink) {
  SY_ASSIGN_OR_RETURN(PreparedRequest p, Prepare(std::move(input)));
  Submitted out = std::move(p.submitted);
  GenerationRequest& r = p.request;
  out.prompt = r.prompt;
  out.adapter = r.adapter;
  // Mixtures (any weights: unbounded names) are observed under one name.
  r.sink = std::make_shared<LoggingSink>(
      std::move(sink), out.adapter_name,
      r.mixture.empty() ? out.adapter_name : std::string(kMixtureObserverName), &observer_);
  SY_ASSIGN_OR_RETURN(out.id, scheduler_->Submit(std::move(r)));
  return out;
}

absl::StatusOr<PreparedRequest> Frontend::Prepare(GenerateInput input) const {
  const int given = (input.text ? 1 : 0) + (input.token_ids ? 1 : 0) + (input.chat ? 1 : 0);
  if (given != 1) {
    return absl::InvalidArgumentError("prompt: give exactly one of text, token_ids or messages");
  }
  Submitted out;
  GenerationRequest& r = input.request;
  for (const auto& [token, bias] : r.sampling.logit_bias) {
    if (token < 0 || token >= tokenizer_->vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat("logit_bias: token id ", token,
                                                     " is outside the vocabulary [0, ",
                                                     tokenizer_->vocab_size(), ")"));
    }
  }
  if (input.token_ids) {
    r.prompt = std::move(*input.token_ids);
  } else {
    std::string text;
    bool add_special = input.add_special_tokens.value_or(true);
    if (input.chat) {
      SY_ASSIGN_OR_RETURN(text, RenderChat(*input.chat));
      add_special = input.add_special_tokens.value_or(false);  // the template wrote them
    } else {
      text = std::move(*input.text);
    }
    absl::StatusOr<std::vector<int32_t>> ids = Tokenize(text, add_special);
    if (!ids.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("prompt: ", ids.status().message()));
    }
    r.prompt = std::move(*ids);
    if (input.echo) out.prompt_text = std::move(text);
  }
  if (input.echo && out.prompt_text.empty()) {
    SY_ASSIGN_OR_RETURN(out.prompt_text, Detokenize(r.prompt, r.skip_special_tokens));
  }
  if (input.constraint) {
    SY_ASSIGN_OR_RETURN(r.grammar, constraints_.Compile(*input.constraint));
  }
  if (!input.adapter.empty()) {
    SY_ASSIGN_OR_RETURN(r.adapter, registry_->Acquire(input.adapter));
  }
  out.adapter_name = input.adapter;
  if (r.adapter != nullptr) out.adapter_version = absl::StrCat(r.adapter->version);
  SY_RETURN_IF_ERROR(AcquireMixture(input, r, out));
  return PreparedRequest{std::move(r), std::move(out)};
}

absl::Status Frontend::AcquireMixture(const GenerateInput& input, GenerationRequest& r,
                                      Submitted& out) const {
  if (input.mixture.empty()) return absl::OkStatus();
  if (!input.adapter.empty()) {
    return absl::InvalidArgumentError("adapters: name the adapters there, not also as the model");
  }
  if (input.mixture.size() > kMaxMixtureMembers) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapters: ", input.mixture.size(), " members; at most ", kMaxMixtureMembers));
  }
  std::vector<std::string> names, versions;
  for (const MixtureInput& m : input.mixture) {
    if (m.name.empty()) return absl::InvalidArgumentError("adapters: a member has no name");
    absl::StatusOr<std::shared_ptr<const AdapterWeights>> a = registry_->Acquire(m.name);
    if (!a.ok()) return a.status();
    r.mixture.push_back({*a, m.weight});
    names.push_back(absl::StrCat(m.name, "*", m.weight));
    versions.push_back(absl::StrCat((*a)->version));
  }
  out.adapter_name = absl::StrJoin(names, "+");
  out.adapter_version = absl::StrJoin(versions, ",");
  return absl::OkStatus();
}

absl::Status Frontend::Authorize(std::optional<absl::string_view> presented) const {
  if (options_.admin_token.empty()) {
    if (options_.admin_open_without_token) return absl::OkStatus();
    return absl::PermissionDeniedError(
        "adapter admin is off: this server listens beyond loopback and has no admin token; "
        "start it with --admin-token (or $SWITCHYARD_ADMIN_TOKEN), or --insecure-admin to leave "
        "admin open");
  }
  if (!presented.has_value()) {
    return absl::UnauthenticatedError("this call needs the admin token (authorization: Bearer)");
  }
  // Compare in time independent of where the strings differ.
  const std::string& want = options_.admin_token;
  unsigned diff = presented->size() == want.size() ? 0 : 1;
  for (size_t i = 0; i < presented->size(); ++i) {
    diff |= static_cast<unsigned char>((*presented)[i]) ^
            static_cast<unsigned char>(want[i % want.size()]);
  }
  if (diff != 0) return absl::PermissionDeniedError("the admin token is not valid");
  return absl::OkStatus();
}

absl::StatusOr<AdapterInfo> Frontend::LoadAdapter(const std::string& name, const std::string& path,
                                                  bool replace, bool pin) {
  const absl::Time start = absl::Now();
  const std::vector<AdapterInfo> before = registry_->List();
  const bool existed = std::any_of(before.begin(), before.end(),
                                   [&](const AdapterInfo& a) { return a.name == name; });
  absl::StatusOr<AdapterInfo> info = registry_->Load(name, path, replace);
  if (info.ok() && pin) {
    if (absl::Status s = registry_->Pin(name, true); s.ok()) {
      info->pinned = true;
    } else {
      info = s;
    }
  }
  if (observer_.adapter_admin) {
    observer_.adapter_admin(name, existed && replace ? "swap" : "load", absl::Now() - start,
                            info.status());
  }
  return info;  // the registry logs the load
}

absl::Status Frontend::UnloadAdapter(const std::string& name, bool drain) {
  const absl::Time start = absl::Now();
  absl::Status s = registry_->Unload(name, drain);
  if (s.ok()) {
    engine_->routing_window().Forget(name);
    SY_LOG(kInfo, "adapter %s unloaded%s", name, drain ? " (draining)" : "");
  }
  if (observer_.adapter_admin) observer_.adapter_admin(name, "unload", absl::Now() - start, s);
  return s;
}

absl::StatusOr<RoutingSnapshot> Frontend::RoutingStats(const std::string& adapter) const {
  const std::optional<AdapterInfo> it = FindAdapter(*registry_, adapter);
  if (!it.has_value()) return NotLoaded(adapter);
  std::optional<RoutingSnapshot> snap = engine_->routing_window().Snapshot(adapter);
  // Statistics of an older version (before a swap) do not describe the current one.
  if (!snap.has_value() || snap->version != it->version) {
    RoutingSnapshot empty;
    empty.adapter = adapter;
    empty.version = it->version;
    empty.window_tokens = engine_->options().routing_window.window_tokens;
    return empty;
  }
  return *snap;
}

absl::StatusOr<RoutingSnapshot> Frontend::PreviousRoutingStats(const std::string& adapter) const {
  const std::optional<AdapterInfo> info = FindAdapter(*registry_, adapter);
  if (!info.has_value()) return NotLoaded(adapter);
  // Until the new version routes, the window still holds the old one as its current entry.
  std::optional<RoutingSnapshot> snap = engine_->routing_window().Snapshot(adapter);
  if (snap.has_value() && snap->version < info->version) return *std::move(snap);
  snap = engine_->routing_window().PreviousSnapshot(adapter);
  if (snap.has_value() && snap->version < info->version) return *std::move(snap);
  return absl::NotFoundError(absl::StrCat("adapter \"", adapter, "\" has no routing statistics ",
                                          "of a version before its current one (", info->version,
                                          ")"));
}

absl::StatusOr<ExpertReport> Frontend::ExpertDiagnostics(const std::string& adapter,
                                                         double similarity_threshold) const {
  if (!(similarity_threshold >= -1.0 && similarity_threshold <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("similarity_threshold must lie in [-1, 1], got ", similarity_threshold));
  }
  const std::optional<AdapterInfo> info = FindAdapter(*registry_, adapter);
  if (!info.has_value()) return NotLoaded(adapter);
  ExpertReport report;
  report.adapter = adapter;
  report.version = info->version;
  report.similarity_threshold = similarity_threshold;
  report.diagnostics =
      info->diagnostics ? info->diagnostics : std::make_shared<const AdapterDiagnostics>();
  report.redundant = report.diagnostics->RedundantPairs(similarity_threshold);
  report.summary = report.diagnostics->Summary();
  SY_ASSIGN_OR_RETURN(RoutingSnapshot routing, RoutingStats(adapter));
  report.window_full = routing.window_full;
  if (!routing.window_full) return report;
  for (const SiteRoutingStats& s : routing.window) {
    const RoutingHealth h = ComputeRoutingHealth(s);
    if (!h.dead.empty()) report.dead.push_back({s.layer, RoutingSiteName(s.site), h.dead});
  }
  return report;
}

ServerInfo Frontend::Info() const {
  ServerInfo info;
  info.version = SWITCHYARD_VERSION;
  info.model = options_.served_model_name;
  info.model_path = options_.model_dir;
  info.engine = engine_->Describe();
  info.chat_template = chat_template_ ? chat_template_->source() : "";
  info.max_model_len = scheduler_->max_model_len();
  info.scheduler = scheduler_->options();
  info.kv_blocks = engine_->num_kv_blocks();
  info.kv_block_size = engine_->block_size();
  info.stats = scheduler_->stats();
  return info;
}

}  // namespace switchyard

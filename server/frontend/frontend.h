// What every API (gRPC, HTTP) does before and after the scheduler, in one place: turning a prompt
// (text, token ids or chat messages) into tokens, resolving the adapter by name, validating,
// submitting, logging each finished request, adapter administration behind the admin token,
// routing statistics and server information. The APIs only translate their wire formats.
//
// Thread-safety: every method is thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/adapters/registry.h"
#include "engine/adapters/routing_window.h"
#include "engine/engine.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/frontend/constraints.h"
#include "server/frontend/tool_calls.h"
#include "server/scheduler/scheduler.h"

namespace switchyard {

struct FrontendOptions {
  std::string served_model_name;  // what clients call the base model
  std::string model_dir;
  std::string admin_token;  // when set, admin calls must present it
  // Without a token: admin calls are refused unless this is set (main sets it when the server
  // listens on loopback only, or with --insecure-admin).
  bool admin_open_without_token = false;
  // --chat-template: a file, template text, or "chatml", overriding the model's; empty: the
  // model's own.
  std::string chat_template;
  // --tool-call-parser: auto (by the chat template), hermes, llama3_json, mistral or none.
  std::string tool_call_parser = "auto";
  // Admin loads queued or running at once (they run one at a time); more: RESOURCE_EXHAUSTED.
  int max_pending_adapter_loads = 4;
};

// One adapter of a request's mixture, by name.
struct MixtureInput {
  std::string name;
  float weight = 1.0f;
};

// A generation request in API-neutral form. Exactly one of text, token_ids, messages.
struct GenerateInput {
  std::optional<std::string> text;
  std::optional<std::vector<int32_t>> token_ids;
  std::optional<ChatInput> chat;
  // Text prompts: BOS and the like (chat prompts: the template decides); default true.
  std::optional<bool> add_special_tokens;
  std::string adapter;  // empty: the base model (or `mixture`)
  // Instead of `adapter`: several adapters with weights, or one with a scale.
  std::vector<MixtureInput> mixture;
  bool echo = false;  // report the prompt's text
  // Structured output: every token is sampled from those the constraint allows.
  std::optional<OutputConstraint> constraint;
  // Sampling, limits and stops; its prompt, adapter and sink are filled in by Submit.
  GenerationRequest request;
};

struct Submitted {
  uint64_t id = 0;
  std::vector<int32_t> prompt;
  std::string prompt_text;                        // with echo
  std::shared_ptr<const AdapterWeights> adapter;  // null for the base model and mixtures
  std::string adapter_name;  // as the request named it; a mixture: "a*0.5+b*0.5"
  // The version of each adapter that serves it (kept to the end), comma-separated; "" for none.
  std::string adapter_version;
};

// A request checked and converted, not yet queued.
struct PreparedRequest {
  GenerationRequest request;
  Submitted submitted;  // all but the id
};

// An adapter's expert diagnostics (computed at load, expert_diagnostics.h) beside the dead
// experts of its routing window.
struct ExpertReport {
  std::string adapter;
  uint64_t version = 0;
  double similarity_threshold = 0;
  std::shared_ptr<const AdapterDiagnostics> diagnostics;  // never null
  std::vector<RedundantPair> redundant;                   // similarity >= the threshold
  DiagnosticsSummary summary;
  struct DeadExperts {
    int layer = 0;
    std::string site;  // RoutingSiteName
    std::vector<int> experts;
  };
  bool window_full = false;       // dead experts are judged only on a full window
  std::vector<DeadExperts> dead;  // sites with dead experts
};

// Pairs at or above this similarity are flagged when a caller names no threshold.
constexpr double kDefaultRedundantSimilarity = 0.9;

struct ServerInfo {
  std::string version;
  std::string model;
  std::string model_path;
  std::string engine;
  std::string chat_template;
  int64_t max_model_len = 0;
  SchedulerOptions scheduler;
  int kv_blocks = 0;
  int kv_block_size = 0;
  SchedulerStats stats;
};

// What the frontend tells metrics. Set before serving; each hook may be empty.
// The adapter name FrontendObserver::request_finished gets for every mixture.
inline constexpr absl::string_view kMixtureObserverName = "_mixture";

struct FrontendObserver {
  // A request's last event, on the engine thread (must not block); adapter empty for the base,
  // kMixtureObserverName for a mixture.
  std::function<void(const std::string& adapter, const RequestEvent& last)> request_finished;
  // A request refused before it ran (bad input, unknown adapter, full queue), on an API thread.
  std::function<void(absl::StatusCode code)> request_refused;
  // An adapter admin call ("load", "swap" or "unload"), how long it took and how it ended.
  std::function<void(const std::string& adapter, absl::string_view action, absl::Duration took,
                     const absl::Status& status)>
      adapter_admin;
};

class Frontend {
 public:
  // None is owned; all must outlive the frontend.
  static absl::StatusOr<std::unique_ptr<Frontend>> Create(Engine* engine, Scheduler* scheduler,
                                                          AdapterRegistry* registry,
                                                          const Tokenizer* tokenizer,
                                                          FrontendOptions options);
  ~Frontend();

  // Tokenizes, resolves the adapter (NOT_FOUND when it is not loaded) and submits; the request's
  // events go to `sink`.
  absl::StatusOr<Submitted> Submit(GenerateInput input, std::shared_ptr<RequestSink> sink);
  // Submit's conversion (prompt to ids, the adapter acquired), queueing nothing; the scheduler's
  // Validate checks the rest.
  absl::StatusOr<PreparedRequest> Prepare(GenerateInput input) const;
  void set_observer(FrontendObserver observer) { observer_ = std::move(observer); }
  void Cancel(uint64_t id) { scheduler_->Cancel(id); }

  absl::StatusOr<std::vector<int32_t>> Tokenize(absl::string_view text,
                                                bool add_special_tokens) const;
  // INVALID_ARGUMENT for ids outside the vocabulary.
  absl::StatusOr<std::string> Detokenize(std::span<const int32_t> ids,
                                         bool skip_special_tokens) const;
  // Renders a conversation with the model's chat template (INVALID_ARGUMENT without one: the
  // request must come as text instead).
  absl::StatusOr<std::string> RenderChat(const ChatInput& chat) const;

  // OK when admin calls are open or `presented` is the admin token; UNAUTHENTICATED when none was
  // presented, PERMISSION_DENIED when a wrong one was, or when admin is off (no token configured
  // on a server that listens beyond loopback).
  absl::Status Authorize(std::optional<absl::string_view> presented) const;
  absl::StatusOr<AdapterInfo> LoadAdapter(const std::string& name, const std::string& path,
                                          bool replace, bool pin);
  // LoadAdapter on the frontend's loader thread (loads take seconds; API threads must not wait):
  // `done` runs there when the load has finished. Loads run one at a time; past
  // max_pending_adapter_loads `done` runs at once, on the caller's thread, with RESOURCE_EXHAUSTED.
  void LoadAdapterAsync(std::string name, std::string path, bool replace, bool pin,
                        std::function<void(absl::StatusOr<AdapterInfo>)> done);
  absl::Status UnloadAdapter(const std::string& name, bool drain);
  std::vector<AdapterInfo> ListAdapters() const { return registry_->List(); }
  // NOT_FOUND for an adapter that is not loaded; an empty snapshot for one that has not run.
  absl::StatusOr<RoutingSnapshot> RoutingStats(const std::string& adapter) const;
  // The statistics of the version before the current one (kept from the last swap), to compare
  // with: NOT_FOUND when the adapter is not loaded or was never swapped with traffic.
  absl::StatusOr<RoutingSnapshot> PreviousRoutingStats(const std::string& adapter) const;
  // NOT_FOUND for an adapter that is not loaded; INVALID_ARGUMENT for a threshold outside [-1, 1].
  absl::StatusOr<ExpertReport> ExpertDiagnostics(const std::string& adapter,
                                                 double similarity_threshold) const;

  ServerInfo Info() const;
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const std::string& served_model_name() const { return options_.served_model_name; }
  bool has_chat_template() const { return chat_template_.has_value(); }
  // How this model's tool calls are read back from its output (kNone: they are not).
  ToolCallFormat tool_call_format() const { return tool_call_format_; }

 private:
  // A mixture's members acquired into `r`, named and versioned in `out`.
  absl::Status AcquireMixture(const GenerateInput& input, GenerationRequest& r,
                              Submitted& out) const;
  Frontend(Engine* engine, Scheduler* scheduler, AdapterRegistry* registry,
           const Tokenizer* tokenizer, FrontendOptions options,
           std::optional<ChatTemplate> chat_template);

  Engine* const engine_;
  Scheduler* const scheduler_;
  AdapterRegistry* const registry_;
  const Tokenizer* const tokenizer_;
  const FrontendOptions options_;
  const std::optional<ChatTemplate> chat_template_;
  ToolCallFormat tool_call_format_ = ToolCallFormat::kNone;
  FrontendObserver observer_;
  mutable ConstraintCompiler constraints_;
  absl::StatusOr<Submitted> SubmitUnobserved(GenerateInput input,
                                             std::shared_ptr<RequestSink> sink);
  class Loader;
  std::unique_ptr<Loader> loader_;
};

// The model's stop tokens: the tokenizer's EOS and generation_config.json's eos_token_id(s).
std::vector<int32_t> ModelEosTokens(const std::string& model_dir, const Tokenizer& tokenizer);

// "q_proj" ... "down_proj", or "ffn" for the MixLoRA block.
std::string RoutingSiteName(int site);

}  // namespace switchyard

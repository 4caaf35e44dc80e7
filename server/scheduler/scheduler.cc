#include "server/scheduler/scheduler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <map>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/core/check.h"
#include "engine/core/log.h"
#include "engine/core/status_macros.h"
#include "engine/engine.h"
#include "server/scheduler/step_planner.h"

namespace switchyard {

absl::string_view FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kStopString:
      return "stop_string";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kDeadline:
      return "deadline";
    case FinishReason::kError:
      return "error";
  }
  return "?";
}

struct Scheduler::Sequence {
  uint64_t id = 0;  // also the priority: lower is older
  GenerationRequest req;
  std::vector<int32_t> tokens;  // prompt, then the sampled tokens
  int64_t prompt_len = 0;
  int64_t max_tokens = 0;
  int64_t computed = 0;                // tokens whose K/V are in the cache
  std::vector<int32_t> blocks;         // block table
  std::vector<uint64_t> keys;          // content keys of the first keys.size() blocks
  uint64_t ns = 0;                     // prefix-cache namespace (adapters, versions and weights)
  std::vector<AdapterMember> members;  // req.mixture for the engine
  std::vector<const AdapterWeights*> adapters;  // and for the planner
  absl::flat_hash_set<int32_t> stop_ids;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<grammar::GrammarMatcher> matcher;  // structured output
  std::unique_ptr<OutputText> text;
  RequestUsage usage;
  absl::Time last_token = absl::InfinitePast();
  bool admitted = false;   // ever admitted (left the bounded queue)
  bool preempted = false;  // waiting to recompute
  bool cancelled = false;
  bool finished = false;
  int64_t chunk = 0;  // tokens scheduled in the current step
  // With record_routing: per (member, layer, site), selections per expert; positions below
  // routed_upto are counted (recomputation after preemption does not count twice).
  std::map<std::tuple<int, int, int>, std::vector<int64_t>> routing;
  int64_t routed_upto = 0;

  int64_t generated() const { return static_cast<int64_t>(tokens.size()) - prompt_len; }
  int64_t uncomputed() const { return static_cast<int64_t>(tokens.size()) - computed; }
};

namespace {

// K/V computed under one mixture serve only that mixture: the namespace hashes every member's
// name, version and weight, in order (a lone adapter at weight 1 keeps its plain key).
uint64_t MixtureNamespace(std::span<const AdapterMember> members) {
  uint64_t ns = 0;
  for (const AdapterMember& m : members) {
    const uint64_t key =
        BlockPool::BlockKey(std::hash<std::string>{}(m.adapter->name), m.adapter->version + 1, {});
    if (members.size() == 1 && m.weight == 1.0f) return key;
    ns = BlockPool::BlockKey(ns, key ^ std::bit_cast<uint32_t>(m.weight), {});
  }
  return ns;
}

}  // namespace

Scheduler::Scheduler(StepExecutor* executor, const Tokenizer* tokenizer, SchedulerOptions options)
    : executor_(executor),
      tokenizer_(tokenizer),
      options_(std::move(options)),
      max_model_len_(executor->max_model_len()),
      block_size_(executor->block_size()),
      pool_(executor->num_kv_blocks()) {}

Scheduler::~Scheduler() { Shutdown(absl::ZeroDuration()); }

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(StepExecutor* executor,
                                                             const Tokenizer* tokenizer,
                                                             SchedulerOptions options) {
  if (executor == nullptr) return absl::InvalidArgumentError("no executor");
  if (options.max_batch_tokens <= 0 || options.max_batch_tokens > executor->max_batch_tokens()) {
    options.max_batch_tokens = executor->max_batch_tokens();
  }
  if (options.max_batch_seqs <= 0 || options.max_batch_seqs > executor->max_batch_seqs()) {
    options.max_batch_seqs = executor->max_batch_seqs();
  }
  if (options.max_batch_tokens < options.max_batch_seqs) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_batch_tokens (", options.max_batch_tokens, ") must be at least max_batch_seqs (",
        options.max_batch_seqs, "): every running sequence needs a token each step"));
  }
  if (options.max_adapters_per_step < 1) {
    return absl::InvalidArgumentError("max_adapters_per_step must be at least 1");
  }
  if (options.max_waiting < 1) return absl::InvalidArgumentError("max_waiting must be at least 1");
  for (int32_t id : options.eos_token_ids) {
    if (id < 0 || id >= executor->vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat("EOS token ", id, " outside the vocabulary"));
    }
  }
  return std::unique_ptr<Scheduler>(new Scheduler(executor, tokenizer, std::move(options)));
}

absl::Status Scheduler::ValidateMixture(const GenerationRequest& request) const {
  const auto& mixture = request.mixture;
  if (mixture.empty()) return absl::OkStatus();
  if (request.adapter != nullptr) {
    return absl::InvalidArgumentError(
        "adapters: a request names an adapter or a mixture, not both");
  }
  const size_t cap = std::min<size_t>(kMaxMixtureMembers, options_.max_adapters_per_step);
  if (mixture.size() > cap) {
    return absl::InvalidArgumentError(absl::StrCat("adapters: ", mixture.size(),
                                                   " members; this server allows at most ", cap,
                                                   " (max_adapters_per_step)"));
  }
  for (size_t i = 0; i < mixture.size(); ++i) {
    if (mixture[i].adapter == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("adapters[", i, "]: no adapter"));
    }
    const float w = mixture[i].weight;
    if (!std::isfinite(w) || std::abs(w) > kMaxMixtureWeight) {
      return absl::InvalidArgumentError(absl::StrCat("adapters[", i, "]: weight ", w,
                                                     " is outside [-", kMaxMixtureWeight, ", ",
                                                     kMaxMixtureWeight, "]"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (mixture[j].adapter->name == mixture[i].adapter->name) {
        return absl::InvalidArgumentError(
            absl::StrCat("adapters: \"", mixture[i].adapter->name,
                         "\" is named twice (its weights add: name it once)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Scheduler::Validate(const GenerationRequest& request) const {
  const int64_t n = static_cast<int64_t>(request.prompt.size());
  if (n == 0) return absl::InvalidArgumentError("prompt: empty (at least one token is needed)");
  const int32_t vocab = executor_->vocab_size();
  for (int64_t i = 0; i < n; ++i) {
    if (request.prompt[i] < 0 || request.prompt[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("prompt: token ", i, " is ", request.prompt[i],
                                                     ", outside the vocabulary [0, ", vocab, ")"));
    }
  }
  if (n >= max_model_len_) {
    return absl::InvalidArgumentError(absl::StrCat("prompt: ", n,
                                                   " tokens leave no room in the context length (",
                                                   max_model_len_, " tokens)"));
  }
  int64_t max_tokens = request.max_tokens;
  if (max_tokens == -1) {
    max_tokens = max_model_len_ - n;
  } else if (max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens: ", max_tokens, " (must be at least 1, or -1 for no limit)"));
  } else if (n + max_tokens > max_model_len_) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens: the prompt (", n, " tokens) plus max_tokens (", max_tokens,
                     ") exceeds the context length (", max_model_len_, " tokens)"));
  }
  if (absl::Status s = request.sampling.Validate(); !s.ok()) return s;
  for (int32_t id : request.stop_token_ids) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop_token_ids: ", id, " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  SY_RETURN_IF_ERROR(ValidateMixture(request));
  if (!request.stop_strings.empty() && tokenizer_ == nullptr) {
    return absl::InvalidArgumentError("stop: stop strings need a tokenizer");
  }
  return max_tokens;
}

absl::StatusOr<uint64_t> Scheduler::Submit(GenerationRequest request) {
  if (request.sink == nullptr) return absl::InvalidArgumentError("request has no sink");
  SY_ASSIGN_OR_RETURN(const int64_t max_tokens, Validate(request));
  const int64_t n = static_cast<int64_t>(request.prompt.size());
  auto s = std::make_unique<Sequence>();
  s->id = next_id_.fetch_add(1);
  s->prompt_len = n;
  s->max_tokens = max_tokens;
  s->tokens = request.prompt;
  if (request.adapter != nullptr) request.mixture = {{std::move(request.adapter), 1.0f}};
  for (const MixtureMember& m : request.mixture) {
    s->members.push_back({m.adapter.get(), m.weight});
    s->adapters.push_back(m.adapter.get());
  }
  s->ns = MixtureNamespace(s->members);
  s->stop_ids.insert(request.stop_token_ids.begin(), request.stop_token_ids.end());
  if (!request.ignore_eos) {
    s->stop_ids.insert(options_.eos_token_ids.begin(), options_.eos_token_ids.end());
  }
  s->sampler = std::make_unique<Sampler>(request.sampling, request.prompt, s->id);
  if (request.grammar != nullptr) {
    s->matcher = std::make_unique<grammar::GrammarMatcher>(request.grammar);
  }
  if (tokenizer_ != nullptr) {
    // A constrained output's text is exactly the bytes its grammar checked: no clean-up.
    s->text = std::make_unique<OutputText>(*tokenizer_, request.skip_special_tokens,
                                           request.stop_strings, request.include_stop_string,
                                           /*clean_up_spaces=*/request.grammar == nullptr);
  }
  s->usage.prompt_tokens = n;
  s->usage.arrival = options_.clock();
  s->req = std::move(request);
  const uint64_t id = s->id;

  absl::MutexLock lock(&mu_);
  if (!accepting_) return absl::UnavailableError("the server is shutting down");
  if (queued_.load() >= options_.max_waiting) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the waiting queue is full (", options_.max_waiting, " requests); retry later"));
  }
  ++queued_;
  ++outstanding_;
  inbox_.push_back(std::move(s));
  return id;
}

void Scheduler::Cancel(uint64_t request_id) {
  absl::MutexLock lock(&mu_);
  cancels_.push_back(request_id);
}

bool Scheduler::HasWork() const {
  if (!running_.empty() || !waiting_.empty()) return true;
  absl::MutexLock lock(&mu_);
  return !inbox_.empty() || !cancels_.empty();
}

void Scheduler::DrainInbox() {
  std::vector<std::unique_ptr<Sequence>> arrived;
  std::vector<uint64_t> cancels;
  {
    absl::MutexLock lock(&mu_);
    arrived.swap(inbox_);
    cancels.swap(cancels_);
  }
  std::sort(arrived.begin(), arrived.end(),
            [](const auto& a, const auto& b) { return a->id < b->id; });
  for (auto& s : arrived) waiting_.push_back(std::move(s));
  if (cancels.empty()) return;
  const absl::flat_hash_set<uint64_t> ids(cancels.begin(), cancels.end());
  for (auto& s : running_) s->cancelled |= ids.contains(s->id);
  for (auto& s : waiting_) s->cancelled |= ids.contains(s->id);
}

void Scheduler::Deliver(Sequence& s, RequestEvent& event) {
  event.request_id = s.id;
  s.req.sink->Deliver(std::move(event));
}

void Scheduler::Finish(Sequence& s, FinishReason reason, RequestEvent event, absl::Status error) {
  SY_CHECK(!s.finished);
  if (s.text != nullptr && reason != FinishReason::kStopString) s.text->Finish(&event.text);
  pool_.Release(s.blocks);
  s.blocks.clear();
  s.keys.clear();
  s.finished = true;
  s.usage.finish = options_.clock();
  event.finish = reason;
  event.error = std::move(error);
  event.usage = s.usage;
  for (auto& [key, counts] : s.routing) {
    // Experts never selected count too.
    const auto [member, layer_index, site] = key;
    const AdapterWeights& adapter = *s.req.mixture[member].adapter;
    const AdapterLayer& layer = adapter.layers[layer_index];
    const int experts = adapter.router != nullptr ? adapter.router->spec.num_experts
                        : site == kFfnBlockSite   ? layer.ffn->spec.num_experts
                                                  : layer.sites[site]->spec.num_experts;
    counts.resize(std::max<size_t>(counts.size(), static_cast<size_t>(experts)), 0);
    event.routing.push_back({adapter.name, layer_index, site, std::move(counts)});
  }
  Deliver(s, event);
  // Nothing of a finished request may pin its adapters (an unload checks for holders) or its sink.
  s.req.mixture.clear();
  s.members.clear();
  s.adapters.clear();
  s.req.sink.reset();
  if (!s.admitted) --queued_;
  --outstanding_;
  ++local_.finished;
}

void Scheduler::Preempt(Sequence& s) {
  pool_.Release(s.blocks);
  s.blocks.clear();
  s.keys.clear();
  s.computed = 0;
  s.preempted = true;
  ++s.usage.preemptions;
  ++local_.preemptions;
}

bool Scheduler::Reserve(Sequence& s, int64_t tokens) {
  const int64_t need =
      (tokens + block_size_ - 1) / block_size_ - static_cast<int64_t>(s.blocks.size());
  return need <= 0 || pool_.Allocate(static_cast<int>(need), &s.blocks);
}

void Scheduler::RegisterFullBlocks(Sequence& s) {
  const size_t full = static_cast<size_t>(s.computed / block_size_);
  while (s.keys.size() < full) {
    const size_t b = s.keys.size();
    const std::span<const int32_t> tokens(s.tokens.data() + b * block_size_,
                                          static_cast<size_t>(block_size_));
    s.keys.push_back(pool_.Register(s.blocks[b], b == 0 ? 0 : s.keys[b - 1], s.ns, tokens));
  }
}

void Scheduler::FinishExpired() {
  const absl::Time now = options_.clock();
  const auto expire = [&](auto& list) {
    for (auto& s : list) {
      if (s->cancelled) {
        Finish(*s, FinishReason::kCancelled);
      } else if (now >= s->req.deadline) {
        Finish(*s, FinishReason::kDeadline);
      }
    }
  };
  expire(running_);
  expire(waiting_);
  SweepFinished();
}

void Scheduler::SweepFinished() {
  const auto sweep = [](auto& list) {
    list.erase(std::remove_if(list.begin(), list.end(), [](const auto& s) { return s->finished; }),
               list.end());
  };
  sweep(running_);
  sweep(waiting_);
}

StepPlan Scheduler::Plan() const {
  const auto view = [](const auto& list) {
    std::vector<PlanSequence> out;
    out.reserve(list.size());
    for (const auto& s : list) {
      out.push_back({s->id, nullptr, s->adapters, s->tokens, s->computed, s->blocks, s->ns});
    }
    return out;
  };
  const std::vector<PlanSequence> running = view(running_), waiting = view(waiting_);
  PlanInput input;
  input.running = running;
  input.waiting = waiting;
  input.pool = &pool_;
  input.limits = {options_.max_batch_tokens,      options_.max_batch_seqs,
                  options_.max_adapters_per_step, block_size_,
                  options_.prefix_caching,        options_.static_batching};
  return PlanStep(input);
}

namespace {

// Moves the sequence `id` out of `list` (null if absent).
template <typename List>
auto TakeById(List& list, uint64_t id) {
  auto it = std::find_if(list.begin(), list.end(), [&](const auto& s) { return s->id == id; });
  typename List::value_type out;
  if (it == list.end()) return out;
  out = std::move(*it);
  list.erase(it);
  return out;
}

template <typename List, typename Ptr>
void InsertByAge(List& list, Ptr s) {
  auto pos = std::upper_bound(list.begin(), list.end(), s,
                              [](const auto& a, const auto& b) { return a->id < b->id; });
  list.insert(pos, std::move(s));
}

}  // namespace

absl::StatusOr<std::vector<Scheduler::Sequence*>> Scheduler::Commit(const StepPlan& plan) {
  for (uint64_t id : plan.preempt) {
    std::unique_ptr<Sequence> victim = TakeById(running_, id);
    if (victim == nullptr) return absl::InternalError("the plan preempts no running sequence");
    Preempt(*victim);
    InsertByAge(waiting_, std::move(victim));
  }
  // Matches before any allocation, so that no allocation evicts a block the plan counted on.
  for (const StepPlan::Admission& admission : plan.admit) {
    std::unique_ptr<Sequence> s = TakeById(waiting_, admission.id);
    if (s == nullptr) return absl::InternalError("the plan admits no waiting sequence");
    if (options_.prefix_caching) {
      const int matched =
          pool_.Match(s->ns, s->tokens, block_size_, admission.cached_blocks, &s->blocks, &s->keys);
      s->computed = int64_t{matched} * block_size_;
    }
    Admitted(*s);
    InsertByAge(running_, std::move(s));
  }
  absl::flat_hash_map<uint64_t, Sequence*> by_id;
  for (auto& s : running_) by_id[s->id] = s.get();
  for (const StepPlan::Admission& admission : plan.admit) {
    if (!Reserve(*by_id.at(admission.id), admission.reserve_tokens)) {
      return absl::InternalError("the plan's blocks were not free");
    }
  }
  std::vector<Sequence*> scheduled;
  for (const StepPlan::Chunk& chunk : plan.run) {
    auto it = by_id.find(chunk.id);
    if (it == by_id.end() || it->second->computed != chunk.computed) {
      return absl::InternalError("the plan runs a sequence not in the running state it planned");
    }
    Sequence& s = *it->second;
    if (!Reserve(s, s.computed + chunk.tokens)) {
      return absl::InternalError("the plan's blocks were not free");
    }
    s.chunk = chunk.tokens;
    scheduled.push_back(&s);
  }
  return scheduled;
}

void Scheduler::Admitted(Sequence& s) {
  s.preempted = false;
  if (s.admitted) return;
  s.admitted = true;
  s.usage.scheduled = options_.clock();
  --queued_;
  local_.prefix_query_tokens += s.prompt_len;
  const int64_t hit = std::min(s.computed, s.prompt_len);
  local_.prefix_hit_tokens += hit;
  s.usage.cached_prompt_tokens = hit;
}

StepBatch Scheduler::BuildBatch(const std::vector<Sequence*>& scheduled, StepRecord* record) const {
  StepBatch batch;
  absl::flat_hash_set<const AdapterWeights*> distinct;
  for (const Sequence* s : scheduled) {
    StepSequence ss;
    ss.first_position = s->computed;
    ss.num_tokens = s->chunk;
    ss.block_table = s->blocks;
    ss.want_logits = s->computed + s->chunk == static_cast<int64_t>(s->tokens.size());
    ss.mixture = s->members;
    ss.record_routing = s->req.record_routing && !ss.mixture.empty();
    batch.tokens.insert(batch.tokens.end(), s->tokens.begin() + s->computed,
                        s->tokens.begin() + s->computed + s->chunk);
    batch.sequences.push_back(ss);
    const bool decode = s->chunk == 1 && s->computed >= s->prompt_len;
    (decode ? record->decode_tokens : record->prefill_tokens) += s->chunk;
    distinct.insert(s->adapters.begin(), s->adapters.end());
  }
  record->tokens = static_cast<int64_t>(batch.tokens.size());
  record->sequences = static_cast<int64_t>(scheduled.size());
  record->distinct_adapters = static_cast<int>(distinct.size());
  return batch;
}

bool Scheduler::Step() {
  DrainInbox();
  FinishExpired();
  if (running_.empty() && waiting_.empty()) {
    PublishStats(local_.last_step);
    return false;
  }
  ++step_;
  const absl::Time step_start = options_.clock();
  StepRecord record;
  record.step = step_;
  const StepPlan plan = Plan();
  record.preempted = static_cast<int64_t>(plan.preempt.size());
  absl::StatusOr<std::vector<Sequence*>> scheduled = Commit(plan);
  if (!scheduled.ok()) {
    // A planner bug must not take the server down: the step's requests fail, the rest go on.
    SY_LOG(kWarning, "step %d: %s; failing its requests", step_, scheduled.status().ToString());
    FailAll(scheduled.status());
    PublishStats(record);
    return true;
  }
  if (scheduled->empty()) {
    PublishStats(record);
    return true;
  }
  const StepBatch batch = BuildBatch(*scheduled, &record);
  const absl::Time start = options_.clock();
  absl::StatusOr<StepOutput> out = executor_->Step(batch);
  record.engine_time = options_.clock() - start;
  if (!out.ok()) {
    SY_LOG(kWarning, "step %d failed: %s", step_, out.status().ToString());
    for (Sequence* s : *scheduled) Finish(*s, FinishReason::kError, {}, out.status());
    SweepFinished();
    PublishStats(record);
    return true;
  }
  CommitOutputs(*scheduled, batch, *out, &record);
  SweepFinished();
  ++local_.steps;
  local_.prefill_tokens += record.prefill_tokens;
  record.step_time = options_.clock() - step_start;
  PublishStats(record);
  if (step_observer_) step_observer_(record);
  return true;
}

void Scheduler::FailAll(const absl::Status& status) {
  for (auto& s : running_) Finish(*s, FinishReason::kError, {}, status);
  for (auto& s : waiting_) Finish(*s, FinishReason::kError, {}, status);
  SweepFinished();
}

void Scheduler::CommitOutputs(const std::vector<Sequence*>& scheduled, const StepBatch& batch,
                              const StepOutput& out, StepRecord* record) {
  if (!out.routing.decisions.empty()) CountRouting(scheduled, batch, out.routing);
  const int64_t vocab = out.logits.dim(1);
  int64_t row = 0;
  const absl::Time done = options_.clock();
  // Sequences whose known tokens are all computed sample their next token.
  for (size_t i = 0; i < scheduled.size(); ++i) {
    Sequence& s = *scheduled[i];
    s.computed += s.chunk;
    if (options_.prefix_caching) RegisterFullBlocks(s);
    if (!batch.sequences[i].want_logits) continue;
    const float* logits = out.logits.data<float>() + row++ * vocab;
    std::span<const uint32_t> allowed;
    if (s.matcher != nullptr) {
      if (!FillGrammarMask(s)) continue;  // finished
      allowed = mask_;
    }
    SampledToken sampled = s.sampler->Sample(std::span<const float>(logits, vocab), allowed);
    AppendToken(s, std::move(sampled), done, record);
  }
}

bool Scheduler::FillGrammarMask(Sequence& s) {
  s.matcher->FillMask(&mask_);
  if (s.matcher->overflowed()) {
    Finish(s, FinishReason::kError, {},
           absl::InvalidArgumentError(
               absl::StrCat("structured output: the grammar is too ambiguous to follow (over ",
                            grammar::StackArena::kMaxStacks, " parses alive at once)")));
    return false;
  }
  if (s.matcher->CanEnd()) {
    for (int32_t id : s.stop_ids) {
      if (id >= 0 && static_cast<size_t>(id) < mask_.size() * 32) grammar::MaskSet(mask_, id);
    }
  }
  if (std::any_of(mask_.begin(), mask_.end(), [](uint32_t w) { return w != 0; })) return true;
  if (s.matcher->CanEnd()) {
    Finish(s, FinishReason::kStop);  // complete, and no stop token may follow (ignore_eos)
  } else {
    Finish(s, FinishReason::kError, {},
           absl::FailedPreconditionError("structured output: no token of the vocabulary "
                                         "continues the output the grammar requires"));
  }
  return false;
}

void Scheduler::AppendToken(Sequence& s, SampledToken sampled, absl::Time now, StepRecord* record) {
  const int32_t token = sampled.token;
  s.tokens.push_back(token);
  ++s.usage.completion_tokens;
  ++local_.generated_tokens;
  ++record->sampled_tokens;
  if (s.usage.first_token == absl::InfinitePast()) {
    s.usage.first_token = now;
  } else {
    record->inter_token_s.push_back(absl::ToDoubleSeconds(now - s.last_token));
  }
  s.last_token = now;
  RequestEvent event;
  event.tokens.push_back(token);
  if (s.req.sampling.logprobs >= 0) event.logprobs.push_back(std::move(sampled));
  FinishReason reason = FinishReason::kNone;
  bool grammar_complete = false;
  if (s.matcher != nullptr && !s.stop_ids.contains(token)) {
    // The mask allowed only tokens the grammar accepts; should that ever break, the request
    // fails, not the server.
    if (absl::Status accepted = s.matcher->Accept(token); !accepted.ok()) {
      Finish(s, FinishReason::kError, std::move(event), absl::InternalError(accepted.message()));
      return;
    }
    grammar_complete = s.matcher->MustEnd();
  }
  if (s.stop_ids.contains(token)) {
    reason = FinishReason::kStop;
  } else if (s.text != nullptr && s.text->Push(token, &event.text)) {
    reason = FinishReason::kStopString;
  } else if (grammar_complete) {
    reason = FinishReason::kStop;  // nothing but the end may follow
  } else if (s.generated() >= s.max_tokens) {
    reason = FinishReason::kLength;
  }
  if (reason == FinishReason::kNone) {
    Deliver(s, event);
    return;
  }
  Finish(s, reason, std::move(event));  // the last token and the finish go out as one
}

void Scheduler::CountRouting(const std::vector<Sequence*>& scheduled, const StepBatch& batch,
                             const RoutingStats& routing) {
  // Step token index -> (sequence, position).
  std::vector<std::pair<Sequence*, int64_t>> owner;
  owner.reserve(batch.tokens.size());
  for (size_t i = 0; i < scheduled.size(); ++i) {
    for (int64_t j = 0; j < batch.sequences[i].num_tokens; ++j) {
      owner.emplace_back(scheduled[i], batch.sequences[i].first_position + j);
    }
  }
  for (const RoutingDecision& d : routing.decisions) {
    auto [s, position] = owner[static_cast<size_t>(d.token)];
    // A router over adapters reports its members as experts, not their own routing.
    if (!s->req.record_routing || position < s->routed_upto || d.gated_member >= 0) continue;
    std::vector<int64_t>& counts = s->routing[{d.member, d.layer, d.site}];
    for (int16_t e : d.experts) {
      if (counts.size() <= static_cast<size_t>(e)) counts.resize(static_cast<size_t>(e) + 1, 0);
      ++counts[e];
    }
  }
  for (size_t i = 0; i < scheduled.size(); ++i) {
    Sequence& s = *scheduled[i];
    s.routed_upto = std::max(s.routed_upto, batch.sequences[i].first_position + s.chunk);
  }
}

void Scheduler::PublishStats(const StepRecord& record) {
  local_.last_step = record;
  local_.running = static_cast<int64_t>(running_.size());
  local_.preempted_waiting = 0;
  for (const auto& s : waiting_) local_.preempted_waiting += s->preempted ? 1 : 0;
  local_.kv_blocks = pool_.num_blocks();
  local_.kv_blocks_cached = pool_.num_cached_free();
  local_.kv_blocks_used = pool_.num_blocks() - pool_.num_free();
  local_.kv_usage = static_cast<double>(local_.kv_blocks_used) / std::max(1, local_.kv_blocks);
  const auto names = [](const auto& list, std::vector<std::string>* out) {
    out->clear();
    absl::flat_hash_set<const AdapterWeights*> seen;
    for (const auto& s : list) {
      for (const AdapterWeights* a : s->adapters) {
        if (seen.insert(a).second) out->push_back(a->name);
      }
    }
    std::sort(out->begin(), out->end());
    out->erase(std::unique(out->begin(), out->end()), out->end());  // versions of one name
  };
  names(running_, &local_.running_adapters);
  names(waiting_, &local_.waiting_adapters);
  absl::MutexLock lock(&mu_);
  local_.waiting = static_cast<int64_t>(waiting_.size() + inbox_.size());
  published_ = local_;
}

absl::Status Scheduler::CheckInvariants() const {
  std::vector<int> holders(static_cast<size_t>(pool_.num_blocks()), 0);
  std::vector<int> shared_full(static_cast<size_t>(pool_.num_blocks()), 0);
  uint64_t last_id = 0;
  for (const auto& s : running_) {
    if (s->id <= last_id) return absl::InternalError("running sequences out of order");
    last_id = s->id;
    const int64_t cover = static_cast<int64_t>(s->blocks.size()) * block_size_;
    if (cover < s->computed) {
      return absl::InternalError(absl::StrCat("request ", s->id, ": blocks cover ", cover,
                                              " tokens, ", s->computed, " computed"));
    }
    if (cover >= static_cast<int64_t>(s->tokens.size()) + block_size_) {
      return absl::InternalError(absl::StrCat("request ", s->id, ": holds a block it cannot use"));
    }
    if (static_cast<int64_t>(s->keys.size()) * block_size_ > s->computed) {
      return absl::InternalError(
          absl::StrCat("request ", s->id, ": registered an unfinished block"));
    }
    absl::flat_hash_set<int32_t> own;
    for (size_t b = 0; b < s->blocks.size(); ++b) {
      if (!own.insert(s->blocks[b]).second) {
        return absl::InternalError(absl::StrCat("request ", s->id, ": holds a block twice"));
      }
      ++holders[s->blocks[b]];
      if (b < s->keys.size()) ++shared_full[s->blocks[b]];
    }
  }
  for (const auto& s : waiting_) {
    if (!s->blocks.empty() || s->computed != 0) {
      return absl::InternalError(absl::StrCat("waiting request ", s->id, " holds blocks"));
    }
  }
  int held = 0;
  for (int b = 0; b < pool_.num_blocks(); ++b) {
    if (pool_.ref_count(b) != holders[b]) {
      return absl::InternalError(absl::StrCat("block ", b, ": ", pool_.ref_count(b),
                                              " references, ", holders[b], " holders"));
    }
    // A block two sequences share must be a full, registered (read-only) block in both.
    if (holders[b] > 1 && shared_full[b] != holders[b]) {
      return absl::InternalError(absl::StrCat("block ", b, " is shared but still being written"));
    }
    held += holders[b] > 0 ? 1 : 0;
  }
  if (held + pool_.num_free() != pool_.num_blocks()) {
    return absl::InternalError(
        absl::StrCat(held, " blocks held + ", pool_.num_free(), " free != ", pool_.num_blocks()));
  }
  if (static_cast<int64_t>(running_.size()) > options_.max_batch_seqs) {
    return absl::InternalError("more running sequences than max_batch_seqs");
  }
  return absl::OkStatus();
}

SchedulerStats Scheduler::stats() const {
  absl::MutexLock lock(&mu_);
  SchedulerStats out = published_;
  out.outstanding = outstanding_.load();
  return out;
}

void Scheduler::Start() {
  SY_CHECK(!thread_.joinable());
  thread_ = std::thread([this] { RunLoop(); });
}

void Scheduler::RunLoop() {
  for (;;) {
    const bool worked = Step();
    bool stop;
    absl::Time drain_deadline;
    {
      absl::MutexLock lock(&mu_);
      if (!worked) {
        const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || !inbox_.empty() || !cancels_.empty();
        };
        mu_.AwaitWithDeadline(absl::Condition(&ready), drain_deadline_);
      }
      stop = stop_;
      drain_deadline = drain_deadline_;
    }
    if (stop && (!HasWork() || options_.clock() >= drain_deadline)) break;
  }
  CancelAll();  // whatever is left when the grace period ends
}

void Scheduler::CancelAll() {
  DrainInbox();
  for (auto& s : running_) Finish(*s, FinishReason::kCancelled);
  for (auto& s : waiting_) Finish(*s, FinishReason::kCancelled);
  running_.clear();
  waiting_.clear();
  PublishStats(local_.last_step);
}

void Scheduler::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
    if (!stop_) drain_deadline_ = options_.clock() + grace;
    stop_ = true;
  }
  if (thread_.joinable()) {
    thread_.join();
  } else {
    CancelAll();  // never started: no engine thread runs, so this thread may
  }
}

}  // namespace switchyard

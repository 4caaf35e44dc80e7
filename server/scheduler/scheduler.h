// Continuous batching (iteration-level scheduling, as Orca and vLLM): every step builds one flat
// ragged batch from the running sequences' decode tokens and prefill chunks of others, under a
// token budget, the KV cache's free blocks and a cap on distinct adapters per step.
//
// Per step, in order:
//   1. new requests and cancellations arrive from API threads (Submit, Cancel);
//   2. cancelled requests and those past their deadline finish and free their blocks;
//   3. the adapters of this step are chosen: all of them when at most max_adapters_per_step have
//      work, else those whose oldest request is oldest: first come, first served across
//      adapters, so a popular adapter's stream of new requests cannot starve a rare one (which
//      waits at most for the requests that came before it), while the chosen set stays stable
//      from step to step (no thrashing between adapters);
//   4. running sequences, oldest first, get their next token or prefill chunk; when the KV cache
//      is short, the newest running sequence is preempted (blocks freed, requeued to recompute);
//   5. if nothing was preempted, waiting requests are admitted oldest first while the budget and
//      the cache allow (a prompt's cached prefix blocks are reused first); the first one that
//      does not fit stops admission, so a long prompt is not overtaken forever, and a request
//      whose adapter sits the step out keeps a seat and blocks reserved against younger ones;
//   (3 to 5 are a pure plan, step_planner.h, that the step then commits;)
//   6. the engine runs the batch; sequences whose known tokens are all computed sample one token,
//      check their stop conditions and deliver an event to their sink.
// A preempted request resumes with its sampler intact and recomputes its K/V (much of it often
// found in the prefix cache), so its output is exactly what it would have been.
//
// Thread-safety: Submit, Cancel, stats and Shutdown are thread-safe. Step runs on one thread (the
// engine thread; Start runs it on its own).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/kv/block_pool.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/scheduler/output_text.h"
#include "server/scheduler/request.h"
#include "server/scheduler/step_executor.h"
#include "server/scheduler/step_planner.h"

namespace switchyard {

struct SchedulerOptions {
  // Tokens and sequences per step; 0 takes the engine's limits (never more than those).
  int64_t max_batch_tokens = 0;
  int64_t max_batch_seqs = 0;
  // Distinct adapters in one step (vLLM's max_loras); the base model does not count.
  int max_adapters_per_step = 8;
  // Requests waiting for admission; more are refused with RESOURCE_EXHAUSTED.
  int64_t max_waiting = 1024;
  bool prefix_caching = true;
  // Static batching (for comparison only): admit a batch when none is running, run it to the end.
  bool static_batching = false;
  // Stop tokens of every request unless it sets ignore_eos (the model's EOS ids).
  std::vector<int32_t> eos_token_ids;
  std::function<absl::Time()> clock = [] { return absl::Now(); };
};

// What one step did (for metrics).
struct StepRecord {
  int64_t step = 0;
  int64_t tokens = 0;  // in the batch
  int64_t sequences = 0;
  int64_t prefill_tokens = 0;
  int64_t decode_tokens = 0;
  int64_t sampled_tokens = 0;  // tokens generated
  int distinct_adapters = 0;   // base model not counted
  int64_t preempted = 0;       // sequences preempted while planning it
  absl::Duration engine_time;  // Executor::Step
  absl::Duration step_time;    // the whole step: planning, the engine, sampling, delivery
  // Seconds since each sequence's previous token, for every token sampled this step that was not
  // its sequence's first (inter-token latency, recorded per step rather than per token).
  std::vector<double> inter_token_s;
};

struct SchedulerStats {
  // Submitted and not yet finished, live (the other fields are as of the last step). Zero means
  // every request's resources (KV blocks, adapter references) have been released.
  int64_t outstanding = 0;
  int64_t waiting = 0;  // queued for admission (including preempted ones)
  int64_t running = 0;
  int64_t preempted_waiting = 0;  // waiting to recompute after preemption
  int64_t preemptions = 0;        // total
  int kv_blocks = 0;
  int kv_blocks_used = 0;           // held by sequences
  int kv_blocks_cached = 0;         // cached prefix blocks no sequence holds (evictable)
  double kv_usage = 0;              // kv_blocks_used / kv_blocks
  int64_t prefix_query_tokens = 0;  // prompt tokens looked up in the prefix cache
  int64_t prefix_hit_tokens = 0;    // of which found
  int64_t steps = 0;
  int64_t prefill_tokens = 0;  // computed, including recomputation after preemption
  int64_t generated_tokens = 0;
  int64_t finished = 0;
  // Names of the adapters with requests running / waiting (vLLM's lora_requests_info).
  std::vector<std::string> running_adapters;
  std::vector<std::string> waiting_adapters;
  StepRecord last_step;
};

class Scheduler {
 public:
  // `tokenizer` may be null (no text in events, no stop strings). Both must outlive the scheduler.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(StepExecutor* executor,
                                                           const Tokenizer* tokenizer,
                                                           SchedulerOptions options);
  ~Scheduler();

  // Validates and queues a request; its events go to request.sink. INVALID_ARGUMENT naming the
  // field for bad input, RESOURCE_EXHAUSTED when the waiting queue is full, UNAVAILABLE after
  // Shutdown.
  absl::StatusOr<uint64_t> Submit(GenerationRequest request);
  // Submit's checks of the request alone (the sink aside), queueing nothing: the effective
  // max_tokens, or INVALID_ARGUMENT naming the field. Thread-safe.
  absl::Status ValidateMixture(const GenerationRequest& request) const;
  absl::StatusOr<int64_t> Validate(const GenerationRequest& request) const;
  // The request finishes with kCancelled within a step (no-op for unknown or finished ids).
  void Cancel(uint64_t request_id);

  // One iteration (engine thread). Returns false when there was nothing to do.
  bool Step();
  bool HasWork() const;

  // Runs Step on an engine thread of its own until Shutdown.
  void Start();
  // Refuses new requests, lets queued and running ones finish for up to `grace`, cancels the
  // rest, and stops the engine thread.
  void Shutdown(absl::Duration grace);

  SchedulerStats stats() const;
  // Called on the engine thread after every step (set before Start).
  void set_step_observer(std::function<void(const StepRecord&)> observer) {
    step_observer_ = std::move(observer);
  }
  const SchedulerOptions& options() const { return options_; }
  // Engine thread, for tests: the block accounting and queue invariants, or what breaks them.
  absl::Status CheckInvariants() const;
  int64_t max_model_len() const { return max_model_len_; }

 private:
  struct Sequence;
  Scheduler(StepExecutor* executor, const Tokenizer* tokenizer, SchedulerOptions options);

  void DrainInbox();
  // Finishes `s`, appending the finish to `event` (this step's tokens, if any) and delivering it.
  // Structured output: fills mask_ with the tokens s may sample next; false when s finished
  // instead (complete with no stop token allowed, or no token continues it).
  bool FillGrammarMask(Sequence& s);
  void Finish(Sequence& s, FinishReason reason, RequestEvent event = {},
              absl::Status error = absl::OkStatus());
  void Preempt(Sequence& s);
  // Blocks so that `s` holds K/V room for `tokens` tokens.
  bool Reserve(Sequence& s, int64_t tokens);
  void RegisterFullBlocks(Sequence& s);
  // The step, in order: finish cancelled and expired requests; plan (step_planner.h, pure);
  // commit the plan (preempt, admit, allocate); run the batch; commit its outputs.
  void FinishExpired();
  void SweepFinished();
  StepPlan Plan() const;
  // The scheduled sequences in batch order, or INTERNAL if the plan does not fit the state.
  absl::StatusOr<std::vector<Sequence*>> Commit(const StepPlan& plan);
  void Admitted(Sequence& s);  // first admission: queue time and prefix-cache accounting
  StepBatch BuildBatch(const std::vector<Sequence*>& scheduled, StepRecord* record) const;
  void CommitOutputs(const std::vector<Sequence*>& scheduled, const StepBatch& batch,
                     const StepOutput& out, StepRecord* record);
  // Appends a sampled token, checks the stop conditions and delivers the event.
  void AppendToken(Sequence& s, SampledToken sampled, absl::Time now, StepRecord* record);
  void FailAll(const absl::Status& status);
  void Deliver(Sequence& s, RequestEvent& event);
  void PublishStats(const StepRecord& record);
  // Adds the step's routing decisions to the requests that asked for them.
  void CountRouting(const std::vector<Sequence*>& scheduled, const StepBatch& batch,
                    const RoutingStats& routing);
  void RunLoop();
  void CancelAll();

  StepExecutor* const executor_;
  const Tokenizer* const tokenizer_;
  const SchedulerOptions options_;
  const int64_t max_model_len_;
  const int block_size_;

  // Engine thread state.
  BlockPool pool_;
  std::vector<std::unique_ptr<Sequence>> running_;  // oldest first
  std::deque<std::unique_ptr<Sequence>> waiting_;   // oldest first (preempted ones keep their age)
  int64_t step_ = 0;
  SchedulerStats local_;
  std::function<void(const StepRecord&)> step_observer_;
  grammar::TokenMask mask_;  // structured output: the tokens one sequence may sample next

  // Shared with API threads.
  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Sequence>> inbox_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> cancels_ ABSL_GUARDED_BY(mu_);
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time drain_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  SchedulerStats published_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> next_id_{1};
  std::atomic<int64_t> queued_{0};  // submitted, never yet admitted
  std::atomic<int64_t> outstanding_{0};
  std::thread thread_;
};

}  // namespace switchyard

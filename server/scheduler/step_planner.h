// The planning half of a scheduler step: a pure function from the state of the queues, the KV
// cache and the limits to a plan (which sequences are preempted, which are admitted with how many
// cached prefix blocks, and which run how many tokens), as TensorRT-LLM's capacity and micro-batch
// schedulers separate deciding from doing. It reads the block pool (const) and changes nothing;
// Scheduler::Step commits the plan. Tests drive it directly.
//
// The policy (see scheduler.h for why):
//   - the step's adapters: all when at most max_adapters_per_step have work, else those whose
//     oldest sequence is oldest;
//   - running sequences, oldest first, get their next token or prefill chunk under the token and
//     sequence budgets; when the cache is short, the newest running sequence is preempted;
//   - only when nothing was preempted, waiting sequences are admitted oldest first; the first that
//     does not fit stops admission; one whose adapter sits the step out keeps a seat and the blocks
//     of its first chunk reserved against younger ones.
//
// Feasibility: committing the plan in this order always succeeds — release the preempted
// sequences' blocks, match the admitted sequences' cached prefixes (so no allocation can evict a
// block the plan counted on), then allocate the new blocks of every sequence that runs.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "engine/adapters/adapter.h"
#include "engine/kv/block_pool.h"

namespace switchyard {

// A sequence as the planner sees it.
struct PlanSequence {
  uint64_t id = 0;                                 // its age: lower is older
  const AdapterWeights* adapter = nullptr;         // null: the base model, or `mixture`
  std::span<const AdapterWeights* const> mixture;  // a mixture's members: all run, or none
  std::span<const int32_t> tokens;                 // every known token (prompt and sampled)
  int64_t computed = 0;                            // tokens whose K/V are cached (0 while waiting)
  std::span<const int32_t> blocks;                 // its block table (empty while waiting)
  uint64_t prefix_namespace = 0;  // prefix-cache namespace (adapters, versions, weights)
};

struct PlanLimits {
  int64_t max_batch_tokens = 0;
  int64_t max_batch_seqs = 0;
  int max_adapters_per_step = 1;
  int block_size = 1;
  bool prefix_caching = true;
  bool static_batching = false;
};

struct PlanInput {
  std::span<const PlanSequence> running;  // oldest first
  std::span<const PlanSequence> waiting;  // oldest first
  const BlockPool* pool = nullptr;
  PlanLimits limits;
};

struct StepPlan {
  // The adapters allowed to run this step.
  absl::flat_hash_set<const AdapterWeights*> adapters;
  // Running sequences to preempt, in the order chosen (newest first).
  std::vector<uint64_t> preempt;
  // Waiting sequences that become running, oldest first, with the cached prefix blocks the commit
  // will match (the same Find saw). A static batch being formed admits some that do not run yet.
  struct Admission {
    uint64_t id = 0;
    int cached_blocks = 0;
    int64_t reserve_tokens = 0;  // K/V room it holds after the commit (cached prefix included)
  };
  std::vector<Admission> admit;
  // The batch: running sequences first (oldest first), then admitted ones. `computed` is where the
  // chunk starts (an admission's cached prefix included).
  struct Chunk {
    uint64_t id = 0;
    int64_t computed = 0;
    int64_t tokens = 0;
  };
  std::vector<Chunk> run;
  // Blocks the commit allocates (beyond those matched), and free blocks the matches take.
  int64_t new_blocks = 0;
  int64_t matched_free_blocks = 0;
};

StepPlan PlanStep(const PlanInput& input);

// The adapters a sequence needs in a step: its adapter, or its mixture's members.
std::span<const AdapterWeights* const> StepAdapters(const PlanSequence& s);

// The adapters a step may run (the first rule above); exposed for tests.
absl::flat_hash_set<const AdapterWeights*> ChooseStepAdapters(std::span<const PlanSequence> running,
                                                              std::span<const PlanSequence> waiting,
                                                              int cap);

}  // namespace switchyard

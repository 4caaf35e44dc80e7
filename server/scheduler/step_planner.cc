#include "server/scheduler/step_planner.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"

namespace switchyard {

std::span<const AdapterWeights* const> StepAdapters(const PlanSequence& s) {
  if (s.adapter != nullptr) return std::span(&s.adapter, 1);
  return s.mixture;
}

absl::flat_hash_set<const AdapterWeights*> ChooseStepAdapters(std::span<const PlanSequence> running,
                                                              std::span<const PlanSequence> waiting,
                                                              int cap) {
  // Each adapter with work, with the age of its oldest sequence (ids grow with arrival).
  absl::flat_hash_map<const AdapterWeights*, uint64_t> oldest;
  // A mixture's members share its age: the oldest sequence's members are all chosen (the cap is
  // at least a mixture's size), so no mixture starves.
  const auto note = [&](const PlanSequence& s) {
    for (const AdapterWeights* a : StepAdapters(s)) {
      auto [it, fresh] = oldest.try_emplace(a, s.id);
      if (!fresh) it->second = std::min(it->second, s.id);
    }
  };
  for (const PlanSequence& s : running) note(s);
  for (const PlanSequence& s : waiting) note(s);
  std::vector<std::pair<uint64_t, const AdapterWeights*>> by_age;
  for (const auto& [a, age] : oldest) by_age.emplace_back(age, a);
  if (static_cast<int>(by_age.size()) > cap) {
    std::nth_element(by_age.begin(), by_age.begin() + cap, by_age.end());
    by_age.resize(static_cast<size_t>(cap));
  }
  absl::flat_hash_set<const AdapterWeights*> chosen;
  for (const auto& [age, a] : by_age) chosen.insert(a);
  return chosen;
}

namespace {

// The planner's running account of the step: budgets and the blocks the commit will have free.
class Planner {
 public:
  explicit Planner(const PlanInput& in)
      : in_(in),
        limits_(in.limits),
        free_(in.pool->num_free()),
        budget_(limits_.max_batch_tokens),
        seats_(limits_.max_batch_seqs),
        running_end_(in.running.size()) {
    plan_.adapters = ChooseStepAdapters(in.running, in.waiting, limits_.max_adapters_per_step);
  }

  StepPlan Run() && {
    const bool was_idle = in_.running.empty();
    ScheduleRunning();
    const bool may_admit = plan_.preempt.empty() && (!limits_.static_batching || was_idle);
    if (may_admit) Admit(/*forming=*/limits_.static_batching && was_idle);
    return std::move(plan_);
  }

 private:
  bool Allowed(const PlanSequence& s) const {
    return std::all_of(StepAdapters(s).begin(), StepAdapters(s).end(),
                       [&](const AdapterWeights* a) { return plan_.adapters.contains(a); });
  }
  int64_t BlocksFor(int64_t tokens) const {
    return (tokens + limits_.block_size - 1) / limits_.block_size;
  }
  static int64_t Uncomputed(const PlanSequence& s) {
    return static_cast<int64_t>(s.tokens.size()) - s.computed;
  }

  // Running sequences, oldest first; the newest are preempted while blocks run short.
  void ScheduleRunning() {
    for (size_t i = 0; i < running_end_ && budget_ > 0 && seats_ > 0; ++i) {
      const PlanSequence& s = in_.running[i];
      if (!Allowed(s)) continue;
      const int64_t chunk = std::min(Uncomputed(s), budget_);
      const int64_t need = std::max<int64_t>(
          0, BlocksFor(s.computed + chunk) - static_cast<int64_t>(s.blocks.size()));
      while (free_ < need) {
        const PlanSequence& victim = in_.running[--running_end_];
        plan_.preempt.push_back(victim.id);
        Release(victim);
        if (&victim == &s) return;  // it preempted itself: nobody younger is left to run
      }
      free_ -= need;
      plan_.new_blocks += need;
      Take(s.id, s.computed, chunk);
    }
  }

  // The blocks a preempted sequence frees: those it was the last holder of.
  void Release(const PlanSequence& victim) {
    for (int32_t b : victim.blocks) {
      if (in_.pool->ref_count(b) - ++released_[b] == 0) ++free_;
    }
  }

  void Take(uint64_t id, int64_t computed, int64_t chunk) {
    plan_.run.push_back({id, computed, chunk});
    budget_ -= chunk;
    --seats_;
  }

  // Waiting sequences, oldest first, until the first that does not fit. Static batching forms a
  // whole batch when idle (its prefill then runs in chunks): admission goes on past the budget.
  void Admit(bool forming) {
    int64_t running = static_cast<int64_t>(running_end_);
    int64_t reserved_seats = 0, reserved_blocks = 0;
    absl::flat_hash_set<int32_t> taken;  // cached free blocks matched by earlier admissions
    std::vector<int32_t> found;
    for (const PlanSequence& s : in_.waiting) {
      if (!((budget_ > 0 && seats_ > 0) || forming)) break;
      if (running + reserved_seats >= limits_.max_batch_seqs) break;
      if (!Allowed(s)) {
        ++reserved_seats;
        reserved_blocks += BlocksFor(std::min(Uncomputed(s), limits_.max_batch_tokens));
        continue;
      }
      found.clear();
      int matched = 0;
      if (limits_.prefix_caching) {
        const int max_blocks = static_cast<int>((s.tokens.size() - 1) / limits_.block_size);
        matched = in_.pool->Find(s.prefix_namespace, s.tokens, limits_.block_size, max_blocks,
                                 &found, nullptr);
      }
      int64_t matched_free = 0;
      for (int32_t b : found) matched_free += in_.pool->ref_count(b) == 0 && !taken.contains(b);
      const int64_t computed = int64_t{matched} * limits_.block_size;
      const int64_t chunk = std::min(static_cast<int64_t>(s.tokens.size()) - computed, budget_);
      const int64_t need = BlocksFor(computed + chunk) - matched;
      if (free_ - matched_free - need < reserved_blocks) break;  // nothing overtakes it
      free_ -= matched_free + need;
      plan_.matched_free_blocks += matched_free;
      plan_.new_blocks += need;
      taken.insert(found.begin(), found.end());
      plan_.admit.push_back({s.id, matched, computed + chunk});
      ++running;
      if (chunk > 0 && seats_ > 0) Take(s.id, computed, chunk);
    }
  }

  const PlanInput& in_;
  const PlanLimits& limits_;
  StepPlan plan_;
  int64_t free_;
  int64_t budget_;
  int64_t seats_;
  size_t running_end_;  // running sequences not preempted: [0, running_end_)
  absl::flat_hash_map<int32_t, int> released_;
};

}  // namespace

StepPlan PlanStep(const PlanInput& input) { return Planner(input).Run(); }

}  // namespace switchyard

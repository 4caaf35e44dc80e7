// The step planner driven directly: focused cases of each rule, and a randomized life of many
// requests (arrivals, prefill chunks, decodes, preemption, cancellation at any point, adapter swaps
// that leave old versions running beside new ones) where every plan is checked against the limits
// and committed to a real block pool, which must accept it exactly as planned.
#include "server/scheduler/step_planner.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace switchyard {
namespace {

constexpr int kBlock = 4;

std::shared_ptr<AdapterWeights> MakeAdapter(const std::string& name, uint64_t version = 1) {
  auto a = std::make_shared<AdapterWeights>();
  a->name = name;
  a->version = version;
  return a;
}

uint64_t Namespace(const AdapterWeights* a) {
  return a == nullptr ? 0 : BlockPool::BlockKey(std::hash<std::string>{}(a->name), a->version, {});
}

// A sequence as a test keeps it (what the scheduler's Sequence holds, reduced).
struct Seq {
  uint64_t id = 0;
  const AdapterWeights* adapter = nullptr;
  std::vector<const AdapterWeights*> mixture = {};
  std::vector<int32_t> tokens;
  int64_t computed = 0;
  std::vector<int32_t> blocks = {};
  std::vector<uint64_t> keys = {};
  int64_t length = 0;  // finishes at this many tokens

  PlanSequence View() const {
    return {id, adapter, mixture, tokens, computed, blocks, Namespace(adapter)};
  }
};

PlanLimits Limits(int64_t tokens, int64_t seqs, int adapters) {
  PlanLimits l;
  l.max_batch_tokens = tokens;
  l.max_batch_seqs = seqs;
  l.max_adapters_per_step = adapters;
  l.block_size = kBlock;
  return l;
}

StepPlan Plan(const std::vector<Seq>& running, const std::vector<Seq>& waiting,
              const BlockPool& pool, const PlanLimits& limits) {
  std::vector<PlanSequence> r, w;
  for (const Seq& s : running) r.push_back(s.View());
  for (const Seq& s : waiting) w.push_back(s.View());
  PlanInput in;
  in.running = r;
  in.waiting = w;
  in.pool = &pool;
  in.limits = limits;
  return PlanStep(in);
}

// Holds blocks for `s.computed` tokens (registering the full ones) as a running sequence would.
void Hold(BlockPool& pool, Seq& s) {
  const int need = static_cast<int>((s.computed + kBlock - 1) / kBlock) - s.blocks.size();
  ASSERT_TRUE(need <= 0 || pool.Allocate(need, &s.blocks));
  while (static_cast<int64_t>(s.keys.size() + 1) * kBlock <= s.computed) {
    const size_t b = s.keys.size();
    s.keys.push_back(pool.Register(s.blocks[b], b == 0 ? 0 : s.keys[b - 1], Namespace(s.adapter),
                                   {s.tokens.data() + b * kBlock, kBlock}));
  }
}

std::vector<int32_t> Range(int32_t from, int n) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = from + i;
  return t;
}

TEST(StepPlannerTest, PreemptsTheNewestRunningSequenceWhenBlocksRunShort) {
  BlockPool pool(6);
  std::vector<Seq> running(3);
  for (int i = 0; i < 3; ++i) {
    running[i].id = i + 1;
    running[i].tokens = Range(100 * i, 9);  // 8 computed, the 9th needs a third block
    running[i].computed = 8;
    Hold(pool, running[i]);
  }
  ASSERT_EQ(pool.num_free(), 0);
  std::vector<Seq> waiting(1);
  waiting[0].id = 4;
  waiting[0].tokens = Range(900, 3);
  const StepPlan plan = Plan(running, waiting, pool, Limits(64, 8, 4));
  // Sequence 1 needs a block: 3 (the newest) goes, freeing 2; 2 then takes the other.
  ASSERT_EQ(plan.preempt, std::vector<uint64_t>({3}));
  ASSERT_EQ(plan.run.size(), 2u);
  EXPECT_EQ(plan.run[0].id, 1u);
  EXPECT_EQ(plan.run[1].id, 2u);
  EXPECT_EQ(plan.run[0].computed, 8);
  EXPECT_EQ(plan.run[0].tokens, 1);
  EXPECT_TRUE(plan.admit.empty()) << "nothing is admitted in a step that preempts";
  EXPECT_EQ(plan.new_blocks, 2);
}

TEST(StepPlannerTest, AVictimsSharedBlocksFreeNothing) {
  BlockPool pool(4);
  std::vector<Seq> running(2);
  // The older sequence holds its first block and has 16 tokens to go: 4 more blocks.
  running[0] = {.id = 1, .tokens = Range(0, 20), .computed = 4};
  Hold(pool, running[0]);
  // The newer shares that block (a common prefix) and holds one of its own.
  running[1] = {.id = 2, .tokens = Range(0, 4)};
  running[1].tokens.push_back(77);
  for (int i = 0; i < 3; ++i) running[1].tokens.push_back(78);
  running[1].tokens.push_back(79);  // 9 tokens, 8 computed
  pool.Match(0, running[1].tokens, kBlock, 1, &running[1].blocks, &running[1].keys);
  running[1].computed = 8;
  Hold(pool, running[1]);
  ASSERT_EQ(pool.num_free(), 2);
  const StepPlan plan = Plan(running, {}, pool, Limits(64, 8, 4));
  // Preempting 2 frees only its own block (the shared one is still 1's): 3 free < 4 needed, so 1
  // must preempt itself too (counting the shared block as freed would run it on blocks in use).
  EXPECT_EQ(plan.preempt, std::vector<uint64_t>({2, 1}));
  EXPECT_TRUE(plan.run.empty());
  EXPECT_EQ(plan.new_blocks, 0);
}

TEST(StepPlannerTest, AdmissionStopsAtTheFirstRequestThatDoesNotFit) {
  BlockPool pool(4);
  std::vector<Seq> waiting(3);
  waiting[0] = {.id = 1, .tokens = Range(0, 8)};    // 2 blocks
  waiting[1] = {.id = 2, .tokens = Range(50, 12)};  // 3 blocks: does not fit after the first
  waiting[2] = {.id = 3, .tokens = Range(90, 2)};   // 1 block: would fit, must not overtake
  const StepPlan plan = Plan({}, waiting, pool, Limits(64, 8, 4));
  ASSERT_EQ(plan.admit.size(), 1u);
  EXPECT_EQ(plan.admit[0].id, 1u);
  ASSERT_EQ(plan.run.size(), 1u);
  EXPECT_EQ(plan.run[0].tokens, 8);
}

TEST(StepPlannerTest, ACachedFreeBlockMatchedTwiceIsCountedOnce) {
  BlockPool pool(4);
  Seq done{.id = 1, .tokens = Range(0, 9), .computed = 8};
  Hold(pool, done);
  pool.Release(done.blocks);  // finished: its two full blocks stay cached, free
  ASSERT_EQ(pool.num_free(), 4);
  ASSERT_EQ(pool.num_cached_free(), 2);
  std::vector<Seq> waiting(2);
  waiting[0] = {.id = 2, .tokens = Range(0, 10)};  // 2 cached + 1 new
  waiting[1] = {.id = 3, .tokens = Range(0, 11)};  // the same 2 cached + 1 new
  const StepPlan plan = Plan({}, waiting, pool, Limits(64, 8, 4));
  ASSERT_EQ(plan.admit.size(), 2u);
  EXPECT_EQ(plan.admit[0].cached_blocks, 2);
  EXPECT_EQ(plan.admit[1].cached_blocks, 2);
  EXPECT_EQ(plan.matched_free_blocks, 2);
  EXPECT_EQ(plan.new_blocks, 2);
  ASSERT_EQ(plan.run.size(), 2u);
  EXPECT_EQ(plan.run[1].computed, 8);
  EXPECT_EQ(plan.run[1].tokens, 3);
}

TEST(StepPlannerTest, AnOldAndANewVersionOfAnAdapterAreTwoAdaptersUnderTheCap) {
  BlockPool pool(64);
  auto v1 = MakeAdapter("a", 1), v2 = MakeAdapter("a", 2), b = MakeAdapter("b");
  std::vector<Seq> running(1), waiting(2);
  running[0] = {.id = 1, .adapter = v1.get(), .tokens = Range(0, 5), .computed = 4};
  Hold(pool, running[0]);
  waiting[0] = {.id = 2, .adapter = v2.get(), .tokens = Range(10, 3)};  // after the swap
  waiting[1] = {.id = 3, .adapter = b.get(), .tokens = Range(20, 3)};
  StepPlan plan = Plan(running, waiting, pool, Limits(64, 8, 2));
  EXPECT_EQ(plan.adapters.size(), 2u);
  EXPECT_TRUE(plan.adapters.contains(v1.get()) && plan.adapters.contains(v2.get()));
  // b sits out, keeping its seat and blocks; the old version's sequence goes on decoding.
  ASSERT_EQ(plan.run.size(), 2u);
  EXPECT_EQ(plan.run[0].id, 1u);
  EXPECT_EQ(plan.run[1].id, 2u);
  // Their namespaces differ: the new version cannot reuse the old version's K/V.
  EXPECT_NE(Namespace(v1.get()), Namespace(v2.get()));
}

// A mixture runs only in a step that runs all its members, and its members share its age.
TEST(StepPlannerTest, AMixtureRunsOnlyWithAllItsMembers) {
  BlockPool pool(64);
  auto a = MakeAdapter("a"), b = MakeAdapter("b"), c = MakeAdapter("c");
  const std::vector<const AdapterWeights*> bc = {b.get(), c.get()};
  std::vector<Seq> waiting(2);
  waiting[0] = {.id = 1, .mixture = bc, .tokens = Range(0, 3)};
  waiting[1] = {.id = 2, .adapter = a.get(), .tokens = Range(10, 3)};
  StepPlan plan = Plan({}, waiting, pool, Limits(64, 8, 2));
  EXPECT_TRUE(plan.adapters.contains(b.get()) && plan.adapters.contains(c.get()));
  ASSERT_EQ(plan.run.size(), 1u);  // a sits out: the older mixture took both places
  EXPECT_EQ(plan.run[0].id, 1u);
  // Older a first: only one of b and c fits beside it, so the mixture sits out.
  waiting[0].id = 3;
  plan = Plan({}, waiting, pool, Limits(64, 8, 2));
  ASSERT_EQ(plan.run.size(), 1u);
  EXPECT_EQ(plan.run[0].id, 2u);
  // With room for all three, both run.
  plan = Plan({}, waiting, pool, Limits(64, 8, 3));
  EXPECT_EQ(plan.run.size(), 2u);
}

TEST(StepPlannerTest, ARequestSittingOutKeepsItsBlocksFromYoungerOnes) {
  BlockPool pool(4);
  auto a = MakeAdapter("a"), b = MakeAdapter("b");
  std::vector<Seq> running(1), waiting(2);
  running[0] = {.id = 1, .adapter = a.get(), .tokens = Range(0, 3)};
  waiting[0] = {.id = 2, .adapter = b.get(), .tokens = Range(10, 12)};  // 3 blocks, sits out
  waiting[1] = {.id = 3, .adapter = a.get(), .tokens = Range(20, 8)};   // 2 blocks
  const StepPlan plan = Plan(running, waiting, pool, Limits(64, 8, 1));
  ASSERT_EQ(plan.run.size(), 1u);  // 1 runs (one block); 3 would leave too little for 2
  EXPECT_EQ(plan.run[0].id, 1u);
  EXPECT_TRUE(plan.admit.empty());
}

TEST(StepPlannerTest, StaticBatchingFormsAWholeBatchOnlyWhenIdle) {
  BlockPool pool(64);
  std::vector<Seq> waiting(3);
  for (int i = 0; i < 3; ++i) waiting[i] = {.id = uint64_t(i + 1), .tokens = Range(10 * i, 6)};
  PlanLimits limits = Limits(8, 8, 4);
  limits.static_batching = true;
  StepPlan plan = Plan({}, waiting, pool, limits);
  EXPECT_EQ(plan.admit.size(), 3u) << "admission goes on past the token budget";
  ASSERT_EQ(plan.run.size(), 2u);  // 6 + 2 tokens
  EXPECT_EQ(plan.run[1].tokens, 2);
  std::vector<Seq> running(1);
  running[0] = {.id = 1, .tokens = Range(0, 7), .computed = 6};
  Hold(pool, running[0]);
  plan = Plan(running, {waiting[1]}, pool, limits);
  EXPECT_TRUE(plan.admit.empty()) << "nothing joins a running static batch";
}

// The randomized life. The test keeps its own sequences, commits every plan as Scheduler::Commit
// does, and "runs" the batch (computed advances; a sequence that reached its tokens samples one).
class PlannerLife {
 public:
  PlannerLife(uint64_t seed, int blocks, PlanLimits limits)
      : rng_(seed), pool_(blocks), limits_(limits) {
    for (int i = 0; i < 5; ++i) adapters_.push_back(MakeAdapter(absl::StrCat("a", i)));
  }

  void Step(int64_t step) {
    Arrive();
    CancelSome();
    if (rng_() % 40 == 0) SwapAnAdapter();
    const PoolSnapshot before = Snapshot();
    const StepPlan plan = Plan(running_, waiting_, pool_, limits_);
    ASSERT_TRUE(before == Snapshot()) << "planning changed the pool";
    CheckLimits(plan, step);
    Commit(plan, before.free);
    Run(plan);
    ++steps_;
    preempted_ += plan.preempt.size();
  }

  bool Idle() const { return running_.empty() && waiting_.empty(); }
  int64_t finished_ = 0, cancelled_ = 0, preempted_ = 0, steps_ = 0, cached_hits_ = 0;
  int64_t swaps_ = 0, old_version_runs_ = 0;

 private:
  struct PoolSnapshot {
    int free = 0, cached = 0;
    std::vector<int32_t> refs;
    bool operator==(const PoolSnapshot&) const = default;
  };
  PoolSnapshot Snapshot() const {
    PoolSnapshot s{pool_.num_free(), pool_.num_cached_free(), {}};
    for (int b = 0; b < pool_.num_blocks(); ++b) s.refs.push_back(pool_.ref_count(b));
    return s;
  }

  void Arrive() {
    if (arrivals_ >= 400 || rng_() % 3 != 0) return;
    Seq s;
    s.id = ++next_id_;
    if (rng_() % 4 != 0) s.adapter = adapters_[rng_() % adapters_.size()].get();
    const int shared = rng_() % 2 == 0 ? static_cast<int>(rng_() % 3) * kBlock : 0;
    s.tokens = Range(0, shared);  // a common prefix, for the prefix cache
    const std::vector<int32_t> tail =
        Range(1000 + static_cast<int32_t>(rng_() % 5000), 1 + static_cast<int>(rng_() % 20));
    s.tokens.insert(s.tokens.end(), tail.begin(), tail.end());
    s.length = static_cast<int64_t>(s.tokens.size()) + 1 + static_cast<int64_t>(rng_() % 12);
    waiting_.push_back(std::move(s));
    ++arrivals_;
  }

  // Cancellation can hit a request anywhere: waiting, preempted, mid-prefill, decoding.
  void CancelSome() {
    if (rng_() % 8 != 0) return;
    const bool from_running = rng_() % 2 == 0 && !running_.empty();
    std::vector<Seq>& list = from_running ? running_ : waiting_;
    if (list.empty()) return;
    const size_t i = rng_() % list.size();
    pool_.Release(list[i].blocks);
    list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
    ++cancelled_;
  }

  // A new version replaces an adapter for new arrivals; sequences on the old one go on with it.
  void SwapAnAdapter() {
    const size_t i = rng_() % adapters_.size();
    retired_.push_back(adapters_[i]);
    adapters_[i] = MakeAdapter(adapters_[i]->name, adapters_[i]->version + 1);
    ++swaps_;
  }

  void CheckLimits(const StepPlan& plan, int64_t step) {
    const std::string where = absl::StrCat("step ", step);
    ASSERT_LE(static_cast<int>(plan.adapters.size()), limits_.max_adapters_per_step) << where;
    ASSERT_LE(static_cast<int64_t>(plan.run.size()), limits_.max_batch_seqs) << where;
    int64_t tokens = 0;
    std::map<uint64_t, int> seen;
    for (const StepPlan::Chunk& c : plan.run) {
      tokens += c.tokens;
      ASSERT_GT(c.tokens, 0) << where;
      ASSERT_EQ(++seen[c.id], 1) << where << ": request " << c.id << " runs twice";
    }
    ASSERT_LE(tokens, limits_.max_batch_tokens) << where;
    // Victims are the newest running sequences, newest first; no admission beside them.
    for (size_t i = 0; i < plan.preempt.size(); ++i) {
      ASSERT_EQ(plan.preempt[i], running_[running_.size() - 1 - i].id) << where;
    }
    if (!plan.preempt.empty()) {
      ASSERT_TRUE(plan.admit.empty()) << where;
    }
    // Admissions follow the waiting order.
    for (size_t i = 1; i < plan.admit.size(); ++i) {
      ASSERT_LT(plan.admit[i - 1].id, plan.admit[i].id) << where;
    }
    // Running sequences left out of the batch were out of budget or sat out with their adapter.
  }

  Seq* Find(std::vector<Seq>& list, uint64_t id) {
    for (Seq& s : list) {
      if (s.id == id) return &s;
    }
    return nullptr;
  }

  void Commit(const StepPlan& plan, int free_before) {
    int freed = 0;
    for (uint64_t id : plan.preempt) {
      auto it =
          std::find_if(running_.begin(), running_.end(), [&](const Seq& s) { return s.id == id; });
      ASSERT_NE(it, running_.end());
      const int free0 = pool_.num_free();
      pool_.Release(it->blocks);
      freed += pool_.num_free() - free0;
      Seq s = std::move(*it);
      running_.erase(it);
      s.blocks.clear();
      s.keys.clear();
      s.computed = 0;
      waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), s,
                                       [](const Seq& a, const Seq& b) { return a.id < b.id; }),
                      std::move(s));
    }
    const int free_after_release = pool_.num_free();
    for (const StepPlan::Admission& a : plan.admit) {
      auto it = std::find_if(waiting_.begin(), waiting_.end(),
                             [&](const Seq& s) { return s.id == a.id; });
      ASSERT_NE(it, waiting_.end());
      Seq s = std::move(*it);
      waiting_.erase(it);
      const int matched =
          pool_.Match(Namespace(s.adapter), s.tokens, kBlock, a.cached_blocks, &s.blocks, &s.keys);
      ASSERT_EQ(matched, a.cached_blocks) << "the commit found another prefix than the plan";
      s.computed = int64_t{matched} * kBlock;
      cached_hits_ += matched > 0;
      running_.insert(std::upper_bound(running_.begin(), running_.end(), s,
                                       [](const Seq& a, const Seq& b) { return a.id < b.id; }),
                      std::move(s));
    }
    ASSERT_EQ(free_after_release - pool_.num_free(), plan.matched_free_blocks);
    const int free_before_alloc = pool_.num_free();
    for (const StepPlan::Admission& a : plan.admit) {
      ASSERT_NO_FATAL_FAILURE(Reserve(*Find(running_, a.id), a.reserve_tokens));
    }
    for (const StepPlan::Chunk& c : plan.run) {
      Seq* s = Find(running_, c.id);
      ASSERT_NE(s, nullptr);
      ASSERT_EQ(s->computed, c.computed);
      ASSERT_NO_FATAL_FAILURE(Reserve(*s, c.computed + c.tokens));
      ASSERT_TRUE(s->adapter == nullptr || plan.adapters.contains(s->adapter));
      old_version_runs_ += s->adapter != nullptr && IsRetired(s->adapter);
    }
    ASSERT_EQ(free_before_alloc - pool_.num_free(), plan.new_blocks);
    ASSERT_EQ(pool_.num_free(), free_before + freed - plan.matched_free_blocks - plan.new_blocks);
  }

  bool IsRetired(const AdapterWeights* a) const {
    for (const auto& r : retired_) {
      if (r.get() == a) return true;
    }
    return false;
  }

  void Reserve(Seq& s, int64_t tokens) {
    const int need = static_cast<int>((tokens + kBlock - 1) / kBlock) - s.blocks.size();
    ASSERT_TRUE(need <= 0 || pool_.Allocate(need, &s.blocks)) << "the plan's blocks were not free";
  }

  void Run(const StepPlan& plan) {
    for (const StepPlan::Chunk& c : plan.run) {
      Seq& s = *Find(running_, c.id);
      s.computed += c.tokens;
      Hold(pool_, s);  // registers the blocks that became full
      if (s.computed == static_cast<int64_t>(s.tokens.size())) {
        s.tokens.push_back(static_cast<int32_t>(7000 + rng_() % 100));
      }
    }
    for (auto it = running_.begin(); it != running_.end();) {
      if (static_cast<int64_t>(it->tokens.size()) >= it->length) {
        pool_.Release(it->blocks);
        it = running_.erase(it);
        ++finished_;
      } else {
        ++it;
      }
    }
  }

  std::mt19937_64 rng_;
  BlockPool pool_;
  PlanLimits limits_;
  std::vector<std::shared_ptr<AdapterWeights>> adapters_, retired_;
  std::vector<Seq> running_, waiting_;
  uint64_t next_id_ = 0;
  int arrivals_ = 0;
};

TEST(StepPlannerTest, EveryPlanOfARandomLifeFitsItsLimitsAndCommitsExactly) {
  struct Case {
    uint64_t seed;
    int blocks;
    int64_t tokens, seqs;
    int adapters;
  };
  for (const Case c : {Case{1, 12, 16, 4, 2}, Case{2, 24, 32, 8, 3}, Case{3, 80, 64, 16, 6},
                       Case{4, 9, 8, 3, 1}}) {
    SCOPED_TRACE(absl::StrCat("seed ", c.seed));
    PlannerLife life(c.seed, c.blocks, Limits(c.tokens, c.seqs, c.adapters));
    int64_t step = 0;
    for (; step < 20000 && (step < 1500 || !life.Idle()); ++step) {
      ASSERT_NO_FATAL_FAILURE(life.Step(step));
    }
    EXPECT_TRUE(life.Idle()) << "requests left after " << step << " steps";
    std::printf(
        "seed %llu: %lld steps, %lld finished, %lld cancelled, %lld preempted, "
        "%lld prefix hits, %lld swaps, %lld chunks on old versions\n",
        static_cast<unsigned long long>(c.seed), static_cast<long long>(step),
        static_cast<long long>(life.finished_), static_cast<long long>(life.cancelled_),
        static_cast<long long>(life.preempted_), static_cast<long long>(life.cached_hits_),
        static_cast<long long>(life.swaps_), static_cast<long long>(life.old_version_runs_));
    // The scenario must exercise what it claims to.
    EXPECT_GT(life.finished_, 100);
    EXPECT_GT(life.cancelled_, 10);
    EXPECT_GT(life.swaps_, 5);
    EXPECT_GT(life.cached_hits_, 10);
    if (c.blocks < 20) {
      EXPECT_GT(life.preempted_, 5);
    }
    EXPECT_GT(life.old_version_runs_, 0);
  }
}

}  // namespace
}  // namespace switchyard

// The scheduler against a simulated engine (fake_executor.h): a randomized simulation with
// thousands of arrivals, cancellations, deadlines, adapters, shared prefixes and memory pressure,
// checking the invariants every step and every output against the request run alone; and focused
// tests of admission, fairness, preemption, limits and the engine thread.
#include "server/scheduler/scheduler.h"

#include <limits>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/scheduler/event_queue.h"
#include "tests/unit/fake_executor.h"

namespace switchyard {
namespace {

using ::switchyard::testing::ContextLogits;
using ::switchyard::testing::FakeExecutor;
using ::testing::HasSubstr;

constexpr int32_t kVocab = 64;
constexpr int32_t kEos = 0;

// Events of every request, in the order delivered.
struct Recorder {
  struct Log {
    std::vector<int32_t> tokens;
    int finishes = 0;
    FinishReason reason = FinishReason::kNone;
    RequestUsage usage;
    int64_t first_event_step = -1;
  };
  std::map<uint64_t, Log> logs;
  int64_t step = 0;
};

class RecordingSink final : public RequestSink {
 public:
  explicit RecordingSink(Recorder* r) : r_(r) {}
  void Deliver(RequestEvent e) override {
    Recorder::Log& log = r_->logs[e.request_id];
    EXPECT_EQ(log.finishes, 0) << "event after the finish of request " << e.request_id;
    if (log.first_event_step < 0) log.first_event_step = r_->step;
    log.tokens.insert(log.tokens.end(), e.tokens.begin(), e.tokens.end());
    if (e.finished()) {
      ++log.finishes;
      log.reason = e.finish;
      log.usage = e.usage;
    }
  }

 private:
  Recorder* r_;
};

// What `prompt` generates when computed correctly and alone.
std::vector<int32_t> RunAlone(const std::vector<int32_t>& prompt, const AdapterWeights* adapter,
                              const SamplingParams& params, int64_t max_tokens, bool stop_at_eos) {
  Sampler sampler(params, prompt, 0);
  std::vector<int32_t> context = prompt, out;
  std::vector<float> logits(kVocab);
  while (static_cast<int64_t>(out.size()) < max_tokens) {
    ContextLogits(FakeExecutor::ContextHash(context, adapter), kVocab, logits.data());
    const int32_t t = sampler.Sample(logits).token;
    out.push_back(t);
    context.push_back(t);
    if (stop_at_eos && t == kEos) break;
  }
  return out;
}

std::shared_ptr<AdapterWeights> MakeAdapter(const std::string& name, uint64_t version = 1) {
  auto a = std::make_shared<AdapterWeights>();
  a->name = name;
  a->version = version;
  return a;
}

struct Harness {
  absl::Time clock = absl::FromUnixSeconds(1000);
  Recorder recorder;
  std::shared_ptr<RecordingSink> sink = std::make_shared<RecordingSink>(&recorder);
  std::unique_ptr<FakeExecutor> executor;
  std::unique_ptr<Scheduler> scheduler;

  Harness(int num_blocks, int block_size, int64_t max_tokens, int64_t max_seqs,
          SchedulerOptions options) {
    executor = std::make_unique<FakeExecutor>(num_blocks, block_size, kVocab, max_tokens, max_seqs,
                                              &clock);
    options.clock = [this] { return clock; };
    options.eos_token_ids = {kEos};
    auto s = Scheduler::Create(executor.get(), nullptr, options);
    SY_CHECK_OK(s.status());
    scheduler = std::move(*s);
  }

  GenerationRequest Request(std::vector<int32_t> prompt, int64_t max_tokens,
                            std::shared_ptr<const AdapterWeights> adapter = nullptr) {
    GenerationRequest r;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.adapter = std::move(adapter);
    r.sampling.temperature = 0;
    r.sink = sink;
    return r;
  }

  // Steps until idle (or `limit` steps), checking the invariants after each.
  void RunUntilIdle(int limit = 100000) {
    for (int i = 0; i < limit && scheduler->HasWork(); ++i) {
      ++recorder.step;
      scheduler->Step();
      ASSERT_TRUE(scheduler->CheckInvariants().ok()) << scheduler->CheckInvariants();
    }
    ASSERT_FALSE(scheduler->HasWork());
  }
};

std::vector<int32_t> Tokens(std::mt19937_64& rng, int n) {
  std::vector<int32_t> t(n);
  for (int& x : t) x = 1 + static_cast<int32_t>(rng() % (kVocab - 1));
  return t;
}

struct SimCase {
  uint64_t seed;
  int num_blocks;
  bool prefix_caching;
  int max_adapters;
};

class SimulationTest : public ::testing::TestWithParam<SimCase> {};

TEST_P(SimulationTest, EveryRequestFinishesOnceWithItsAloneOutput) {
  const SimCase c = GetParam();
  SchedulerOptions options;
  options.prefix_caching = c.prefix_caching;
  options.max_adapters_per_step = c.max_adapters;
  options.max_waiting = 100000;
  Harness h(c.num_blocks, 8, 96, 24, options);
  std::mt19937_64 rng(c.seed);
  std::vector<std::shared_ptr<AdapterWeights>> adapters;
  for (int i = 0; i < 12; ++i) adapters.push_back(MakeAdapter(absl::StrCat("a", i)));
  std::vector<std::vector<int32_t>> prefixes;
  for (int i = 0; i < 4; ++i) prefixes.push_back(Tokens(rng, 8 + static_cast<int>(rng() % 40)));

  struct Sent {
    GenerationRequest request;
    std::vector<int32_t> alone;
    int64_t submit_step;
    bool cancelled = false;
  };
  std::map<uint64_t, Sent> sent;
  std::multimap<int64_t, uint64_t> cancel_at;
  const int kRequests = 1500;
  int submitted = 0;
  int64_t max_tokens_seen = 0;
  int64_t max_seqs_seen = 0;
  int max_adapters_seen = 0;
  h.scheduler->set_step_observer([&](const StepRecord& r) {
    max_tokens_seen = std::max(max_tokens_seen, r.tokens);
    max_seqs_seen = std::max(max_seqs_seen, r.sequences);
    max_adapters_seen = std::max(max_adapters_seen, r.distinct_adapters);
  });
  while (submitted < kRequests || h.scheduler->HasWork() || !cancel_at.empty()) {
    // Poisson-ish arrivals: bursts and lulls.
    const int arrivals =
        submitted < kRequests ? static_cast<int>(rng() % 4 == 0 ? rng() % 6 : 0) : 0;
    for (int i = 0; i < arrivals && submitted < kRequests; ++i, ++submitted) {
      std::vector<int32_t> prompt;
      if (rng() % 2 == 0) prompt = prefixes[rng() % prefixes.size()];
      const std::vector<int32_t> tail = Tokens(rng, 1 + static_cast<int>(rng() % 60));
      prompt.insert(prompt.end(), tail.begin(), tail.end());
      std::shared_ptr<AdapterWeights> adapter;
      if (rng() % 5 != 0) adapter = adapters[rng() % adapters.size()];
      GenerationRequest r = h.Request(prompt, 1 + static_cast<int64_t>(rng() % 48), adapter);
      if (rng() % 3 == 0) {
        r.sampling.temperature = 0.8f;
        r.sampling.top_p = 0.9f;
        r.sampling.seed = rng();
      }
      if (rng() % 20 == 0) r.deadline = h.clock + absl::Milliseconds(rng() % 200);
      Sent s{r, RunAlone(r.prompt, adapter.get(), r.sampling, r.max_tokens, true), h.recorder.step};
      absl::StatusOr<uint64_t> id = h.scheduler->Submit(std::move(r));
      ASSERT_TRUE(id.ok()) << id.status();
      sent.emplace(*id, std::move(s));
      // One in twenty is cancelled a little later (possibly after it finished: then a no-op).
      if (rng() % 20 == 0) cancel_at.emplace(h.recorder.step + rng() % 30, *id);
    }
    for (auto it = cancel_at.begin(); it != cancel_at.end() && it->first <= h.recorder.step;) {
      sent.at(it->second).cancelled = true;
      h.scheduler->Cancel(it->second);
      it = cancel_at.erase(it);
    }
    ++h.recorder.step;
    h.scheduler->Step();
    absl::Status inv = h.scheduler->CheckInvariants();
    ASSERT_TRUE(inv.ok()) << "step " << h.recorder.step << ": " << inv;
    ASSERT_LT(h.recorder.step, 200000) << "no progress";
  }

  EXPECT_THAT(h.executor->violations(), ::testing::IsEmpty());
  EXPECT_LE(max_tokens_seen, 96);
  EXPECT_LE(max_seqs_seen, 24);
  EXPECT_LE(max_adapters_seen, c.max_adapters);
  const SchedulerStats stats = h.scheduler->stats();
  EXPECT_EQ(stats.kv_blocks_used, 0);
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.waiting, 0);
  ASSERT_EQ(h.recorder.logs.size(), sent.size());
  int preempted = 0, cached = 0, by_reason[7] = {};
  for (const auto& [id, s] : sent) {
    const Recorder::Log& log = h.recorder.logs.at(id);
    ASSERT_EQ(log.finishes, 1) << "request " << id;
    ++by_reason[static_cast<int>(log.reason)];
    preempted += log.usage.preemptions > 0;
    cached += log.usage.cached_prompt_tokens > 0;
    switch (log.reason) {
      case FinishReason::kStop:
      case FinishReason::kLength:
        EXPECT_EQ(log.tokens, s.alone) << "request " << id;
        break;
      case FinishReason::kCancelled:
      case FinishReason::kDeadline: {
        EXPECT_TRUE(log.reason == FinishReason::kDeadline || s.cancelled);
        // What it produced before it ended is the start of what it would have produced.
        ASSERT_LE(log.tokens.size(), s.alone.size());
        EXPECT_TRUE(std::equal(log.tokens.begin(), log.tokens.end(), s.alone.begin()));
        break;
      }
      default:
        ADD_FAILURE() << "request " << id << " ended with " << FinishReasonName(log.reason);
    }
    if (log.reason == FinishReason::kLength) {
      EXPECT_EQ(static_cast<int64_t>(log.tokens.size()), s.request.max_tokens);
    }
  }
  // The scenario must actually exercise what it claims to.
  EXPECT_GT(by_reason[static_cast<int>(FinishReason::kStop)] +
                by_reason[static_cast<int>(FinishReason::kLength)],
            kRequests / 2);
  EXPECT_GT(by_reason[static_cast<int>(FinishReason::kCancelled)], 10);
  EXPECT_GT(by_reason[static_cast<int>(FinishReason::kDeadline)], 10);
  if (c.num_blocks < 200) {
    EXPECT_GT(preempted, 10) << "no memory pressure";
  }
  if (c.prefix_caching) {
    EXPECT_GT(cached, 10);
    EXPECT_GT(stats.prefix_hit_tokens, 0);
  } else {
    EXPECT_EQ(cached, 0);
  }
  // Starvation: how long a request waited for its first token, and how many younger requests got
  // theirs first.
  int64_t max_wait = 0, max_overtaken = 0;
  std::vector<std::pair<uint64_t, int64_t>> starts;  // (id, first token step) of those that ran
  for (const auto& [id, s] : sent) {
    const Recorder::Log& log = h.recorder.logs.at(id);
    if (log.tokens.empty()) continue;
    max_wait = std::max(max_wait, log.first_event_step - s.submit_step);
    starts.emplace_back(id, log.first_event_step);
  }
  for (size_t i = 0; i < starts.size(); ++i) {
    int64_t overtaken = 0;
    for (size_t j = i + 1; j < starts.size(); ++j) overtaken += starts[j].second < starts[i].second;
    max_overtaken = std::max(max_overtaken, overtaken);
  }
  // Under overload waits grow (the queue is long), but nobody is passed over: younger requests
  // overtake a request only within about one batch's worth of seats.
  EXPECT_LE(max_overtaken, 24);
  std::printf(
      "seed %llu: %lld steps, %d preempted, %d with cached prefix, %d cancelled, "
      "%d deadline, longest wait %lld steps, most overtaken %lld\n",
      static_cast<unsigned long long>(c.seed), static_cast<long long>(h.recorder.step), preempted,
      cached, by_reason[static_cast<int>(FinishReason::kCancelled)],
      by_reason[static_cast<int>(FinishReason::kDeadline)], static_cast<long long>(max_wait),
      static_cast<long long>(max_overtaken));
}

INSTANTIATE_TEST_SUITE_P(Scenarios, SimulationTest,
                         ::testing::Values(SimCase{1, 64, true, 4}, SimCase{2, 64, false, 4},
                                           SimCase{3, 24, true, 1}, SimCase{4, 400, true, 12},
                                           SimCase{5, 40, true, 2}));

TEST(SchedulerTest, ARareAdapterWaitsOnlyForOlderRequestsNotForAPopularStream) {
  SchedulerOptions options;
  options.max_adapters_per_step = 1;
  Harness h(512, 8, 64, 32, options);
  auto popular = MakeAdapter("popular"), rare = MakeAdapter("rare");
  GenerationRequest r = h.Request({1, 2, 3}, 20, popular);
  r.ignore_eos = true;
  std::vector<uint64_t> before;
  for (int i = 0; i < 8; ++i) before.push_back(*h.scheduler->Submit(r));
  for (int i = 0; i < 3; ++i) {
    ++h.recorder.step;
    h.scheduler->Step();
  }
  const uint64_t rare_id = *h.scheduler->Submit(h.Request({4, 5, 6}, 4, rare));
  // The popular adapter's requests keep coming, two a step, for 100 steps.
  for (int i = 0; i < 100; ++i) {
    for (int j = 0; j < 2; ++j) ASSERT_TRUE(h.scheduler->Submit(r).ok());
    ++h.recorder.step;
    h.scheduler->Step();
  }
  h.RunUntilIdle();
  int64_t older_done = 0;
  for (uint64_t id : before) {
    older_done = std::max(older_done, h.recorder.logs[id].first_event_step + 19);
  }
  // Served right after the requests that came before it: not after the stream.
  EXPECT_EQ(h.recorder.logs[rare_id].finishes, 1);
  EXPECT_LE(h.recorder.logs[rare_id].first_event_step, older_done + 1);
}

TEST(SchedulerTest, AnAdapterThatSitsAStepOutKeepsItsSeat) {
  SchedulerOptions options;
  options.max_adapters_per_step = 1;
  Harness h(512, 8, 64, 8, options);
  auto popular = MakeAdapter("popular"), rare = MakeAdapter("rare");
  GenerationRequest r = h.Request({1, 2, 3}, 20, popular);
  r.ignore_eos = true;
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(h.scheduler->Submit(r).ok());
  ++h.recorder.step;
  h.scheduler->Step();  // seven of eight seats taken by the popular adapter
  const uint64_t rare_id = *h.scheduler->Submit(h.Request({4, 5, 6}, 4, rare));
  const uint64_t later = *h.scheduler->Submit(r);
  h.RunUntilIdle();
  // The younger popular request did not take the last seat while the rare one waited its turn.
  EXPECT_GT(h.recorder.logs[later].first_event_step, h.recorder.logs[rare_id].first_event_step);
}

TEST(SchedulerTest, PreemptsTheNewestAndItStillProducesItsAloneOutput) {
  // 6 blocks of 4 tokens: two sequences of 10 prompt + 8 output tokens cannot both fit.
  Harness h(6, 4, 64, 8, SchedulerOptions{});
  std::vector<uint64_t> ids;
  std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
                                               {11, 12, 13, 14, 15, 16, 17, 18, 19, 20}};
  for (auto& p : prompts) {
    GenerationRequest r = h.Request(p, 8);
    r.ignore_eos = true;
    ids.push_back(*h.scheduler->Submit(std::move(r)));
  }
  h.RunUntilIdle();
  SamplingParams greedy;
  greedy.temperature = 0;
  EXPECT_EQ(h.recorder.logs[ids[0]].usage.preemptions, 0);
  EXPECT_GE(h.recorder.logs[ids[1]].usage.preemptions, 1);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(h.recorder.logs[ids[i]].tokens, RunAlone(prompts[i], nullptr, greedy, 8, false));
    EXPECT_EQ(h.recorder.logs[ids[i]].reason, FinishReason::kLength);
  }
  EXPECT_GE(h.scheduler->stats().preemptions, 1);
}

TEST(SchedulerTest, ChunksLongPromptsSoDecodesKeepFlowing) {
  Harness h(256, 8, 16, 8, SchedulerOptions{});
  std::vector<StepRecord> records;
  h.scheduler->set_step_observer([&](const StepRecord& r) { records.push_back(r); });
  const uint64_t short_id = *h.scheduler->Submit(h.Request({1, 2}, 30));
  h.scheduler->Step();
  std::vector<int32_t> long_prompt(100, 7);
  ASSERT_TRUE(h.scheduler->Submit(h.Request(long_prompt, 2)).ok());
  h.RunUntilIdle();
  // Every step while the long prompt was prefilled also carried the short request's decode.
  int mixed = 0;
  for (const StepRecord& r : records) {
    EXPECT_LE(r.tokens, 16);
    mixed += r.prefill_tokens > 0 && r.decode_tokens > 0;
  }
  EXPECT_GE(mixed, 100 / 16);
  EXPECT_EQ(h.recorder.logs[short_id].tokens.size(), 30u);
}

TEST(SchedulerTest, ReusesCachedPrefixBlocksOfTheSameAdapterOnly) {
  Harness h(64, 4, 64, 8, SchedulerOptions{});
  auto a = MakeAdapter("a"), b = MakeAdapter("b"), a2 = MakeAdapter("a", 2);
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  const uint64_t first = *h.scheduler->Submit(h.Request(prompt, 3, a));
  h.RunUntilIdle();
  const uint64_t again = *h.scheduler->Submit(h.Request(prompt, 3, a));
  const uint64_t other = *h.scheduler->Submit(h.Request(prompt, 3, b));
  const uint64_t swapped = *h.scheduler->Submit(h.Request(prompt, 3, a2));
  h.RunUntilIdle();
  EXPECT_EQ(h.recorder.logs[first].usage.cached_prompt_tokens, 0);
  EXPECT_EQ(h.recorder.logs[again].usage.cached_prompt_tokens, 8);  // two full blocks of 4
  EXPECT_EQ(h.recorder.logs[other].usage.cached_prompt_tokens, 0);
  EXPECT_EQ(h.recorder.logs[swapped].usage.cached_prompt_tokens, 0);
  EXPECT_EQ(h.recorder.logs[again].tokens, h.recorder.logs[first].tokens);
  EXPECT_THAT(h.executor->violations(), ::testing::IsEmpty());
  const SchedulerStats s = h.scheduler->stats();
  EXPECT_EQ(s.prefix_query_tokens, 44);
  EXPECT_EQ(s.prefix_hit_tokens, 8);
}

// The prefix cache keys on the whole mixture: members, their versions and weights, in order.
TEST(SchedulerTest, ReusesCachedPrefixBlocksOfTheSameMixtureOnly) {
  Harness h(128, 4, 64, 8, SchedulerOptions{});
  auto a = MakeAdapter("a"), b = MakeAdapter("b"), b2 = MakeAdapter("b", 2);
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  const auto submit = [&](std::vector<MixtureMember> mixture) {
    GenerationRequest r = h.Request(prompt, 3);
    r.mixture = std::move(mixture);
    return *h.scheduler->Submit(std::move(r));
  };
  const uint64_t first = submit({{a, 0.5f}, {b, 0.5f}});
  h.RunUntilIdle();
  const uint64_t again = submit({{a, 0.5f}, {b, 0.5f}});
  const uint64_t weights = submit({{a, 0.5f}, {b, 0.25f}});
  const uint64_t order = submit({{b, 0.5f}, {a, 0.5f}});
  const uint64_t version = submit({{a, 0.5f}, {b2, 0.5f}});
  const uint64_t member = *h.scheduler->Submit(h.Request(prompt, 3, a));
  h.RunUntilIdle();
  const uint64_t scaled = submit({{a, 1.0f}});  // the adapter itself: shares its cache
  h.RunUntilIdle();
  EXPECT_EQ(h.recorder.logs[again].usage.cached_prompt_tokens, 8);
  EXPECT_EQ(h.recorder.logs[again].tokens, h.recorder.logs[first].tokens);
  for (uint64_t id : {weights, order, version, member}) {
    EXPECT_EQ(h.recorder.logs[id].usage.cached_prompt_tokens, 0) << id;
    EXPECT_EQ(h.recorder.logs[id].finishes, 1) << id;
  }
  EXPECT_EQ(h.recorder.logs[scaled].usage.cached_prompt_tokens, 8);
  EXPECT_EQ(h.recorder.logs[scaled].tokens, h.recorder.logs[member].tokens);
  // What the fake engine predicts for that mixture, computed alone.
  SamplingParams greedy;
  greedy.temperature = 0;
  const std::vector<AdapterMember> mix = {{a.get(), 0.5f}, {b.get(), 0.5f}};
  Sampler sampler(greedy, prompt, 0);
  std::vector<int32_t> context = prompt, want;
  std::vector<float> logits(kVocab);
  for (int i = 0; i < 3; ++i) {
    ContextLogits(FakeExecutor::ContextHash(context, mix), kVocab, logits.data());
    want.push_back(sampler.Sample(logits).token);
    context.push_back(want.back());
    if (want.back() == kEos) break;
  }
  EXPECT_EQ(h.recorder.logs[first].tokens, want);
  EXPECT_THAT(h.executor->violations(), ::testing::IsEmpty());
}

// A mixture runs only when every member may run in the step; its members share its age, so with
// a cap of two adapters per step neither it nor the single-adapter stream starves.
TEST(SchedulerTest, AMixtureRunsWithAllItsMembersAndIsNotStarved) {
  SchedulerOptions options;
  options.max_adapters_per_step = 2;
  Harness h(512, 8, 64, 32, options);
  auto a = MakeAdapter("a"), b = MakeAdapter("b"), c = MakeAdapter("c");
  std::vector<StepRecord> records;
  h.scheduler->set_step_observer([&](const StepRecord& r) { records.push_back(r); });
  GenerationRequest stream = h.Request({1, 2, 3}, 10, c);
  stream.ignore_eos = true;
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(h.scheduler->Submit(stream).ok());
  ++h.recorder.step;
  h.scheduler->Step();
  GenerationRequest mixed = h.Request({4, 5, 6}, 5);
  mixed.ignore_eos = true;
  mixed.mixture = {{a, 0.5f}, {b, 0.5f}};
  const uint64_t mixed_id = *h.scheduler->Submit(mixed);
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(h.scheduler->Submit(stream).ok());
    ++h.recorder.step;
    h.scheduler->Step();
    ASSERT_TRUE(h.scheduler->CheckInvariants().ok());
  }
  h.RunUntilIdle();
  EXPECT_EQ(h.recorder.logs[mixed_id].finishes, 1);
  EXPECT_EQ(h.recorder.logs[mixed_id].tokens.size(), 5u);
  EXPECT_LE(h.recorder.logs[mixed_id].first_event_step, 12);  // after the four older requests
  for (const StepRecord& r : records) EXPECT_LE(r.distinct_adapters, 2);
}

TEST(SchedulerTest, RefusesMalformedMixturesNamingTheMember) {
  SchedulerOptions options;
  options.max_adapters_per_step = 3;
  Harness h(64, 4, 64, 8, options);
  auto a = MakeAdapter("a"), b = MakeAdapter("b");
  const auto error = [&](std::vector<MixtureMember> mixture,
                         std::shared_ptr<const AdapterWeights> adapter = nullptr) {
    GenerationRequest r = h.Request({1, 2, 3}, 3, std::move(adapter));
    r.mixture = std::move(mixture);
    auto id = h.scheduler->Submit(std::move(r));
    EXPECT_FALSE(id.ok());
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
    return id.ok() ? std::string() : std::string(id.status().message());
  };
  EXPECT_THAT(error({{a, 0.5f}, {a, 0.5f}}), HasSubstr("\"a\" is named twice"));
  EXPECT_THAT(error({{a, 1.0f}, {b, std::numeric_limits<float>::infinity()}}),
              HasSubstr("adapters[1]: weight"));
  EXPECT_THAT(error({{a, 1.0f}, {b, 101.0f}}), HasSubstr("outside [-100, 100]"));
  EXPECT_THAT(error({{a, 1.0f}, {nullptr, 1.0f}}), HasSubstr("adapters[1]: no adapter"));
  EXPECT_THAT(error({{a, 1.0f}}, b), HasSubstr("not both"));
  auto c = MakeAdapter("c"), d = MakeAdapter("d");
  EXPECT_THAT(error({{a, 1.0f}, {b, 1.0f}, {c, 1.0f}, {d, 1.0f}}),
              HasSubstr("at most 3 (max_adapters_per_step)"));
  // A valid one still runs.
  GenerationRequest r = h.Request({1, 2, 3}, 3);
  r.mixture = {{a, -0.5f}, {b, 1.5f}};
  ASSERT_TRUE(h.scheduler->Submit(std::move(r)).ok());
  h.RunUntilIdle();
}

TEST(SchedulerTest, CancellationAndDeadlinesTakeEffectWithinAStep) {
  Harness h(64, 4, 64, 8, SchedulerOptions{});
  GenerationRequest r = h.Request({1, 2, 3}, 50);
  r.ignore_eos = true;
  const uint64_t cancelled = *h.scheduler->Submit(r);
  r.deadline = h.clock + absl::Milliseconds(5);
  const uint64_t timed = *h.scheduler->Submit(r);
  for (int i = 0; i < 3; ++i) h.scheduler->Step();
  h.scheduler->Cancel(cancelled);
  h.scheduler->Step();
  EXPECT_EQ(h.recorder.logs[cancelled].reason, FinishReason::kCancelled);
  EXPECT_EQ(h.recorder.logs[cancelled].tokens.size(), 3u);
  for (int i = 0; i < 2; ++i) h.scheduler->Step();  // the fake clock moves 1 ms a step
  EXPECT_EQ(h.recorder.logs[timed].reason, FinishReason::kDeadline);
  EXPECT_EQ(h.recorder.logs[timed].tokens.size(), 5u);
  EXPECT_EQ(h.scheduler->stats().kv_blocks_used, 0);
  h.scheduler->Cancel(12345);  // unknown: nothing happens
  h.RunUntilIdle();
}

// A request's life under memory pressure passes through waiting, prefill chunks, decoding,
// preemption and recomputation. Cancelling it at every step of that life, or swapping its adapter
// for a new version at every step, must leave it and its neighbours exact and free everything.
TEST(SchedulerTest, CancellationOrASwapAtEveryPointOfARequestsLife) {
  const auto v1 = MakeAdapter("a", 1), v2 = MakeAdapter("a", 2);
  const auto life = [&](int64_t event_step, bool swap) {
    SchedulerOptions options;
    Harness h(10, 4, 8, 4, options);  // 10 blocks of 4, 8 tokens a step: chunks and preemption
    std::vector<GenerationRequest> sent;
    for (int i = 0; i < 3; ++i) {
      std::vector<int32_t> prompt = {1 + i, 2, 3, 4, 5, 6, 7, 8, 9, 10};
      GenerationRequest r = h.Request(prompt, 10, v1);
      r.ignore_eos = true;
      sent.push_back(r);
    }
    std::vector<uint64_t> ids;
    for (const GenerationRequest& r : sent) ids.push_back(*h.scheduler->Submit(r));
    const uint64_t tracked = ids[1];
    int64_t preemptions_seen = 0;
    for (int64_t step = 0; h.scheduler->HasWork(); ++step) {
      if (step == event_step) {
        if (swap) {  // the new version serves new requests; the running ones keep the old
          GenerationRequest r = h.Request(sent[1].prompt, 10, v2);
          r.ignore_eos = true;
          sent.push_back(r);
          ids.push_back(*h.scheduler->Submit(r));
        } else {
          h.scheduler->Cancel(tracked);
        }
      }
      ++h.recorder.step;
      h.scheduler->Step();
      preemptions_seen = std::max(preemptions_seen, h.scheduler->stats().preemptions);
      const absl::Status inv = h.scheduler->CheckInvariants();
      if (!inv.ok())
        return absl::Status(inv.code(), absl::StrCat("step ", step, ": ", inv.message()));
      if (step > 10000) return absl::InternalError("no progress");
    }
    for (size_t i = 0; i < ids.size(); ++i) {
      const Recorder::Log& log = h.recorder.logs[ids[i]];
      const std::vector<int32_t> alone =
          RunAlone(sent[i].prompt, sent[i].adapter.get(), sent[i].sampling, 10, false);
      EXPECT_EQ(log.finishes, 1) << "request " << ids[i] << ", event at step " << event_step;
      if (log.reason == FinishReason::kCancelled) {
        EXPECT_TRUE(!swap && ids[i] == tracked);
        EXPECT_TRUE(std::equal(log.tokens.begin(), log.tokens.end(), alone.begin()));
      } else {
        EXPECT_EQ(log.tokens, alone) << "request " << ids[i] << ", event at step " << event_step;
      }
    }
    if (swap) {
      EXPECT_NE(h.recorder.logs[ids.back()].tokens, h.recorder.logs[tracked].tokens)
          << "the versions must be told apart";
    }
    const SchedulerStats stats = h.scheduler->stats();
    EXPECT_EQ(stats.outstanding, 0);
    EXPECT_EQ(stats.kv_blocks_used, 0);
    return preemptions_seen > 0 ? absl::OkStatus() : absl::FailedPreconditionError("no preemption");
  };
  int with_preemption = 0;
  for (int64_t k = 0; k < 40; ++k) {
    for (bool swap : {false, true}) {
      const absl::Status s = life(k, swap);
      if (absl::IsInternal(s)) ADD_FAILURE() << s;
      with_preemption += s.ok();
    }
  }
  EXPECT_GT(with_preemption, 20) << "the scenario must go through preemption";
}

TEST(SchedulerTest, RefusesBadRequestsNamingTheField) {
  SchedulerOptions options;
  options.max_waiting = 2;
  Harness h(16, 4, 64, 8, options);  // context: 64 tokens
  const auto refuse = [&](GenerationRequest r, absl::StatusCode code, const std::string& what) {
    absl::StatusOr<uint64_t> id = h.scheduler->Submit(std::move(r));
    ASSERT_FALSE(id.ok()) << what;
    EXPECT_EQ(id.status().code(), code) << id.status();
    EXPECT_THAT(std::string(id.status().message()), HasSubstr(what));
  };
  refuse(h.Request({}, 4), absl::StatusCode::kInvalidArgument, "prompt");
  refuse(h.Request({1, kVocab}, 4), absl::StatusCode::kInvalidArgument, "outside the vocabulary");
  refuse(h.Request({1, 2}, 63), absl::StatusCode::kInvalidArgument, "exceeds the context length");
  refuse(h.Request(std::vector<int32_t>(64, 1), -1), absl::StatusCode::kInvalidArgument, "no room");
  refuse(h.Request({1}, 0), absl::StatusCode::kInvalidArgument, "max_tokens");
  GenerationRequest r = h.Request({1}, 4);
  r.sampling.top_p = 0;
  refuse(r, absl::StatusCode::kInvalidArgument, "top_p");
  r = h.Request({1}, 4);
  r.stop_strings = {"x"};
  refuse(r, absl::StatusCode::kInvalidArgument, "stop");
  r = h.Request({1}, 4);
  r.sink = nullptr;
  refuse(r, absl::StatusCode::kInvalidArgument, "sink");
  // The queue bound: two wait, the third is refused at once.
  ASSERT_TRUE(h.scheduler->Submit(h.Request({1}, 4)).ok());
  ASSERT_TRUE(h.scheduler->Submit(h.Request({1}, 4)).ok());
  refuse(h.Request({1}, 4), absl::StatusCode::kResourceExhausted, "queue is full");
  h.scheduler->Step();  // both admitted: room again
  EXPECT_TRUE(h.scheduler->Submit(h.Request({1}, 4)).ok());
  h.RunUntilIdle();
}

TEST(SchedulerTest, StaticBatchingRunsEachBatchToTheEnd) {
  SchedulerOptions options;
  options.static_batching = true;
  Harness h(256, 8, 64, 4, options);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 6; ++i) {
    GenerationRequest r = h.Request({1, 2, static_cast<int32_t>(3 + i)}, 4 + 4 * (i % 2));
    r.ignore_eos = true;
    ids.push_back(*h.scheduler->Submit(r));
  }
  h.RunUntilIdle();
  // The fifth request starts only after the whole first batch (longest: 8 tokens) is done.
  EXPECT_GT(h.recorder.logs[ids[4]].first_event_step, h.recorder.logs[ids[1]].first_event_step + 6);
}

TEST(SchedulerTest, EngineThreadServesConcurrentClientsAndShutsDownCleanly) {
  FakeExecutor executor(128, 8, kVocab, 64, 16, nullptr);
  SchedulerOptions options;
  options.eos_token_ids = {kEos};
  auto scheduler = *Scheduler::Create(&executor, nullptr, options);
  scheduler->Start();
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937_64 rng(c);
      for (int i = 0; i < 25; ++i) {
        auto queue = std::make_shared<EventQueue>();
        GenerationRequest r;
        r.prompt = Tokens(rng, 1 + static_cast<int>(rng() % 30));
        r.max_tokens = 1 + static_cast<int64_t>(rng() % 20);
        r.sampling.temperature = 0;
        r.sink = queue;
        const std::vector<int32_t> want =
            RunAlone(r.prompt, nullptr, r.sampling, r.max_tokens, true);
        ASSERT_TRUE(scheduler->Submit(std::move(r)).ok());
        std::vector<int32_t> got;
        for (;;) {
          std::optional<RequestEvent> e = queue->Next(absl::Seconds(30));
          ASSERT_TRUE(e.has_value()) << "no event within 30 s";
          got.insert(got.end(), e->tokens.begin(), e->tokens.end());
          if (e->finished()) break;
        }
        EXPECT_EQ(got, want);
        ok += got == want;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 100);
  // Shutdown cancels what is still running once the grace period ends, then refuses new work.
  auto queue = std::make_shared<EventQueue>();
  GenerationRequest r;
  r.prompt = {1, 2, 3};
  r.ignore_eos = true;
  r.sink = queue;
  ASSERT_TRUE(scheduler->Submit(r).ok());
  scheduler->Shutdown(absl::ZeroDuration());
  std::optional<RequestEvent> last;
  while (std::optional<RequestEvent> e = queue->TryNext()) last = std::move(e);
  ASSERT_TRUE(last.has_value());
  EXPECT_TRUE(last->finished());
  EXPECT_EQ(scheduler->Submit(r).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace switchyard

// The scheduler over the real CPU engine: many concurrent requests of mixed adapters, with shared
// prefixes, chunked prefill and a KV cache too small for all of them (so some are preempted and
// recomputed), produce exactly the tokens each produces alone.
#include <random>

#include "engine/adapters/loader.h"
#include "gtest/gtest.h"
#include "server/scheduler/scheduler.h"
#include "tests/unit/test_util.h"

namespace switchyard {
namespace {

class CollectingSink final : public RequestSink {
 public:
  void Deliver(RequestEvent e) override {
    tokens.insert(tokens.end(), e.tokens.begin(), e.tokens.end());
    if (e.finished()) {
      ++finishes;
      reason = e.finish;
      usage = e.usage;
      routing = e.routing;
    }
  }
  std::vector<RequestRouting> routing;
  std::vector<int32_t> tokens;
  int finishes = 0;
  FinishReason reason = FinishReason::kNone;
  RequestUsage usage;
};

class SchedulerEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* adapters = std::getenv("SWITCHYARD_TEST_ADAPTERS");
    if (TinyModelDir().empty() || adapters == nullptr) GTEST_SKIP() << "test fixtures not set";
    EngineOptions options;
    options.model_dir = TinyModelDir();
    options.block_size = 8;
    // 3 layers x 2 KV heads x 16 dims x 8 tokens x K,V x BF16 (the cache's default type for this
    // BF16 model) = 3 KiB a block; 40 blocks.
    options.kv_cache_bytes = 40 * 3072;
    auto engine = Engine::Create(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    ASSERT_EQ((*engine)->num_kv_blocks(), 40);
    engine_ = std::move(*engine);
    executor_ = MakeEngineExecutor(*engine_);
    for (const char* name : {"lora", "loramoe", "mhmoe", "mixlora"}) {
      auto a = engine_->LoadAdapter(std::string(adapters) + "/" + name);
      ASSERT_TRUE(a.ok()) << name << ": " << a.status();
      (*a)->name = name;
      adapters_.push_back(std::shared_ptr<const AdapterWeights>(std::move(*a)));
    }
    adapters_.push_back(nullptr);
  }

  std::unique_ptr<Scheduler> NewScheduler() {
    SchedulerOptions options;
    options.max_batch_tokens = 48;
    options.max_batch_seqs = 16;
    options.max_adapters_per_step = 3;
    auto s = Scheduler::Create(executor_.get(), nullptr, options);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }

  static void RunToEnd(Scheduler& s) {
    for (int i = 0; i < 100000 && s.HasWork(); ++i) {
      s.Step();
      ASSERT_TRUE(s.CheckInvariants().ok()) << s.CheckInvariants();
    }
  }

  std::unique_ptr<Engine> engine_;
  std::unique_ptr<StepExecutor> executor_;
  std::vector<std::shared_ptr<const AdapterWeights>> adapters_;
};

TEST_F(SchedulerEngineTest, ConcurrentRequestsMatchTheirAloneRuns) {
  std::mt19937 rng(11);
  std::vector<int32_t> shared_prefix(24);
  for (int32_t& t : shared_prefix) t = static_cast<int32_t>(rng() % 1000);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 14; ++i) {
    GenerationRequest r;
    if (i % 5 == 0 || i % 5 == 4) r.prompt = shared_prefix;  // lora and base requests
    for (int n = 5 + static_cast<int>(rng() % 30); n > 0; --n) {
      r.prompt.push_back(static_cast<int32_t>(rng() % 1000));
    }
    r.adapter = adapters_[i % adapters_.size()];
    r.max_tokens = 16 + i % 5;
    r.ignore_eos = true;
    r.record_routing = true;
    if (i % 3 == 0) {
      r.sampling.temperature = 0;
    } else {
      r.sampling.temperature = 0.9f;
      r.sampling.top_k = 40;
      r.sampling.seed = 1000 + i;
    }
    requests.push_back(r);
  }

  std::vector<std::vector<int32_t>> alone;
  for (const GenerationRequest& r : requests) {
    auto scheduler = NewScheduler();
    auto sink = std::make_shared<CollectingSink>();
    GenerationRequest copy = r;
    copy.sink = sink;
    ASSERT_TRUE(scheduler->Submit(std::move(copy)).ok());
    RunToEnd(*scheduler);
    ASSERT_EQ(sink->finishes, 1);
    alone.push_back(sink->tokens);
  }

  auto scheduler = NewScheduler();
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (const GenerationRequest& r : requests) {
    sinks.push_back(std::make_shared<CollectingSink>());
    GenerationRequest copy = r;
    copy.sink = sinks.back();
    ASSERT_TRUE(scheduler->Submit(std::move(copy)).ok());
  }
  RunToEnd(*scheduler);
  int preempted = 0, cached = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(sinks[i]->finishes, 1);
    EXPECT_EQ(sinks[i]->reason, FinishReason::kLength);
    EXPECT_EQ(sinks[i]->tokens, alone[i]) << "request " << i;
    preempted += sinks[i]->usage.preemptions > 0;
    // Every token computed once (prompt and all but the last output token), top-2 of 4 experts
    // in each MixLoRA block, however often the request was preempted and recomputed.
    if (requests[i].adapter != nullptr && requests[i].adapter->name == "mixlora") {
      const int64_t computed =
          static_cast<int64_t>(requests[i].prompt.size()) + requests[i].max_tokens - 1;
      int blocks = 0;
      for (const RequestRouting& r : sinks[i]->routing) {
        if (r.site != kFfnBlockSite) continue;
        ++blocks;
        ASSERT_EQ(r.expert_tokens.size(), 4u);
        int64_t total = 0;
        for (int64_t n : r.expert_tokens) total += n;
        EXPECT_EQ(total, 2 * computed) << "request " << i << " layer " << r.layer;
      }
      EXPECT_EQ(blocks, 3);
    } else if (requests[i].adapter == nullptr) {
      EXPECT_TRUE(sinks[i]->routing.empty());
    }
    cached += sinks[i]->usage.cached_prompt_tokens > 0;
  }
  EXPECT_GT(preempted, 0) << "the test should put the KV cache under pressure";
  EXPECT_GT(cached, 0) << "the shared prefix should come from the cache";
  EXPECT_EQ(scheduler->stats().kv_blocks_used, 0);
}

// An adapter unload refuses while requests hold the adapter, and callers wait for `outstanding`
// to reach zero before retrying: by then no finished request may still hold a reference, whether
// it finished by length, by cancellation or straight from the waiting queue.
TEST_F(SchedulerEngineTest, FinishedRequestsReleaseTheirAdapterAtOnce) {
  auto scheduler = NewScheduler();
  const std::shared_ptr<const AdapterWeights>& adapter = adapters_[3];
  const long base_count = adapter.use_count();
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) {
    GenerationRequest r;
    r.prompt = {1, 2, 3, 4, 5};
    r.adapter = adapter;
    r.max_tokens = i == 0 ? 2 : 200;
    r.ignore_eos = true;
    r.sink = std::make_shared<CollectingSink>();
    auto id = scheduler->Submit(std::move(r));
    ASSERT_TRUE(id.ok()) << id.status();
    ids.push_back(*id);
  }
  EXPECT_EQ(scheduler->stats().outstanding, 3);
  EXPECT_EQ(adapter.use_count(), base_count + 3);
  scheduler->Cancel(ids[2]);  // still in the inbox
  for (int i = 0; i < 4; ++i) scheduler->Step();
  EXPECT_EQ(scheduler->stats().outstanding, 1);  // the first ran out of tokens
  EXPECT_EQ(adapter.use_count(), base_count + 1);
  scheduler->Cancel(ids[1]);  // running
  scheduler->Step();
  EXPECT_EQ(scheduler->stats().outstanding, 0);
  EXPECT_EQ(adapter.use_count(), base_count);
  EXPECT_FALSE(scheduler->HasWork());
}

}  // namespace
}  // namespace switchyard

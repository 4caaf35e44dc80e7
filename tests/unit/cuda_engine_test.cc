// The whole model on the CUDA engine against the CPU engine: a ragged prefill of three sequences
// then greedy decoding, on an F32 model (logits within 1e-3 of the largest, identical tokens) and
// on the BF16 test model (the GPU rounds activations to BF16 for BF16 weights: logits within 5e-2,
// the bound of that rounding on this model); with each MoE-LoRA family on the F32 model, alone and
// 16 adapters mixed in one batch, and with an adapter replaced mid-run (logits within 1e-3,
// identical routing decisions and greedy tokens). Skips where no GPU is visible.
#include <cmath>
#include <cstdlib>
#include <functional>

#include "engine/backends/cuda/cuda_backend.h"
#include "engine/engine.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"

namespace switchyard {
namespace {

std::unique_ptr<Engine> MakeEngine(const std::string& dir, Device device) {
  EngineOptions o;
  o.model_dir = dir;
  o.device = device;
  o.kv_cache_bytes = 8 << 20;
  o.block_size = 8;
  auto e = Engine::Create(o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

// Runs a ragged prefill of `n` sequences as one step, then `steps` greedy decode steps, on one
// engine; returns every step's logits (copied), the sampled tokens and the routing decisions.
// adapter_at(step, i) is sequence i's adapter at that step (null: the base model).
struct Run {
  std::vector<std::vector<float>> logits;
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<int16_t>> decisions;  // (token, layer, site, head, experts...) per row
};
using AdapterAt = std::function<const AdapterWeights*(int step, int seq)>;
Run Generate(Engine& e, int steps, int n = 3, const AdapterAt& adapter_at = nullptr) {
  std::vector<std::vector<int32_t>> seqs = {
      {1, 5, 9, 200, 31}, {7}, {3, 3, 3, 100, 101, 102, 103, 104, 105, 106, 107, 12, 13}};
  for (int i = 3; i < n; ++i) seqs.push_back({static_cast<int32_t>(11 + i), 40, 2 * i + 1});
  seqs.resize(static_cast<size_t>(n));
  std::vector<std::vector<int32_t>> tables(n);
  for (int i = 0; i < n; ++i) {
    for (int b = 0; b < 5; ++b) tables[i].push_back(i * 5 + b);
  }
  std::vector<int64_t> cached(n, 0);
  Run run;
  run.tokens.resize(n);
  const int64_t vocab = e.config().vocab_size;
  for (int step = 0; step <= steps; ++step) {
    StepBatch b;
    for (int i = 0; i < n; ++i) {
      const int64_t m = static_cast<int64_t>(seqs[i].size()) - cached[i];
      b.tokens.insert(b.tokens.end(), seqs[i].begin() + cached[i], seqs[i].end());
      const AdapterWeights* a = adapter_at ? adapter_at(step, i) : nullptr;
      b.sequences.push_back({cached[i], m, tables[i], true, a, a != nullptr});
    }
    auto out = e.Step(b);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return run;
    for (const RoutingDecision& d : out->routing.decisions) {
      std::vector<int16_t> row = {static_cast<int16_t>(d.token), d.layer, d.site, d.head};
      row.insert(row.end(), d.experts.begin(), d.experts.end());
      run.decisions.push_back(std::move(row));
    }
    for (int i = 0; i < n; ++i) {
      const float* row = out->logits.data<float>() + i * vocab;
      run.logits.emplace_back(row, row + vocab);
      const int32_t next = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      cached[i] = static_cast<int64_t>(seqs[i].size());
      seqs[i].push_back(next);
      run.tokens[i].push_back(next);
    }
  }
  return run;
}

void ExpectClose(const Run& cpu, const Run& gpu, double rel, bool same_tokens) {
  ASSERT_EQ(cpu.logits.size(), gpu.logits.size());
  for (size_t r = 0; r < cpu.logits.size(); ++r) {
    double scale = 0;
    for (float v : cpu.logits[r]) scale = std::max(scale, std::fabs(double{v}));
    for (size_t i = 0; i < cpu.logits[r].size(); ++i) {
      ASSERT_NEAR(cpu.logits[r][i], gpu.logits[r][i], rel * scale) << "row " << r << " id " << i;
    }
  }
  if (same_tokens) {
    EXPECT_EQ(cpu.tokens, gpu.tokens);
    EXPECT_EQ(cpu.decisions, gpu.decisions);
  }
}

class CudaEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    if (TinyModelDir().empty()) GTEST_SKIP() << "test model not set";
  }
};

TEST_F(CudaEngineTest, F32ModelMatchesTheCpuEngine) {
  const char* dir = std::getenv("SWITCHYARD_TEST_MODEL_F32");
  ASSERT_NE(dir, nullptr);
  auto cpu = MakeEngine(dir, Device::kCpu), gpu = MakeEngine(dir, Device::kCuda);
  ASSERT_TRUE(cpu && gpu);
  ExpectClose(Generate(*cpu, 24), Generate(*gpu, 24), 1e-3, /*same_tokens=*/true);
}

TEST_F(CudaEngineTest, Bf16ModelWithinActivationRounding) {
  auto cpu = MakeEngine(TinyModelDir(), Device::kCpu);
  auto gpu = MakeEngine(TinyModelDir(), Device::kCuda);
  ASSERT_TRUE(cpu && gpu);
  ExpectClose(Generate(*cpu, 4), Generate(*gpu, 4), 5e-2, /*same_tokens=*/false);
}

// Both engines on the F32 model with the same adapters loaded into each.
struct EnginePair {
  std::unique_ptr<Engine> cpu, gpu;
  std::vector<std::unique_ptr<AdapterWeights>> cpu_adapters, gpu_adapters;
  void Load(const std::string& name) {
    const char* dir = std::getenv("SWITCHYARD_TEST_ADAPTERS");
    ASSERT_NE(dir, nullptr);
    for (auto [engine, list] : {std::pair{cpu.get(), &cpu_adapters}, {gpu.get(), &gpu_adapters}}) {
      auto a = engine->LoadAdapter(std::string(dir) + "/" + name);
      ASSERT_TRUE(a.ok()) << name << ": " << a.status();
      list->push_back(std::move(*a));
    }
  }
};

EnginePair MakePair() {
  const char* dir = std::getenv("SWITCHYARD_TEST_MODEL_F32");
  EXPECT_NE(dir, nullptr);
  return {MakeEngine(dir, Device::kCpu), MakeEngine(dir, Device::kCuda), {}, {}};
}

const std::vector<std::string> kFamilies = {"mixlora", "loramoe", "mhmoe", "lora", "mixlora_dead"};

TEST_F(CudaEngineTest, EachAdapterFamilyMatchesTheCpuEngine) {
  for (const std::string& family : kFamilies) {
    SCOPED_TRACE(family);
    EnginePair p = MakePair();
    ASSERT_TRUE(p.cpu && p.gpu);
    ASSERT_NO_FATAL_FAILURE(p.Load(family));
    // Sequence 1 runs on the base model beside the adapter's two.
    const auto on = [](const std::vector<std::unique_ptr<AdapterWeights>>& list) {
      return [&list](int, int i) { return i == 1 ? nullptr : list[0].get(); };
    };
    ExpectClose(Generate(*p.cpu, 8, 3, on(p.cpu_adapters)),
                Generate(*p.gpu, 8, 3, on(p.gpu_adapters)), 1e-3, /*same_tokens=*/true);
  }
}

TEST_F(CudaEngineTest, SixteenAdaptersMixedInOneBatchMatchTheCpuEngine) {
  EnginePair p = MakePair();
  ASSERT_TRUE(p.cpu && p.gpu);
  for (int i = 0; i < 16; ++i) ASSERT_NO_FATAL_FAILURE(p.Load(kFamilies[i % kFamilies.size()]));
  const auto each = [](const std::vector<std::unique_ptr<AdapterWeights>>& list) {
    return [&list](int, int i) { return list[i].get(); };
  };
  ExpectClose(Generate(*p.cpu, 6, 16, each(p.cpu_adapters)),
              Generate(*p.gpu, 6, 16, each(p.gpu_adapters)), 1e-3, /*same_tokens=*/true);
}

TEST_F(CudaEngineTest, AnAdapterReplacedMidRunMatchesTheCpuEngine) {
  EnginePair p = MakePair();
  ASSERT_TRUE(p.cpu && p.gpu);
  ASSERT_NO_FATAL_FAILURE(p.Load("mixlora"));
  ASSERT_NO_FATAL_FAILURE(p.Load("loramoe"));
  // Sequences 0-3 keep the first version throughout; 4-7 move to the second at step 3 (as a hot
  // swap serves new requests), so both versions share steps.
  const auto swap = [](const std::vector<std::unique_ptr<AdapterWeights>>& list) {
    return [&list](int step, int i) { return list[i >= 4 && step >= 3 ? 1 : 0].get(); };
  };
  ExpectClose(Generate(*p.cpu, 8, 8, swap(p.cpu_adapters)),
              Generate(*p.gpu, 8, 8, swap(p.gpu_adapters)), 1e-3, /*same_tokens=*/true);
}

}  // namespace
}  // namespace switchyard

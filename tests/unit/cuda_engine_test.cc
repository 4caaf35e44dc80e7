// The whole model on the CUDA engine against the CPU engine: a ragged prefill of three sequences
// then greedy decoding, on an F32 model (logits within 1e-3 of the largest, identical tokens) and
// on the BF16 test model (the GPU rounds activations to BF16 for BF16 weights: logits within 5e-2,
// the bound of that rounding on this model). Adapters are refused on CUDA with a clear error.
// Skips where no GPU is visible.
#include <cmath>
#include <cstdlib>

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

// Runs prompts of three sequences as one prefill step and `steps` greedy decode steps on one
// engine; returns every step's logits (copied) and the sampled tokens.
struct Run {
  std::vector<std::vector<float>> logits;
  std::vector<std::vector<int32_t>> tokens;
};
Run Generate(Engine& e, int steps) {
  const std::vector<std::vector<int32_t>> prompts = {
      {1, 5, 9, 200, 31}, {7}, {3, 3, 3, 100, 101, 102, 103, 104, 105, 106, 107, 12, 13}};
  std::vector<std::vector<int32_t>> tables = {{0, 1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12, 13}};
  std::vector<std::vector<int32_t>> seqs = prompts;
  std::vector<int64_t> cached(3, 0);
  Run run;
  run.tokens.resize(3);
  const int64_t vocab = e.config().vocab_size;
  for (int step = 0; step <= steps; ++step) {
    StepBatch b;
    for (int i = 0; i < 3; ++i) {
      const int64_t n = static_cast<int64_t>(seqs[i].size()) - cached[i];
      b.tokens.insert(b.tokens.end(), seqs[i].begin() + cached[i], seqs[i].end());
      b.sequences.push_back({cached[i], n, tables[i], true});
    }
    auto out = e.Step(b);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return run;
    for (int i = 0; i < 3; ++i) {
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
  if (same_tokens) EXPECT_EQ(cpu.tokens, gpu.tokens);
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

TEST_F(CudaEngineTest, AdaptersAreRefusedWithAClearError) {
  auto gpu = MakeEngine(TinyModelDir(), Device::kCuda);
  ASSERT_TRUE(gpu);
  const char* adapters = std::getenv("SWITCHYARD_TEST_ADAPTERS");
  auto a = gpu->LoadAdapter(std::string(adapters ? adapters : "/nonexistent") + "/mixlora");
  EXPECT_EQ(a.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(a.status().message().find("--device=cpu"), std::string::npos);
}

}  // namespace
}  // namespace switchyard

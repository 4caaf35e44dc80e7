// The CUDA backend op by op against the CPU backend, over ragged shapes: every op of
// engine/backends/backend.h (the MoE-LoRA ops as the chain of moe_ops_scenario.h: identical
// selections, sort and inverse, statistics counts; sums within 1e-5), F32 within 1e-5 relative
// (attention and transcendental ops 1e-4), BF16/F16 GEMMs within the rounding of their activations.
// Skips where no GPU is visible.
#include "engine/backends/cuda/cuda_backend.h"

#include <cmath>
#include <random>

#include "engine/backends/cpu/cpu_backend.h"
#include "engine/core/dtype.h"
#include "gtest/gtest.h"
#include "tests/unit/moe_ops_scenario.h"

namespace switchyard {
namespace {

// An F32 tensor in `to` (F32, F16 or BF16), and back.
Tensor Cast(const Tensor& t, DType to) {
  Tensor out = Tensor::Empty(to, t.shape());
  if (t.dtype() != DType::kF32) {
    SY_CHECK(to == DType::kF32);
    ConvertToF32(t.dtype(), t.raw(), out.data<float>(), static_cast<size_t>(t.numel()));
    return out;
  }
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float f = t.data<float>()[i];
    if (to == DType::kBF16) {
      out.data<uint16_t>()[i] = F32ToBF16(f);
    } else if (to == DType::kF16) {
      out.data<uint16_t>()[i] = F32ToF16(f);
    } else {
      out.data<float>()[i] = f;
    }
  }
  return out;
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    cpu_ = CreateCpuBackend({});
    auto gpu = CreateCudaBackend(0);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    gpu_ = std::move(*gpu);
  }

  Tensor Random(const Shape& shape, float scale = 1.0f) {
    Tensor t = Tensor::Empty(DType::kF32, shape);
    std::normal_distribution<float> n(0.0f, scale);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = n(rng_);
    return t;
  }
  static Tensor Ints(const std::vector<int32_t>& v) {
    Tensor t = Tensor::Empty(DType::kI32, {static_cast<int64_t>(v.size())});
    std::copy(v.begin(), v.end(), t.data<int32_t>());
    return t;
  }
  Tensor Up(const Tensor& host) {
    auto t = gpu_->Upload(host);
    EXPECT_TRUE(t.ok()) << t.status();
    return *t;
  }
  Tensor Down(const Tensor& dev) {
    EXPECT_TRUE(gpu_->Synchronize().ok());
    Tensor host = Tensor::Empty(dev.dtype(), dev.shape());
    EXPECT_TRUE(gpu_->CopyToHost(dev, host).ok());
    return host;
  }
  Tensor GpuEmpty(const Shape& shape) { return *gpu_->Allocate(DType::kF32, shape); }
  static void ExpectNear(const Tensor& want, const Tensor& got, double rel, const char* what) {
    ASSERT_EQ(want.numel(), got.numel()) << what;
    double max_abs = 0;
    for (int64_t i = 0; i < want.numel(); ++i) {
      max_abs = std::max(max_abs, std::fabs(double{want.data<float>()[i]}));
    }
    for (int64_t i = 0; i < want.numel(); ++i) {
      ASSERT_NEAR(want.data<float>()[i], got.data<float>()[i], rel * std::max(1.0, max_abs))
          << what << " at " << i;
    }
  }

  std::mt19937 rng_{5};
  std::unique_ptr<Backend> cpu_, gpu_;
};

TEST_F(CudaBackendTest, LinearInEveryWeightTypeAndGrouped) {
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (auto [M, N, K] : {std::tuple{1, 64, 96}, {7, 130, 257}, {33, 512, 128}}) {
      Tensor w32 = Random({N, K}, 0.1f);
      Tensor w = dt == DType::kF32 ? w32 : Cast(w32, dt);
      Tensor x = Random({M, K});
      // The CPU sees the activations the GPU GEMM sees: rounded to the weight type.
      Tensor x_ref = dt == DType::kF32 ? x : Cast(Cast(x, dt), DType::kF32);
      Tensor bias = Random({N});
      Weight wc = *cpu_->PrepareWeight(w), wg = *gpu_->PrepareWeight(w);
      Tensor want = Tensor::Empty(DType::kF32, {M, N});
      cpu_->Linear(x_ref, wc, &bias, want, false);
      Tensor y = GpuEmpty({M, N});
      Tensor bias_gpu = Up(bias);
      gpu_->Linear(Up(x), wg, &bias_gpu, y, false);
      ExpectNear(want, Down(y), dt == DType::kF32 ? 1e-5 : 1e-4, DTypeName(dt).data());
    }
  }
  // Grouped: two jobs into one output, the second gathering rows and accumulating.
  Tensor w1 = Random({40, 24}, 0.1f), w2 = Random({40, 24}, 0.1f), x = Random({9, 24});
  Weight c1 = *cpu_->PrepareWeight(w1), c2 = *cpu_->PrepareWeight(w2);
  Weight g1 = *gpu_->PrepareWeight(w1), g2 = *gpu_->PrepareWeight(w2);
  Tensor rows = Ints({8, 0, 3});
  Tensor want = Tensor::Zeros(DType::kF32, {9, 40});
  Tensor xg = Up(x), rows_g = Up(rows), y = Up(want);
  const LinearJob cjobs[] = {
      {&c1, x.data<float>(), 24, 9, want.data<float>(), 40, false},
      {&c2, x.data<float>(), 24, 3, want.data<float>(), 40, true, rows.data<int32_t>()}};
  const LinearJob gjobs[] = {
      {&g1, xg.data<float>(), 24, 9, y.data<float>(), 40, false},
      {&g2, xg.data<float>(), 24, 3, y.data<float>(), 40, true, rows_g.data<int32_t>()}};
  cpu_->GroupedLinear(cjobs);
  gpu_->GroupedLinear(gjobs);
  ExpectNear(want, Down(y), 1e-5, "grouped");
}

TEST_F(CudaBackendTest, ElementwiseOps) {
  const int64_t T = 11, d = 200, F = 96;
  // Embedding from a BF16 table.
  Tensor table = Cast(Random({50, d}), DType::kBF16);
  Tensor ids = Ints({3, 49, 0, 7, 7, 1, 2, 3, 4, 5, 6});
  Weight tc = *cpu_->PrepareWeight(table), tg = *gpu_->PrepareWeight(table);
  Tensor want = Tensor::Empty(DType::kF32, {T, d}), got = GpuEmpty({T, d});
  cpu_->Embedding(tc, ids, want);
  gpu_->Embedding(tg, Up(ids), got);
  ExpectNear(want, Down(got), 0, "embedding");
  // RMSNorm.
  Tensor x = Random({T, d}), w = Random({d});
  cpu_->RmsNorm(x, w, 1e-6f, want);
  gpu_->RmsNorm(Up(x), Up(w), 1e-6f, got);
  ExpectNear(want, Down(got), 1e-5, "rmsnorm");
  // Gated activations.
  Tensor gu = Random({T, 2 * F});
  for (Activation a :
       {Activation::kSilu, Activation::kGeluErf, Activation::kGeluTanh, Activation::kRelu}) {
    Tensor wa = Tensor::Empty(DType::kF32, {T, F}), ga = GpuEmpty({T, F});
    cpu_->GatedActivation(gu, a, wa);
    gpu_->GatedActivation(Up(gu), a, ga);
    ExpectNear(wa, Down(ga), 1e-5, ActivationName(a).data());
  }
  // Row gather.
  Tensor rows = Ints({10, 0, 5});
  Tensor wr = Tensor::Empty(DType::kF32, {3, d}), gr = GpuEmpty({3, d});
  cpu_->GatherRows(x, rows, wr);
  gpu_->GatherRows(Up(x), Up(rows), gr);
  ExpectNear(wr, Down(gr), 0, "gather");
}

TEST_F(CudaBackendTest, RopeKvAndPagedAttentionOverRaggedSequences) {
  // Three sequences (lengths 5, 1, 19) in 4-token blocks, block tables scattered, GQA 4/2.
  const int heads = 4, kv_heads = 2, hd = 32, bs = 4, layers = 2;
  const std::vector<int> lens = {5, 1, 19};
  const std::vector<std::vector<int32_t>> tables = {{7, 2}, {0}, {1, 3, 4, 5, 6}};
  std::vector<int32_t> pos, seq, slots;
  for (int s = 0; s < 3; ++s) {
    for (int p = 0; p < lens[s]; ++p) {
      pos.push_back(p);
      seq.push_back(s);
      slots.push_back(tables[s][p / bs] * bs + p % bs);
    }
  }
  const int64_t T = static_cast<int64_t>(pos.size());
  Tensor bt = Tensor::Zeros(DType::kI32, {3, 5});
  for (int s = 0; s < 3; ++s) {
    for (size_t b = 0; b < tables[s].size(); ++b) bt.data<int32_t>()[s * 5 + b] = tables[s][b];
  }
  StepMetadata host;
  host.num_tokens = T;
  host.num_seqs = 3;
  host.token_ids = Ints(std::vector<int32_t>(T, 1));
  host.positions = Ints(pos);
  host.slot_mapping = Ints(slots);
  host.token_seq = Ints(seq);
  host.block_tables = bt;
  StepMetadata dev = *gpu_->UploadMetadata(host);

  Tensor inv_freq = Tensor::Empty(DType::kF32, {hd / 2});
  for (int i = 0; i < hd / 2; ++i) inv_freq.data<float>()[i] = std::pow(10000.0f, -2.0f * i / hd);
  Tensor cs = Tensor::Empty(DType::kF32, {T, hd}), cs_g = GpuEmpty({T, hd});
  cpu_->RopeTable(host.positions, inv_freq, cs);
  gpu_->RopeTable(dev.positions, Up(inv_freq), cs_g);
  ExpectNear(cs, Down(cs_g), 1e-5, "rope table");

  Tensor qkv = Random({T, (heads + 2 * kv_heads) * hd});
  Tensor q = Tensor::Empty(DType::kF32, {T, heads * hd}),
         k = Tensor::Empty(DType::kF32, {T, kv_heads * hd}),
         v = Tensor::Empty(DType::kF32, {T, kv_heads * hd});
  Tensor qg = GpuEmpty({T, heads * hd}), kg = GpuEmpty({T, kv_heads * hd}),
         vg = GpuEmpty({T, kv_heads * hd});
  cpu_->SplitQkvRope(qkv, cs, heads, kv_heads, q, k, v);
  gpu_->SplitQkvRope(Up(qkv), Up(cs), heads, kv_heads, qg, kg, vg);
  ExpectNear(q, Down(qg), 1e-5, "q");
  ExpectNear(k, Down(kg), 1e-5, "k");
  ExpectNear(v, Down(vg), 0, "v");

  const KvCacheSpec spec{layers, 8, bs, kv_heads, hd};
  KvCache cc = *cpu_->AllocateKvCache(spec), gc = *gpu_->AllocateKvCache(spec);
  for (int window : {0, 6}) {
    for (int layer = 0; layer < layers; ++layer) {
      cpu_->WriteKv(k, v, host, layer, cc);
      gpu_->WriteKv(Up(k), Up(v), dev, layer, gc);
      const AttentionParams p{heads, kv_heads, hd, 1.0f / std::sqrt(float{hd}), window};
      Tensor want = Tensor::Empty(DType::kF32, {T, heads * hd}), got = GpuEmpty({T, heads * hd});
      cpu_->Attention(q, host, layer, cc, p, want);
      gpu_->Attention(Up(q), dev, layer, gc, p, got);
      ExpectNear(want, Down(got), 1e-4, window ? "windowed attention" : "attention");
    }
  }
  EXPECT_TRUE(gpu_->Synchronize().ok());
}

TEST_F(CudaBackendTest, MoeLoraOpsMatchTheCpuOnMixedRaggedUnits) {
  for (uint64_t seed : {1, 2, 3, 4, 5, 6}) {
    SCOPED_TRACE(seed);
    const testing::MoeScenario s = testing::MoeScenario::Make(seed);
    const testing::MoeRun want = testing::RunMoeChain(*cpu_, s);
    const testing::MoeRun got = testing::RunMoeChain(*gpu_, s);
    ASSERT_TRUE(gpu_->Synchronize().ok());
    // Random logits leave no ties: the selections, hence the layout, must be the CPU's.
    EXPECT_EQ(got.expert, want.expert);
    EXPECT_EQ(got.seg_start, want.seg_start);
    EXPECT_EQ(got.order, want.order);
    EXPECT_EQ(got.position, want.position);
    for (size_t i = 0; i < want.weight.size(); ++i) {
      ASSERT_NEAR(got.weight[i], want.weight[i], 1e-5 * std::max(1.0f, std::fabs(want.weight[i])));
    }
    ASSERT_EQ(got.stats.size(), want.stats.size());
    for (size_t i = 0; i < want.stats.size(); ++i) {
      ASSERT_NEAR(got.stats[i], want.stats[i], 1e-5 * std::max(1.0, std::fabs(want.stats[i])))
          << "statistics " << i;
    }
    ExpectNear(want.y, got.y, 1e-5, "combined y");
    ExpectNear(want.act, got.act, 1e-5, "overwritten rows");
    ExpectNear(want.gathered, got.gathered, 0, "gathered rows");
    ExpectNear(want.activated, got.activated, 1e-5, "activations");
  }
  std::mt19937_64 rng(9);
  Tensor x = testing::MoeScenario::Random({3, 6}, rng, 1.0f);
  Tensor dst = testing::MoeScenario::Random({5, 10}, rng, 1.0f);
  const Tensor rows = Ints({4, 0, 2});
  Tensor dst_cpu = testing::Copy(*cpu_, dst), dst_gpu = Up(dst);
  cpu_->ScatterAddRows(x, 4, rows, 3, dst_cpu);
  gpu_->ScatterAddRows(Up(x), 4, Up(rows), 3, dst_gpu);
  ExpectNear(dst_cpu, Down(dst_gpu), 1e-6, "ScatterAddRows");
}

}  // namespace
}  // namespace switchyard

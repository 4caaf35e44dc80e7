// CPU ops against straightforward double-precision loops, over awkward shapes (rows not a multiple
// of 16, columns not a multiple of a chunk), every weight dtype, both matmul paths, and both
// instruction sets this machine can run.
#include <cmath>
#include <random>
#include <string>

#include "engine/backends/cpu/cpu_backend.h"
#include "engine/backends/cpu/kernels.h"
#include "engine/backends/cpu/packed_layout.h"
#include "engine/backends/cpu/packed_matmul.h"
#include "gtest/gtest.h"

namespace switchyard {
namespace {

Tensor Random(DType dt, Shape shape, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  Tensor t = Tensor::Empty(dt, shape);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = dist(rng);
    switch (dt) {
      case DType::kF32:
        t.data<float>()[i] = v;
        break;
      case DType::kBF16:
        t.data<uint16_t>()[i] = F32ToBF16(v);
        break;
      case DType::kF16:
        t.data<uint16_t>()[i] = F32ToF16(v);
        break;
      case DType::kI32:
      case DType::kF64:
      case DType::kU8:
        break;
    }
  }
  return t;
}

std::vector<float> AsF32(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  ConvertToF32(t.dtype(), t.raw(), out.data(), out.size());
  return out;
}

struct MatmulCase {
  int64_t m, n, k;
  DType dtype;
};

class PackedMatmulTest : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(PackedMatmulTest, MatchesReference) {
  const auto [m, n, k, dt] = GetParam();
  Tensor x = Random(DType::kF32, {m, k}, 1);
  Tensor w_host = Random(dt, {n, k}, 2, 0.1f);
  Tensor bias = Random(DType::kF32, {n}, 3);
  const std::vector<float> w = AsF32(w_host);
  const Weight packed = cpu::PackWeight(w_host);
  for (bool accumulate : {false, true}) {
    for (bool with_bias : {false, true}) {
      std::vector<double> want(static_cast<size_t>(m * n));
      Tensor y = Random(DType::kF32, {m, n}, 4);
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          double s = accumulate ? y.data<float>()[i * n + j] : 0.0;
          for (int64_t kk = 0; kk < k; ++kk)
            s += double(x.data<float>()[i * k + kk]) * w[j * k + kk];
          if (with_bias) s += bias.data<float>()[j];
          want[i * n + j] = s;
        }
      }
      cpu::PackedMatmul mm(MatmulPrecision::kF32, QuantActivations::kF32);
      mm.Linear(x.data<float>(), m, packed, with_bias ? bias.data<float>() : nullptr,
                y.data<float>(), accumulate);
      double worst = 0;
      for (int64_t i = 0; i < m * n; ++i)
        worst = std::max(worst, std::abs(want[i] - y.data<float>()[i]));
      EXPECT_LT(worst, 2e-5 * std::sqrt(double(k)))
          << "accumulate=" << accumulate << " bias=" << with_bias;
    }
  }
}

std::vector<MatmulCase> MatmulCases() {
  std::vector<MatmulCase> cases;
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int64_t m : {1, 2, 3, 5, 17, 256, 257}) {
      cases.push_back({m, 33, 70, dt});
    }
    cases.push_back({4, 1, 1, dt});
    cases.push_back({3, 16, 32, dt});
    cases.push_back({1, 100, 1536, dt});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, PackedMatmulTest, ::testing::ValuesIn(MatmulCases()),
                         [](const auto& info) {
                           return "m" + std::to_string(info.param.m) + "_n" +
                                  std::to_string(info.param.n) + "_k" +
                                  std::to_string(info.param.k) + "_" +
                                  std::string(DTypeName(info.param.dtype));
                         });

bool CpuHasAvx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

// The row result must not depend on how many rows share the call (batch invariance), for every
// instruction set.
TEST(PackedKernelTest, RowsAreBatchInvariantOnEveryIsa) {
  std::vector<const cpu::KernelTable*> tables = {&cpu::avx2::Table()};
  if (CpuHasAvx512()) tables.push_back(&cpu::avx512::Table());
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    const int64_t n = 40, k = 200, m = 9;
    Tensor x = Random(DType::kF32, {m, k}, 5);
    const Weight w = cpu::PackWeight(Random(dt, {n, k}, 6, 0.1f));
    const int64_t pc = cpu::PaddedCols(k, dt);
    for (const cpu::KernelTable* t : tables) {
      std::vector<float> xp(static_cast<size_t>(m * pc)), all(static_cast<size_t>(m * n));
      t->prepare_x(dt, x.data<float>(), nullptr, m, k, k, pc, xp.data());
      t->matmul_packed({xp.data(), m, w.data.raw(), dt, n, pc, nullptr, all.data(), n, false}, 0,
                       cpu::PaddedRows(n) / cpu::kPanelRows);
      for (int64_t i = 0; i < m; ++i) {
        std::vector<float> one(static_cast<size_t>(n));
        t->matmul_packed(
            {xp.data() + i * pc, 1, w.data.raw(), dt, n, pc, nullptr, one.data(), n, false}, 0,
            cpu::PaddedRows(n) / cpu::kPanelRows);
        for (int64_t j = 0; j < n; ++j) {
          ASSERT_EQ(one[j], all[i * n + j]) << t->isa << " " << DTypeName(dt) << " row " << i;
        }
      }
    }
  }
}

TEST(PackedLayoutTest, UnpackAndGatherInvertPack) {
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    Tensor host = Random(dt, {37, 45}, 7);
    const std::vector<float> want = AsF32(host);
    const Weight w = cpu::PackWeight(host);
    std::vector<float> rows(37 * 45);
    cpu::UnpackRows(w, 0, 37, DType::kF32, rows.data());
    EXPECT_EQ(rows, want);
    std::vector<float> row(45);
    cpu::GatherRow(w, 20, row.data());
    EXPECT_EQ(row, std::vector<float>(want.begin() + 20 * 45, want.begin() + 21 * 45));
  }
}

// --matmul_precision auto: BF16 products only where the CPU has BF16 dot-product instructions
// (elsewhere oneDNN would emulate them, slower than F32 math); the backend names what it chose.
TEST(MatmulPrecisionTest, AutoTakesBF16OnlyWithBF16DotProducts) {
  EXPECT_EQ(ResolveMatmulPrecision(MatmulPrecision::kAuto, true), MatmulPrecision::kBF16);
  EXPECT_EQ(ResolveMatmulPrecision(MatmulPrecision::kAuto, false), MatmulPrecision::kF32);
  for (bool dot : {false, true}) {
    EXPECT_EQ(ResolveMatmulPrecision(MatmulPrecision::kF32, dot), MatmulPrecision::kF32);
    EXPECT_EQ(ResolveMatmulPrecision(MatmulPrecision::kBF16, dot), MatmulPrecision::kBF16);
  }
  const std::string described =
      CreateCpuBackend({.matmul_precision = MatmulPrecision::kAuto})->Describe();
  EXPECT_NE(described.find(CpuHasBF16Dot() ? "bf16 matmul" : "f32 matmul"), std::string::npos)
      << described;
}

TEST(CpuKernelsTest, ActivationsAndExpMatchLibm) {
  std::vector<const cpu::KernelTable*> tables = {&cpu::avx2::Table()};
  if (CpuHasAvx512()) tables.push_back(&cpu::avx512::Table());
  std::vector<float> g, u;
  for (int i = -500; i <= 500; ++i) {
    g.push_back(i * 0.05f);
    u.push_back(1.0f + i * 0.001f);
  }
  for (const cpu::KernelTable* t : tables) {
    std::vector<float> out(g.size());
    t->gated_activation(Activation::kSilu, g.data(), u.data(), out.data(), g.size());
    for (size_t i = 0; i < g.size(); ++i) {
      const double want = g[i] / (1.0 + std::exp(-double(g[i]))) * u[i];
      EXPECT_NEAR(out[i], want, 2e-6 * std::max(1.0, std::abs(want))) << t->isa << " at " << g[i];
    }
    t->gated_activation(Activation::kGeluTanh, g.data(), u.data(), out.data(), g.size());
    for (size_t i = 0; i < g.size(); ++i) {
      const double x = g[i];
      const double want =
          0.5 * x * (1 + std::tanh(0.7978845608 * (x + 0.044715 * x * x * x))) * u[i];
      EXPECT_NEAR(out[i], want, 2e-6 * std::max(1.0, std::abs(want)));
    }
    std::vector<float> e = g;
    const float sum = t->exp_shifted_sum(e.data(), static_cast<int64_t>(e.size()), 1.0f);
    double want_sum = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      const double want = std::exp(double(g[i] - 1.0f));  // the kernel shifts in F32
      want_sum += want;
      EXPECT_NEAR(e[i], want, 4e-7 * want) << t->isa;
    }
    EXPECT_NEAR(sum, want_sum, 1e-5 * want_sum);
  }
}

// The step of one sequence of `tokens` tokens (positions 0..tokens-1) whose KV blocks are `table`.
// Not copyable: `meta` views the vectors.
struct OneSequenceStep {
  OneSequenceStep(std::vector<int32_t> blocks, int tokens, int block_size)
      : table(std::move(blocks)), ids(tokens, 0), positions(tokens), slots(tokens), seq(tokens, 0) {
    for (int t = 0; t < tokens; ++t) {
      positions[t] = t;
      slots[t] = table[t / block_size] * block_size + t % block_size;
    }
    const auto wrap = [](std::vector<int32_t>& v, Shape s) {
      return Tensor::Wrap(v.data(), DType::kI32, std::move(s), nullptr);
    };
    meta.num_tokens = tokens;
    meta.num_seqs = 1;
    meta.token_ids = wrap(ids, {tokens});
    meta.positions = wrap(positions, {tokens});
    meta.slot_mapping = wrap(slots, {tokens});
    meta.token_seq = wrap(seq, {tokens});
    meta.block_tables = wrap(table, {1, static_cast<int64_t>(table.size())});
  }
  OneSequenceStep(const OneSequenceStep&) = delete;
  OneSequenceStep& operator=(const OneSequenceStep&) = delete;

  std::vector<int32_t> table, ids, positions, slots, seq;
  StepMetadata meta;
};

// Attention over a paged cache with scattered blocks, against a dense loop.
TEST(CpuBackendTest, PagedAttentionMatchesDense) {
  auto backend = CreateCpuBackend({});
  const int heads = 4, kv_heads = 2, hd = 24, bs = 4, T = 11;
  KvCacheSpec spec{1, 8, bs, kv_heads, hd};
  auto cache = backend->AllocateKvCache(spec);
  ASSERT_TRUE(cache.ok());
  // One sequence of 11 tokens whose blocks are scattered: 5, 1, 7.
  const OneSequenceStep step({5, 1, 7}, T, bs);
  const StepMetadata& meta = step.meta;
  Tensor q = Random(DType::kF32, {T, heads * hd}, 8);
  Tensor k = Random(DType::kF32, {T, kv_heads * hd}, 9);
  Tensor v = Random(DType::kF32, {T, kv_heads * hd}, 10);
  backend->WriteKv(k, v, meta, 0, *cache);
  for (int window : {0, 3}) {
    Tensor out = Tensor::Zeros(DType::kF32, {T, heads * hd});
    AttentionParams p{heads, kv_heads, hd, 0.3f, window};
    backend->Attention(q, meta, 0, *cache, p, out);
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < heads; ++h) {
        const int g = h / (heads / kv_heads);
        const int lo = window > 0 ? std::max(0, t - window + 1) : 0;
        std::vector<double> s;
        double mx = -1e30;
        for (int j = lo; j <= t; ++j) {
          double d = 0;
          for (int i = 0; i < hd; ++i) {
            d += double(q.data<float>()[t * heads * hd + h * hd + i]) *
                 k.data<float>()[j * kv_heads * hd + g * hd + i];
          }
          s.push_back(d * 0.3);
          mx = std::max(mx, s.back());
        }
        double z = 0;
        for (double& e : s) z += (e = std::exp(e - mx));
        for (int i = 0; i < hd; ++i) {
          double o = 0;
          for (int j = lo; j <= t; ++j)
            o += s[j - lo] / z * v.data<float>()[j * kv_heads * hd + g * hd + i];
          EXPECT_NEAR(out.data<float>()[t * heads * hd + h * hd + i], o, 1e-5)
              << "window " << window << " token " << t << " head " << h;
        }
      }
    }
  }
}

// A BF16 or F16 cache stores K and V rounded to its type and reads them back exactly: attention
// over it equals, bit for bit, attention over an F32 cache holding the rounded values.
TEST(CpuBackendTest, HalfPrecisionKvCachesEqualAnF32CacheOfTheRoundedValues) {
  auto backend = CreateCpuBackend({});
  const int heads = 6, kv_heads = 3, hd = 40, bs = 4, T = 9;
  const OneSequenceStep step({2, 0, 3}, T, bs);
  const StepMetadata& meta = step.meta;
  const std::vector<int32_t>& table = step.table;
  Tensor q = Random(DType::kF32, {T, heads * hd}, 18);
  Tensor k = Random(DType::kF32, {T, kv_heads * hd}, 19);
  Tensor v = Random(DType::kF32, {T, kv_heads * hd}, 20);
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    const auto round = [dtype](const Tensor& x) {
      Tensor out = Tensor::Empty(DType::kF32, x.shape());
      for (int64_t i = 0; i < x.numel(); ++i) {
        const float f = x.data<float>()[i];
        out.data<float>()[i] =
            dtype == DType::kBF16 ? BF16ToF32(F32ToBF16(f)) : F16ToF32(F32ToF16(f));
      }
      return out;
    };
    KvCacheSpec half_spec{2, 4, bs, kv_heads, hd, dtype};
    KvCacheSpec f32_spec{2, 4, bs, kv_heads, hd, DType::kF32};
    KvCache half = *backend->AllocateKvCache(half_spec);
    KvCache f32 = *backend->AllocateKvCache(f32_spec);
    ASSERT_EQ(half.k.dtype(), dtype);
    ASSERT_EQ(half.k.nbytes() * 2, f32.k.nbytes());
    const Tensor kr = round(k), vr = round(v);
    for (int layer = 0; layer < 2; ++layer) {
      backend->WriteKv(k, v, meta, layer, half);
      backend->WriteKv(kr, vr, meta, layer, f32);
    }
    // Layer 1 of the half cache holds exactly the rounded values.
    const uint16_t* stored = half.k.data<uint16_t>() + half.k.numel() / 2;
    const size_t slot0 = (static_cast<size_t>(table[0]) * kv_heads + 1) * bs * hd;  // head 1
    for (int i = 0; i < hd; ++i) {
      const float f =
          dtype == DType::kBF16 ? BF16ToF32(stored[slot0 + i]) : F16ToF32(stored[slot0 + i]);
      ASSERT_EQ(f, kr.data<float>()[hd + i]) << DTypeName(dtype) << " " << i;
    }
    for (int window : {0, 3}) {
      AttentionParams p{heads, kv_heads, hd, 0.2f, window};
      Tensor want = Tensor::Zeros(DType::kF32, {T, heads * hd});
      Tensor got = Tensor::Zeros(DType::kF32, {T, heads * hd});
      backend->Attention(q, meta, 1, f32, p, want);
      backend->Attention(q, meta, 1, half, p, got);
      // The same values through the same kernel; only the compiler's choice of fused
      // multiply-adds may differ between the row types (it does in the AVX-512 build): a few
      // units in the last place.
      for (int64_t i = 0; i < want.numel(); ++i) {
        const float w = want.data<float>()[i];
        ASSERT_NEAR(got.data<float>()[i], w, 4e-7f * std::max(1.0f, std::abs(w)))
            << DTypeName(dtype) << " window " << window << " element " << i;
      }
    }
  }
  KvCacheSpec bad{1, 2, bs, kv_heads, hd, DType::kI32};
  EXPECT_EQ(backend->AllocateKvCache(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DTypeTest, BF16RoundsToNearestEvenAndKeepsNaN) {
  EXPECT_EQ(F32ToBF16(1.0f), 0x3f80);
  EXPECT_EQ(BF16ToF32(F32ToBF16(3.140625f)), 3.140625f);
  // 1 + 2^-8 is halfway between two BF16 values: ties go to even (1.0).
  EXPECT_EQ(F32ToBF16(1.00390625f), 0x3f80);
  EXPECT_EQ(F32ToBF16(1.01171875f), 0x3f82);
  EXPECT_TRUE(std::isnan(BF16ToF32(F32ToBF16(std::nanf("")))));
  EXPECT_EQ(F16ToF32(F32ToF16(0.5f)), 0.5f);
}

}  // namespace
}  // namespace switchyard

// Block-quantized weights on the CPU: the vectorized dequantizer equals the reference bit for bit
// on random blocks of every format; Linear, GroupedLinear (with a row gather) and Embedding over
// quantized weights against a double-precision product of the reference's dequantized values, on
// both of Linear's paths and on stacks of differently quantized parts; the interleaved rows; the
// in-situ quantizers' error bounds.

#include "engine/core/quant.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/backends/cpu/cpu_backend.h"
#include "engine/backends/cpu/packed_matmul.h"
#include "engine/backends/cpu/quant_kernels.h"
#include "gtest/gtest.h"

namespace switchyard {
namespace {

constexpr QuantType kTypes[] = {QuantType::kQ8_0, QuantType::kQ4_0, QuantType::kQ4_K,
                                QuantType::kQ5_K, QuantType::kQ6_K};

uint16_t RandomFiniteHalf(std::mt19937& rng) {
  std::normal_distribution<float> n(0.0f, 0.05f);
  return F32ToF16(n(rng));
}

// Rows of random blocks: random bytes everywhere but the F16 scales, which are finite.
std::vector<uint8_t> RandomBlocks(QuantType type, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  const QuantTraits t = Traits(type);
  std::vector<uint8_t> out(QuantRowBytes(type, cols) * rows);
  for (uint8_t& b : out) b = static_cast<uint8_t>(rng());
  for (size_t off = 0; off < out.size(); off += t.bytes) {
    uint8_t* b = out.data() + off;
    std::vector<size_t> halves = {0};
    if (type == QuantType::kQ4_K || type == QuantType::kQ5_K) halves = {0, 2};
    if (type == QuantType::kQ6_K) halves = {208};
    for (size_t h : halves) {
      const uint16_t v = RandomFiniteHalf(rng);
      std::memcpy(b + h, &v, 2);
    }
  }
  return out;
}

std::vector<float> Dequantized(QuantType type, const std::vector<uint8_t>& blocks, int64_t rows,
                               int64_t cols) {
  std::vector<float> out(rows * cols);
  const size_t rb = QuantRowBytes(type, cols);
  for (int64_t r = 0; r < rows; ++r)
    DequantizeRow(type, blocks.data() + r * rb, &out[r * cols], cols);
  return out;
}

Tensor BlocksTensor(const std::vector<uint8_t>& blocks, int64_t rows) {
  const int64_t rb = static_cast<int64_t>(blocks.size()) / rows;
  Tensor t = Tensor::Empty(DType::kU8, {rows, rb});
  std::memcpy(t.raw(), blocks.data(), blocks.size());
  return t;
}

std::vector<float> RandomVector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// y = x w^T (+ bias) in double, with the scale of the sum of |terms| for the tolerance.
void Reference(const std::vector<float>& x, int64_t m, const std::vector<float>& w, int64_t n,
               int64_t k, const float* bias, std::vector<double>* y, std::vector<double>* mag) {
  y->assign(m * n, 0);
  mag->assign(m * n, 0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < n; ++r) {
      double s = bias != nullptr ? bias[r] : 0, a = 0;
      for (int64_t c = 0; c < k; ++c) {
        s += static_cast<double>(x[i * k + c]) * w[r * k + c];
        a += std::fabs(static_cast<double>(x[i * k + c]) * w[r * k + c]);
      }
      (*y)[i * n + r] = s;
      (*mag)[i * n + r] = a + 1e-3;
    }
  }
}

// y = x w^T (+ bias) through backend.Linear; with `accumulate`, onto 0.5 (else onto garbage).
std::vector<float> RunLinear(Backend& backend, const Weight& w, const std::vector<float>& x,
                             int64_t m, const std::vector<float>* bias, bool accumulate) {
  const int64_t n = w.rows, k = w.cols;
  Tensor xt = Tensor::Empty(DType::kF32, {m, k});
  std::memcpy(xt.raw(), x.data(), m * k * 4);
  Tensor bt = Tensor::Empty(DType::kF32, {n});
  if (bias != nullptr) std::memcpy(bt.raw(), bias->data(), n * 4);
  Tensor y = Tensor::Empty(DType::kF32, {m, n});
  for (int64_t i = 0; i < m * n; ++i) y.data<float>()[i] = accumulate ? 0.5f : 1e30f;
  backend.Linear(xt, w, bias != nullptr ? &bt : nullptr, y, accumulate);
  return std::vector<float>(y.data<float>(), y.data<float>() + m * n);
}

TEST(QuantTest, VectorizedDequantizationIsBitIdenticalToTheReference) {
  for (QuantType type : kTypes) {
    const int64_t cols = 4 * Traits(type).values;
    for (uint32_t seed = 0; seed < 20; ++seed) {
      const std::vector<uint8_t> blocks = RandomBlocks(type, 1, cols, seed);
      std::vector<float> ref(cols), fast(cols);
      DequantizeRow(type, blocks.data(), ref.data(), cols);
      cpu::DequantizeRowFast(type, blocks.data(), fast.data(), cols);
      ASSERT_EQ(std::memcmp(ref.data(), fast.data(), cols * 4), 0)
          << Traits(type).name << " seed " << seed;
    }
  }
}

// The F32 path: products of the dequantized weights up to F32 rounding.
std::unique_ptr<Backend> ExactBackend() {
  return CreateCpuBackend({.quant_activations = QuantActivations::kF32});
}

TEST(QuantTest, LinearMatchesTheDequantizedProductOnBothPaths) {
  std::unique_ptr<Backend> backend = ExactBackend();
  for (QuantType type : kTypes) {
    const int64_t n = 37, k = 2 * std::max(Traits(type).values, 128);
    const std::vector<uint8_t> blocks = RandomBlocks(type, n, k, 7);
    const std::vector<float> w = Dequantized(type, blocks, n, k);
    absl::StatusOr<Weight> weight =
        backend->PrepareQuantizedWeight(BlocksTensor(blocks, n), type, k);
    ASSERT_TRUE(weight.ok()) << weight.status();
    const std::vector<float> bias = RandomVector(n, 3);
    for (int64_t m : {1, 2, 3, 5, 8, 9, 40}) {  // 9 and 40 take the dequantize-then-oneDNN path
      for (bool accumulate : {false, true}) {
        const std::vector<float> x = RandomVector(m * k, 11 + m);
        const std::vector<float> y = RunLinear(*backend, *weight, x, m, &bias, accumulate);
        std::vector<double> want, mag;
        Reference(x, m, w, n, k, bias.data(), &want, &mag);
        for (int64_t i = 0; i < m * n; ++i) {
          const double expect = want[i] + (accumulate ? 0.5 : 0.0);
          ASSERT_NEAR(y[i], expect, 1e-5 * mag[i])
              << Traits(type).name << " m=" << m << " accumulate=" << accumulate << " at " << i;
        }
      }
    }
  }
}

TEST(QuantTest, SmallBatchRowsDoNotDependOnTheirNeighbours) {
  for (QuantActivations activations : {QuantActivations::kF32, QuantActivations::kInt8}) {
    std::unique_ptr<Backend> backend = CreateCpuBackend({.quant_activations = activations});
    const int64_t n = 33, k = 512;
    const std::vector<uint8_t> blocks = RandomBlocks(QuantType::kQ4_K, n, k, 5);
    Weight w = *backend->PrepareQuantizedWeight(BlocksTensor(blocks, n), QuantType::kQ4_K, k);
    const std::vector<float> x = RandomVector(5 * k, 2);
    Tensor all = Tensor::Empty(DType::kF32, {5, k});
    std::memcpy(all.raw(), x.data(), x.size() * 4);
    Tensor y_all = Tensor::Empty(DType::kF32, {5, n});
    backend->Linear(all, w, nullptr, y_all, false);
    for (int64_t i = 0; i < 5; ++i) {
      Tensor one = all.Rows(i, 1);
      Tensor y_one = Tensor::Empty(DType::kF32, {1, n});
      backend->Linear(one, w, nullptr, y_one, false);
      ASSERT_EQ(std::memcmp(y_one.raw(), y_all.data<float>() + i * n, n * 4), 0) << "row " << i;
    }
  }
}

TEST(QuantTest, StacksOfDifferentFormatsWriteTheirRowRanges) {
  // A Q4_K_M file's attn_q/attn_k (Q4_K) and attn_v (Q6_K), fused into one projection.
  std::unique_ptr<Backend> backend = ExactBackend();
  const int64_t k = 256;
  const std::vector<std::pair<QuantType, int64_t>> parts = {
      {QuantType::kQ4_K, 16}, {QuantType::kQ4_K, 8}, {QuantType::kQ6_K, 8}};
  Weight stack;
  std::vector<float> w;
  for (size_t p = 0; p < parts.size(); ++p) {
    const auto [type, rows] = parts[p];
    const std::vector<uint8_t> blocks = RandomBlocks(type, rows, k, 40 + p);
    const std::vector<float> d = Dequantized(type, blocks, rows, k);
    w.insert(w.end(), d.begin(), d.end());
    Weight part = *backend->PrepareQuantizedWeight(BlocksTensor(blocks, rows), type, k);
    stack.rows += rows;
    stack.cols = k;
    stack.parts.push_back(part);
  }
  for (int64_t m : {1, 3, 20}) {
    const std::vector<float> x = RandomVector(m * k, 9);
    Tensor xt = Tensor::Empty(DType::kF32, {m, k});
    std::memcpy(xt.raw(), x.data(), x.size() * 4);
    Tensor y = Tensor::Empty(DType::kF32, {m, stack.rows});
    backend->Linear(xt, stack, nullptr, y, false);
    std::vector<double> want, mag;
    Reference(x, m, w, stack.rows, k, nullptr, &want, &mag);
    for (int64_t i = 0; i < m * stack.rows; ++i) {
      ASSERT_NEAR(y.data<float>()[i], want[i], 1e-5 * mag[i]) << "m=" << m << " at " << i;
    }
  }
}

class QuantTypeTest : public ::testing::TestWithParam<QuantType> {};

// Every format, its first 16 rows interleaved and 4 as stored.
INSTANTIATE_TEST_SUITE_P(StoredAndInterleaved, QuantTypeTest, ::testing::ValuesIn(kTypes),
                         [](const auto& info) { return std::string(Traits(info.param).name); });

TEST_P(QuantTypeTest, GroupedLinearGathersRowsAndEmbeddingDequantizesExactly) {
  std::unique_ptr<Backend> backend = ExactBackend();
  const QuantType type = GetParam();
  const int64_t n = 20, k = 256;
  const std::vector<uint8_t> blocks = RandomBlocks(type, n, k, 12);
  const std::vector<float> w = Dequantized(type, blocks, n, k);
  Weight weight = *backend->PrepareQuantizedWeight(BlocksTensor(blocks, n), type, k);
  const std::vector<float> x = RandomVector(6 * k, 4);
  const std::vector<int32_t> rows = {5, 0, 3};
  std::vector<float> y(3 * n, 0.0f);
  LinearJob job{&weight, x.data(), k, 3, y.data(), n, false, rows.data()};
  backend->GroupedLinear({&job, 1});
  std::vector<float> gathered;
  for (int32_t r : rows)
    gathered.insert(gathered.end(), x.begin() + r * k, x.begin() + (r + 1) * k);
  std::vector<double> want, mag;
  Reference(gathered, 3, w, n, k, nullptr, &want, &mag);
  for (int64_t i = 0; i < 3 * n; ++i) ASSERT_NEAR(y[i], want[i], 1e-5 * mag[i]) << i;

  Tensor ids = Tensor::Empty(DType::kI32, {3});
  ids.data<int32_t>()[0] = 19;
  ids.data<int32_t>()[1] = 0;
  ids.data<int32_t>()[2] = 7;
  Tensor out = Tensor::Empty(DType::kF32, {3, k});
  backend->Embedding(weight, ids, out);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(std::memcmp(out.data<float>() + i * k, &w[ids.data<int32_t>()[i] * k], k * 4), 0);
  }
}

TEST(QuantTest, InSituQuantizersStayWithinHalfAStepAndTheScalesRounding) {
  for (QuantType type : {QuantType::kQ8_0, QuantType::kQ4_0}) {
    const int64_t k = 256;
    std::vector<float> x = RandomVector(k, 21);
    x[3] = 0;
    std::fill(x.begin() + 64, x.begin() + 96, 0.0f);  // an all-zero block
    std::vector<uint8_t> q(QuantRowBytes(type, k));
    QuantizeRow(type, x.data(), q.data(), k);
    std::vector<float> back(k);
    DequantizeRow(type, q.data(), back.data(), k);
    for (int64_t b = 0; b < k / 32; ++b) {
      float amax = 0;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
      // Q8_0: step amax/127; Q4_0: step amax/8 (the extreme value maps to -8). Half a step of
      // rounding, plus the scale's own rounding to F16 (2^-11 relative) times |q|.
      const float qmax = type == QuantType::kQ8_0 ? 127 : 8;
      const float step = amax / qmax;
      for (int i = 0; i < 32; ++i) {
        ASSERT_LE(std::fabs(back[b * 32 + i] - x[b * 32 + i]),
                  step * (0.5f + qmax / 2048.0f) * 1.001f + 1e-7f)
            << Traits(type).name << " block " << b << " value " << i;
      }
    }
  }
}

// The activations' quantizer, scalar, as documented on Int8Rows.
void ReferenceQuantizeActivations(const std::vector<float>& x, int64_t cols, cpu::Int8Rows* out) {
  const int64_t m = static_cast<int64_t>(x.size()) / cols;
  out->q.assign(m * cols, 0);
  out->d.assign(m * cols / 32, 0);
  out->scaled_sums.assign(m * cols / 32, 0);
  for (int64_t b = 0; b < m * cols / 32; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
    const float d = amax / 127.0f, inverse = d != 0 ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int i = 0; i < 32; ++i) {
      const int q = static_cast<int>(std::nearbyint(x[b * 32 + i] * inverse));
      out->q[b * 32 + i] = static_cast<int8_t>(q);
      sum += q;
    }
    out->d[b] = d;
    out->scaled_sums[b] = d * static_cast<float>(sum);
  }
}

// The activations the integer path multiplies: d * q.
std::vector<float> DequantizedActivations(const cpu::Int8Rows& xq) {
  std::vector<float> out(xq.q.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = xq.d[i / 32] * xq.q[i];
  return out;
}

TEST(QuantTest, ActivationQuantizerMatchesTheScalarReference) {
  const int64_t cols = 256, m = 3;
  std::vector<float> x = RandomVector(m * cols, 17);
  std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // a block of zeros: d = 0, q = 0
  x[70] = 1e-30f;                                   // a tiny value beside ordinary ones
  for (int i = 96; i < 128; ++i) x[i] = (i % 2 ? 1.0f : -1.0f) * (i - 96) / 2.0f;  // ties
  x[300] = -50.0f;  // one outlier sets its block's step
  const std::vector<int32_t> gather = {2, 0, 1};
  std::vector<float> gathered;
  for (int32_t r : gather)
    gathered.insert(gathered.end(), x.begin() + r * cols, x.begin() + (r + 1) * cols);
  cpu::Int8Rows fast, ref;
  cpu::QuantizeActivations(x.data(), gather.data(), cols, m, cols, &fast);
  ReferenceQuantizeActivations(gathered, cols, &ref);
  ASSERT_EQ(fast.m, m);
  ASSERT_EQ(fast.cols, cols);
  ASSERT_EQ(fast.q, ref.q);
  ASSERT_EQ(std::memcmp(fast.d.data(), ref.d.data(), ref.d.size() * 4), 0);
  ASSERT_EQ(std::memcmp(fast.scaled_sums.data(), ref.scaled_sums.data(), ref.d.size() * 4), 0);
  for (int8_t q : fast.q) ASSERT_GE(q, -127);
}

// The integer path: exact integer products of the weights' and the quantized activations' small
// integers, scaled in F32, so it must equal the double-precision product of the dequantized weights
// and the dequantized activations up to F32 rounding. Random bytes give every format's extremes
// (Q8_0 weights of -128, K-quant scales of 63).
TEST(QuantTest, Int8ActivationsMatchTheProductOfBothDequantizedOperands) {
  std::unique_ptr<Backend> backend =
      CreateCpuBackend({.quant_activations = QuantActivations::kInt8});
  for (QuantType type : kTypes) {
    const int64_t n = 19, k = 2 * std::max(Traits(type).values, 128);
    const std::vector<uint8_t> blocks = RandomBlocks(type, n, k, 70);
    const std::vector<float> w = Dequantized(type, blocks, n, k);
    Weight weight = *backend->PrepareQuantizedWeight(BlocksTensor(blocks, n), type, k);
    const std::vector<float> bias = RandomVector(n, 5);
    for (int64_t m : {1, 2, 3, 4, 5, 7, 8}) {
      for (bool accumulate : {false, true}) {
        const std::vector<float> x = RandomVector(m * k, 31 + m);
        cpu::Int8Rows xq;
        ReferenceQuantizeActivations(x, k, &xq);
        const std::vector<float> y = RunLinear(*backend, weight, x, m, &bias, accumulate);
        std::vector<double> want, mag;
        Reference(DequantizedActivations(xq), m, w, n, k, bias.data(), &want, &mag);
        for (int64_t i = 0; i < m * n; ++i) {
          const double expect = want[i] + (accumulate ? 0.5 : 0.0);
          ASSERT_NEAR(y[i], expect, 1e-5 * mag[i])
              << Traits(type).name << " m=" << m << " accumulate=" << accumulate << " at " << i;
        }
      }
    }
  }
}

// Against the exact F32 product, the integer path's only extra error is the activations' rounding:
// at most half a step (d / 2) per value, so |y_int8 - y_f32| <= sum_k |w_k| d_k / 2.
TEST(QuantTest, Int8ActivationsStayWithinHalfAStepOfTheF32Product) {
  std::unique_ptr<Backend> exact = ExactBackend();
  std::unique_ptr<Backend> int8 = CreateCpuBackend({.quant_activations = QuantActivations::kInt8});
  for (QuantType type : kTypes) {
    const int64_t n = 24, k = 512, m = 2;
    const std::vector<uint8_t> blocks = RandomBlocks(type, n, k, 90);
    const std::vector<float> w = Dequantized(type, blocks, n, k);
    Weight we = *exact->PrepareQuantizedWeight(BlocksTensor(blocks, n), type, k);
    Weight wi = *int8->PrepareQuantizedWeight(BlocksTensor(blocks, n), type, k);
    const std::vector<float> x = RandomVector(m * k, 8);
    cpu::Int8Rows xq;
    ReferenceQuantizeActivations(x, k, &xq);
    const std::vector<float> ye = RunLinear(*exact, we, x, m, nullptr, false);
    const std::vector<float> yi = RunLinear(*int8, wi, x, m, nullptr, false);
    double total_error = 0, total_bound = 0;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t r = 0; r < n; ++r) {
        double bound = 0, mag = 0;
        for (int64_t c = 0; c < k; ++c) {
          bound += std::fabs(w[r * k + c]) * xq.d[(i * k + c) / 32] / 2;
          mag += std::fabs(w[r * k + c] * x[i * k + c]);
        }
        const double error = std::fabs(yi[i * n + r] - ye[i * n + r]);
        ASSERT_LE(error, bound + 2e-5 * mag) << Traits(type).name << " row " << r;
        total_error += error;
        total_bound += bound;
      }
    }
    // Rounding errors are not all of one sign: the typical error is far below the worst case.
    EXPECT_LT(total_error, 0.25 * total_bound) << Traits(type).name;
  }
}

TEST(QuantTest, Int8ActivationsInGroupedLinearGatherTheirRows) {
  std::unique_ptr<Backend> backend =
      CreateCpuBackend({.quant_activations = QuantActivations::kInt8});
  const int64_t n = 20, k = 512;
  for (QuantType type : {QuantType::kQ6_K, QuantType::kQ4_0}) {
    const std::vector<uint8_t> blocks = RandomBlocks(type, n, k, 13);
    const std::vector<float> w = Dequantized(type, blocks, n, k);
    Weight weight = *backend->PrepareQuantizedWeight(BlocksTensor(blocks, n), type, k);
    const std::vector<float> x = RandomVector(12 * k, 4);
    // 11 gathered rows: more than the decode kernel's limit, still the integer path here.
    const std::vector<int32_t> rows = {5, 0, 3, 11, 7, 7, 2, 9, 1, 10, 4};
    const int64_t m = static_cast<int64_t>(rows.size());
    std::vector<float> y(m * n, 0.0f);
    LinearJob job{&weight, x.data(), k, m, y.data(), n, false, rows.data()};
    backend->GroupedLinear({&job, 1});
    std::vector<float> gathered;
    for (int32_t r : rows)
      gathered.insert(gathered.end(), x.begin() + r * k, x.begin() + (r + 1) * k);
    cpu::Int8Rows xq;
    ReferenceQuantizeActivations(gathered, k, &xq);
    std::vector<double> want, mag;
    Reference(DequantizedActivations(xq), m, w, n, k, nullptr, &want, &mag);
    for (int64_t i = 0; i < m * n; ++i) ASSERT_NEAR(y[i], want[i], 1e-5 * mag[i]) << i;
  }
}

// The interleaved layout moves the file's bytes and nothing else: every row of every format comes
// back as stored, whatever the row count (whole groups, a tail, no group at all), and the prepared
// weight is interleaved (the kernels read it so; Linear's tests check what they compute).
TEST(QuantTest, InterleavedRowsComeBackAsStored) {
  std::unique_ptr<Backend> backend = ExactBackend();
  for (QuantType type : kTypes) {
    const int64_t k = 3 * Traits(type).values;
    const size_t row_bytes = QuantRowBytes(type, k);
    for (int64_t n : {1, 7, 8, 13, 24}) {
      const std::vector<uint8_t> blocks = RandomBlocks(type, n, k, 50 + n);
      Weight w = *backend->PrepareQuantizedWeight(BlocksTensor(blocks, n), type, k);
      ASSERT_EQ(w.interleaved_rows, n / 8 * 8) << Traits(type).name << n;
      const uint8_t* data = w.data.data<uint8_t>();
      EXPECT_EQ(std::memcmp(data, blocks.data(), blocks.size()) == 0, n < 8)
          << Traits(type).name << " rows " << n;
      std::vector<uint8_t> row(row_bytes);
      for (int64_t r = 0; r < n; ++r) {
        cpu::StoredRow(type, data, n, r, k, row.data());
        ASSERT_EQ(std::memcmp(row.data(), blocks.data() + r * row_bytes, row_bytes), 0)
            << Traits(type).name << " rows " << n << " row " << r;
      }
    }
  }
}

// A range of rows that cuts interleaved groups (as a thread's piece may) writes those rows, and
// exactly what the whole matrix's product has there, on both paths.
TEST(QuantTest, RowRangesThatCutInterleavedGroupsWriteTheirRowsOnly) {
  const int64_t n = 29, k = 512, m = 3;
  for (QuantType type : kTypes) {
    const std::vector<uint8_t> blocks = RandomBlocks(type, n, k, 77);
    const Weight w = cpu::CopyQuantizedWeight(BlocksTensor(blocks, n), type, k);
    const std::vector<float> x = RandomVector(m * k, 78);
    const std::vector<float> bias = RandomVector(n, 79);
    for (bool int8 : {false, true}) {
      cpu::Int8Rows xq;
      cpu::QuantizeActivations(x.data(), nullptr, k, m, k, &xq);
      cpu::QuantMatmulArgs args{type,
                                w.data.data<uint8_t>(),
                                static_cast<size_t>(w.data.dim(1)),
                                k,
                                x.data(),
                                nullptr,
                                k,
                                m,
                                bias.data(),
                                nullptr,
                                n,
                                false,
                                int8 ? &xq : nullptr,
                                w.interleaved_rows};
      std::vector<float> whole(m * n), pieces(m * n, -1.0f);
      args.y = whole.data();
      cpu::QuantMatmulRows(args, 0, n);
      args.y = pieces.data();
      for (auto [begin, end] :
           {std::pair<int64_t, int64_t>{0, 3}, {3, 11}, {11, 12}, {12, 26}, {26, 29}}) {
        cpu::QuantMatmulRows(args, begin, end);
      }
      ASSERT_EQ(std::memcmp(whole.data(), pieces.data(), whole.size() * 4), 0)
          << Traits(type).name << " int8 " << int8;
    }
  }
}

TEST(QuantTest, PrepareRefusesBlocksThatDoNotMatchTheirColumns) {
  std::unique_ptr<Backend> backend = CreateCpuBackend({});
  Tensor wrong = Tensor::Zeros(DType::kU8, {2, 100});
  EXPECT_FALSE(backend->PrepareQuantizedWeight(wrong, QuantType::kQ8_0, 96).ok());
  EXPECT_FALSE(backend->PrepareQuantizedWeight(wrong, QuantType::kQ4_K, 100).ok());
  Tensor dense = Tensor::Zeros(DType::kF32, {2, 34});
  EXPECT_FALSE(backend->PrepareQuantizedWeight(dense, QuantType::kQ8_0, 32).ok());
}

}  // namespace
}  // namespace switchyard

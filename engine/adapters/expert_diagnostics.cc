#include "engine/adapters/expert_diagnostics.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

namespace switchyard {
namespace {

typedef float Floats8 __attribute__((vector_size(32)));

constexpr int kPanel = 16;  // columns per panel of the packed matrices below
int PaddedWidth(int n) { return (n + kPanel - 1) / kPanel * kPanel; }

// A [count, n] matrix packed in panels of 16 columns, each panel [count, 16] row-major (zero
// padding past n): the micro-kernel then reads one cache line per row of each operand.
class PanelMatrix {
 public:
  PanelMatrix(int64_t count, int n)
      : count_(count), n_(n), data_(size_t(count) * PaddedWidth(n), 0.0f) {}
  float& at(int64_t k, int c) {
    return data_[(size_t(c / kPanel) * count_ + k) * kPanel + c % kPanel];
  }
  const float* panel(int c) const { return data_.data() + size_t(c / kPanel) * count_ * kPanel; }
  int64_t count() const { return count_; }
  int n() const { return n_; }

 private:
  int64_t count_;
  int n_;
  std::vector<float> data_;
};

// tile[a][b] = sum_k pi[k][a] * pj[k][b] for k < count, a < 4, b < 16 (pi: a panel from column
// i0 % 16 on, pj: a panel): a register-blocked micro-kernel, 8 vector accumulators over the whole
// run of k (AVX2 and FMA where the CPU has them).
__attribute__((target_clones("arch=x86-64-v3", "default"))) void GramTile(const float* pi,
                                                                          const float* pj,
                                                                          int64_t count,
                                                                          float* tile) {
  Floats8 acc[4][2] = {};
  for (int64_t k = 0; k < count; ++k) {
    Floats8 b0, b1;
    std::memcpy(&b0, pj + k * kPanel, sizeof b0);
    std::memcpy(&b1, pj + k * kPanel + 8, sizeof b1);
    for (int a = 0; a < 4; ++a) {
      Floats8 x;
      for (int l = 0; l < 8; ++l) x[l] = pi[k * kPanel + a];
      acc[a][0] += x * b0;
      acc[a][1] += x * b1;
    }
  }
  for (int a = 0; a < 4; ++a) {
    std::memcpy(tile + a * kPanel, &acc[a][0], sizeof acc[a][0]);
    std::memcpy(tile + a * kPanel + 8, &acc[a][1], sizeof acc[a][1]);
  }
}

// X^T X for the packed X: the Gram matrix of its n columns, symmetric. Rows of tiles run in
// parallel (adapter loads run at low priority: they take idle cores); partial sums stay in F32
// over 256 rows, then move into F64.
std::vector<double> GramOfColumns(const PanelMatrix& x) {
  const int n = x.n(), width = PaddedWidth(n);
  const int64_t count = x.count();
  std::vector<double> g(size_t(width) * width, 0.0);
  constexpr int64_t kChunk = 256;
#pragma omp parallel for schedule(dynamic, 1)
  for (int i0 = 0; i0 < width; i0 += 4) {
    float tile[4 * kPanel];
    for (int j0 = i0 / kPanel * kPanel; j0 < width; j0 += kPanel) {
      for (int64_t k0 = 0; k0 < count; k0 += kChunk) {
        GramTile(x.panel(i0) + k0 * kPanel + i0 % kPanel, x.panel(j0) + k0 * kPanel,
                 std::min(kChunk, count - k0), tile);
        for (int a = 0; a < 4; ++a) {
          for (int b = 0; b < kPanel; ++b)
            g[size_t(i0 + a) * width + j0 + b] += tile[a * kPanel + b];
        }
      }
    }
  }
  std::vector<double> out(size_t(n) * n);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      out[size_t(i) * n + j] = j >= i ? g[size_t(i) * width + j] : g[size_t(j) * width + i];
    }
  }
  return out;
}

// The r_i x r_j block of an n x n matrix at (off_i, off_j), row-major.
std::vector<double> Block(const std::vector<double>& m, int n, int off_i, int ri, int off_j,
                          int rj) {
  std::vector<double> out(size_t(ri) * rj);
  for (int p = 0; p < ri; ++p) {
    for (int q = 0; q < rj; ++q) out[size_t(p) * rj + q] = m[size_t(off_i + p) * n + off_j + q];
  }
  return out;
}

std::vector<double> MatMul(const std::vector<double>& x, const std::vector<double>& y, int n) {
  std::vector<double> out(size_t(n) * n, 0.0);
  for (int i = 0; i < n; ++i) {
    for (int k = 0; k < n; ++k) {
      const double xik = x[size_t(i) * n + k];
      for (int j = 0; j < n; ++j) out[size_t(i) * n + j] += xik * y[size_t(k) * n + j];
    }
  }
  return out;
}

// Singular values of B A from G_A = A A^T and G_B = B^T B (both r x r): the square roots of the
// eigenvalues of G_A^1/2 G_B G_A^1/2, which are those of B A A^T B^T.
std::vector<double> SingularValues(std::vector<double> ga, const std::vector<double>& gb, int r) {
  std::vector<double> v;
  const std::vector<double> lambda = SymmetricEigenvalues(std::move(ga), r, &v);
  std::vector<double> root(size_t(r) * r, 0.0);  // V diag(sqrt(lambda)) V^T
  for (int k = 0; k < r; ++k) {
    const double s = std::sqrt(std::max(lambda[k], 0.0));
    if (s == 0.0) continue;
    for (int i = 0; i < r; ++i) {
      const double vik = v[size_t(i) * r + k] * s;
      for (int j = 0; j < r; ++j) root[size_t(i) * r + j] += vik * v[size_t(j) * r + k];
    }
  }
  std::vector<double> m = MatMul(MatMul(root, gb, r), root, r);
  for (int i = 0; i < r; ++i) {  // symmetric up to rounding: make it exactly so
    for (int j = 0; j < i; ++j) {
      const double avg = 0.5 * (m[size_t(i) * r + j] + m[size_t(j) * r + i]);
      m[size_t(i) * r + j] = m[size_t(j) * r + i] = avg;
    }
  }
  std::vector<double> sigma = SymmetricEigenvalues(std::move(m), r);
  for (double& s : sigma) s = std::sqrt(std::max(s, 0.0));
  return sigma;
}

double EffectiveRank(const std::vector<double>& sigma) {
  double total = 0;
  for (double s : sigma) total += s;
  if (total <= 0) return 0;
  double entropy = 0;
  for (double s : sigma) {
    const double p = s / total;
    if (p > 0) entropy -= p * std::log(p);
  }
  return std::exp(entropy);
}

}  // namespace

std::vector<double> SymmetricEigenvalues(std::vector<double> m, int n,
                                         std::vector<double>* vectors) {
  std::vector<double> v;
  if (vectors != nullptr) {
    v.assign(size_t(n) * n, 0.0);
    for (int i = 0; i < n; ++i) v[size_t(i) * n + i] = 1.0;
  }
  const auto at = [&](int i, int j) -> double& { return m[size_t(i) * n + j]; };
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0, diag = 0;
    for (int i = 0; i < n; ++i) {
      diag += at(i, i) * at(i, i);
      for (int j = i + 1; j < n; ++j) off += at(i, j) * at(i, j);
    }
    if (off <= 1e-30 * diag || off == 0) break;
    for (int p = 0; p < n; ++p) {
      for (int q = p + 1; q < n; ++q) {
        const double apq = at(p, q);
        if (apq == 0) continue;
        // The rotation that zeroes (p, q): tan(theta) = t, the smaller root.
        const double theta = (at(q, q) - at(p, p)) / (2 * apq);
        const double t =
            (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; ++k) {  // columns p and q
          const double akp = at(k, p), akq = at(k, q);
          at(k, p) = c * akp - s * akq;
          at(k, q) = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {  // rows p and q
          const double apk = at(p, k), aqk = at(q, k);
          at(p, k) = c * apk - s * aqk;
          at(q, k) = s * apk + c * aqk;
        }
        if (vectors != nullptr) {
          for (int k = 0; k < n; ++k) {
            const double vkp = v[size_t(k) * n + p], vkq = v[size_t(k) * n + q];
            v[size_t(k) * n + p] = c * vkp - s * vkq;
            v[size_t(k) * n + q] = s * vkp + c * vkq;
          }
        }
      }
    }
  }
  std::vector<std::pair<double, int>> order(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) order[i] = {at(i, i), i};
  std::sort(order.begin(), order.end());
  std::vector<double> values(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) values[i] = order[i].first;
  if (vectors != nullptr) {
    vectors->assign(size_t(n) * n, 0.0);
    for (int i = 0; i < n; ++i) {
      for (int k = 0; k < n; ++k)
        (*vectors)[size_t(k) * n + i] = v[size_t(k) * n + order[i].second];
    }
  }
  return values;
}

SiteDiagnostics DiagnoseSite(int layer, std::string site, std::span<const HostLora> experts,
                             const Tensor& router) {
  SiteDiagnostics d;
  d.layer = layer;
  d.site = std::move(site);
  const int E = static_cast<int>(experts.size());
  d.experts = E;
  std::vector<int> off(static_cast<size_t>(E) + 1, 0);
  for (int e = 0; e < E; ++e) {
    d.rank.push_back(static_cast<int>(experts[e].a.dim(0)));
    off[e + 1] = off[e] + d.rank.back();
  }
  const int n = off[E];
  const int64_t in = E > 0 ? experts[0].a.dim(1) : 0, out = E > 0 ? experts[0].b.dim(0) : 0;
  // G_A: the Gram matrix of the stacked A's rows, from A_all^T [in, n]; G_B: of the columns of
  // [B_0 | B_1 | ...] ([out, n]).
  std::vector<double> ga, gb;
  {
    PanelMatrix at(in, n);  // [A_0; A_1; ...]^T
    for (int e = 0; e < E; ++e) {
      const float* a = experts[e].a.data<float>();
      for (int p = 0; p < d.rank[e]; ++p) {
        for (int64_t k = 0; k < in; ++k) at.at(k, off[e] + p) = a[p * in + k];
      }
    }
    ga = GramOfColumns(at);
  }
  {
    PanelMatrix b(out, n);  // [B_0 | B_1 | ...]
    for (int e = 0; e < E; ++e) {
      const float* be = experts[e].b.data<float>();
      for (int64_t o = 0; o < out; ++o) {
        for (int p = 0; p < d.rank[e]; ++p) b.at(o, off[e] + p) = be[o * d.rank[e] + p];
      }
    }
    gb = GramOfColumns(b);
  }
  // inner(i, j) = sum_pq GA[i p, j q] GB[i p, j q].
  std::vector<double> inner(size_t(E) * E, 0.0);
  for (int i = 0; i < E; ++i) {
    for (int j = i; j < E; ++j) {
      double sum = 0;
      for (int p = 0; p < d.rank[i]; ++p) {
        for (int q = 0; q < d.rank[j]; ++q) {
          const size_t at = size_t(off[i] + p) * n + off[j] + q;
          sum += ga[at] * gb[at];
        }
      }
      inner[size_t(i) * E + j] = inner[size_t(j) * E + i] = sum;
    }
  }
  d.similarity.assign(size_t(E) * E, 0.0);
  for (int e = 0; e < E; ++e) d.norm.push_back(std::sqrt(std::max(inner[size_t(e) * E + e], 0.0)));
  for (int i = 0; i < E; ++i) {
    for (int j = 0; j < E; ++j) {
      const double den = d.norm[i] * d.norm[j];
      d.similarity[size_t(i) * E + j] =
          den > 0 ? std::clamp(inner[size_t(i) * E + j] / den, -1.0, 1.0) : 0.0;
    }
  }
  for (int e = 0; e < E; ++e) {
    const int r = d.rank[e];
    d.effective_rank.push_back(EffectiveRank(
        SingularValues(Block(ga, n, off[e], r, off[e], r), Block(gb, n, off[e], r, off[e], r), r)));
  }
  if (router.defined()) {
    const int64_t cols = router.dim(1);
    for (int64_t e = 0; e < router.dim(0); ++e) {
      double s = 0;
      const float* w = router.data<float>() + e * cols;
      for (int64_t k = 0; k < cols; ++k) s += double(w[k]) * w[k];
      d.router_norm.push_back(std::sqrt(s));
    }
  }
  return d;
}

std::vector<RedundantPair> AdapterDiagnostics::RedundantPairs(double threshold) const {
  std::vector<RedundantPair> out;
  for (const SiteDiagnostics& s : sites) {
    for (int i = 0; i < s.experts; ++i) {
      for (int j = i + 1; j < s.experts; ++j) {
        if (s.Similarity(i, j) >= threshold)
          out.push_back({s.layer, s.site, i, j, s.Similarity(i, j)});
      }
    }
  }
  return out;
}

DiagnosticsSummary AdapterDiagnostics::Summary() const {
  DiagnosticsSummary sum;
  sum.sites = static_cast<int>(sites.size());
  double total = 0;
  int counted = 0;
  bool any_pair = false;
  for (const SiteDiagnostics& s : sites) {
    for (int i = 0; i < s.experts; ++i) {
      for (int j = i + 1; j < s.experts; ++j) {
        sum.max_similarity =
            any_pair ? std::max(sum.max_similarity, s.Similarity(i, j)) : s.Similarity(i, j);
        any_pair = true;
      }
      const double er = s.effective_rank[i];
      if (er <= 0) continue;
      sum.min_effective_rank = counted == 0 ? er : std::min(sum.min_effective_rank, er);
      total += er;
      ++counted;
    }
  }
  sum.mean_effective_rank = counted > 0 ? total / counted : 0;
  return sum;
}

}  // namespace switchyard

// Expert diagnostics: whether an adapter's experts collapsed (low effective rank) or duplicate
// each other (nearly parallel weight deltas), from the weights alone, computed once at load.
//
// Per site, for experts e with delta dW_e = s * B_e * A_e (B [out, r] already scaled, A [r, in]):
//   inner(i, j)    = <dW_i, dW_j>_F = sum_pq (A_i A_j^T)_pq (B_i^T B_j)_pq    (r x r products)
//   similarity     = inner(i, j) / (|dW_i|_F |dW_j|_F)                          (cosine)
//   singular values of dW_e = sqrt(eig(G_A^1/2 G_B G_A^1/2)), G_A = A A^T, G_B = B^T B
//   effective rank = exp(entropy of sigma / sum sigma)                        (Roy & Vetterli)
// so nothing of size out x in is ever formed. Router row norms come with them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/core/tensor.h"

namespace switchyard {

// One expert's LoRA pair on the host in F32, as the adapter applies it (b carries the scale).
struct HostLora {
  Tensor a;  // [r, in]
  Tensor b;  // [out, r]
};

struct SiteDiagnostics {
  int layer = 0;
  std::string site;  // "q_proj" ... "down_proj"; MixLoRA blocks: "ffn.gate_proj" ...
  int experts = 0;
  std::vector<int> rank;               // per expert
  std::vector<double> norm;            // |dW_e|_F
  std::vector<double> effective_rank;  // in [1, rank]; 0 for a zero delta
  std::vector<double> similarity;      // [experts * experts], cosine; 0 beside a zero delta
  std::vector<double> router_norm;     // per expert; empty where the site has no router
  double Similarity(int i, int j) const { return similarity[size_t(i) * experts + j]; }
};

struct RedundantPair {
  int layer = 0;
  std::string site;
  int first = 0, second = 0;  // first < second
  double similarity = 0;
};

// Over all sites of an adapter.
struct DiagnosticsSummary {
  int sites = 0;
  double max_similarity = 0;      // over pairs of distinct experts (0 with one expert per site)
  double min_effective_rank = 0;  // over experts with a non-zero delta
  double mean_effective_rank = 0;
};

struct AdapterDiagnostics {
  std::vector<SiteDiagnostics> sites;  // ordered by (layer, site)

  // Pairs of distinct experts whose similarity is at least `threshold`, by (layer, site, pair).
  std::vector<RedundantPair> RedundantPairs(double threshold) const;
  DiagnosticsSummary Summary() const;
};

// The diagnostics of one site's experts (all of the same input and output widths); `router`
// [E, in] F32, or undefined.
SiteDiagnostics DiagnoseSite(int layer, std::string site, std::span<const HostLora> experts,
                             const Tensor& router);

// Eigenvalues of the symmetric n x n matrix `m` (row-major; destroyed), ascending, by cyclic
// Jacobi rotations (exact enough for the r x r matrices here, r in the hundreds at most).
std::vector<double> SymmetricEigenvalues(std::vector<double> m, int n,
                                         std::vector<double>* vectors = nullptr);

}  // namespace switchyard

// Order statistics of benchmark samples.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

namespace switchyard::bench {

// The p-quantile (0..1) by nearest rank; 0 for no samples.
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}
inline double Median(std::vector<double> v) { return Percentile(std::move(v), 0.5); }

}  // namespace switchyard::bench

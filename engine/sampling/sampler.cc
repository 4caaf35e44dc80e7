#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace switchyard {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from (seed, index).
double Uniform(uint64_t seed, int64_t index) {
  const uint64_t bits = SplitMix64(SplitMix64(seed) ^ static_cast<uint64_t>(index));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

absl::Status Bad(absl::string_view field, absl::string_view rule, double got) {
  return absl::InvalidArgumentError(absl::StrCat(field, " must be ", rule, " (got ", got, ")"));
}

}  // namespace

absl::Status SamplingParams::Validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    return Bad("temperature", ">= 0", temperature);
  if (!(top_p > 0.0f && top_p <= 1.0f)) return Bad("top_p", "in (0, 1]", top_p);
  if (top_k < -1) return Bad("top_k", ">= 0 (0 or -1 disables it)", top_k);
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return Bad("min_p", "in [0, 1]", min_p);
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty)) {
    return Bad("repetition_penalty", "> 0", repetition_penalty);
  }
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) {
    return Bad("presence_penalty", "in [-2, 2]", presence_penalty);
  }
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) {
    return Bad("frequency_penalty", "in [-2, 2]", frequency_penalty);
  }
  if (logit_bias.size() > kMaxLogitBias) {
    return Bad("logit_bias", absl::StrCat("at most ", kMaxLogitBias, " entries"),
               static_cast<double>(logit_bias.size()));
  }
  for (const auto& [token, bias] : logit_bias) {
    if (token < 0) return Bad("logit_bias", "keyed by token ids >= 0", token);
    if (!(bias >= -100.0f && bias <= 100.0f)) return Bad("logit_bias", "in [-100, 100]", bias);
  }
  if (logprobs < -1 || logprobs > Sampler::kMaxLogprobs) {
    return Bad("logprobs", absl::StrCat("in [0, ", Sampler::kMaxLogprobs, "]"), logprobs);
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params, std::span<const int32_t> prompt,
                 uint64_t fallback_seed)
    : params_(params), seed_(params.seed.value_or(fallback_seed)) {
  if (params_.repetition_penalty != 1.0f) seen_.insert(prompt.begin(), prompt.end());
}

SampledToken Sampler::Sample(std::span<const float> logits, std::span<const uint32_t> allowed) {
  const int32_t V = static_cast<int32_t>(logits.size());
  SampledToken out;

  // Penalised logits.
  work_.assign(logits.begin(), logits.end());
  if (params_.repetition_penalty != 1.0f) {
    for (int32_t t : seen_) {
      float& l = work_[t];
      l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    }
  }
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    for (const auto& [t, n] : output_counts_) {
      work_[t] -= params_.presence_penalty + params_.frequency_penalty * static_cast<float>(n);
    }
  }
  for (const auto& [t, bias] : params_.logit_bias) {
    if (t >= 0 && t < V) work_[t] += bias;
  }
  if (!allowed.empty()) {
    constexpr float kBanned = -std::numeric_limits<float>::infinity();
    for (int32_t i = 0; i < V; ++i) {
      const size_t w = static_cast<size_t>(i) >> 5;
      if (w >= allowed.size() || !((allowed[w] >> (i & 31)) & 1u)) work_[i] = kBanned;
    }
  }

  if (params_.greedy()) {
    out.token = static_cast<int32_t>(std::max_element(work_.begin(), work_.end()) - work_.begin());
  } else {
    const float inv_t = 1.0f / params_.temperature;
    candidates_.clear();
    candidates_.reserve(V);
    for (int32_t i = 0; i < V; ++i) {
      // Banned ids (structured output) never enter: top-k must count allowed ones only.
      if (work_[i] != -std::numeric_limits<float>::infinity()) {
        candidates_.emplace_back(work_[i] * inv_t, i);
      }
    }
    if (candidates_.empty()) candidates_.emplace_back(0.0f, 0);  // nothing allowed: caller's bug
    const auto by_logit = [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    const int32_t n = static_cast<int32_t>(candidates_.size());
    const int32_t k = params_.top_k > 0 ? std::min(params_.top_k, n) : n;
    if (k < n) {
      std::nth_element(candidates_.begin(), candidates_.begin() + k, candidates_.end(), by_logit);
      candidates_.resize(k);
    }
    // Sorted descending from here: top-p and min-p cut a prefix. Sort only a prefix when it holds
    // enough mass (the common case), the whole list otherwise.
    const bool need_sort = params_.top_p < 1.0f || params_.min_p > 0.0f;
    if (need_sort) {
      size_t prefix = std::min<size_t>(candidates_.size(), 1024);
      std::partial_sort(candidates_.begin(), candidates_.begin() + prefix, candidates_.end(),
                        by_logit);
      const float max_logit = candidates_[0].first;
      double total = 0, head = 0;
      for (size_t i = 0; i < candidates_.size(); ++i) {
        const double e = std::exp(static_cast<double>(candidates_[i].first - max_logit));
        total += e;
        if (i < prefix) head += e;
      }
      const float min_p_cut = params_.min_p > 0.0f ? max_logit + std::log(params_.min_p)
                                                   : std::numeric_limits<float>::infinity();
      // The prefix suffices when either cut falls inside it.
      const bool top_p_inside = params_.top_p < 1.0f && head >= params_.top_p * total;
      const bool min_p_inside = params_.min_p > 0.0f && candidates_[prefix - 1].first < min_p_cut;
      if (prefix < candidates_.size() && !top_p_inside && !min_p_inside) {
        std::sort(candidates_.begin(), candidates_.end(), by_logit);
        prefix = candidates_.size();
      }
      size_t keep = prefix;
      if (params_.top_p < 1.0f) {
        double cum = 0;
        for (size_t i = 0; i < prefix; ++i) {
          cum += std::exp(static_cast<double>(candidates_[i].first - max_logit)) / total;
          if (cum >= params_.top_p) {
            keep = i + 1;
            break;
          }
        }
      }
      if (params_.min_p > 0.0f) {
        // p_i >= min_p * p_max  <=>  logit_i >= max_logit + log(min_p)
        size_t n = 1;
        while (n < keep && candidates_[n].first >= min_p_cut) ++n;
        keep = n;
      }
      candidates_.resize(std::max<size_t>(keep, 1));
    }
    float max_logit = -std::numeric_limits<float>::infinity();
    for (const auto& c : candidates_) max_logit = std::max(max_logit, c.first);
    double total = 0;
    for (const auto& c : candidates_) total += std::exp(static_cast<double>(c.first - max_logit));
    const double target = Uniform(seed_, num_sampled_) * total;
    double cum = 0;
    out.token = candidates_.back().second;
    for (const auto& c : candidates_) {
      cum += std::exp(static_cast<double>(c.first - max_logit));
      if (cum > target) {
        out.token = c.second;
        break;
      }
    }
  }

  if (params_.logprobs >= 0) {
    const float mx = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (float l : logits) sum += std::exp(static_cast<double>(l - mx));
    const float log_z = mx + static_cast<float>(std::log(sum));
    out.logprob = logits[out.token] - log_z;
    if (params_.logprobs > 0) {
      const int32_t n = std::min(params_.logprobs, V);
      candidates_.clear();
      for (int32_t i = 0; i < V; ++i) candidates_.emplace_back(logits[i], i);
      std::partial_sort(candidates_.begin(), candidates_.begin() + n, candidates_.end(),
                        [](const auto& a, const auto& b) {
                          return a.first > b.first || (a.first == b.first && a.second < b.second);
                        });
      for (int32_t i = 0; i < n; ++i) {
        out.top_logprobs.emplace_back(candidates_[i].second, candidates_[i].first - log_z);
      }
    }
  }

  if (params_.repetition_penalty != 1.0f) seen_.insert(out.token);
  ++output_counts_[out.token];
  ++num_sampled_;
  return out;
}

}  // namespace switchyard

// A simulated engine for scheduler tests. It keeps a KV cache of its own (which token, under which
// adapter, sits in each slot) and computes each sequence's next-token logits from the context it
// reads back through the block table, so that any block-table mistake (a block shared while being
// written, a freed block reused too early, a prefix of another adapter) changes the output. It
// also refuses batches that break the engine's limits.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/scheduler/step_executor.h"

namespace switchyard::testing {

// What a context (tokens under an adapter) predicts: a deterministic pseudo-random distribution
// with a clear favourite, so greedy and seeded sampling both depend on every token.
inline uint64_t MixContext(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h *= 0xbf58476d1ce4e5b9ULL;
  return h ^ (h >> 31);
}

inline uint64_t AdapterTag(const AdapterWeights* a) {
  return a == nullptr ? 0 : std::hash<std::string>{}(a->name) + a->version;
}

// A mixture's tag: a lone adapter at weight 1 is that adapter; no member is the base model.
inline uint64_t MixtureTag(std::span<const AdapterMember> members) {
  if (members.size() == 1 && members[0].weight == 1.0f) return AdapterTag(members[0].adapter);
  uint64_t h = 0;
  for (const AdapterMember& m : members) {
    h = MixContext(h ^ AdapterTag(m.adapter), std::bit_cast<uint32_t>(m.weight) + uint64_t{1});
  }
  return h;
}

inline uint64_t SequenceTag(const StepSequence& s) {
  return s.adapter != nullptr ? AdapterTag(s.adapter) : MixtureTag(s.mixture);
}

inline void ContextLogits(uint64_t context, int32_t vocab, float* out) {
  for (int32_t v = 0; v < vocab; ++v) {
    out[v] = static_cast<float>(MixContext(context, static_cast<uint64_t>(v)) % 1000) / 250.0f;
  }
  out[MixContext(context, 77) % static_cast<uint64_t>(vocab)] += 3.0f;
}

class FakeExecutor final : public StepExecutor {
 public:
  FakeExecutor(int num_blocks, int block_size, int32_t vocab, int64_t max_batch_tokens,
               int64_t max_batch_seqs, absl::Time* clock)
      : num_blocks_(num_blocks),
        block_size_(block_size),
        vocab_(vocab),
        max_batch_tokens_(max_batch_tokens),
        max_batch_seqs_(max_batch_seqs),
        clock_(clock),
        slots_(static_cast<size_t>(num_blocks) * block_size, Slot{-1, 0}) {}

  int num_kv_blocks() const override { return num_blocks_; }
  int block_size() const override { return block_size_; }
  int64_t max_model_len() const override { return int64_t{num_blocks_} * block_size_; }
  int32_t vocab_size() const override { return vocab_; }
  int64_t max_batch_tokens() const override { return max_batch_tokens_; }
  int64_t max_batch_seqs() const override { return max_batch_seqs_; }

  absl::StatusOr<StepOutput> Step(const StepBatch& batch) override {
    if (clock_ != nullptr) *clock_ += absl::Milliseconds(1);
    ++steps_;
    if (static_cast<int64_t>(batch.tokens.size()) > max_batch_tokens_ ||
        static_cast<int64_t>(batch.sequences.size()) > max_batch_seqs_) {
      return absl::InvalidArgumentError("batch over the limits");
    }
    int64_t rows = 0;
    for (const StepSequence& s : batch.sequences) rows += s.want_logits ? 1 : 0;
    StepOutput out;
    out.logits = Tensor::Zeros(DType::kF32, {rows, vocab_});
    int64_t t = 0, row = 0;
    for (const StepSequence& s : batch.sequences) {
      const int64_t end = s.first_position + s.num_tokens;
      if (s.num_tokens <= 0 || static_cast<int64_t>(s.block_table.size()) * block_size_ < end) {
        return absl::InvalidArgumentError("block table does not cover the sequence");
      }
      const uint64_t tag = SequenceTag(s);
      for (int64_t p = s.first_position; p < end; ++p) {
        slot(s, p) = Slot{batch.tokens[t++], tag};
      }
      if (!s.want_logits) continue;
      // The context as this engine would see it: read back through the block table.
      uint64_t h = MixContext(1, tag);
      for (int64_t p = 0; p < end; ++p) {
        const Slot& x = slot(s, p);
        if (x.tag != tag) {
          violations_.push_back(absl::StrCat("position ", p, " holds K/V of another adapter"));
        }
        h = MixContext(h, static_cast<uint64_t>(x.token) + 1);
      }
      ContextLogits(h, vocab_, out.logits.data<float>() + row++ * vocab_);
    }
    return out;
  }

  // The logits a context gets when computed correctly (for reference runs).
  static uint64_t ContextHash(const std::vector<int32_t>& tokens, const AdapterWeights* adapter) {
    const AdapterMember one{adapter, 1.0f};
    return ContextHash(tokens,
                       adapter != nullptr ? std::span(&one, 1) : std::span<const AdapterMember>());
  }
  static uint64_t ContextHash(const std::vector<int32_t>& tokens,
                              std::span<const AdapterMember> mixture) {
    uint64_t h = MixContext(1, MixtureTag(mixture));
    for (int32_t tok : tokens) h = MixContext(h, static_cast<uint64_t>(tok) + 1);
    return h;
  }

  const std::vector<std::string>& violations() const { return violations_; }
  int64_t steps() const { return steps_; }

 private:
  struct Slot {
    int32_t token;
    uint64_t tag;
  };
  Slot& slot(const StepSequence& s, int64_t p) {
    return slots_[static_cast<size_t>(s.block_table[p / block_size_]) * block_size_ +
                  p % block_size_];
  }

  int num_blocks_, block_size_;
  int32_t vocab_;
  int64_t max_batch_tokens_, max_batch_seqs_;
  absl::Time* clock_;
  std::vector<Slot> slots_;
  std::vector<std::string> violations_;
  int64_t steps_ = 0;
};

}  // namespace switchyard::testing

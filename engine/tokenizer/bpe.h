// The BPE model of tokenizer.json: vocabulary, ranked merges, byte fallback, unknown tokens and
// ignore_merges, with Hugging Face's merge order (lowest rank first, then leftmost).
//
// Thread-safety: immutable after Create; Tokenize may run on many threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace switchyard {

class BpeModel {
 public:
  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(const nlohmann::json& model);

  // Appends the ids of one pre-tokenized piece.
  void Tokenize(absl::string_view piece, std::vector<int32_t>* ids) const;

  // -1 when absent.
  int32_t TokenToId(absl::string_view token) const;
  // Empty when the id has no token in the model's vocabulary.
  absl::string_view IdToToken(int32_t id) const;
  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }
  int32_t unk_id() const { return unk_id_; }

 private:
  BpeModel() = default;
  int32_t CharId(char32_t cp, absl::string_view text) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::vector<int32_t> bmp_char_id_;  // single-character tokens by code point (< 0x10000)
  int32_t byte_fallback_id_[256];
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  bool fuse_unk_ = false;
  int32_t unk_id_ = -1;
};

}  // namespace switchyard

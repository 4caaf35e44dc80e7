// Hugging Face tokenizer.json (+ tokenizer_config.json): text <-> token ids, exactly as the
// reference implementation does it, for the BPE families Llama-family models use: byte-level BPE
// with a regex pre-tokenizer (GPT-2, Llama 3, Qwen2/2.5/3) and SentencePiece-style BPE with byte
// fallback (Llama 2, Mistral, TinyLlama). Unsupported components are refused at load by name.
//
// Thread-safety: immutable after Load; Encode/Decode may run on many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/tokenizer/bpe.h"
#include "engine/tokenizer/decoder.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/tokenizer/pre_tokenizer.h"

namespace switchyard {

struct EncodeOptions {
  bool add_special_tokens = true;  // apply the post-processor template (BOS, ...)
  bool parse_special = true;       // special tokens written in the text become special tokens
};

class Tokenizer final : public TokenSource {
 public:
  // Reads `dir`/tokenizer.json and, when present, `dir`/tokenizer_config.json.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& dir);
  // `config_json` may be empty.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view tokenizer_json,
                                                             absl::string_view config_json);

  // Refuses text that is not valid UTF-8 (naming the byte offset).
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text,
                                              const EncodeOptions& options = {}) const;
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;
  DecodeStream NewDecodeStream(bool skip_special_tokens, bool clean_up_spaces = true) const {
    return DecodeStream(decoder_, *this, skip_special_tokens, clean_up_spaces);
  }

  // One past the largest id (model vocabulary and added tokens).
  int32_t vocab_size() const { return vocab_size_; }
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  bool IsSpecial(int32_t id) const { return special_ids_.contains(id); }
  // The model's chat template: chat_template.jinja beside the config when present, else the
  // tokenizer_config.json chat_template (the default one when several are named); empty when
  // there is none.
  const std::string& chat_template() const { return chat_template_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }

  bool Lookup(int32_t id, absl::string_view* token, bool* added, bool* special) const override;
  // Each token's bytes in decoded output, for constrained decoding (see BuildTokenByteTable).
  absl::StatusOr<TokenByteTable> TokenBytes() const {
    return BuildTokenByteTable(decoder_, *this, vocab_size_);
  }

 private:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJsonUnguarded(
      absl::string_view tokenizer_json, absl::string_view config_json);
  Tokenizer() = default;
  absl::Status Configure(const nlohmann::json& config);
  struct Section {
    std::string text;
    int32_t added_id = -1;
  };
  // Splits on added tokens (leftmost-longest), applying lstrip/rstrip to the neighbours.
  void SplitAdded(absl::string_view text, bool normalized, bool parse_special,
                  std::vector<Section>* out) const;

  struct AddedToken {
    std::string content;
    std::string match;  // content, normalized when the token is matched in normalized text
    int32_t id;
    bool special, lstrip, rstrip;
    bool normalized;  // matched in normalized text (only when there is a normalizer)
  };
  std::vector<AddedToken> added_;
  absl::flat_hash_map<int32_t, size_t> added_by_id_;
  std::vector<std::vector<size_t>> added_by_first_byte_;  // [256]
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  DecoderSpec decoder_;
  // TemplateProcessing "single": ids before and after the sequence.
  std::vector<int32_t> template_prefix_, template_suffix_;
  absl::flat_hash_set<int32_t> special_ids_;
  int32_t vocab_size_ = 0;
  std::optional<int32_t> bos_id_, eos_id_;
  std::string bos_token_, eos_token_, chat_template_;
};

}  // namespace switchyard

// tokenizer.json decoders as one streaming state machine. Decode(ids) is Push(each) + Finish, so
// the text a stream emits, concatenated, is exactly the full decode: text is emitted only once no
// later token can change it (a UTF-8 character still incomplete, a byte-fallback run still open,
// spaces that clean-up or Strip may still remove are held back).
//
// Supported decoder shapes (anything else is refused at load, by name):
//   ByteLevel                                  GPT-2, Llama 3, Qwen
//   [Replace...] [ByteFallback] [Fuse] [Strip]  Llama 2, Mistral, TinyLlama
//   [ByteFallback] Metaspace [Fuse] [Strip]     SentencePiece exports with a Metaspace decoder
// Where Hugging Face's Rust and JavaScript implementations disagree (an invalid byte-fallback run;
// the replacement characters of the first Metaspace token), we follow Rust: it is what
// transformers users get.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace switchyard {

struct DecoderSpec {
  bool byte_level = false;
  struct Replace {
    std::string from, to;
  };
  std::vector<Replace> before_byte_fallback;  // string replacements on raw tokens
  bool byte_fallback = false;
  std::vector<Replace> after_byte_fallback;
  bool metaspace = false;  // after byte fallback
  std::string metaspace_replacement;
  bool metaspace_strip_first = true;  // prepend_scheme != never
  bool fuse = false;
  // Strip: up to `strip_start` leading / `strip_stop` trailing `strip_char`s, of the whole text
  // after Fuse, of each token otherwise.
  std::string strip_char;
  int strip_start = 0;
  int strip_stop = 0;
  bool clean_up_spaces = false;  // transformers' clean_up_tokenization (" ." -> "." ...)
};

// Null JSON: tokens are joined as they are.
absl::StatusOr<DecoderSpec> ParseDecoder(const nlohmann::json& config);

// Where a stream gets token strings.
class TokenSource {
 public:
  virtual ~TokenSource() = default;
  // False for an id without a token (it is skipped). `added` marks added tokens, whose content a
  // ByteLevel decoder passes through unchanged; `special` marks tokens skip_special drops.
  virtual bool Lookup(int32_t id, absl::string_view* token, bool* added, bool* special) const = 0;
};

// Each token's bytes as they appear inside a decoded output (what constrained decoding matches):
// `bytes[id]` empty for special tokens and ids without a token. `first_bytes`, when not empty, is
// what each token writes as the first token of an output (SentencePiece decoders drop the first
// token's leading space). Refused for decoders whose output is not a concatenation of per-token
// bytes (per-token Strip). Clean-up of spaces before punctuation is left out: constrained
// outputs are decoded without it (DecodeStream's clean_up_spaces = false).
struct TokenByteTable {
  std::vector<std::string> bytes;
  std::vector<std::string> first_bytes;
};
absl::StatusOr<TokenByteTable> BuildTokenByteTable(const DecoderSpec& spec,
                                                   const TokenSource& source, int32_t vocab_size);

// Thread-safety: one stream, one thread.
class DecodeStream {
 public:
  // clean_up_spaces = false turns the spec's clean-up off (constrained outputs, whose bytes the
  // grammar checked).
  DecodeStream(const DecoderSpec& spec, const TokenSource& source, bool skip_special,
               bool clean_up_spaces = true);

  // Appends to `out` the text that became final with this token.
  void Push(int32_t id, std::string* out);
  // Appends whatever was held back.
  void Finish(std::string* out);

 private:
  void EmitToken(std::string token, std::string* out);
  void EmitText(absl::string_view text, std::string* out);
  void FlushByteRun(std::string* out);
  void EmitCleaned(absl::string_view text, std::string* out, bool final);

  const DecoderSpec& spec_;
  const TokenSource& source_;
  bool skip_special_;
  bool clean_up_;
  utf8::LossyDecoder lossy_;
  std::string byte_run_;
  int64_t tokens_out_ = 0;  // tokens leaving the byte-fallback stage
  int strip_start_left_;
  std::string trailing_held_;  // trailing strip characters not yet known to be trailing
  std::string cleanup_held_;   // tail that clean-up may still change
};

}  // namespace switchyard

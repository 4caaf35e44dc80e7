// The text of one request's output as it grows token by token: incremental detokenization, stop
// strings that may span tokens, and holding back text that could still become a stop string, so
// that the concatenated deltas equal the final text exactly.
//
// Thread-safety: one request, one thread at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"

namespace switchyard {

class OutputText {
 public:
  // clean_up_spaces = false: decoded without the tokenizer's clean-up of spaces (constrained
  // outputs: the text is exactly the bytes the grammar checked).
  OutputText(const Tokenizer& tokenizer, bool skip_special_tokens,
             std::vector<std::string> stop_strings, bool include_stop_string,
             bool clean_up_spaces = true);

  // Adds a sampled token and appends the text that became final to `out`. Returns true when a
  // stop string appeared: `out` then ends at (or after, with include_stop_string) its first
  // occurrence, and nothing more may be pushed.
  bool Push(int32_t token, std::string* out);
  // Appends the text held back (the request ended for another reason).
  void Finish(std::string* out);

 private:
  // Moves the final part of pending_ to `out`; true when a stop string ended the text.
  bool Release(std::string* out);

  DecodeStream stream_;
  std::vector<std::string> stops_;
  bool include_stop_;
  std::string pending_;  // decoded, not yet released
};

}  // namespace switchyard

// tokenizer.json pre-tokenizers: Split (Isolated, Removed, inverted), ByteLevel, Metaspace,
// Sequence. Anything else is refused at load, by name.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace switchyard {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits every piece of `pieces` in place. `section_index` is the position of the text among
  // the sections that added tokens cut the input into (Metaspace's "first" scheme uses it).
  virtual void Split(std::vector<std::string>* pieces, int section_index) const = 0;
};

// Null JSON gives a null pre-tokenizer.
absl::StatusOr<std::unique_ptr<PreTokenizer>> CreatePreTokenizer(const nlohmann::json& config);

// GPT-2's byte -> printable character map, as UTF-8 strings.
const std::vector<std::string>& ByteLevelAlphabet();

}  // namespace switchyard

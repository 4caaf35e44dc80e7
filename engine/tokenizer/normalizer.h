// tokenizer.json normalizers: NFC/NFD/NFKC/NFKD (utf8proc), Lowercase, Prepend, Replace, Strip,
// Sequence. Anything else is refused at load, by name.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace switchyard {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `text` is valid UTF-8 and stays so.
  virtual void Normalize(std::string* text) const = 0;
};

// Null JSON gives a null normalizer.
absl::StatusOr<std::unique_ptr<Normalizer>> CreateNormalizer(const nlohmann::json& config);

}  // namespace switchyard

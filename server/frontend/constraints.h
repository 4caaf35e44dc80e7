// Structured-output constraints as the APIs carry them (a JSON schema, any JSON object, a regex,
// a choice of strings, a GBNF grammar), compiled against the model's vocabulary and cached: the
// compiled grammar also holds the per-context token sets every request with the same constraint
// reuses, so a constraint seen again costs a map lookup.
//
// Thread-safety: Compile may run on many threads at once.
#pragma once

#include <cstddef>
#include <list>
#include <memory>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/grammar/matcher.h"
#include "engine/tokenizer/tokenizer.h"

namespace switchyard {

struct OutputConstraint {
  enum class Kind { kJsonObject, kJsonSchema, kRegex, kChoice, kGrammar };
  Kind kind = Kind::kJsonObject;
  // kJsonSchema: the schema as JSON text (key order kept); kRegex: the pattern; kChoice: a JSON
  // array of strings; kGrammar: GBNF; kJsonObject: unused.
  std::string spec;
  std::string field;  // the request field it came from, for error messages
};

class ConstraintCompiler {
 public:
  explicit ConstraintCompiler(const Tokenizer* tokenizer, size_t max_cached = 64)
      : tokenizer_(tokenizer), max_cached_(max_cached) {}

  // INVALID_ARGUMENT naming the field and the problem; FAILED_PRECONDITION when the tokenizer
  // cannot support constrained decoding.
  absl::StatusOr<std::shared_ptr<const grammar::CompiledGrammar>> Compile(
      const OutputConstraint& constraint);
  size_t cached() const;

 private:
  absl::StatusOr<std::shared_ptr<const grammar::TokenVocabulary>> Vocabulary();

  const Tokenizer* tokenizer_;
  const size_t max_cached_;
  mutable absl::Mutex mu_;
  bool vocab_built_ ABSL_GUARDED_BY(mu_) = false;
  absl::StatusOr<std::shared_ptr<const grammar::TokenVocabulary>> vocab_ ABSL_GUARDED_BY(mu_);
  // Least recently used first.
  using Entry = std::pair<std::string, std::shared_ptr<const grammar::CompiledGrammar>>;
  std::list<Entry> lru_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> by_key_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchyard

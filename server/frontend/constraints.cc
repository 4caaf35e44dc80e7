#include "server/frontend/constraints.h"

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/grammar/gbnf.h"
#include "engine/grammar/json_schema.h"
#include "nlohmann/json.hpp"

namespace switchyard {
namespace {

absl::StatusOr<grammar::Grammar> BuildGrammar(const OutputConstraint& c) {
  switch (c.kind) {
    case OutputConstraint::Kind::kJsonObject:
      return grammar::JsonObjectGrammar();
    case OutputConstraint::Kind::kJsonSchema: {
      const auto schema = nlohmann::ordered_json::parse(c.spec, nullptr, false);
      if (schema.is_discarded()) return absl::InvalidArgumentError("the schema is not JSON");
      return grammar::JsonSchemaGrammar(schema);
    }
    case OutputConstraint::Kind::kRegex:
      return grammar::RegexGrammar(c.spec);
    case OutputConstraint::Kind::kChoice: {
      const auto list = nlohmann::json::parse(c.spec, nullptr, false);
      if (!list.is_array()) return absl::InvalidArgumentError("must be an array of strings");
      std::vector<std::string> choices;
      for (const auto& v : list) {
        if (!v.is_string()) return absl::InvalidArgumentError("must be an array of strings");
        choices.push_back(v.get<std::string>());
      }
      return grammar::ChoiceGrammar(choices);
    }
    case OutputConstraint::Kind::kGrammar:
      return grammar::ParseGbnf(c.spec);
  }
  return absl::InternalError("unknown constraint kind");
}

}  // namespace

absl::StatusOr<std::shared_ptr<const grammar::TokenVocabulary>> ConstraintCompiler::Vocabulary() {
  absl::MutexLock lock(&mu_);
  if (!vocab_built_) {
    vocab_built_ = true;
    absl::StatusOr<TokenByteTable> table = tokenizer_->TokenBytes();
    if (!table.ok()) {
      vocab_ = absl::FailedPreconditionError(absl::StrCat(
          "structured output is not available with this tokenizer: ", table.status().message()));
    } else {
      vocab_ =
          grammar::TokenVocabulary::Create(std::move(table->bytes), std::move(table->first_bytes));
    }
  }
  return vocab_;
}

absl::StatusOr<std::shared_ptr<const grammar::CompiledGrammar>> ConstraintCompiler::Compile(
    const OutputConstraint& c) {
  const std::string key = absl::StrCat(static_cast<int>(c.kind), ":", c.spec);
  {
    absl::MutexLock lock(&mu_);
    if (auto it = by_key_.find(key); it != by_key_.end()) {
      lru_.splice(lru_.end(), lru_, it->second);
      return it->second->second;
    }
  }
  SY_ASSIGN_OR_RETURN(auto vocab, Vocabulary());
  absl::StatusOr<grammar::Grammar> g = BuildGrammar(c);
  if (!g.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(c.field, ": ", g.status().message()));
  }
  auto compiled = std::make_shared<const grammar::CompiledGrammar>(std::move(*g), vocab);
  absl::MutexLock lock(&mu_);
  if (auto it = by_key_.find(key); it != by_key_.end()) return it->second->second;
  lru_.emplace_back(key, compiled);
  by_key_[key] = std::prev(lru_.end());
  while (lru_.size() > max_cached_) {
    by_key_.erase(lru_.front().first);
    lru_.pop_front();
  }
  return compiled;
}

size_t ConstraintCompiler::cached() const {
  absl::MutexLock lock(&mu_);
  return lru_.size();
}

}  // namespace switchyard

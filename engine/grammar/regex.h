// Regular expressions (the ECMAScript syntax JSON Schema's `pattern` and vLLM's guided_regex use)
// compiled into grammar rules: literals, `.`, classes with ranges and negation, \d \w \s and
// their negations, \xHH \uHHHH \u{H..}, groups (capturing, named, non-capturing), alternation,
// * + ? {n} {n,} {n,m} (lazy forms match the same strings). Anchors ^ and $ only at the ends.
// Refused by name: backreferences, lookaround, word boundaries, flags.
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/grammar/grammar.h"

namespace switchyard::grammar {

struct RegexOptions {
  // Characters are written as they appear inside a JSON string literal (", \ and control
  // characters escaped).
  bool json_string = false;
  // Search semantics (JSON Schema): without ^ / $ the match may sit anywhere in the text.
  bool search = false;
  int64_t max_repeat = 10000;  // largest {n,m} bound
};

absl::StatusOr<Sequence> CompileRegex(absl::string_view pattern, const RegexOptions& options,
                                      GrammarBuilder* builder);

// The symbol for one character of `chars` as written inside a JSON string literal.
Symbol JsonStringChar(const CodePointSet& chars, GrammarBuilder* builder);

}  // namespace switchyard::grammar

// GBNF, the grammar notation of llama.cpp (and vLLM's guided_grammar with xgrammar):
//
//   root   ::= object
//   object ::= "{" ws ( pair ( "," ws pair )* )? "}"
//   ws     ::= [ \t\n]*            # comment
//
// Literals "..." and classes [...] (ranges, ^ negation) with escapes \n \r \t \\ \" \] \xHH
// \uHHHH \UHHHHHHHH; `.` (any character); groups; | ; * + ? {m} {m,} {m,n}. A rule ends at a
// newline outside parentheses (a newline after | continues it). The start rule is `root`.
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/grammar/grammar.h"

namespace switchyard::grammar {

absl::StatusOr<Grammar> ParseGbnf(absl::string_view text);

}  // namespace switchyard::grammar

// Splits template source into text and the tokens of {{ }} and {% %} tags, applying Jinja's
// whitespace control as Hugging Face configures it: trim_blocks and lstrip_blocks on, '-' and '+'
// modifiers, comments dropped, {% raw %} kept verbatim, newlines normalised to "\n" and one
// trailing newline removed (keep_trailing_newline off).
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace switchyard::jinja {

struct Token {
  enum class Type {
    kText,
    kVarBegin,
    kVarEnd,
    kBlockBegin,
    kBlockEnd,
    kName,
    kString,
    kInt,
    kFloat,
    kOp,
    kEof
  };
  Type type;
  std::string value;
  int line = 1;
};

// Fails (Error kSyntax) on an unterminated tag, comment or string, or a character no token
// starts with.
std::vector<Token> Lex(absl::string_view source);

}  // namespace switchyard::jinja

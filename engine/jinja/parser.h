// Parses a template into a syntax tree (the statements Jinja's chat templates use: if, for with
// else and loop filters, set and block set, macro, call, filter blocks, break/continue, raw, and
// Hugging Face's generation block). Fails with Error kSyntax naming the line; unknown filters and
// tests are refused here, as Jinja refuses them at compile time.
#pragma once

#include "absl/strings/string_view.h"
#include "engine/jinja/ast.h"

namespace switchyard::jinja {

Body Parse(absl::string_view source);

}  // namespace switchyard::jinja

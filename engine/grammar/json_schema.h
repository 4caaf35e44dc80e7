// JSON Schema -> grammar, for response_format json_schema, vLLM's guided_json and constrained tool
// arguments. The output is JSON as json.dumps writes it or compact: one optional space after ','
// and ':', none elsewhere. Everything the grammar lets through validates against the schema.
//
// Supported: type (and lists of types), enum, const, anyOf / oneOf (oneOf's exclusivity is not
// enforced), allOf (merged), $ref into #/$defs and #/definitions (recursion allowed), properties,
// required, additionalProperties (false, or a schema for a map without properties), items,
// prefixItems, minItems / maxItems, minLength / maxLength, pattern, format (date, time,
// date-time, email, uuid, ipv4), minimum / maximum / exclusiveMinimum / exclusiveMaximum (integers
// exactly; numbers as decimals inside the bounds, without exponent; unbounded numbers take at most
// two exponent digits, so every output parses to a finite double). Keywords that constrain and
// are not listed are refused by name, never ignored.
#pragma once

#include "absl/status/statusor.h"
#include "engine/grammar/grammar.h"
#include "nlohmann/json.hpp"

namespace switchyard::grammar {

absl::StatusOr<Grammar> JsonSchemaGrammar(const nlohmann::ordered_json& schema);

// Any JSON object (response_format json_object).
absl::StatusOr<Grammar> JsonObjectGrammar();

// Exactly one of the strings.
absl::StatusOr<Grammar> ChoiceGrammar(const std::vector<std::string>& choices);

// A whole output matching the regex (vLLM's guided_regex).
absl::StatusOr<Grammar> RegexGrammar(absl::string_view pattern);

}  // namespace switchyard::grammar

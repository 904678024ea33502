// Grammars for `response_format`: any JSON object (json_object), or the JSON documents a JSON
// Schema allows (json_schema). The output is always one complete JSON value and nothing after it
// (generation is forced to end once the value is closed); up to 4 whitespace bytes may precede it.
//
// Both grammars only accept valid UTF-8 inside strings and bound what a model could otherwise
// repeat forever without saying anything: whitespace runs (at most 20 bytes in json_object mode;
// none in schema mode except one optional space after ':' and ','), number lengths (at most 16
// integer digits, 16 fraction digits, 3 exponent digits). String lengths are unbounded unless the
// schema gives maxLength.
//
// Supported JSON Schema (draft 2020-12 subset; anything else is refused with a SchemaError naming
// the keyword and where it is, never silently ignored):
//   type (a name or a list of names: object, array, string, number, integer, boolean, null)
//   properties, required, additionalProperties (objects list their properties in schema order;
//     optional ones may be left out; only the listed properties are generated. Without
//     properties, additionalProperties: <schema> gives a free-form map whose values follow it)
//   items, minItems, maxItems
//   minLength, maxLength (characters; at most 4096)
//   enum, const (any JSON values), anyOf, oneOf (generated like anyOf), allOf with one schema,
//   $ref to "#", "#/$defs/NAME" or "#/definitions/NAME" (recursion allowed), nullable: true,
//   true / {} (any JSON value).
//   Ignored annotations: title, description, default, examples, $schema, $id, $comment,
//   deprecated, readOnly, writeOnly, $defs, definitions.
#pragma once
#include <memory>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "calpaca/serve/grammar.h"

namespace calpaca::serve {

class SchemaError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Any JSON object, as OpenAI's {"type": "json_object"} promises.
std::shared_ptr<const Grammar> json_object_grammar();

// The documents `schema` allows. Throws SchemaError ("at #/properties/x: ...").
std::shared_ptr<const Grammar> json_schema_grammar(const nlohmann::ordered_json& schema);

}  // namespace calpaca::serve

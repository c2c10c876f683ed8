// PostgreSQL array literals, for passing many values as one statement parameter
// (`... FROM unnest($1::text[], $2::bigint[])`): the multi-row statements of the hot paths.
#pragma once

#include <string>
#include <string_view>

namespace mkt::pg {

// Appends `value` as one quoted element to an array literal that starts with '{' and is not
// closed yet.
inline void AppendTextArrayElement(std::string& literal, std::string_view value) {
  literal += literal.size() > 1 ? ",\"" : "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') literal += '\\';
    literal += c;
  }
  literal += '"';
}

// Returns the text[] literal of `values` (any range of strings).
template <class Container>
std::string TextArrayLiteral(const Container& values) {
  std::string literal = "{";
  for (const auto& v : values) AppendTextArrayElement(literal, v);
  return literal + "}";
}

// Returns the bigint[] literal of `values` (any range of integers).
template <class Container>
std::string IntArrayLiteral(const Container& values) {
  std::string literal = "{";
  for (const auto& v : values) {
    if (literal.size() > 1) literal += ',';
    literal += std::to_string(v);
  }
  return literal + "}";
}

}  // namespace mkt::pg

// PostgreSQL array literals, for passing many values as one statement parameter
// (`... FROM unnest($1::text[], $2::bigint[])`): the multi-row statements of the hot paths.
#pragma once

#include <string>
#include <string_view>

namespace mkt::pg {

// Appends `value` as one quoted element to an array literal that starts with '{' and is not
// closed yet. Runs between quotes and backslashes are copied whole: the group commits of the
// ledger and the events service append thousands of elements per statement.
inline void AppendTextArrayElement(std::string& literal, std::string_view value) {
  literal.append(literal.size() > 1 ? ",\"" : "\"");
  size_t from = 0;
  while (from < value.size()) {
    const size_t special = value.find_first_of("\"\\", from);
    if (special == std::string_view::npos) {
      literal.append(value.substr(from));
      break;
    }
    literal.append(value.substr(from, special - from));
    literal += '\\';
    literal += value[special];
    from = special + 1;
  }
  literal += '"';
}

// Appends the lowercase hex of `bytes` as one element (what `decode(x, 'hex')` reads back into
// bytea), without a temporary string: hex needs no escaping.
inline void AppendHexArrayElement(std::string& literal, std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  literal.append(literal.size() > 1 ? ",\"" : "\"");
  const size_t at = literal.size();
  literal.resize(at + 2 * bytes.size() + 1);
  char* out = literal.data() + at;
  for (unsigned char b : bytes) {
    *out++ = kDigits[b >> 4];
    *out++ = kDigits[b & 0xf];
  }
  *out = '"';
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

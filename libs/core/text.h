// Checks on text that arrives from clients, before it reaches PostgreSQL (which refuses
// malformed UTF-8 and NUL with an error that would look like our fault) or a person's screen.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace mkt {

// True if `s` is well-formed UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF)
// without NUL bytes.
bool IsWellFormedUtf8(std::string_view s);

// Returns the number of code points of `s` when it is well-formed UTF-8 without control
// characters (U+0000..U+001F, U+007F); -1 otherwise. For names and labels shown to people.
int PrintableUtf8Length(std::string_view s);

// `text` as well-formed UTF-8 without NUL (each malformed byte and each NUL becomes U+FFFD), cut
// to at most `max_bytes` bytes on a character boundary. For text stored as it came (a supplier's
// or core banking's message, an operator's reason, an error message) rather than refused: a
// byte-wise cut could end inside a character, which PostgreSQL refuses (22021), and a consumer
// would retry that message for ever.
std::string StorableText(std::string_view text, size_t max_bytes);

}  // namespace mkt

// The well-formedness check of an event campaign's trigger expression. The events service owns
// the language and evaluates it; this service only refuses what could never be a condition
// (unbalanced parentheses, unknown operators, a missing operand) before an operator submits it.
//
// Accepted shape:  expr  := or
//                  or    := and (("||" | "or") and)*
//                  and   := not (("&&" | "and") not)*
//                  not   := ("!" | "not") not | cmp
//                  cmp   := value (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in") value)?
//                  value := field | number | string | "true" | "false" | "(" expr ")"
//                           | "[" (value ("," value)*)? "]"
// A field is a dotted name such as event.amount_fen; strings are in '…' or "…".
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace mkt::campaigns {

inline constexpr size_t kMaxTriggerExpressionLength = 2000;

// OK when `expression` is non-empty and well formed; otherwise INVALID_ARGUMENT whose message
// says what is wrong and at which character (1-based).
absl::Status CheckTriggerExpression(std::string_view expression);

}  // namespace mkt::campaigns

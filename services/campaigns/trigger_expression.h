// The check of an event campaign's trigger expression before an operator saves or submits it.
//
// The events service owns the language (libs/expr, grammar in libs/expr/expr.h) and turns an
// approved EVENT_TRIGGER campaign into a rule (services/events/events_service.cc,
// RuleFromCampaign): it parses the expression with expr::Parse, requires it to pin exactly one
// event type at its top level (expr::RequiredValues(…, "event.type") has one value), then
// type-checks it against that event type's schema. A campaign it cannot turn into a rule is
// dead-lettered after approval, so this check refuses up front whatever the events service would
// refuse and can be known here without its event-type registry:
// - text: well-formed UTF-8, no control characters (tabs and line breaks may separate tokens but
//   not stand inside a string literal), at most kMaxTriggerExpressionLength bytes;
// - syntax: exactly libs/expr's parser (customer.tag("x"), lists, decimals, …);
// - the pin: one `event.type == "…"` (or `event.type in ["…"]`) joined by && at the top level,
//   naming a possible event type (1..64 of [A-Za-z0-9_.]);
// - types, as far as they are known without the event type: the built-in fields every event has
//   (type, customer_id, org_id, source, product_code: strings; amount_fen, occurred_at: numbers),
//   literals, lists, and field names that no event type can have (an attribute name has no dot).
// Not checked by CheckTriggerExpression: whether the pinned event type exists or is a reversal
// type, and whether an attribute exists in it and has the type the expression compares it with.
// CheckTriggerAgainstRegistry checks those against a copy of the events service's registry when
// there is one.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "services/events/event_type_cache.h"

namespace mkt::campaigns {

inline constexpr size_t kMaxTriggerExpressionLength = 2000;

// OK when `expression` is one the events service can compile (as far as checked above);
// otherwise INVALID_ARGUMENT on field "trigger_expression" whose message says what is wrong and,
// where there is one place, at which character (1-based, counted in bytes like the events
// service's own messages).
absl::Status CheckTriggerExpression(std::string_view expression);

// For an expression CheckTriggerExpression accepts: INVALID_ARGUMENT on "trigger_expression"
// when the pinned event type is not in the registry or undoes earlier events (a reversal type),
// or when the expression does not type-check against that type's attributes (the events
// service's own compiler, so the same message). OK when the registry is not available: the
// events service still refuses the campaign after approval, with the reason in its dead letter.
absl::Status CheckTriggerAgainstRegistry(std::string_view expression,
                                         events::EventTypeCache& registry);

}  // namespace mkt::campaigns

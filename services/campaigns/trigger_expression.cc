#include "services/campaigns/trigger_expression.h"

#include <cctype>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/expr/expr.h"

namespace mkt::campaigns {
namespace {

constexpr char kField[] = "trigger_expression";
// The field whose single required value the events service takes as the rule's event type.
constexpr char kTypeField[] = "event.type";

absl::Status Invalid(const std::string& message) { return InvalidArgument(kField, message); }

absl::Status ErrorAt(size_t pos, const std::string& what) {
  return Invalid(what + " at character " + std::to_string(pos + 1));
}

// The length of the well-formed UTF-8 sequence (not NUL) at s[i], or 0.
size_t SequenceLength(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t len = c < 0x80 ? 1 : c < 0xc2 ? 0 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf5 ? 4 : 0;
  if (len == 0 || len > s.size() - i || !IsWellFormedUtf8(s.substr(i, len))) return 0;
  return len;
}

std::string CodePoint(unsigned char c) {
  char buffer[8];
  std::snprintf(buffer, sizeof(buffer), "U+%04X", c);
  return buffer;
}

// Refuses what is not text an operator typed: malformed UTF-8, control characters (a NUL would
// also make the stored configuration unstorable as jsonb), and non-ASCII outside string literals
// (which the parser would report one byte at a time). The quoting follows libs/expr's lexer: '…'
// or "…", a backslash escapes the next character.
absl::Status CheckText(std::string_view s) {
  char quote = 0;
  bool escaped = false;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      const bool separator = c == '\t' || c == '\n' || c == '\r';
      if (quote == 0 && !separator) return ErrorAt(i, "control character " + CodePoint(c));
      if (quote != 0) {
        return ErrorAt(i, "control character " + CodePoint(c) +
                              (separator ? " inside a string literal (write \\n or \\t instead)"
                                         : " in a string literal"));
      }
    }
    const size_t len = SequenceLength(s, i);
    if (len == 0) return ErrorAt(i, "not well-formed UTF-8");
    if (quote != 0) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == static_cast<unsigned char>(quote)) {
        quote = 0;
      }
    } else if (c == '"' || c == '\'') {
      quote = static_cast<char>(c);
    } else if (len > 1) {
      return ErrorAt(i, "unknown operator or character '" + std::string(s.substr(i, len)) +
                            "' (only string literals may hold non-ASCII text)");
    }
    i += len;
  }
  return absl::OkStatus();
}

// What is known of an event's fields without the event-type registry (mirrors
// services/events/event_types.cc: EventTypeInfo::Field, BuiltinNames and the attribute-name rule
// of CheckEventType). Attributes may exist in the pinned event type, so their type is left open.
class FieldsWithoutRegistry final : public expr::Environment {
 public:
  std::optional<expr::FieldInfo> Field(std::string_view name) const override {
    if (name.substr(0, 6) == "event.") name.remove_prefix(6);
    using expr::Type;
    if (name == "type" || name == "customer_id" || name == "org_id" || name == "source" ||
        name == "product_code") {
      return expr::FieldInfo{Type::kString, 0};
    }
    if (name == "amount_fen" || name == "occurred_at") return expr::FieldInfo{Type::kNumber, 0};
    // An attribute name is 1..64 of [A-Za-z0-9_]: a dotted or longer name is no event's field.
    if (name.empty() || name.size() > 64 || name.find('.') != std::string_view::npos) {
      return std::nullopt;
    }
    return expr::FieldInfo{Type::kDynamic, 0};
  }
};

// The literals expr::RequiredValues(…, "event.type") takes its values from, for their positions
// (the same walk: a conjunction at the top level, `==` either way round, `in` with a list).
void CollectPins(const expr::Node& n, std::vector<const expr::Node*>* out) {
  if (n.kind == expr::NodeKind::kAnd) {
    for (const expr::Node& child : n.children) CollectPins(child, out);
    return;
  }
  if (n.kind != expr::NodeKind::kCompare) return;
  auto is_type = [](const expr::Node& x) {
    return x.kind == expr::NodeKind::kField && (x.text == kTypeField || x.text == "type");
  };
  auto is_string = [](const expr::Node& x) {
    return x.kind == expr::NodeKind::kLiteral && x.literal.kind == expr::Value::Kind::kString;
  };
  const expr::Node& l = n.children[0];
  const expr::Node& r = n.children[1];
  if (n.op == expr::CompareOp::kEq) {
    if (is_type(l) && is_string(r)) {
      out->push_back(&r);
    } else if (is_type(r) && is_string(l)) {
      out->push_back(&l);
    }
  } else if (n.op == expr::CompareOp::kIn && is_type(l) && r.kind == expr::NodeKind::kList) {
    for (const expr::Node& item : r.items) {
      if (is_string(item)) out->push_back(&item);
    }
  }
}

// services/events/event_types.cc ValidName: what an event type can be called.
bool IsEventTypeName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.')) return false;
  }
  return true;
}

absl::Status CheckPin(const expr::Expression& parsed) {
  const std::vector<std::string> types = expr::RequiredValues(parsed, kTypeField);
  std::vector<const expr::Node*> pins;
  CollectPins(parsed.root, &pins);
  if (types.empty()) {
    return Invalid(
        "must require one event type at its top level, e.g. event.type == \"deposit\" && "
        "event.amount_fen >= 100000 (a rule matches events of one type; a type compared under "
        "|| or ! does not count)");
  }
  if (types.size() > 1) {
    const std::string what = "requires " + std::to_string(types.size()) +
                             " event types; a rule matches events of exactly one type";
    return pins.size() == types.size() ? ErrorAt(pins[1]->pos, what) : Invalid(what);
  }
  if (!IsEventTypeName(types[0])) {
    const std::string what = "no event type can be called \"" + types[0] +
                             "\" (an event type name is 1..64 characters of [A-Za-z0-9_.])";
    return pins.size() == 1 ? ErrorAt(pins[0]->pos, what) : Invalid(what);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTriggerExpression(std::string_view expression) {
  bool blank = true;
  for (char c : expression) blank = blank && std::isspace(static_cast<unsigned char>(c));
  if (blank) return Invalid("an event campaign needs a trigger expression");
  if (expression.size() > kMaxTriggerExpressionLength) {
    return Invalid("longer than " + std::to_string(kMaxTriggerExpressionLength) + " characters");
  }
  if (absl::Status s = CheckText(expression); !s.ok()) return s;
  // The parser's messages already end in "at character N".
  absl::StatusOr<expr::Expression> parsed = expr::Parse(expression);
  if (!parsed.ok()) return Invalid(std::string(parsed.status().message()));
  if (absl::Status s = CheckPin(*parsed); !s.ok()) return s;
  if (absl::Status s = expr::Check(*parsed, FieldsWithoutRegistry()); !s.ok()) {
    std::string message(s.message());
    if (message.rfind("unknown field", 0) == 0) {
      message +=
          " (an event's fields are event.<name> without further dots; a customer's tags are "
          "customer.tag(\"name\"))";
    }
    return Invalid(message);
  }
  return absl::OkStatus();
}

absl::Status CheckTriggerAgainstRegistry(std::string_view expression,
                                         events::EventTypeCache& registry) {
  absl::StatusOr<expr::Expression> parsed = expr::Parse(expression);
  if (!parsed.ok()) return absl::OkStatus();  // CheckTriggerExpression reports it
  const std::vector<std::string> pinned = expr::RequiredValues(*parsed, "event.type");
  if (pinned.size() != 1) return absl::OkStatus();
  const std::string& type = pinned[0];
  std::optional<std::shared_ptr<const events::EventTypeInfo>> found = registry.Lookup(type);
  if (!found) return absl::OkStatus();
  if (*found == nullptr) {
    return Invalid("there is no event type \"" + type +
                   "\" in the events service's registry (GET /admin/v1/event-types lists them)");
  }
  if ((*found)->proto().reversal() != ::marketing::events::v1::NOT_A_REVERSAL) {
    return Invalid("\"" + type +
                   "\" undoes earlier events (a reversal type): it claws grants back and cannot "
                   "trigger them");
  }
  absl::StatusOr<std::shared_ptr<const expr::Program>> compiled =
      expr::CompileExpression(expression, **found);
  if (!compiled.ok()) {
    return Invalid(absl::StrCat(compiled.status().message(), " (against the attributes of ", type,
                                ": GET /admin/v1/event-types)"));
  }
  return absl::OkStatus();
}

}  // namespace mkt::campaigns

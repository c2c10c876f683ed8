#include "services/events/event_types.h"

#include <set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "libs/core/money.h"
#include "libs/core/status.h"
#include "libs/core/text.h"

namespace mkt::events {
namespace {

absl::Status Unfit(std::string_view field, std::string message) {
  return InvalidArgument(field, message);
}

// The latest instant a google.protobuf.Timestamp may hold (9999-12-31T23:59:59Z); PostgreSQL and
// the event log's monthly partitions take anything up to it.
constexpr int64_t kMaxTimestampSeconds = 253'402'300'799;

// Returns "" when `value` is text PostgreSQL can hold and people can read: well-formed UTF-8
// without NUL and without control characters (U+0001..U+001F, U+007F), except tab, line feed
// and carriage return when `layout_allowed` (free-text attribute values). Otherwise says what is
// wrong without quoting the value, which cannot be shown as it is.
std::string TextProblem(std::string_view value, bool layout_allowed) {
  if (PrintableUtf8Length(value) >= 0) return "";
  if (const size_t nul = value.find('\0'); nul != std::string_view::npos) {
    return absl::StrCat("contains a NUL character (U+0000) at byte ", nul);
  }
  if (!IsWellFormedUtf8(value)) return "is not well-formed UTF-8";
  // Well-formed UTF-8: a byte below 0x80 is always a character of its own.
  for (size_t i = 0; i < value.size(); ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c >= 0x20 && c != 0x7f) continue;
    if (layout_allowed && (c == '\t' || c == '\n' || c == '\r')) continue;
    return absl::StrFormat("contains the control character U+%04X at byte %d", c, i);
  }
  return "";
}

// Checks a text field of the event (type, ids, source, product code): printable UTF-8 only.
absl::Status CheckText(std::string_view field, std::string_view value,
                       std::string_view label = {}) {
  if (std::string problem = TextProblem(value, /*layout_allowed=*/false); !problem.empty()) {
    return Unfit(field, absl::StrCat(AsAbsl(label.empty() ? field : label), " ", problem));
  }
  return absl::OkStatus();
}

// Checks an amount of fen: 0..kMaxEventAmountFen (10^15), so that sums of amounts stay exact.
absl::Status CheckAmount(std::string_view field, std::string_view what, int64_t fen) {
  if (fen < 0) return Unfit(field, absl::StrCat(AsAbsl(what), " cannot be negative"));
  if (fen > kMaxEventAmountFen) {
    return Unfit(field, absl::StrCat(AsAbsl(what), " ", fen,
                                     " is above the largest amount an event may carry (",
                                     kMaxEventAmountFen, " fen)"));
  }
  return absl::OkStatus();
}

pb::AttributeSpec Attr(std::string name, pb::AttributeType type, bool required,
                       std::vector<std::string> enum_values = {}) {
  pb::AttributeSpec a;
  a.set_name(std::move(name));
  a.set_type(type);
  a.set_required(required);
  for (auto& v : enum_values) a.add_enum_values(std::move(v));
  return a;
}

pb::EventType Type(std::string name, std::string description, bool amount_required,
                   std::vector<pb::AttributeSpec> attributes,
                   pb::ReversalKind reversal = pb::NOT_A_REVERSAL) {
  pb::EventType t;
  t.set_name(std::move(name));
  t.set_description(std::move(description));
  t.set_amount_required(amount_required);
  t.set_reversal(reversal);
  t.set_version(1);
  for (auto& a : attributes) *t.add_attributes() = std::move(a);
  return t;
}

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.')) return false;
  }
  return true;
}

const std::set<std::string, std::less<>>& BuiltinNames() {
  static const auto* names = new std::set<std::string, std::less<>>{
      "type", "customer_id", "org_id", "source", "amount_fen", "product_code", "occurred_at"};
  return *names;
}

absl::StatusOr<TypedValue> Typed(const pb::AttributeSpec& spec, const std::string& raw) {
  TypedValue v;
  const std::string field = "attributes." + spec.name();
  // Every value is stored in the event log (jsonb, which refuses NUL) and may be quoted in a
  // dead letter's reason; only STRING values, free text, may hold tabs and line breaks.
  if (std::string problem = TextProblem(raw, spec.type() == pb::STRING); !problem.empty()) {
    return Unfit(field, absl::StrCat("attribute ", spec.name(), " ", problem));
  }
  switch (spec.type()) {
    case pb::STRING:
      v.kind = expr::Value::Kind::kString;
      v.text = raw;
      return v;
    case pb::ENUM:
      for (const auto& allowed : spec.enum_values()) {
        if (allowed == raw) {
          v.kind = expr::Value::Kind::kString;
          v.text = raw;
          return v;
        }
      }
      return Unfit(field, absl::StrCat("attribute ", spec.name(), " = \"", raw,
                                       "\" is not one of its enum values"));
    case pb::INT:
    case pb::DECIMAL_FEN:
      if (!absl::SimpleAtoi(raw, &v.number)) {
        return Unfit(field, absl::StrCat("attribute ", spec.name(), " = \"", raw, "\" is not ",
                                         spec.type() == pb::INT ? "an integer"
                                                                : "an integer amount of fen"));
      }
      if (spec.type() == pb::DECIMAL_FEN) {
        MKT_RETURN_IF_ERROR(CheckAmount(field, "attribute " + spec.name(), v.number));
      }
      v.kind = expr::Value::Kind::kNumber;
      return v;
    case pb::BOOL:
      if (raw != "true" && raw != "false") {
        return Unfit(field, absl::StrCat("attribute ", spec.name(), " = \"", raw,
                                         "\" is not true or false"));
      }
      v.kind = expr::Value::Kind::kBool;
      v.boolean = raw == "true";
      return v;
    case pb::TIMESTAMP: {
      absl::Time t;
      std::string err;
      if (!absl::ParseTime(absl::RFC3339_full, raw, &t, &err)) {
        return Unfit(field, absl::StrCat("attribute ", spec.name(), " = \"", raw,
                                         "\" is not an RFC 3339 timestamp"));
      }
      v.kind = expr::Value::Kind::kNumber;
      v.number = absl::ToUnixSeconds(t);
      return v;
    }
    default:
      return Internal("attribute of unknown type");
  }
}

}  // namespace

EventTypeInfo::EventTypeInfo(pb::EventType type) : type_(std::move(type)) {}

std::optional<expr::FieldInfo> EventTypeInfo::Field(std::string_view name) const {
  if (name.substr(0, 6) == "event.") name.remove_prefix(6);
  using expr::Type;
  if (name == "type") return expr::FieldInfo{Type::kString, kSlotType};
  if (name == "customer_id") return expr::FieldInfo{Type::kString, kSlotCustomer};
  if (name == "org_id") return expr::FieldInfo{Type::kString, kSlotOrg};
  if (name == "source") return expr::FieldInfo{Type::kString, kSlotSource};
  if (name == "amount_fen") return expr::FieldInfo{Type::kNumber, kSlotAmount};
  if (name == "product_code") return expr::FieldInfo{Type::kString, kSlotProduct};
  if (name == "occurred_at") return expr::FieldInfo{Type::kNumber, kSlotOccurredAt};
  for (int i = 0; i < type_.attributes_size(); ++i) {
    const pb::AttributeSpec& a = type_.attributes(i);
    if (a.name() != name) continue;
    Type t = Type::kString;
    if (a.type() == pb::INT || a.type() == pb::DECIMAL_FEN || a.type() == pb::TIMESTAMP) {
      t = Type::kNumber;
    }
    if (a.type() == pb::BOOL) t = Type::kBool;
    return expr::FieldInfo{t, kFirstAttributeSlot + i};
  }
  return std::nullopt;
}

std::vector<pb::EventType> DefaultEventTypes() {
  using A = pb::AttributeType;
  return {
      Type("card.opened", "A debit card was opened", false,
           {Attr("card_level", A::ENUM, false, {"standard", "gold", "platinum"})}),
      Type("card.activated", "A debit card was activated", false,
           {Attr("card_level", A::ENUM, false, {"standard", "gold", "platinum"})}),
      Type("loan.contract_signed", "A loan contract was signed", false,
           {Attr("contract_id", A::STRING, true), Attr("tenor_months", A::INT, false)}),
      Type("loan.disbursed", "A loan was disbursed (amount_fen = principal)", true,
           {Attr("contract_id", A::STRING, true), Attr("tenor_months", A::INT, false)}),
      Type("credit_card.application_approved", "A credit-card application was approved", false,
           {Attr("credit_limit_fen", A::DECIMAL_FEN, false)}),
      Type("credit_card.activated", "A credit card was activated", false, {}),
      Type("credit_card.first_spend", "The first spend on a new credit card", true,
           {Attr("merchant_category", A::STRING, false)}),
      Type("credit_card.spend", "A credit-card spend", true,
           {Attr("merchant_category", A::STRING, false),
            Attr("channel", A::ENUM, false, {"POS", "ONLINE", "QR"})}),
      Type("wealth.subscribed", "A wealth-management product was subscribed", true,
           {Attr("risk_level", A::INT, false)}),
      Type("deposit.made", "A deposit was made", true,
           {Attr("term_months", A::INT, false), Attr("new_money", A::BOOL, false)}),
      Type("mobile_banking.first_login", "The customer's first mobile-banking login", false,
           {Attr("device_os", A::ENUM, false, {"ios", "android", "harmony"})}),
      Type("payment.merchant_qr", "A payment by merchant QR code", true,
           {Attr("merchant_id", A::STRING, true), Attr("paid_at", A::TIMESTAMP, false)}),
      Type("loan.cancelled", "A loan was cancelled in its cooling-off period", false,
           {Attr(kOriginalEventAttribute, A::STRING, true)}, pb::CANCEL),
      Type("credit_card.refunded", "A credit-card spend was refunded (amount_fen given back)", true,
           {Attr(kOriginalEventAttribute, A::STRING, true)}, pb::REFUND),
  };
}

absl::Status CheckEventType(const pb::EventType& type) {
  if (!ValidName(type.name())) {
    return InvalidArgument("name", "an event type name is 1..64 characters of [A-Za-z0-9_.]");
  }
  std::set<std::string> seen;
  for (int i = 0; i < type.attributes_size(); ++i) {
    const auto& a = type.attributes(i);
    const std::string field = absl::StrCat("attributes[", i, "]");
    if (!ValidName(a.name()) || a.name().find('.') != std::string::npos) {
      return InvalidArgument(field + ".name", "an attribute name is 1..64 of [A-Za-z0-9_]");
    }
    if (BuiltinNames().count(a.name()) > 0 || !seen.insert(a.name()).second) {
      return InvalidArgument(field + ".name", "attribute " + a.name() + " is defined twice");
    }
    if (a.type() == pb::ATTRIBUTE_TYPE_UNSPECIFIED) {
      return InvalidArgument(field + ".type", "attribute " + a.name() + " needs a type");
    }
    if (a.type() == pb::ENUM && a.enum_values_size() == 0) {
      return InvalidArgument(field + ".enum_values", "an ENUM attribute lists its values");
    }
    for (const std::string& value : a.enum_values()) {
      if (PrintableUtf8Length(value) < 0) {
        return InvalidArgument(field + ".enum_values",
                               "an enum value is UTF-8 text without control characters");
      }
    }
  }
  if (type.reversal() != pb::NOT_A_REVERSAL) {
    bool has_original = false;
    for (const auto& a : type.attributes()) {
      has_original = has_original || (a.name() == kOriginalEventAttribute && a.required());
    }
    if (!has_original) {
      return InvalidArgument("attributes",
                             "a reversal type requires the attribute original_event_id");
    }
  }
  return absl::OkStatus();
}

void EventTypeRegistry::Load(const std::vector<pb::EventType>& types) {
  absl::MutexLock lock(&mu_);
  types_.clear();
  for (const auto& t : types) types_[t.name()] = std::make_shared<const EventTypeInfo>(t);
}

void EventTypeRegistry::Merge(const std::vector<pb::EventType>& types) {
  absl::MutexLock lock(&mu_);
  for (const auto& t : types) {
    auto& held = types_[t.name()];
    if (held == nullptr || held->proto().version() <= t.version()) {
      held = std::make_shared<const EventTypeInfo>(t);
    }
  }
}

absl::Status EventTypeRegistry::Put(const pb::EventType& type) {
  MKT_RETURN_IF_ERROR(CheckEventType(type));
  absl::MutexLock lock(&mu_);
  types_[type.name()] = std::make_shared<const EventTypeInfo>(type);
  return absl::OkStatus();
}

std::shared_ptr<const EventTypeInfo> EventTypeRegistry::Find(std::string_view name) const {
  absl::MutexLock lock(&mu_);
  auto it = types_.find(name);
  return it == types_.end() ? nullptr : it->second;
}

std::vector<pb::EventType> EventTypeRegistry::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<pb::EventType> out;
  for (const auto& [name, info] : types_) out.push_back(info->proto());
  return out;
}

absl::StatusOr<ValidatedEvent> EventTypeRegistry::Validate(
    const pb::BusinessEvent& event, std::string_view envelope_event_id) const {
  // Checked before it is quoted in "unknown event type" below.
  MKT_RETURN_IF_ERROR(CheckText("event_type", event.event_type()));
  std::shared_ptr<const EventTypeInfo> info = Find(event.event_type());
  if (info == nullptr) {
    return Unfit("event_type", absl::StrCat("unknown event type \"", event.event_type(), "\""));
  }
  if (event.source().empty() || event.source().size() > 64) {
    return Unfit("source", "source must be 1..64 characters");
  }
  if (event.source_event_id().empty() || event.source_event_id().size() > 128) {
    return Unfit("source_event_id", "source_event_id must be 1..128 characters");
  }
  if (event.customer_id().empty() || event.customer_id().size() > 64) {
    return Unfit("customer_id", "customer_id must be 1..64 characters");
  }
  if (event.org_id().empty() || event.org_id().size() > 64) {
    return Unfit("org_id", "org_id must be 1..64 characters");
  }
  // Core systems publish protobuf straight to the topic: their text reaches PostgreSQL as it is,
  // and a NUL or malformed UTF-8 there would fail the whole batch's transaction (protobuf's parser
  // checks UTF-8 of proto3 strings but lets NUL and control characters through).
  MKT_RETURN_IF_ERROR(CheckText("source", event.source()));
  MKT_RETURN_IF_ERROR(CheckText("source_event_id", event.source_event_id()));
  MKT_RETURN_IF_ERROR(CheckText("customer_id", event.customer_id()));
  MKT_RETURN_IF_ERROR(CheckText("org_id", event.org_id()));
  MKT_RETURN_IF_ERROR(CheckText("product_code", event.product_code()));
  MKT_RETURN_IF_ERROR(CheckText("event_id", envelope_event_id, "the envelope's event_id"));
  if (event.occurred_at().seconds() <= 0) {
    return Unfit("occurred_at", "occurred_at is required");
  }
  if (event.occurred_at().seconds() > kMaxTimestampSeconds || event.occurred_at().nanos() < 0 ||
      event.occurred_at().nanos() > 999'999'999) {
    return Unfit("occurred_at", "occurred_at is not a valid timestamp (at most 9999-12-31)");
  }
  MKT_RETURN_IF_ERROR(CheckAmount("amount_fen", "amount_fen", event.amount_fen()));
  const pb::EventType& type = info->proto();
  if (type.amount_required() && event.amount_fen() <= 0) {
    return Unfit("amount_fen", absl::StrCat("a ", type.name(), " event needs amount_fen > 0"));
  }
  ValidatedEvent v;
  v.event_key = absl::StrCat(event.source(), ":", event.source_event_id());
  v.envelope_event_id = std::string(envelope_event_id);
  v.source = event.source();
  v.event_type = event.event_type();
  v.customer_id = event.customer_id();
  v.org_id = event.org_id();
  v.product_code = event.product_code();
  v.occurred_at = absl::FromUnixSeconds(event.occurred_at().seconds()) +
                  absl::Nanoseconds(event.occurred_at().nanos());
  v.amount_fen = event.amount_fen();
  v.reversal = type.reversal();
  for (const auto& [name, value] : event.attributes()) {
    // Checked before it is quoted in "is not in the schema" below.
    MKT_RETURN_IF_ERROR(CheckText("attributes", name, "an attribute name"));
    bool known = false;
    for (const auto& a : type.attributes()) known = known || a.name() == name;
    if (!known) {
      return Unfit("attributes",
                   absl::StrCat("attribute \"", name, "\" is not in the schema of ", type.name()));
    }
    v.attributes[name] = value;
  }
  v.type_version = type.version();
  v.typed.resize(static_cast<size_t>(type.attributes_size()));
  for (int i = 0; i < type.attributes_size(); ++i) {
    const pb::AttributeSpec& spec = type.attributes(i);
    auto it = event.attributes().find(spec.name());
    if (it == event.attributes().end()) {
      if (spec.required()) {
        return Unfit("attributes." + spec.name(), absl::StrCat("required attribute ", spec.name(),
                                                               " of ", type.name(), " is missing"));
      }
      continue;
    }
    MKT_ASSIGN_OR_RETURN(v.typed[static_cast<size_t>(i)], Typed(spec, it->second));
  }
  if (v.reversal != pb::NOT_A_REVERSAL) {
    v.original_key = absl::StrCat(v.source, ":", v.attributes[kOriginalEventAttribute]);
  }
  return v;
}

TagValue TagValue::Number(int64_t n) {
  TagValue v;
  v.kind = Kind::kNumber;
  v.number = n;
  return v;
}

TagValue TagValue::Text(std::string t) {
  TagValue v;
  v.kind = Kind::kText;
  v.text = std::move(t);
  return v;
}

TagValue TagValue::Bool(bool b) {
  TagValue v;
  v.kind = Kind::kBool;
  v.boolean = b;
  return v;
}

namespace {

// Org ids and customer ids are printable text without NUL, so NUL separates them unambiguously.
std::string SnapshotKey(std::string_view org_id, std::string_view customer_id,
                        std::string_view tag) {
  std::string key;
  key.reserve(org_id.size() + customer_id.size() + tag.size() + 2);
  key.append(org_id).push_back('\0');
  key.append(customer_id).push_back('\0');
  key.append(tag);
  return key;
}

}  // namespace

void TagSnapshot::Put(std::string_view org_id, std::string_view customer_id, std::string_view tag,
                      TagValue value) {
  values_.insert_or_assign(SnapshotKey(org_id, customer_id, tag), std::move(value));
}

const TagValue* TagSnapshot::Find(std::string_view org_id, std::string_view customer_id,
                                  std::string_view tag) const {
  auto it = values_.find(SnapshotKey(org_id, customer_id, tag));
  return it == values_.end() ? nullptr : &it->second;
}

void InMemoryCustomerTags::Set(std::string customer_id, std::string tag, TagValue value) {
  absl::MutexLock lock(&mu_);
  tags_[{std::move(customer_id), std::move(tag)}] = std::move(value);
}

absl::Status InMemoryCustomerTags::Fetch(const TagQueries& queries, TagSnapshot& into) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [org, query] : queries) {
    for (const std::string& customer : query.customers) {
      for (const std::string& tag : query.tags) {
        auto it = tags_.find(std::make_pair(customer, tag));
        if (it != tags_.end()) into.Put(org, customer, tag, it->second);
      }
    }
  }
  return absl::OkStatus();
}

expr::Value EventActivation::Slot(int slot) const {
  switch (slot) {
    case kSlotType:
      return expr::Value::String(event_.event_type);
    case kSlotCustomer:
      return expr::Value::String(event_.customer_id);
    case kSlotOrg:
      return expr::Value::String(event_.org_id);
    case kSlotSource:
      return expr::Value::String(event_.source);
    case kSlotAmount:
      return expr::Value::Int(event_.amount_fen);
    case kSlotProduct:
      return event_.product_code.empty() ? expr::Value::Missing()
                                         : expr::Value::String(event_.product_code);
    case kSlotOccurredAt:
      return expr::Value::Int(absl::ToUnixSeconds(event_.occurred_at));
    default: {
      const size_t i = static_cast<size_t>(slot - kFirstAttributeSlot);
      if (slot < kFirstAttributeSlot || i >= event_.typed.size()) return expr::Value::Missing();
      const TypedValue& t = event_.typed[i];
      switch (t.kind) {
        case expr::Value::Kind::kBool:
          return expr::Value::Bool(t.boolean);
        case expr::Value::Kind::kNumber:
          return expr::Value::Int(t.number);
        case expr::Value::Kind::kString:
          return expr::Value::String(t.text);
        default:
          return expr::Value::Missing();
      }
    }
  }
}

expr::Value EventActivation::Tag(std::string_view name) const {
  if (tags_ == nullptr) return expr::Value::Missing();
  const TagValue* v = tags_->Find(tag_org_, event_.customer_id, name);
  if (v == nullptr) return expr::Value::Missing();
  switch (v->kind) {
    case TagValue::Kind::kNumber:
      return expr::Value::Int(v->number);
    case TagValue::Kind::kBool:
      return expr::Value::Bool(v->boolean);
    case TagValue::Kind::kText:
      return expr::Value::String(v->text);
  }
  return expr::Value::Missing();
}

}  // namespace mkt::events

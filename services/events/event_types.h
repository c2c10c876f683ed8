// The registry of business event types: each type's attribute schema, the validation of an
// incoming BusinessEvent against it (what does not fit is dead-lettered with the reason), and the
// typed view of a valid event that trigger conditions (libs/expr) are evaluated against.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/expr/expr.h"
#include "marketing/events/v1/business_event.pb.h"
#include "marketing/events/v1/events.pb.h"

namespace mkt::events {

namespace pb = ::marketing::events::v1;

// Slots of the fields every event has; attribute i of the type's schema is kFirstAttributeSlot+i.
enum BuiltinSlot : int {
  kSlotType = 0,
  kSlotCustomer,
  kSlotOrg,
  kSlotSource,
  kSlotAmount,
  kSlotProduct,
  kSlotOccurredAt,
  kFirstAttributeSlot,
};

// One event type with its slot layout; the Environment the checker types conditions against.
class EventTypeInfo final : public expr::Environment {
 public:
  explicit EventTypeInfo(pb::EventType type);
  const pb::EventType& proto() const { return type_; }
  std::optional<expr::FieldInfo> Field(std::string_view name) const override;

 private:
  pb::EventType type_;
};

// A typed attribute value (the storage behind expr::Value views).
struct TypedValue {
  expr::Value::Kind kind = expr::Value::Kind::kMissing;
  bool boolean = false;
  int64_t number = 0;
  std::string text;
};

// A business event that fits its type's schema.
struct ValidatedEvent {
  // source + ":" + source_event_id: the dedupe key.
  std::string event_key;
  std::string envelope_event_id;
  std::string source;
  std::string event_type;
  std::string customer_id;
  std::string org_id;
  std::string product_code;
  absl::Time occurred_at;
  int64_t amount_fen = 0;
  std::map<std::string, std::string> attributes;
  // Typed attributes in schema order.
  std::vector<TypedValue> typed;
  pb::ReversalKind reversal = pb::NOT_A_REVERSAL;
  // For reversals: the event_key of the event undone.
  std::string original_key;
};

inline constexpr char kOriginalEventAttribute[] = "original_event_id";
// Larger messages are dead-lettered; the gateway refuses larger events with 413 before publishing
// them (kMaxBusinessEventBytes in services/gateway/api_routes.cc).
inline constexpr size_t kMaxEventBytes = 64 * 1024;

// The twelve business events of the issue plus the two reversals (loan.cancelled,
// credit_card.refunded), seeded on first start.
std::vector<pb::EventType> DefaultEventTypes();

class EventTypeRegistry {
 public:
  // Replaces every type (at start-up, from the database).
  void Load(const std::vector<pb::EventType>& types);
  // Adds or replaces one type; INVALID_ARGUMENT when its schema is malformed.
  absl::Status Put(const pb::EventType& type);
  std::shared_ptr<const EventTypeInfo> Find(std::string_view name) const;
  std::vector<pb::EventType> List() const;

  // Returns the typed event, or INVALID_ARGUMENT (dead-letter it) saying what does not fit:
  // unknown type, missing required attribute, a value of the wrong type, missing ids.
  absl::StatusOr<ValidatedEvent> Validate(const pb::BusinessEvent& event,
                                          std::string_view envelope_event_id) const;

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<const EventTypeInfo>, std::less<>> types_
      ABSL_GUARDED_BY(mu_);
};

// Validates the shape of an event type definition.
absl::Status CheckEventType(const pb::EventType& type);

// A customer's tag value, as the segments service holds it.
struct TagValue {
  bool is_number = false;
  int64_t number = 0;
  std::string text;
};

// The seam to the segments service's tags (`customer.tag("age")` in conditions). The real gRPC
// client arrives with the segments issue; tests and the local stack use InMemoryCustomerTags.
class CustomerTags {
 public:
  virtual ~CustomerTags() = default;
  virtual std::optional<TagValue> Get(std::string_view org_id, std::string_view customer_id,
                                      std::string_view tag) const = 0;
};

class InMemoryCustomerTags final : public CustomerTags {
 public:
  void Set(std::string customer_id, std::string tag, TagValue value);
  std::optional<TagValue> Get(std::string_view org_id, std::string_view customer_id,
                              std::string_view tag) const override;

 private:
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, TagValue> tags_ ABSL_GUARDED_BY(mu_);
};

// The event as conditions see it; looks tags up lazily (once per name).
class EventActivation final : public expr::Activation {
 public:
  EventActivation(const ValidatedEvent& event, const CustomerTags* tags)
      : event_(event), tags_(tags) {}
  expr::Value Slot(int slot) const override;
  expr::Value Tag(std::string_view name) const override;

 private:
  const ValidatedEvent& event_;
  const CustomerTags* tags_;
  mutable std::map<std::string, std::optional<TagValue>, std::less<>> cache_;
};

}  // namespace mkt::events

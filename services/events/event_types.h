// The registry of business event types: each type's attribute schema, the validation of an
// incoming BusinessEvent against it (what does not fit is dead-lettered with the reason), and the
// typed view of a valid event that trigger conditions (libs/expr) are evaluated against.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
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
  // Typed attributes in schema order, of this version of the type.
  std::vector<TypedValue> typed;
  int64_t type_version = 0;
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
  // Adds or replaces each of `types` (a reload from the database) unless a higher version of it
  // is held: a type this process has just saved is never replaced by an older read.
  void Merge(const std::vector<pb::EventType>& types);
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

// A customer's tag value, as the segments service holds it: int and fen tags are numbers, dates
// "YYYY-MM-DD" text (which compares in date order), enum labels text, bools booleans.
struct TagValue {
  enum class Kind { kNumber, kText, kBool };
  Kind kind = Kind::kText;
  int64_t number = 0;
  std::string text;
  bool boolean = false;

  static TagValue Number(int64_t n);
  static TagValue Text(std::string t);
  static TagValue Bool(bool b);
  bool operator==(const TagValue&) const = default;
};

// The tag values a batch's conditions may read, fetched before any of them is evaluated, so that
// matching never waits on the segments service per event. Keyed by (org, customer, tag): a rule
// reads the tags as its org may see them, and the segments service shows each org only its own
// and the federation's tags of the customers it covers.
class TagSnapshot {
 public:
  void Put(std::string_view org_id, std::string_view customer_id, std::string_view tag,
           TagValue value);
  const TagValue* Find(std::string_view org_id, std::string_view customer_id,
                       std::string_view tag) const;
  size_t size() const { return values_.size(); }

 private:
  absl::flat_hash_map<std::string, TagValue> values_;
};

// What one batch needs: per org (a rule's), the customers and the tags its candidate rules read.
struct TagQuery {
  std::set<std::string> customers;
  std::set<std::string> tags;
};
using TagQueries = std::map<std::string, TagQuery, std::less<>>;

// The seam to the customers' tags (`customer.tag("age")` in conditions): the segments service in
// a deployment (SegmentTags, decision 032), a fixed table in tests and tools.
class CustomerTags {
 public:
  virtual ~CustomerTags() = default;
  // Adds to `into` the values `queries` ask for that exist. An error (the segments service is
  // unreachable) fails the batch, which the consumer retries: a condition is never evaluated
  // against tags that could not be read.
  virtual absl::Status Fetch(const TagQueries& queries, TagSnapshot& into) const = 0;
};

// Tags from a table held in memory, the same for every org (tests and the `tags_file` option).
class InMemoryCustomerTags final : public CustomerTags {
 public:
  void Set(std::string customer_id, std::string tag, TagValue value);
  absl::Status Fetch(const TagQueries& queries, TagSnapshot& into) const override;

 private:
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, TagValue, std::less<>> tags_ ABSL_GUARDED_BY(mu_);
};

// The event as conditions see it. Tags come from the batch's snapshot as `tag_org` (the rule's
// org) reads them; without a snapshot every tag is missing.
class EventActivation final : public expr::Activation {
 public:
  EventActivation(const ValidatedEvent& event, const TagSnapshot* tags,
                  std::string_view tag_org = {})
      : event_(event), tags_(tags), tag_org_(tag_org) {}
  expr::Value Slot(int slot) const override;
  expr::Value Tag(std::string_view name) const override;

 private:
  const ValidatedEvent& event_;
  const TagSnapshot* tags_;
  std::string_view tag_org_;
};

}  // namespace mkt::events

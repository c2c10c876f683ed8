// Tag values as the index and the rules see them: the schema of a tag (from the dictionary), a
// typed value, and the conversions between the proto form (Kafka, gRPC), the canonical text stored
// in PostgreSQL, and the cells of a CSV import. Dates are days since 1970-01-01 in China Standard
// Time, so "today" and "within 30 days" mean what a branch operator means.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "marketing/segments/v1/segments.pb.h"

namespace mkt::segments {

namespace pb = ::marketing::segments::v1;

// What the index needs to know about a tag.
struct TagSchema {
  std::string name;
  pb::TagType type = pb::TAG_TYPE_UNSPECIFIED;
  std::string org_id;
  std::vector<std::string> allowed_values;  // enum only
  bool multi_valued = false;                // enum only

  // Int, fen and date tags are kept as bit slices; bool and enum as one bitmap per label.
  bool numeric() const {
    return type == pb::TAG_TYPE_INT || type == pb::TAG_TYPE_DECIMAL_FEN ||
           type == pb::TAG_TYPE_DATE;
  }
  bool Allows(std::string_view label) const;
};

TagSchema SchemaOf(const pb::Tag& tag);

// One customer's value of one tag: `number` for numeric tags (dates as day numbers), `labels`
// otherwise (bool as "true"/"false"; one label, or a set for a multi-valued enum, sorted).
struct Value {
  int64_t number = 0;
  std::vector<std::string> labels;

  bool operator==(const Value&) const = default;
};

// Returns the day number (days since 1970-01-01) of `t` in China Standard Time.
int32_t DayNumber(absl::Time t);
// Returns today's day number in China Standard Time.
int32_t Today();
// Parses "YYYY-MM-DD" into a day number.
absl::StatusOr<int32_t> ParseDate(std::string_view text);
// Formats a day number as "YYYY-MM-DD".
std::string FormatDate(int32_t day);

// Returns the typed value of `value` for `schema`; INVALID_ARGUMENT when the value's kind does
// not fit the tag's type or an enum label is not allowed. `field` names the value in errors.
absl::StatusOr<Value> FromProto(const TagSchema& schema, const pb::TagValue& value,
                                std::string_view field);
// Returns the proto form of `value`.
pb::TagValue ToProto(const TagSchema& schema, const Value& value);

// The canonical text stored in PostgreSQL (tag_values.value): "true"/"false", the label, labels
// joined by '|', the integer, or "YYYY-MM-DD".
std::string EncodeValue(const TagSchema& schema, const Value& value);
absl::StatusOr<Value> DecodeValue(const TagSchema& schema, std::string_view text);

// Parses a CSV cell: bool true/false/1/0/yes/no/y/n, an enum label (labels separated by '|' for
// a multi-valued enum), an integer, an amount in yuan with at most two decimals for fen tags
// ("1234.5" → 123450 fen), or "YYYY-MM-DD".
absl::StatusOr<Value> ParseCell(const TagSchema& schema, std::string_view cell);

// Returns INVALID_ARGUMENT unless `name` is a valid tag name ([a-z][a-z0-9_]{0,63}).
absl::Status ValidateTagName(std::string_view name, std::string_view field);

}  // namespace mkt::segments

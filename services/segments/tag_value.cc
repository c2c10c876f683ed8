#include "services/segments/tag_value.h"

#include <algorithm>
#include <charconv>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/civil_time.h"
#include "absl/time/clock.h"
#include "libs/core/status.h"

namespace mkt::segments {
namespace {

const absl::TimeZone& ChinaStandardTime() {
  static const absl::TimeZone tz = absl::FixedTimeZone(8 * 3600);
  return tz;
}

const absl::CivilDay kEpochDay(1970, 1, 1);

absl::Status Bad(std::string_view field, const std::string& message) {
  return InvalidArgument(field, message);
}

bool ParseInt64(std::string_view text, int64_t* out) {
  if (text.empty()) return false;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  if (*begin == '+') ++begin;
  auto [ptr, ec] = std::from_chars(begin, end, *out);
  return ec == std::errc() && ptr == end;
}

Value Sorted(std::vector<std::string> labels) {
  std::sort(labels.begin(), labels.end());
  labels.erase(std::unique(labels.begin(), labels.end()), labels.end());
  return Value{.labels = std::move(labels)};
}

absl::Status CheckLabels(const TagSchema& schema, const Value& value, std::string_view field) {
  if (!schema.multi_valued && value.labels.size() != 1) {
    return Bad(field, absl::StrCat("tag ", schema.name, " takes exactly one value"));
  }
  for (const std::string& label : value.labels) {
    if (!schema.Allows(label)) {
      return Bad(field,
                 absl::StrCat("\"", label, "\" is not an allowed value of tag ", schema.name));
    }
  }
  return absl::OkStatus();
}

// Parses a yuan amount with at most two decimals into fen, exactly (no floating point).
bool ParseYuan(std::string_view text, int64_t* fen) {
  bool negative = false;
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) {
    negative = text[0] == '-';
    text.remove_prefix(1);
  }
  std::string_view whole = text, frac;
  if (size_t dot = text.find('.'); dot != std::string_view::npos) {
    whole = text.substr(0, dot);
    frac = text.substr(dot + 1);
    if (frac.empty() || frac.size() > 2) return false;
  }
  if (whole.empty()) return false;
  for (char c : whole) {
    if (c < '0' || c > '9') return false;
  }
  for (char c : frac) {
    if (c < '0' || c > '9') return false;
  }
  int64_t yuan = 0;
  if (!ParseInt64(whole, &yuan) || yuan > INT64_MAX / 100 - 1) return false;
  int64_t cents = 0;
  if (!frac.empty()) {
    ParseInt64(frac, &cents);
    if (frac.size() == 1) cents *= 10;
  }
  *fen = (yuan * 100 + cents) * (negative ? -1 : 1);
  return true;
}

}  // namespace

bool TagSchema::Allows(std::string_view label) const {
  if (type == pb::TAG_TYPE_BOOL) return label == "true" || label == "false";
  return std::find(allowed_values.begin(), allowed_values.end(), label) != allowed_values.end();
}

TagSchema SchemaOf(const pb::Tag& tag) {
  TagSchema s;
  s.name = tag.name();
  s.type = tag.type();
  s.org_id = tag.org_id();
  s.allowed_values.assign(tag.allowed_values().begin(), tag.allowed_values().end());
  s.multi_valued = tag.multi_valued();
  return s;
}

int32_t DayNumber(absl::Time t) {
  return static_cast<int32_t>(absl::ToCivilDay(t, ChinaStandardTime()) - kEpochDay);
}

int32_t Today() { return DayNumber(absl::Now()); }

absl::StatusOr<int32_t> ParseDate(std::string_view text) {
  int64_t y = 0, m = 0, d = 0;
  if (text.size() != 10 || text[4] != '-' || text[7] != '-' || !ParseInt64(text.substr(0, 4), &y) ||
      !ParseInt64(text.substr(5, 2), &m) || !ParseInt64(text.substr(8, 2), &d)) {
    return absl::InvalidArgumentError("expected a date YYYY-MM-DD");
  }
  absl::CivilDay day(y, m, d);
  if (day.year() != y || day.month() != m || day.day() != d) {
    return absl::InvalidArgumentError("no such date");
  }
  return static_cast<int32_t>(day - kEpochDay);
}

std::string FormatDate(int32_t day) {
  absl::CivilDay civil = kEpochDay + day;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02d", static_cast<int>(civil.year()), civil.month(),
                civil.day());
  return buf;
}

absl::StatusOr<Value> FromProto(const TagSchema& schema, const pb::TagValue& value,
                                std::string_view field) {
  auto wrong = [&] {
    return Bad(field, absl::StrCat("value does not fit tag ", schema.name, " (",
                                   pb::TagType_Name(schema.type), ")"));
  };
  switch (schema.type) {
    case pb::TAG_TYPE_BOOL:
      if (value.value_case() != pb::TagValue::kBoolValue) return wrong();
      return Value{.labels = {value.bool_value() ? "true" : "false"}};
    case pb::TAG_TYPE_ENUM: {
      Value v;
      if (value.value_case() == pb::TagValue::kEnumValue) {
        v.labels = {value.enum_value()};
      } else if (value.value_case() == pb::TagValue::kEnumSet && schema.multi_valued) {
        v = Sorted({value.enum_set().values().begin(), value.enum_set().values().end()});
      } else {
        return wrong();
      }
      MKT_RETURN_IF_ERROR(CheckLabels(schema, v, field));
      return v;
    }
    case pb::TAG_TYPE_INT:
    case pb::TAG_TYPE_DECIMAL_FEN:
      if (value.value_case() != pb::TagValue::kIntValue) return wrong();
      return Value{.number = value.int_value()};
    case pb::TAG_TYPE_DATE: {
      if (value.value_case() != pb::TagValue::kDateValue) return wrong();
      absl::StatusOr<int32_t> day = ParseDate(value.date_value());
      if (!day.ok()) return Bad(field, std::string(day.status().message()));
      return Value{.number = *day};
    }
    default:
      return wrong();
  }
}

pb::TagValue ToProto(const TagSchema& schema, const Value& value) {
  pb::TagValue out;
  out.set_tag(schema.name);
  switch (schema.type) {
    case pb::TAG_TYPE_BOOL:
      out.set_bool_value(!value.labels.empty() && value.labels[0] == "true");
      break;
    case pb::TAG_TYPE_ENUM:
      if (schema.multi_valued) {
        for (const auto& l : value.labels) out.mutable_enum_set()->add_values(l);
      } else if (!value.labels.empty()) {
        out.set_enum_value(value.labels[0]);
      }
      break;
    case pb::TAG_TYPE_DATE:
      out.set_date_value(FormatDate(static_cast<int32_t>(value.number)));
      break;
    default:
      out.set_int_value(value.number);
  }
  return out;
}

std::string EncodeValue(const TagSchema& schema, const Value& value) {
  switch (schema.type) {
    case pb::TAG_TYPE_BOOL:
    case pb::TAG_TYPE_ENUM:
      return absl::StrJoin(value.labels, "|");
    case pb::TAG_TYPE_DATE:
      return FormatDate(static_cast<int32_t>(value.number));
    default:
      return std::to_string(value.number);
  }
}

absl::StatusOr<Value> DecodeValue(const TagSchema& schema, std::string_view text) {
  switch (schema.type) {
    case pb::TAG_TYPE_BOOL:
    case pb::TAG_TYPE_ENUM: {
      std::vector<std::string> labels = absl::StrSplit(AsAbsl(text), '|');
      return Sorted(std::move(labels));
    }
    case pb::TAG_TYPE_DATE: {
      MKT_ASSIGN_OR_RETURN(int32_t day, ParseDate(text));
      return Value{.number = day};
    }
    default: {
      int64_t n = 0;
      if (!ParseInt64(text, &n)) return absl::InvalidArgumentError("stored value is not a number");
      return Value{.number = n};
    }
  }
}

absl::StatusOr<Value> ParseCell(const TagSchema& schema, std::string_view cell) {
  const std::string field = schema.name;
  switch (schema.type) {
    case pb::TAG_TYPE_BOOL: {
      std::string lower = absl::AsciiStrToLower(AsAbsl(cell));
      if (lower == "true" || lower == "1" || lower == "yes" || lower == "y") {
        return Value{.labels = {"true"}};
      }
      if (lower == "false" || lower == "0" || lower == "no" || lower == "n") {
        return Value{.labels = {"false"}};
      }
      return Bad(field, absl::StrCat("\"", std::string(cell), "\" is not true or false"));
    }
    case pb::TAG_TYPE_ENUM: {
      std::vector<std::string> labels;
      if (schema.multi_valued) {
        labels = absl::StrSplit(AsAbsl(cell), '|');
      } else {
        labels = {std::string(cell)};
      }
      Value v = Sorted(std::move(labels));
      MKT_RETURN_IF_ERROR(CheckLabels(schema, v, field));
      return v;
    }
    case pb::TAG_TYPE_INT: {
      int64_t n = 0;
      if (!ParseInt64(cell, &n)) {
        return Bad(field, absl::StrCat("\"", std::string(cell), "\" is not an integer"));
      }
      return Value{.number = n};
    }
    case pb::TAG_TYPE_DECIMAL_FEN: {
      int64_t fen = 0;
      if (!ParseYuan(cell, &fen)) {
        return Bad(field, absl::StrCat("\"", std::string(cell),
                                       "\" is not an amount in yuan with at most 2 decimals"));
      }
      return Value{.number = fen};
    }
    case pb::TAG_TYPE_DATE: {
      absl::StatusOr<int32_t> day = ParseDate(cell);
      if (!day.ok()) {
        return Bad(field, absl::StrCat("\"", std::string(cell), "\": ", day.status().message()));
      }
      return Value{.number = *day};
    }
    default:
      return Bad(field, "tag has no type");
  }
}

absl::Status ValidateTagName(std::string_view name, std::string_view field) {
  bool ok = !name.empty() && name.size() <= 64 && name[0] >= 'a' && name[0] <= 'z';
  for (char c : name) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
  }
  if (!ok) return InvalidArgument(field, "a tag name is [a-z][a-z0-9_]{0,63}");
  return absl::OkStatus();
}

}  // namespace mkt::segments

// protojson.h: protobuf's JSON mapping written from reflection. Whatever this writer does not know
// goes, whole message, to protobuf's printer (ByProtobuf).
#include <array>
#include <string>
#include <string_view>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"
#include "libs/protojson/protojson.h"

namespace mkt::protojson {
namespace {

namespace gpb = ::google::protobuf;
using FieldDescriptor = gpb::FieldDescriptor;

// Deeper messages (none of ours) go to protobuf's converter, which applies its own limit.
constexpr int kMaxDepth = 64;

// RFC 3339's range, as protobuf's Timestamp checks it: 0001-01-01T00:00:00Z ..
// 9999-12-31T23:59:59Z.
constexpr int64_t kMinTimestampSeconds = -62135596800;
constexpr int64_t kMaxTimestampSeconds = 253402300799;

std::string ByProtobuf(const gpb::Message& message, Fields fields) {
  gpb::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = fields == Fields::kAll;
  std::string out;
  const auto status = gpb::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) return "{}";
  return out;
}

// Length of the valid UTF-8 sequence at s[i], or 0 when it is not one.
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  const auto continuation = [&](size_t k) { return k < s.size() && (byte(k) & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return continuation(i + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!continuation(i + 1) || !continuation(i + 2)) return 0;
    if (c == 0xE0 && byte(i + 1) < 0xA0) return 0;   // overlong
    if (c == 0xED && byte(i + 1) >= 0xA0) return 0;  // a UTF-16 surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!continuation(i + 1) || !continuation(i + 2) || !continuation(i + 3)) return 0;
    if (c == 0xF0 && byte(i + 1) < 0x90) return 0;   // overlong
    if (c == 0xF4 && byte(i + 1) >= 0x90) return 0;  // beyond U+10FFFF
    return 4;
  }
  return 0;
}

// The bytes a JSON string holds as they are: printable ASCII but the quote, the backslash, '<'
// and '>'.
constexpr std::array<bool, 256> PlainJsonBytes() {
  std::array<bool, 256> plain{};
  for (int c = 0x20; c < 0x7F; ++c) plain[c] = c != '"' && c != '\\' && c != '<' && c != '>';
  return plain;
}
constexpr std::array<bool, 256> kPlainJsonByte = PlainJsonBytes();

// Appends `s` as a JSON string. Control characters, the quote, the backslash, '<', '>' and the
// JavaScript line terminators U+2028/U+2029 are escaped (as protobuf does). Returns false when
// `s` is not valid UTF-8: protobuf's converter has its own way with such strings (it drops bad
// bytes, decodes overlong forms), which the caller then leaves to it. Responses parsed from a
// backend never hold one (protobuf refuses them when parsing).
bool AppendJsonString(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  size_t i = 0;
  while (i < s.size()) {
    // A run of plain bytes is copied whole (most strings are one run).
    size_t end = i;
    while (end < s.size() && kPlainJsonByte[static_cast<unsigned char>(s[end])]) ++end;
    out.append(s.data() + i, end - i);
    i = end;
    if (i == s.size()) break;
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const size_t n = Utf8SequenceLength(s, i);
      if (n == 0) return false;
      if (n == 3 && c == 0xE2 && static_cast<unsigned char>(s[i + 1]) == 0x80 &&
          (static_cast<unsigned char>(s[i + 2]) & 0xFE) == 0xA8) {
        out.append(static_cast<unsigned char>(s[i + 2]) == 0xA8 ? "\\u2028" : "\\u2029");
      } else {
        out.append(s.data() + i, n);
      }
      i += n;
      continue;
    }
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\b':
        out.append("\\b");
        break;
      case '\f':
        out.append("\\f");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default:
        if (c < 0x20 || c == 0x7F || c == '<' || c == '>') {
          out.append("\\u00");
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xF]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out.push_back('"');
  return true;
}

// Appends a google.protobuf.Timestamp as RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, as
// protobuf writes it; false when it is outside the range protobuf accepts.
bool AppendTimestamp(std::string& out, const gpb::Message& ts) {
  const gpb::Descriptor* d = ts.GetDescriptor();
  const FieldDescriptor* seconds_field = d->FindFieldByNumber(1);
  const FieldDescriptor* nanos_field = d->FindFieldByNumber(2);
  if (seconds_field == nullptr || nanos_field == nullptr) return false;
  const gpb::Reflection* r = ts.GetReflection();
  const int64_t seconds = r->GetInt64(ts, seconds_field);
  const int32_t nanos = r->GetInt32(ts, nanos_field);
  if (seconds < kMinTimestampSeconds || seconds > kMaxTimestampSeconds || nanos < 0 ||
      nanos > 999'999'999) {
    return false;
  }
  const absl::CivilSecond t =
      absl::ToCivilSecond(absl::FromUnixSeconds(seconds), absl::UTCTimeZone());
  // "YYYY-MM-DDTHH:MM:SS" and the fraction, digit by digit (the range keeps the year at 4 digits).
  char buf[40];
  char* p = buf;
  const auto digits = [&p](int64_t value, int width) {
    for (int k = width - 1; k >= 0; --k) {
      p[k] = static_cast<char>('0' + value % 10);
      value /= 10;
    }
    p += width;
  };
  *p++ = '"';
  digits(t.year(), 4);
  *p++ = '-';
  digits(t.month(), 2);
  *p++ = '-';
  digits(t.day(), 2);
  *p++ = 'T';
  digits(t.hour(), 2);
  *p++ = ':';
  digits(t.minute(), 2);
  *p++ = ':';
  digits(t.second(), 2);
  if (nanos != 0) {
    *p++ = '.';
    if (nanos % 1'000'000 == 0) {
      digits(nanos / 1'000'000, 3);
    } else if (nanos % 1'000 == 0) {
      digits(nanos / 1'000, 6);
    } else {
      digits(nanos, 9);
    }
  }
  *p++ = 'Z';
  *p++ = '"';
  out.append(buf, static_cast<size_t>(p - buf));
  return true;
}

bool AppendMessage(std::string& out, const gpb::Message& message, Fields fields, int depth);

// Appends the value of the scalar `field` (element `index` of a repeated field, -1 for a singular
// one).
bool AppendValue(std::string& out, const gpb::Message& message, const FieldDescriptor* field,
                 int index) {
  const gpb::Reflection* r = message.GetReflection();
  const bool repeated = index >= 0;
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      absl::StrAppend(&out, repeated ? r->GetRepeatedInt32(message, field, index)
                                     : r->GetInt32(message, field));
      return true;
    case FieldDescriptor::CPPTYPE_UINT32:
      absl::StrAppend(&out, repeated ? r->GetRepeatedUInt32(message, field, index)
                                     : r->GetUInt32(message, field));
      return true;
    case FieldDescriptor::CPPTYPE_INT64:  // 64-bit integers are strings in protobuf's JSON
      absl::StrAppend(
          &out, "\"",
          repeated ? r->GetRepeatedInt64(message, field, index) : r->GetInt64(message, field),
          "\"");
      return true;
    case FieldDescriptor::CPPTYPE_UINT64:
      absl::StrAppend(
          &out, "\"",
          repeated ? r->GetRepeatedUInt64(message, field, index) : r->GetUInt64(message, field),
          "\"");
      return true;
    case FieldDescriptor::CPPTYPE_BOOL:
      out.append((repeated ? r->GetRepeatedBool(message, field, index) : r->GetBool(message, field))
                     ? "true"
                     : "false");
      return true;
    case FieldDescriptor::CPPTYPE_ENUM: {
      if (field->enum_type()->full_name() == "google.protobuf.NullValue") return false;
      const int number = repeated ? r->GetRepeatedEnumValue(message, field, index)
                                  : r->GetEnumValue(message, field);
      if (const gpb::EnumValueDescriptor* v = field->enum_type()->FindValueByNumber(number)) {
        return AppendJsonString(out, v->name());
      }
      absl::StrAppend(&out, number);  // a value this build does not know: its number
      return true;
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string scratch;
      const std::string& value =
          repeated ? r->GetRepeatedStringReference(message, field, index, &scratch)
                   : r->GetStringReference(message, field, &scratch);
      if (field->type() == FieldDescriptor::TYPE_BYTES) {
        return AppendJsonString(out, absl::Base64Escape(value));
      }
      return AppendJsonString(out, value);
    }
    default:  // float and double (protobuf's shortest round-trip formatting is left to it);
              // messages are AppendField's
      return false;
  }
}

bool AppendField(std::string& out, const gpb::Message& message, const FieldDescriptor* field,
                 Fields fields, int depth) {
  const gpb::Reflection* r = message.GetReflection();
  const auto append_message = [&](const gpb::Message& m) {
    return AppendMessage(out, m, fields, depth + 1);
  };
  if (field->is_map()) {
    out.push_back('{');
    const FieldDescriptor* key = field->message_type()->map_key();
    const FieldDescriptor* value = field->message_type()->map_value();
    const int n = r->FieldSize(message, field);
    for (int i = 0; i < n; ++i) {
      if (i > 0) out.push_back(',');
      const gpb::Message& entry = r->GetRepeatedMessage(message, field, i);
      // Keys are strings in JSON whatever their type (a bool key is "true").
      std::string key_json;
      if (!AppendValue(key_json, entry, key, -1)) return false;
      if (key_json.front() == '"') {
        out.append(key_json);
      } else if (!AppendJsonString(out, key_json)) {
        return false;
      }
      out.push_back(':');
      if (value->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        if (!append_message(entry.GetReflection()->GetMessage(entry, value))) return false;
      } else if (!AppendValue(out, entry, value, -1)) {
        return false;
      }
    }
    out.push_back('}');
    return true;
  }
  if (field->is_repeated()) {
    out.push_back('[');
    const int n = r->FieldSize(message, field);
    for (int i = 0; i < n; ++i) {
      if (i > 0) out.push_back(',');
      if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        if (!append_message(r->GetRepeatedMessage(message, field, i))) return false;
      } else if (!AppendValue(out, message, field, i)) {
        return false;
      }
    }
    out.push_back(']');
    return true;
  }
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    return append_message(r->GetMessage(message, field));
  }
  return AppendValue(out, message, field, -1);
}

// Appends `message` as a JSON object: its fields (which ones: Fields) in declaration order under
// their proto names.
bool AppendMessage(std::string& out, const gpb::Message& message, Fields fields, int depth) {
  if (depth > kMaxDepth) return false;
  const gpb::Descriptor* d = message.GetDescriptor();
  if (d->file()->package() == "google.protobuf") {
    return d->full_name() == "google.protobuf.Timestamp" && AppendTimestamp(out, message);
  }
  const gpb::Reflection* r = message.GetReflection();
  out.push_back('{');
  bool first = true;
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) {
      if (fields == Fields::kSet && r->FieldSize(message, f) == 0) continue;
    } else if ((fields == Fields::kSet || f->has_presence()) && !r->HasField(message, f)) {
      // Without presence, HasField is "not the default value".
      continue;
    }
    if (!first) out.push_back(',');
    first = false;
    if (!AppendJsonString(out, f->name())) return false;
    out.push_back(':');
    if (!AppendField(out, message, f, fields, depth)) return false;
  }
  out.push_back('}');
  return true;
}

}  // namespace

std::string ToJson(const gpb::Message& message, Fields fields) {
  std::string out;
  out.reserve(512);
  if (AppendMessage(out, message, fields, 0)) return out;
  return ByProtobuf(message, fields);
}

}  // namespace mkt::protojson

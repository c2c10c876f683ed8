#include "services/gateway/json_codec.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/protojson/protojson.h"
#include "nlohmann/json.hpp"

namespace mkt::gateway {
namespace {

namespace gpb = ::google::protobuf;
using FieldDescriptor = gpb::FieldDescriptor;

bool IsScalar(const FieldDescriptor* f) {
  return f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE && !f->is_map();
}

// A single google.protobuf.Timestamp: a query parameter in RFC 3339, as in JSON bodies.
bool IsTimestamp(const FieldDescriptor* f) {
  return f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated() &&
         f->message_type()->full_name() == "google.protobuf.Timestamp";
}

absl::Status BadParam(std::string_view param, std::string_view message) {
  return InvalidArgument(param, absl::StrCat(AsAbsl(param), ": ", AsAbsl(message)));
}

const FieldDescriptor* FieldNamed(const gpb::Descriptor* type, const std::string& key) {
  if (const FieldDescriptor* f = type->FindFieldByName(key)) return f;
  for (int i = 0; i < type->field_count(); ++i) {
    if (type->field(i)->json_name() == key) return type->field(i);
  }
  return nullptr;
}

bool TakesNull(const FieldDescriptor* f) {
  return f->message_type() != nullptr && f->message_type()->full_name() == "google.protobuf.Value";
}

absl::Status NullRefused(const std::string& at) {
  return InvalidArgument(at, absl::StrCat(at,
                                          ": null is not a value of this field; leave the field "
                                          "out for its default"));
}

// How a JSON value is named in a message to a client.
std::string_view KindOf(const nlohmann::json& v) {
  if (v.is_object()) return "an object";
  if (v.is_array()) return "an array";
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "true or false";
  if (v.is_number()) return "a number";
  return "null";
}

// What one value of `f` (an element, for a repeated field) must be, when `v` is of a kind
// protobuf's JSON mapping refuses for it; nullopt when it may fit (protobuf then decides). Said
// before protobuf's parser, whose words for it ("Starting an object on a scalar field", "invalid
// value 0 for type TYPE_STRING") are protobuf's, not the API's.
std::optional<std::string_view> ExpectedKind(const FieldDescriptor* f, const nlohmann::json& v) {
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_MESSAGE:
      // The well-known types have JSON forms of their own (a Timestamp is a string).
      if (f->message_type()->full_name().rfind("google.protobuf.", 0) == 0) return std::nullopt;
      if (!v.is_object()) return "an object";
      return std::nullopt;
    case FieldDescriptor::CPPTYPE_STRING:
      if (!v.is_string())
        return f->type() == FieldDescriptor::TYPE_BYTES ? "a base64 string" : "a string";
      return std::nullopt;
    case FieldDescriptor::CPPTYPE_BOOL:
      if (v.is_object() || v.is_array()) return "true or false";
      return std::nullopt;
    case FieldDescriptor::CPPTYPE_ENUM:
      if (v.is_object() || v.is_array() || v.is_boolean()) return "one of the enum's names";
      return std::nullopt;
    default:  // numbers; 64-bit ones come as strings too
      if (v.is_object() || v.is_array() || v.is_boolean()) return "a number";
      return std::nullopt;
  }
}

absl::Status WrongKind(const std::string& at, std::string_view expected, const nlohmann::json& v) {
  return InvalidArgument(
      at, absl::StrCat(at, ": expected ", AsAbsl(expected), ", got ", AsAbsl(KindOf(v))));
}

// Walks a parsed body against the message type: refuses null, values of a kind the field cannot
// take, and the gateway-filled fields.
// `at` is the path with indexes (for the message), `path` without (to match `refused`).
absl::Status Screen(const nlohmann::json& object, const gpb::Descriptor* type,
                    const std::string& at, const std::string& path,
                    const std::vector<RefusedBodyField>& refused) {
  for (const auto& [key, value] : object.items()) {
    const FieldDescriptor* f = FieldNamed(type, key);
    if (f == nullptr) continue;  // protobuf names the unknown field
    const std::string field_at = at.empty() ? f->name() : absl::StrCat(at, ".", f->name());
    const std::string field_path = path.empty() ? f->name() : absl::StrCat(path, ".", f->name());
    for (const auto& r : refused) {
      if (r.path == field_path) {
        return InvalidArgument(field_at, absl::StrCat(field_at, " is taken from ", r.source,
                                                      "; do not send it in the body"));
      }
    }
    if (value.is_null()) {
      if (TakesNull(f)) continue;
      return NullRefused(field_at);
    }
    const gpb::Descriptor* nested = f->message_type();
    if (f->is_map()) {
      if (!value.is_object()) return WrongKind(field_at, "an object (a map)", value);
      const FieldDescriptor* map_value = nested->map_value();
      for (const auto& [map_key, item] : value.items()) {
        if (item.is_null() && !TakesNull(map_value)) {
          return NullRefused(absl::StrCat(field_at, ".", map_key));
        }
      }
      continue;
    }
    const bool recurse = nested != nullptr && nested->full_name().rfind("google.protobuf.", 0) != 0;
    if (f->is_repeated()) {
      // protobuf takes a lone value as a one-element list.
      if (!value.is_array()) continue;
      for (size_t i = 0; i < value.size(); ++i) {
        const std::string item_at = absl::StrCat(field_at, "[", i, "]");
        if (value[i].is_null()) {
          if (TakesNull(f)) continue;
          return NullRefused(item_at);
        }
        if (auto expected = ExpectedKind(f, value[i]))
          return WrongKind(item_at, *expected, value[i]);
        if (recurse && value[i].is_object()) {
          MKT_RETURN_IF_ERROR(Screen(value[i], nested, item_at, field_path, refused));
        }
      }
      continue;
    }
    if (auto expected = ExpectedKind(f, value)) return WrongKind(field_at, *expected, value);
    if (recurse && value.is_object()) {
      MKT_RETURN_IF_ERROR(Screen(value, nested, field_at, field_path, refused));
    }
  }
  return absl::OkStatus();
}

// One value of a scalar field (an element when `repeated`), set on `m`; false when protobuf's JSON
// parser might take it differently (see FillMessage).
bool FillScalar(const nlohmann::json& v, const FieldDescriptor* f, gpb::Message* m, bool repeated) {
  const gpb::Reflection* r = m->GetReflection();
  auto integer = [&](int64_t lo, uint64_t hi, auto set) {
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u > hi) return false;
      set(u, static_cast<int64_t>(std::min<uint64_t>(u, INT64_MAX)));
      return true;
    }
    int64_t i = 0;
    if (v.is_number_integer()) {
      i = v.get<int64_t>();
    } else if (v.is_string() && (f->cpp_type() == FieldDescriptor::CPPTYPE_INT64 ||
                                 f->cpp_type() == FieldDescriptor::CPPTYPE_UINT64)) {
      // 64-bit integers come as strings in protobuf's JSON; only the canonical decimal form.
      const std::string& t = v.get_ref<const std::string&>();
      const size_t digits = !t.empty() && t[0] == '-' ? 1 : 0;
      if (t.size() == digits || t.size() > 20 ||
          t.find_first_not_of("0123456789", digits) != std::string::npos ||
          (t[digits] == '0' && t.size() > digits + 1) || t == "-0") {
        return false;
      }
      if (digits == 0) {
        uint64_t u = 0;
        if (!absl::SimpleAtoi(t, &u) || u > hi) return false;
        set(u, static_cast<int64_t>(std::min<uint64_t>(u, INT64_MAX)));
        return true;
      }
      if (!absl::SimpleAtoi(t, &i)) return false;
    } else {
      return false;
    }
    if (i < lo || (i >= 0 && static_cast<uint64_t>(i) > hi)) return false;
    set(static_cast<uint64_t>(i), i);
    return true;
  };
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      if (f->type() != FieldDescriptor::TYPE_STRING || !v.is_string()) return false;
      repeated ? r->AddString(m, f, v.get<std::string>())
               : r->SetString(m, f, v.get<std::string>());
      return true;
    case FieldDescriptor::CPPTYPE_BOOL:
      if (!v.is_boolean()) return false;
      repeated ? r->AddBool(m, f, v.get<bool>()) : r->SetBool(m, f, v.get<bool>());
      return true;
    case FieldDescriptor::CPPTYPE_INT32:
      return integer(INT32_MIN, INT32_MAX, [&](uint64_t, int64_t i) {
        repeated ? r->AddInt32(m, f, static_cast<int32_t>(i))
                 : r->SetInt32(m, f, static_cast<int32_t>(i));
      });
    case FieldDescriptor::CPPTYPE_INT64:
      return integer(INT64_MIN, INT64_MAX, [&](uint64_t, int64_t i) {
        repeated ? r->AddInt64(m, f, i) : r->SetInt64(m, f, i);
      });
    case FieldDescriptor::CPPTYPE_UINT32:
      return integer(0, UINT32_MAX, [&](uint64_t u, int64_t) {
        repeated ? r->AddUInt32(m, f, static_cast<uint32_t>(u))
                 : r->SetUInt32(m, f, static_cast<uint32_t>(u));
      });
    case FieldDescriptor::CPPTYPE_UINT64:
      return integer(0, UINT64_MAX, [&](uint64_t u, int64_t) {
        repeated ? r->AddUInt64(m, f, u) : r->SetUInt64(m, f, u);
      });
    case FieldDescriptor::CPPTYPE_DOUBLE:
      if (!v.is_number()) return false;
      repeated ? r->AddDouble(m, f, v.get<double>()) : r->SetDouble(m, f, v.get<double>());
      return true;
    case FieldDescriptor::CPPTYPE_FLOAT: {
      if (!v.is_number()) return false;
      const double d = v.get<double>();
      if (d > std::numeric_limits<float>::max() || d < -std::numeric_limits<float>::max()) {
        return false;
      }
      repeated ? r->AddFloat(m, f, static_cast<float>(d))
               : r->SetFloat(m, f, static_cast<float>(d));
      return true;
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      if (!v.is_string()) return false;
      const gpb::EnumValueDescriptor* e =
          f->enum_type()->FindValueByName(v.get_ref<const std::string&>());
      if (e == nullptr) return false;
      repeated ? r->AddEnumValue(m, f, e->number()) : r->SetEnumValue(m, f, e->number());
      return true;
    }
    default:
      return false;
  }
}

// The fast path of ParseJsonInto: fills `m` from a parsed body by reflection when every
// value is one protobuf's JSON parser takes the same way — known fields by proto or JSON name,
// strings, bools, integers as JSON integers in range (64-bit ones also as canonical decimal
// strings), floating numbers, enums by name, nested messages and repeated fields of those. Any
// other case (maps, well-known types, bytes, null, enums by number, a field twice, two members
// of one oneof, anything out of range) answers false, and the caller lets protobuf's parser
// decide, which also names what is wrong.
bool FillMessage(const nlohmann::json& object, gpb::Message* m) {
  const gpb::Descriptor* type = m->GetDescriptor();
  if (type->full_name().rfind("google.protobuf.", 0) == 0) return false;
  const gpb::Reflection* r = m->GetReflection();
  std::vector<const FieldDescriptor*> seen;
  for (const auto& [key, value] : object.items()) {
    const FieldDescriptor* f = FieldNamed(type, key);
    if (f == nullptr || value.is_null() || f->is_map()) return false;
    if (std::find(seen.begin(), seen.end(), f) != seen.end()) return false;
    seen.push_back(f);
    if (const gpb::OneofDescriptor* oneof = f->containing_oneof()) {
      const FieldDescriptor* set = r->GetOneofFieldDescriptor(*m, oneof);
      if (set != nullptr && set != f) return false;
    }
    const bool message = f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE;
    if (f->is_repeated()) {
      if (!value.is_array()) return false;
      for (const auto& item : value) {
        if (message) {
          if (!item.is_object() || !FillMessage(item, r->AddMessage(m, f))) return false;
        } else if (!FillScalar(item, f, m, true)) {
          return false;
        }
      }
      continue;
    }
    if (message) {
      if (!value.is_object() || !FillMessage(value, r->MutableMessage(m, f))) return false;
      continue;
    }
    if (!FillScalar(value, f, m, false)) return false;
  }
  return true;
}

absl::Status CheckRequiredIn(const gpb::Message& message,
                             const std::vector<const FieldDescriptor*>& fields, size_t i,
                             const std::string& at) {
  const FieldDescriptor* f = fields[i];
  const gpb::Reflection* r = message.GetReflection();
  const std::string field_at = at.empty() ? f->name() : absl::StrCat(at, ".", f->name());
  auto missing = [&] { return InvalidArgument(field_at, absl::StrCat(field_at, " is required")); };
  if (i + 1 == fields.size()) {
    if (f->is_repeated()) return r->FieldSize(message, f) > 0 ? absl::OkStatus() : missing();
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
        return r->GetString(message, f).empty() ? missing() : absl::OkStatus();
      case FieldDescriptor::CPPTYPE_MESSAGE:
        return r->HasField(message, f) ? absl::OkStatus() : missing();
      case FieldDescriptor::CPPTYPE_ENUM:
        return r->GetEnumValue(message, f) == 0 ? missing() : absl::OkStatus();
      default:
        return absl::OkStatus();  // a number or a bool is always "set" in proto3
    }
  }
  if (f->is_repeated()) {
    for (int k = 0; k < r->FieldSize(message, f); ++k) {
      MKT_RETURN_IF_ERROR(CheckRequiredIn(r->GetRepeatedMessage(message, f, k), fields, i + 1,
                                          absl::StrCat(field_at, "[", k, "]")));
    }
    return absl::OkStatus();
  }
  if (!r->HasField(message, f)) {
    return InvalidArgument(field_at, absl::StrCat(field_at, " is required"));
  }
  return CheckRequiredIn(r->GetMessage(message, f), fields, i + 1, field_at);
}

}  // namespace

absl::Status CheckRequiredField(const gpb::Message& message, std::string_view path) {
  // Like ResolveFieldPath, but through repeated message fields too.
  std::vector<const FieldDescriptor*> fields;
  const gpb::Descriptor* type = message.GetDescriptor();
  for (absl::string_view part : absl::StrSplit(AsAbsl(path), '.')) {
    const FieldDescriptor* f = type == nullptr ? nullptr : type->FindFieldByName(std::string(part));
    if (f == nullptr) return Internal(absl::StrCat("no field ", AsAbsl(path)));
    fields.push_back(f);
    type = f->is_map() ? nullptr : f->message_type();
  }
  return CheckRequiredIn(message, fields, 0, "");
}

absl::Status CheckJsonDepth(std::string_view json, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) {
        return InvalidArgument(
            "body", absl::StrCat("the JSON body nests deeper than ", max_depth, " levels"));
      }
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return absl::OkStatus();
}

namespace {

// nlohmann's parse error ("parse error at line 1, column 9: syntax error while parsing object -
// unexpected ','; expected string literal") without its "[json.exception.parse_error.101] "
// prefix, which says nothing to a channel engineer, and without the "; last read: '…'" echo of
// the client's bytes, which need not be text.
std::string NamePlace(std::string_view what, size_t byte) {
  std::string out(what);
  if (size_t close = out.find("] "); close != std::string::npos) out.erase(0, close + 2);
  if (size_t echo = out.find("; last read: '"); echo != std::string::npos) {
    size_t end = out.rfind("'; expected");
    end = end == std::string::npos || end < echo ? out.size() : end + 1;
    out.erase(echo, end - echo);
  }
  if (out.empty() || out.size() > 300) {
    out = byte > 0 ? absl::StrCat("syntax error at byte ", byte) : "a number is out of range";
  }
  return out;
}

}  // namespace

absl::Status ParseJsonInto(std::string_view json, gpb::Message* message, int max_depth,
                           const std::vector<RefusedBodyField>& refused) {
  MKT_RETURN_IF_ERROR(CheckJsonDepth(json, max_depth));
  size_t first = json.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos || json[first] != '{') {
    return InvalidArgument("body", "the body must be a JSON object");
  }
  // Strict JSON (RFC 8259) only. protobuf's own parser, the fallback below, also takes trailing
  // commas, single quotes and bare keys; a body it alone understands would skip the screening and
  // be recorded by the audit trail as "not JSON" (decision 027).
  nlohmann::json parsed;
  try {
    parsed = nlohmann::json::parse(json.begin(), json.end());
  } catch (const nlohmann::json::parse_error& e) {
    return InvalidArgument(
        "body", absl::StrCat("the body is not valid JSON: ", NamePlace(e.what(), e.byte)));
  } catch (const nlohmann::json::exception& e) {
    // out_of_range: a number beyond a double ("number overflow parsing '1e400'").
    return InvalidArgument("body",
                           absl::StrCat("the body is not valid JSON: ", NamePlace(e.what(), 0)));
  }
  if (parsed.is_object()) {
    MKT_RETURN_IF_ERROR(Screen(parsed, message->GetDescriptor(), "", "", refused));
    // The common body goes straight from the parsed tree, without protobuf's JSON parser (which
    // builds a type resolver's view and a binary copy first); a partial fill is thrown away.
    std::unique_ptr<gpb::Message> direct(message->New());
    if (FillMessage(parsed, direct.get())) {
      message->MergeFrom(*direct);
      return absl::OkStatus();
    }
  }
  gpb::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status =
      gpb::util::JsonStringToMessage(gpb::StringPiece(json.data(), json.size()), message, options);
  if (status.ok()) return absl::OkStatus();
  // protobuf says "<field path>: <what is wrong>"; the path is the field the 400 is about.
  std::string text(status.message().data(), status.message().size());
  std::string field;
  if (size_t colon = text.find(": "); colon != std::string::npos && colon > 0) {
    field = text.substr(0, colon);
    // Map keys come as "(fields[0]) a"; keep the readable part.
    if (size_t paren = field.rfind(") "); paren != std::string::npos)
      field = field.substr(paren + 2);
  }
  if (text.find("Cannot find field") != std::string::npos) {
    return InvalidArgument(
        field, absl::StrCat("unknown field \"", field, "\" in ", message->GetDescriptor()->name()));
  }
  return InvalidArgument(field.empty() ? "body" : field, absl::StrCat("invalid JSON body: ", text));
}

bool ParsesDirectly(std::string_view json, const gpb::Descriptor* type) {
  const nlohmann::json parsed = nlohmann::json::parse(json.begin(), json.end(), nullptr,
                                                      /*allow_exceptions=*/false);
  if (!parsed.is_object()) return false;
  std::unique_ptr<gpb::Message> message(
      gpb::MessageFactory::generated_factory()->GetPrototype(type)->New());
  return FillMessage(parsed, message.get());
}

std::vector<const FieldDescriptor*> ResolveFieldPath(const gpb::Descriptor* type,
                                                     std::string_view path) {
  std::vector<const FieldDescriptor*> fields;
  for (absl::string_view part : absl::StrSplit(AsAbsl(path), '.')) {
    if (type == nullptr) return {};
    const FieldDescriptor* f = type->FindFieldByName(std::string(part));
    if (f == nullptr) return {};
    fields.push_back(f);
    type = f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated()
               ? f->message_type()
               : nullptr;
  }
  return fields;
}

absl::Status SetFieldFromText(gpb::Message* message, std::string_view path, std::string_view text,
                              std::string_view param) {
  const auto fields = ResolveFieldPath(message->GetDescriptor(), path);
  if (fields.empty() || !(IsScalar(fields.back()) || IsTimestamp(fields.back()))) {
    return BadParam(param, "is not a parameter of this request");
  }
  gpb::Message* target = message;
  for (size_t i = 0; i + 1 < fields.size(); ++i) {
    target = target->GetReflection()->MutableMessage(target, fields[i]);
  }
  const FieldDescriptor* f = fields.back();
  if (IsTimestamp(f)) {
    gpb::Timestamp at;
    if (!gpb::util::TimeUtil::FromString(std::string(text), &at)) {
      return BadParam(param, "must be a time in RFC 3339 (2026-11-26T10:00:00+08:00)");
    }
    target->GetReflection()->MutableMessage(target, f)->CopyFrom(at);
    return absl::OkStatus();
  }
  const gpb::Reflection* r = target->GetReflection();
  const bool repeated = f->is_repeated();
  const std::string value(text);
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      // A proto3 string must be UTF-8: the service would refuse to parse the request (INTERNAL),
      // and PostgreSQL refuses NUL. Both are the caller's mistake, so they are a 400 here.
      if (f->type() == FieldDescriptor::TYPE_STRING && !IsWellFormedUtf8(value)) {
        return BadParam(param, "must be UTF-8 text without NUL (percent-decoded)");
      }
      repeated ? r->AddString(target, f, value) : r->SetString(target, f, value);
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (!absl::SimpleAtoi(value, &v)) return BadParam(param, "must be a 32-bit integer");
      repeated ? r->AddInt32(target, f, v) : r->SetInt32(target, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (!absl::SimpleAtoi(value, &v)) return BadParam(param, "must be an integer");
      repeated ? r->AddInt64(target, f, v) : r->SetInt64(target, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (!absl::SimpleAtoi(value, &v)) return BadParam(param, "must be a non-negative integer");
      repeated ? r->AddUInt32(target, f, v) : r->SetUInt32(target, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (!absl::SimpleAtoi(value, &v)) return BadParam(param, "must be a non-negative integer");
      repeated ? r->AddUInt64(target, f, v) : r->SetUInt64(target, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT: {
      double v;
      if (!absl::SimpleAtod(value, &v)) return BadParam(param, "must be a number");
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE) {
        repeated ? r->AddDouble(target, f, v) : r->SetDouble(target, f, v);
      } else {
        repeated ? r->AddFloat(target, f, static_cast<float>(v))
                 : r->SetFloat(target, f, static_cast<float>(v));
      }
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      bool v;
      if (value == "true") {
        v = true;
      } else if (value == "false") {
        v = false;
      } else {
        return BadParam(param, "must be true or false");
      }
      repeated ? r->AddBool(target, f, v) : r->SetBool(target, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const gpb::EnumValueDescriptor* e = f->enum_type()->FindValueByName(value);
      int number;
      if (e == nullptr && absl::SimpleAtoi(value, &number)) {
        e = f->enum_type()->FindValueByNumber(number);
      }
      if (e == nullptr) {
        return BadParam(param,
                        absl::StrCat("must be one of the names of ", f->enum_type()->full_name()));
      }
      repeated ? r->AddEnum(target, f, e) : r->SetEnum(target, f, e);
      return absl::OkStatus();
    }
    default:
      return BadParam(param, "is not a parameter of this request");
  }
}

std::string GetStringField(const gpb::Message& message, std::string_view path) {
  const auto fields = ResolveFieldPath(message.GetDescriptor(), path);
  if (fields.empty() || fields.back()->is_repeated() ||
      fields.back()->cpp_type() != FieldDescriptor::CPPTYPE_STRING) {
    return "";
  }
  const gpb::Message* m = &message;
  for (size_t i = 0; i + 1 < fields.size(); ++i) {
    m = &m->GetReflection()->GetMessage(*m, fields[i]);
  }
  return m->GetReflection()->GetString(*m, fields.back());
}

std::vector<QueryParameter> QueryParametersOf(const gpb::Descriptor* type,
                                              const std::vector<std::string>& path_fields) {
  std::vector<QueryParameter> out;
  if (type == nullptr) return out;
  auto bound = [&](const std::string& path) {
    for (const auto& p : path_fields) {
      if (p == path) return true;
    }
    return false;
  };
  std::map<std::string, int> name_count;
  std::vector<QueryParameter> nested;
  for (int i = 0; i < type->field_count(); ++i) {
    const FieldDescriptor* f = type->field(i);
    if (IsScalar(f) || IsTimestamp(f)) {
      if (!bound(f->name())) out.push_back({f->name(), f->name(), f});
      name_count[f->name()]++;
      continue;
    }
    if (f->is_repeated() || f->is_map() ||
        f->message_type()->full_name().rfind("google.", 0) == 0) {
      continue;
    }
    for (int j = 0; j < f->message_type()->field_count(); ++j) {
      const FieldDescriptor* g = f->message_type()->field(j);
      if (!IsScalar(g)) continue;
      const std::string path = absl::StrCat(f->name(), ".", g->name());
      if (bound(path)) continue;
      nested.push_back({g->name(), path, g});
      name_count[g->name()]++;
    }
  }
  for (auto& p : nested) {
    if (name_count[p.name] > 1) p.name = p.field_path;
    out.push_back(std::move(p));
  }
  return out;
}

std::string RenderJson(const gpb::Message& message) {
  return protojson::ToJson(message, protojson::Fields::kAll);
}

}  // namespace mkt::gateway

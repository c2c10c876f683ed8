// JSON ⇄ protobuf for the REST API, on google::protobuf::util's JSON mapping (proto field names,
// int64 as strings, enums by name), made strict for untrusted input: unknown fields are a 400
// naming the field, nesting deeper than a limit is refused before parsing, and path and query
// parameters bind to request fields by name with the same type rules as the body.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace mkt::gateway {

// Returns INVALID_ARGUMENT when `json` nests objects/arrays deeper than `max_depth`; does not
// otherwise validate the JSON.
absl::Status CheckJsonDepth(std::string_view json, int max_depth);

// A field the body may not carry, because the gateway fills it (from the path, a header or the
// credential): its path within the body message ("redemption_id", "events.channel_id" through a
// repeated field) and where its value comes from ("the path", "the Idempotency-Key header").
struct RefusedBodyField {
  std::string path;
  std::string source;
};

// Parses `json` (an object) into `message`, merging into what it holds. Unknown fields, wrong
// types and malformed JSON are INVALID_ARGUMENT with the field path attached (mkt::FieldOf).
// Stricter than protobuf's JSON mapping in two ways: `null` is refused for every field (protobuf
// would read it as the default, while the OpenAPI schemas declare no field nullable; only
// google.protobuf.Value takes null), and a field of `refused` is a 400 naming it and where its
// value comes from.
absl::Status ParseJsonInto(std::string_view json, google::protobuf::Message* message, int max_depth,
                           const std::vector<RefusedBodyField>& refused = {});

// For tests: whether ParseJsonInto fills a `type` from `json` without protobuf's JSON parser (the
// common bodies: known fields, strings, bools, integers, numbers, enums by name, nested and
// repeated messages), which must then give the very message protobuf's parser would.
bool ParsesDirectly(std::string_view json, const google::protobuf::Descriptor* type);

// Returns INVALID_ARGUMENT naming `path` ("order.order_id"; through repeated fields every element,
// named "events[2].customer_id") when it is not set: an empty string or repeated field, an
// absent message, an enum at 0.
absl::Status CheckRequiredField(const google::protobuf::Message& message, std::string_view path);

// Returns `message` as JSON in protobuf's mapping: proto field names, every scalar and repeated
// field present (defaults included), message fields and fields with presence when set, so
// clients and the OpenAPI schema see one shape. Written from reflection (libs/protojson).
std::string RenderJson(const google::protobuf::Message& message);

// Sets the field at `path` ("campaign_id", "segment.segment_id") of `message` from `text`:
// strings as they are; integers, booleans and floats parsed; enums by name (or number); a
// repeated scalar gets `text` appended. INVALID_ARGUMENT naming `param` when the text does not
// fit the field or the path names no scalar field.
absl::Status SetFieldFromText(google::protobuf::Message* message, std::string_view path,
                              std::string_view text, std::string_view param);

// Returns the string value of the singular string field at `path`, or "" when there is none.
std::string GetStringField(const google::protobuf::Message& message, std::string_view path);

// Returns the field descriptors along `path`, or an empty vector when it names no field.
std::vector<const google::protobuf::FieldDescriptor*> ResolveFieldPath(
    const google::protobuf::Descriptor* type, std::string_view path);

// A query parameter a request message accepts: every scalar (or repeated scalar) field at the
// top level, and those of singular message fields one level down under their own name when that
// name is unique ("page_size" for "page.page_size"), skipping fields bound from the path.
struct QueryParameter {
  std::string name;
  std::string field_path;
  const google::protobuf::FieldDescriptor* field = nullptr;
};
std::vector<QueryParameter> QueryParametersOf(const google::protobuf::Descriptor* type,
                                              const std::vector<std::string>& path_fields);

}  // namespace mkt::gateway

// Protobuf messages as JSON, in protobuf's JSON mapping with proto field names, written straight
// from reflection into one string.
//
// Why not google::protobuf::util::MessageToJsonString: it serialises the message to binary, reads
// the binary back through a type resolver and builds a tree of default values before writing.
// That was ≈ 30 % of the gateway's CPU on a wallet read (docs/benchmarks.md, P3 2026-11-27) and
// ≈ 22 % of the campaigns service's on a coupon claim (P2, the participation bodies it stores).
#pragma once

#include <string>

#include "google/protobuf/message.h"

namespace mkt::protojson {

// Which fields the JSON carries.
enum class Fields {
  // Every field: singular scalars with their defaults, repeated fields and maps (empty: [] and
  // {}); message fields and fields with presence (a oneof's, proto3 `optional`) only when set.
  // What the REST API answers, so clients and the OpenAPI schema see one shape
  // (protobuf's always_print_primitive_fields).
  kAll,
  // Only the fields that are set: scalars that are not their default, repeated fields and maps
  // that are not empty, present messages (protobuf's default). What the services store.
  kSet,
};

// Returns `message` as JSON, the same JSON value protobuf's printer writes with
// preserve_proto_field_names (and always_print_primitive_fields for Fields::kAll):
// protojson_test.cc compares the two on random messages of every type our protos define. What
// this writer does not know (float and double fields, well-known types other than Timestamp,
// nesting deeper than 64, a timestamp out of RFC 3339's range, a string that is not valid UTF-8)
// makes it hand the whole message to protobuf's printer, so every result is what protobuf would
// write ("{}" when protobuf refuses the message).
std::string ToJson(const google::protobuf::Message& message, Fields fields);

}  // namespace mkt::protojson

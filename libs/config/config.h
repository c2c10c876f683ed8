// Typed per-service configuration: a struct with working defaults, overridden by a JSON file
// and then by environment variables MKT_<SERVICE>_<KEY>. Unknown keys (in the file or in the
// environment under the service's prefix) and values of the wrong type are start-up errors
// whose message names the key and the source.
//
//   struct ChannelsConfig { std::string grpc_address = "127.0.0.1:20061"; int64_t pool_size = 8; };
//   mkt::config::Schema<ChannelsConfig> schema("channels");
//   schema.Field("grpc_address", &ChannelsConfig::grpc_address, "gRPC listen address")
//         .Field("pool_size", &ChannelsConfig::pool_size, "PostgreSQL connections");
//   absl::StatusOr<ChannelsConfig> cfg = schema.Load(path, environ);
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mkt::config {

namespace internal {

// One key of a schema, type-erased: parses a text or JSON value into the struct.
struct FieldSpec {
  std::string key;
  std::string doc;
  std::string type_name;
  // Sets the field of `target` from `text`; returns a message naming the expected form on error.
  std::function<absl::Status(void* target, const std::string& text)> set_from_text;
  // Returns the field's value in `target` as text (for Describe and logging).
  std::function<std::string(const void* target)> get_text;
  // True if the field holds a secret that must never be printed.
  bool secret = false;
};

absl::Status LoadInto(const std::string& service, const std::vector<FieldSpec>& fields,
                      const std::string& file_path, char** environ, void* target);
std::string Describe(const std::string& service, const std::vector<FieldSpec>& fields,
                     const void* target);

absl::Status ParseInt(const std::string& text, int64_t* out);
absl::Status ParseBool(const std::string& text, bool* out);
absl::Status ParseDouble(const std::string& text, double* out);

}  // namespace internal

template <class T>
class Schema {
 public:
  // `service` names the environment prefix: "channels" → MKT_CHANNELS_<KEY>.
  explicit Schema(std::string service) : service_(std::move(service)) {}

  Schema& Field(std::string key, std::string T::*member, std::string doc) {
    return Add(
        std::move(key), std::move(doc), "string", member,
        [](const std::string& text, std::string* f) {
          *f = text;
          return absl::OkStatus();
        },
        [](const std::string& f) { return f; });
  }
  // Like Field, but the value is never printed by Describe or logs.
  Schema& Secret(std::string key, std::string T::*member, std::string doc) {
    Field(std::move(key), member, std::move(doc));
    fields_.back().secret = true;
    return *this;
  }
  Schema& Field(std::string key, int64_t T::*member, std::string doc) {
    return Add(std::move(key), std::move(doc), "integer", member, internal::ParseInt,
               [](const int64_t& f) { return std::to_string(f); });
  }
  Schema& Field(std::string key, bool T::*member, std::string doc) {
    return Add(std::move(key), std::move(doc), "bool", member, internal::ParseBool,
               [](const bool& f) { return std::string(f ? "true" : "false"); });
  }
  Schema& Field(std::string key, double T::*member, std::string doc) {
    return Add(std::move(key), std::move(doc), "number", member, internal::ParseDouble,
               [](const double& f) { return std::to_string(f); });
  }

  // Returns the defaults of T overridden by the file at `file_path` (skipped when empty) and then
  // by the environment, or an error naming every unknown key and bad value.
  absl::StatusOr<T> Load(const std::string& file_path, char** environ) const {
    T value{};
    absl::Status s = internal::LoadInto(service_, fields_, file_path, environ, &value);
    if (!s.ok()) return s;
    return value;
  }

  // Returns one line per key: name, type, environment variable, value in `value`, doc.
  std::string Describe(const T& value) const {
    return internal::Describe(service_, fields_, &value);
  }

 private:
  template <class F, class Parse, class Print>
  Schema& Add(std::string key, std::string doc, std::string type, F T::*member, Parse parse,
              Print print) {
    internal::FieldSpec spec;
    spec.key = std::move(key);
    spec.doc = std::move(doc);
    spec.type_name = std::move(type);
    spec.set_from_text = [member, parse](void* target, const std::string& text) {
      return parse(text, &(static_cast<T*>(target)->*member));
    };
    spec.get_text = [member, print](const void* target) {
      return print(static_cast<const T*>(target)->*member);
    };
    fields_.push_back(std::move(spec));
    return *this;
  }

  std::string service_;
  std::vector<internal::FieldSpec> fields_;
};

// Parses the common command line of a service binary: `--config FILE` and `--describe-config`.
struct CommandLine {
  std::string config_path;
  bool describe = false;
};
absl::StatusOr<CommandLine> ParseCommandLine(int argc, char** argv);

// The start of every binary's main(): parses the command line and loads `schema` from the file
// and `environ`, then checks it with `validate` (which may be null). Returns the configuration,
// or nullopt when main() should return `*exit_code` at once: 0 after printing --describe-config,
// 2 after printing what is wrong (to stderr, naming every bad key).
template <class T>
std::optional<T> LoadForMain(const Schema<T>& schema, int argc, char** argv, char** environ,
                             int* exit_code, absl::Status (*validate)(const T&) = nullptr) {
  auto fail = [&](const absl::Status& status) -> std::optional<T> {
    std::fprintf(stderr, "%s: %s\n", argv[0], std::string(status.message()).c_str());
    *exit_code = 2;
    return std::nullopt;
  };
  absl::StatusOr<CommandLine> command_line = ParseCommandLine(argc, argv);
  if (!command_line.ok()) return fail(command_line.status());
  absl::StatusOr<T> loaded = schema.Load(command_line->config_path, environ);
  if (loaded.ok() && validate != nullptr) {
    if (absl::Status valid = validate(*loaded); !valid.ok()) loaded = valid;
  }
  if (!loaded.ok()) return fail(loaded.status());
  if (command_line->describe) {
    std::fputs(schema.Describe(*loaded).c_str(), stdout);
    *exit_code = 0;
    return std::nullopt;
  }
  return *std::move(loaded);
}

}  // namespace mkt::config

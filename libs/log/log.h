// Logging set-up: spdlog writing human-readable text to a terminal and JSON lines otherwise,
// with the current request id in every line.
#pragma once

#include <string>
#include <string_view>

#include "libs/log/format.h"

namespace mkt::log {

enum class Format { kAuto, kText, kJson };

// Returns the format named "auto", "text" or "json"; anything else is kAuto.
Format ParseFormat(std::string_view name);

// Installs the default logger for `service`. kAuto picks text when stderr is a terminal.
// `level` is one of trace, debug, info, warn, error; unknown levels mean info.
void Init(std::string_view service, Format format = Format::kAuto, std::string_view level = "info");

// Returns the request id bound to this thread, or "-".
const std::string& CurrentRequestId();

// Binds a request id to the current thread for the lifetime of the object; nests.
class ScopedRequestId {
 public:
  explicit ScopedRequestId(std::string request_id);
  ~ScopedRequestId();
  ScopedRequestId(const ScopedRequestId&) = delete;
  ScopedRequestId& operator=(const ScopedRequestId&) = delete;

 private:
  std::string previous_;
};

// Returns `value` with all but its first 3 and last 4 characters replaced by '*', for customer
// ids, phone numbers and id-card numbers (no PII in logs). Short values are fully masked.
std::string Mask(std::string_view value);

// Returns `text` escaped for a JSON string body.
std::string JsonEscape(std::string_view text);

}  // namespace mkt::log

// Identifiers: random ids for requests, events and resources, and the clock seam.
#pragma once

#include <string>
#include <string_view>

#include "absl/time/time.h"

namespace mkt {

// Returns `bytes` bytes from the OS CSPRNG as lowercase hex (2 * bytes characters).
std::string RandomHex(int bytes);

// Returns a new request id: 32 lowercase hex characters, unique (128 random bits) but not secret.
std::string NewRequestId();

// Returns a new event id for an envelope: a UUID v4 string.
std::string NewEventId();

// Returns true if `id` is acceptable as a caller-supplied request id: 1..64 characters of
// [A-Za-z0-9._-]. Anything else is replaced rather than logged verbatim.
bool IsValidRequestId(std::string_view id);

// The source of the current time; services take one so tests can move time.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// Returns the process-wide real clock.
const Clock& SystemClock();

}  // namespace mkt

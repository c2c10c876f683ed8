#include "libs/core/ids.h"

#include <openssl/rand.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace mkt {
namespace {

std::vector<unsigned char> RandomBytes(int n) {
  std::vector<unsigned char> buf(static_cast<size_t>(n));
  if (RAND_bytes(buf.data(), n) != 1) throw std::runtime_error("RAND_bytes failed");
  return buf;
}

class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

}  // namespace

std::string RandomHex(int bytes) {
  auto buf = RandomBytes(bytes);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(buf.data()), buf.size()));
}

// A request id only has to be unique, not unguessable: 128 bits from a per-thread generator seeded
// by the OS, without OpenSSL's locked DRBG on every request.
std::string NewRequestId() {
  thread_local absl::BitGen gen;
  const uint64_t hi = absl::Uniform<uint64_t>(gen);
  const uint64_t lo = absl::Uniform<uint64_t>(gen);
  return absl::StrFormat("%016x%016x", hi, lo);
}

std::string NewEventId() {
  auto b = RandomBytes(16);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return absl::StrFormat("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                         b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
                         b[12], b[13], b[14], b[15]);
}

bool IsValidRequestId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

const Clock& SystemClock() {
  static const RealClock clock;
  return clock;
}

}  // namespace mkt

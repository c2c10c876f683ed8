// Whether this replica's rules are as up to date as the campaign changes published before it
// started (decision 010, amended 2026-11-29). The rules stored in the events database are only
// those the replicas had handled: a campaign that went ONLINE, or was PAUSED or ENDED, while
// mkt-events was down is stored as it was. Matching the business events that waited on their
// topic against those rules would lose grants for good (dedupe row written, offset committed,
// nothing granted) or grant for a paused campaign. So, at start-up, the high watermarks of
// mkt.campaign-changes.v1 (every partition) are captured, and the business-events consumer joins
// its group only once the rules consumer has handled every change below them.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "libs/kafka/kafka.h"

namespace mkt::events {

// Offsets [low, high) of each partition of a topic.
using Watermarks = std::map<int32_t, std::pair<int64_t, int64_t>>;

// Reads the watermarks of every partition of `topic` (UNAVAILABLE when the broker cannot be
// reached or the topic is not there yet).
absl::StatusOr<Watermarks> ReadWatermarks(const kafka::ClientOptions& client,
                                          const std::string& topic, absl::Duration timeout);

class RulesCatchUp {
 public:
  RulesCatchUp();

  // Captures the high watermarks of `topic`, retrying (with a warning, the catch-up gauge at 0)
  // while the broker cannot be reached, until it succeeds or Cancel() is called. The rules
  // consumer reads the topic from its start, in a group of its own, so it reaches each of them.
  void Capture(const kafka::ClientOptions& client, const std::string& topic);
  // Sets the offsets to reach directly (tests).
  void SetTargets(const Watermarks& watermarks);
  // The rules consumer is done with the change at `offset` of `partition` (rule stored, change
  // of another kind skipped, or change dead-lettered).
  void Handled(int32_t partition, int64_t offset);
  // True once the targets are captured and every change below them is handled. Logs the
  // progress now and then while it is not (a replica that cannot reach the watermark waits; it
  // never matches with the rules it loaded from the database).
  bool CaughtUp();
  // Ends Capture() (shutting down).
  void Cancel();

 private:
  bool CaughtUpLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool has_targets_ ABSL_GUARDED_BY(mu_) = false;
  bool caught_up_ ABSL_GUARDED_BY(mu_) = false;
  Watermarks targets_ ABSL_GUARDED_BY(mu_);
  // Per partition, the offset after the highest change handled.
  std::map<int32_t, int64_t> handled_ ABSL_GUARDED_BY(mu_);
  absl::Time started_ ABSL_GUARDED_BY(mu_);
  absl::Time logged_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mkt::events

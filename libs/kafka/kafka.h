// Kafka through librdkafka: an idempotent producer, a consumer that commits offsets only after
// the handler's effect is durable, and dead-lettering of messages that can never be processed.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mkt::kafka {

inline constexpr char kDeadLetterTopic[] = "mkt.dead-letters.v1";

// A dead letter carries at most this much of the rejected value (and of its key), and the
// original headers only while they stay under kDeadLetterHeadersLimit bytes: wrapped whole, a
// value near the producer's message.max.bytes (1,000,000 by default) could never be
// dead-lettered and its partition would stall. A cut value is flagged by these headers.
inline constexpr size_t kDeadLetterValueLimit = 256 * 1024;
inline constexpr size_t kDeadLetterKeyLimit = 4 * 1024;
inline constexpr size_t kDeadLetterHeadersLimit = 64 * 1024;
inline constexpr char kDeadLetterTruncatedHeader[] = "mkt-dead-letter-truncated";
inline constexpr char kDeadLetterOriginalBytesHeader[] = "mkt-dead-letter-original-bytes";
inline constexpr char kDeadLetterOriginalSha256Header[] = "mkt-dead-letter-original-sha256";
inline constexpr char kDeadLetterHeadersDroppedHeader[] = "mkt-dead-letter-headers-dropped";

struct ClientOptions {
  // host:port[,host:port...]
  std::string bootstrap_servers;
  std::string client_id;
  // Extra librdkafka properties, applied last (e.g. {"linger.ms", "5"}).
  std::map<std::string, std::string> properties;
};

struct OutgoingMessage {
  std::string topic;
  std::string key;
  std::string value;
  std::vector<std::pair<std::string, std::string>> headers;
};

struct IncomingMessage {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  std::string key;
  std::string value;
  std::vector<std::pair<std::string, std::string>> headers;
};

// The seam through which facts leave a process; the outbox relay and tests depend on this.
class Publisher {
 public:
  virtual ~Publisher() = default;
  // Sends every message and returns once the broker acknowledged all of them, or the first
  // failure. Messages with the same topic and key keep their order. INVALID_ARGUMENT (permanent)
  // for a message larger than the producer's message.max.bytes.
  virtual absl::Status Publish(const std::vector<OutgoingMessage>& messages,
                               absl::Duration timeout) = 0;
};

// An idempotent producer (enable.idempotence=true, acks=all): retries never duplicate or
// reorder within a partition.
class Producer final : public Publisher {
 public:
  static absl::StatusOr<std::unique_ptr<Producer>> Create(const ClientOptions& options);
  ~Producer() override;

  absl::Status Publish(const std::vector<OutgoingMessage>& messages,
                       absl::Duration timeout) override;

  struct Impl;

 private:
  explicit Producer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct ConsumerOptions {
  ClientOptions client;
  std::string group_id;
  std::vector<std::string> topics;
  // "earliest" for consumers that must see everything; "latest" for cache invalidation.
  std::string auto_offset_reset = "earliest";
  // Names the consumer in metrics (mkt_<metrics_name>_...) and dead letters.
  std::string metrics_name;
  // How long a transient failure waits before the same message is tried again.
  absl::Duration retry_backoff = absl::Milliseconds(200);
  // Where rejected messages go; tests use a fresh topic instead of the shared one.
  std::string dead_letter_topic = kDeadLetterTopic;
};

// What a handler says about one message:
// - OK: the effect is durable; the offset is committed.
// - a permanent error (INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND, ALREADY_EXISTS,
//   OUT_OF_RANGE, UNIMPLEMENTED): the message goes to the dead-letter topic with the reason,
//   then is committed.
// - any other error (UNAVAILABLE, ABORTED, INTERNAL, ...): transient; the same message is tried
//   again after the backoff and nothing after it in its partition is handled meanwhile.
using Handler = std::function<absl::Status(const IncomingMessage&)>;

// Returns true when `status` means "never going to work" (dead-letter it).
bool IsPermanent(const absl::Status& status);

// The dead letter of `in`, rejected by `consumer` for `reason`, for `topic`. A value over
// kDeadLetterValueLimit (or headers over kDeadLetterHeadersLimit) would not fit the producer's
// message.max.bytes once wrapped, and the partition would stall on it: the letter then carries
// the value's first bytes, the original size and the SHA-256 of the whole value in headers.
// `minimal` drops value and headers altogether (the last resort when even that letter is
// refused). Every consumer's dead letters are made here.
OutgoingMessage MakeDeadLetter(const IncomingMessage& in, const std::string& consumer,
                               std::string_view reason, const std::string& topic, bool minimal);

class Consumer {
 public:
  // `dead_letters` (not owned) receives rejected messages; it must outlive the consumer.
  static absl::StatusOr<std::unique_ptr<Consumer>> Create(const ConsumerOptions& options,
                                                          Publisher* dead_letters);
  ~Consumer();

  // Polls and handles messages until Stop(); commits each handled offset synchronously.
  void Run(const Handler& handler);
  // Makes Run() return after the message in hand; safe from any thread.
  void Stop();

  struct Impl;

 private:
  explicit Consumer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Creates `topic` with `partitions` partitions (replication factor 1) if it does not exist.
absl::Status EnsureTopic(const ClientOptions& options, const std::string& topic, int partitions);
// The names of every topic the cluster has (internal ones included).
absl::StatusOr<std::vector<std::string>> ListTopics(const ClientOptions& options);
// Deletes `topics`; one that does not exist (any more) is not an error.
absl::Status DeleteTopics(const ClientOptions& options, const std::vector<std::string>& topics);

}  // namespace mkt::kafka

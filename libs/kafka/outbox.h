// The transactional outbox: facts are written to the `outbox` table in the same transaction as
// the business change, and a relay publishes them to Kafka and marks them sent. Plus the
// consumer-side dedupe record (`processed_events`), written in the same transaction as the
// consumer's effect.
#pragma once

#include <atomic>
#include <memory>
#include <pqxx/pqxx>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "libs/kafka/kafka.h"
#include "libs/pg/migrations.h"
#include "libs/pg/pool.h"
#include "marketing/common/v1/envelope.pb.h"

namespace mkt::kafka {

// The schema of the outbox and processed_events tables (component "kafka"); a service that
// publishes or consumes lists it beside its own migrations.
const pg::MigrationSet& OutboxMigrations();

// Wraps `payload` in an envelope with a new event id and the current time.
marketing::common::v1::Envelope MakeEnvelope(std::string_view type, std::string_view org_id,
                                             std::string_view trace_id,
                                             const google::protobuf::Message& payload);

// Adds a message to the outbox inside the caller's transaction; it is published only if that
// transaction commits. The value is the serialized envelope; the event id travels as the
// header "event_id" too.
void AppendToOutbox(pqxx::work& tx, std::string_view topic, std::string_view key,
                    const marketing::common::v1::Envelope& envelope);

// One message for AppendManyToOutbox.
struct OutboxMessage {
  std::string topic;
  std::string key;
  marketing::common::v1::Envelope envelope;
};

// Adds `messages` to the outbox, in order, with one statement: what a group-committing writer
// uses instead of one AppendToOutbox per message. Same semantics as AppendToOutbox.
void AppendManyToOutbox(pqxx::work& tx, const std::vector<OutboxMessage>& messages);

struct RelayOptions {
  int batch_size = 500;
  // How long to wait between polls when the outbox is empty.
  absl::Duration idle_poll = absl::Milliseconds(50);
  // How long a broker may take to acknowledge a batch.
  absl::Duration publish_timeout = absl::Seconds(10);
  // Sent rows older than this are deleted.
  absl::Duration retention = absl::Hours(24);
};

// Publishes outbox rows in id order and marks them sent. Several replicas may run it: a
// transaction-scoped advisory lock lets one publish at a time, the others wait. Order holds
// between facts whose writers serialise on a row lock (decision 004), not across concurrent
// writers: ids are assigned at insert, visibility comes at commit.
// A crash between publish and mark re-publishes the batch, so delivery is at-least-once with the
// same event ids; consumers dedupe with MarkProcessed.
class OutboxRelay {
 public:
  OutboxRelay(pg::Pool& pool, Publisher& publisher, RelayOptions options = {});

  // Publishes up to one batch; returns how many rows were published (0 if none or another
  // replica holds the lock).
  absl::StatusOr<int> RelayOnce();
  // Relays until Stop(); errors are logged and retried with backoff.
  void Run();
  void Stop() { stop_ = true; }

 private:
  pg::Pool& pool_;
  Publisher& publisher_;
  RelayOptions options_;
  std::atomic<bool> stop_{false};
};

// Records that `consumer` processed `event_id`, in the caller's transaction. Returns true the
// first time, false if it was already processed (the caller then skips the effect).
bool MarkProcessed(pqxx::work& tx, std::string_view consumer, std::string_view event_id);

// Parses a message value as an envelope; INVALID_ARGUMENT (permanent) if it is not one.
absl::StatusOr<marketing::common::v1::Envelope> ParseEnvelope(const IncomingMessage& message);

}  // namespace mkt::kafka

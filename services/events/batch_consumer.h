// A Kafka consumer that hands messages to its handler in batches (up to max_batch or after
// linger) and commits the batch's offsets only after the handler made its effect durable — what
// the events service needs to apply one database transaction per batch rather than per message
// (libs/kafka's Consumer handles one message at a time). Messages the handler rejects go to the
// dead-letter topic with the reason before the commit; a transient failure retries the same batch.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "libs/kafka/kafka.h"

namespace mkt::events {

struct Rejected {
  size_t index;  // into the batch
  std::string reason;
};

// Returns OK once every accepted message's effect is durable; fills `rejected` with the messages
// that can never be processed. Any error is transient: the same batch is handled again.
using BatchHandler = std::function<absl::Status(const std::vector<kafka::IncomingMessage>& batch,
                                                std::vector<Rejected>* rejected)>;

struct BatchConsumerOptions {
  kafka::ConsumerOptions consumer;
  int max_batch = 500;
  absl::Duration linger = absl::Milliseconds(5);
  // When set, Run() joins the group only once it returns true (asked every 100 ms; Stop() ends
  // the wait): until then the consumer takes no partition from the group's other members.
  std::function<bool()> ready;
};

class BatchConsumer {
 public:
  static absl::StatusOr<std::unique_ptr<BatchConsumer>> Create(BatchConsumerOptions options,
                                                               kafka::Publisher* dead_letters);
  ~BatchConsumer();
  // Waits for `ready`, subscribes, then hands batches to `handler` until Stop().
  void Run(const BatchHandler& handler);
  void Stop();

  struct Impl;

 private:
  explicit BatchConsumer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mkt::events

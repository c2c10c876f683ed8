// Keeps the credential cache honest: listens to mkt.channel-changes.v1 and drops the cached
// credential of every channel that changed (disabled, enabled, secret rotated, ...), so the next
// request re-reads it from the registry. Every gateway replica uses its own consumer group
// ("gateway-<random>") and so sees every change; it starts from the latest offset because
// changes made before it started cannot be in its (empty) cache.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "libs/kafka/kafka.h"

namespace mkt::gateway {

class CredentialStore;

inline constexpr char kChannelChangesTopic[] = "mkt.channel-changes.v1";

// Decodes one message (an Envelope holding a ChannelChanged) and invalidates its channel.
// INVALID_ARGUMENT (permanent: dead-lettered) when the message is not a channel change.
absl::Status ApplyChannelChange(const kafka::IncomingMessage& message, CredentialStore& store);

struct ChannelChangeListenerOptions {
  std::string kafka_bootstrap;
  std::string topic = kChannelChangesTopic;
  // Extra librdkafka properties for tests.
  std::map<std::string, std::string> kafka_properties;
};

class ChannelChangeListener {
 public:
  // Creates the consumer (and the dead-letter producer) and starts its thread. Fails only on
  // configuration errors; an unreachable broker is retried in the background.
  static absl::StatusOr<std::unique_ptr<ChannelChangeListener>> Start(
      const ChannelChangeListenerOptions& options, CredentialStore& store);
  // Stops and joins the thread.
  ~ChannelChangeListener();

  ChannelChangeListener(const ChannelChangeListener&) = delete;
  ChannelChangeListener& operator=(const ChannelChangeListener&) = delete;

  const std::string& group_id() const { return group_id_; }

 private:
  ChannelChangeListener() = default;

  std::string group_id_;
  std::unique_ptr<kafka::Producer> dead_letters_;
  std::unique_ptr<kafka::Consumer> consumer_;
  std::thread thread_;
};

}  // namespace mkt::gateway

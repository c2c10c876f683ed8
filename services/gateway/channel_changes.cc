#include "services/gateway/channel_changes.h"

#include "absl/strings/str_cat.h"
#include "libs/core/ids.h"
#include "libs/core/status.h"
#include "libs/kafka/outbox.h"
#include "marketing/channels/v1/channels.pb.h"
#include "services/gateway/credential_store.h"
#include "spdlog/spdlog.h"

namespace mkt::gateway {

absl::Status ApplyChannelChange(const kafka::IncomingMessage& message, CredentialStore& store) {
  MKT_ASSIGN_OR_RETURN(marketing::common::v1::Envelope envelope, kafka::ParseEnvelope(message));
  marketing::channels::v1::ChannelChanged change;
  if (!envelope.payload().Is<marketing::channels::v1::ChannelChanged>() ||
      !envelope.payload().UnpackTo(&change)) {
    return InvalidArgument("payload", absl::StrCat("expected a ChannelChanged payload, got ",
                                                   envelope.payload().type_url()));
  }
  if (change.channel().id().empty()) {
    return InvalidArgument("channel.id", "a ChannelChanged without a channel id");
  }
  store.Invalidate(change.channel().id());
  spdlog::info("channel {} changed ({}, version {}): cached credential dropped",
               change.channel().id(),
               marketing::channels::v1::ChannelChanged::Change_Name(change.change()),
               change.channel().version());
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ChannelChangeListener>> ChannelChangeListener::Start(
    const ChannelChangeListenerOptions& options, CredentialStore& store) {
  std::unique_ptr<ChannelChangeListener> listener(new ChannelChangeListener());
  listener->group_id_ = "gateway-" + RandomHex(8);

  kafka::ClientOptions client;
  client.bootstrap_servers = options.kafka_bootstrap;
  client.client_id = "mkt-gateway";
  client.properties = options.kafka_properties;

  // Subscribing to a topic that does not exist yet would only notice it at the next metadata
  // refresh (minutes); creating it (idempotently) makes start-up deterministic.
  if (absl::Status s = kafka::EnsureTopic(client, options.topic, 3); !s.ok()) {
    spdlog::warn("cannot ensure Kafka topic {} (continuing; the consumer retries): {}",
                 options.topic, s.ToString());
  }

  MKT_ASSIGN_OR_RETURN(listener->dead_letters_, kafka::Producer::Create(client));
  kafka::ConsumerOptions consumer_options;
  consumer_options.client = client;
  consumer_options.group_id = listener->group_id_;
  consumer_options.topics = {options.topic};
  consumer_options.auto_offset_reset = "latest";
  consumer_options.metrics_name = "gateway_channel_changes";
  MKT_ASSIGN_OR_RETURN(listener->consumer_,
                       kafka::Consumer::Create(consumer_options, listener->dead_letters_.get()));

  kafka::Consumer* consumer = listener->consumer_.get();
  listener->thread_ = std::thread([consumer, &store] {
    consumer->Run([&store](const kafka::IncomingMessage& message) {
      return ApplyChannelChange(message, store);
    });
  });
  spdlog::info("listening for channel changes on {} (group {})", options.topic,
               listener->group_id_);
  return listener;
}

ChannelChangeListener::~ChannelChangeListener() {
  if (consumer_ != nullptr) consumer_->Stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace mkt::gateway

#include "services/events/batch_consumer.h"

#include <librdkafka/rdkafkacpp.h>

#include <map>

#include "absl/time/clock.h"
#include "libs/core/status.h"
#include "libs/log/log.h"
#include "libs/metrics/metrics.h"
#include "marketing/common/v1/envelope.pb.h"
#include "spdlog/spdlog.h"

namespace mkt::events {

struct BatchConsumer::Impl {
  BatchConsumerOptions options;
  kafka::Publisher* dead_letters = nullptr;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer;
  std::atomic<bool> stop{false};
  std::unique_ptr<metrics::OperationMetrics> metrics;

  ~Impl() {
    if (consumer != nullptr) consumer->close();
  }

  // The dead letter of `in` (cut down when large: kafka::MakeDeadLetter), with the reason also
  // as a header.
  kafka::OutgoingMessage DeadLetter(const kafka::IncomingMessage& in, const std::string& reason,
                                    bool minimal) {
    kafka::OutgoingMessage out = kafka::MakeDeadLetter(in, options.consumer.metrics_name, reason,
                                                       options.consumer.dead_letter_topic, minimal);
    out.headers.emplace_back("reason", reason);
    return out;
  }

  void Commit(const std::vector<kafka::IncomingMessage>& batch) {
    std::map<std::pair<std::string, int32_t>, int64_t> next;
    for (const auto& m : batch) {
      auto& o = next[{m.topic, m.partition}];
      o = std::max(o, m.offset + 1);
    }
    std::vector<RdKafka::TopicPartition*> offsets;
    for (const auto& [tp, offset] : next) {
      offsets.push_back(RdKafka::TopicPartition::create(tp.first, tp.second, offset));
    }
    RdKafka::ErrorCode err = consumer->commitSync(offsets);
    RdKafka::TopicPartition::destroy(offsets);
    if (err != RdKafka::ERR_NO_ERROR) {
      // The effect is durable; after a rebalance the batch comes back and is deduped.
      spdlog::warn("events consumer: commit failed: {}", RdKafka::err2str(err));
    }
  }

  void SleepUnlessStopped(absl::Duration d) {
    const absl::Time until = absl::Now() + d;
    while (!stop && absl::Now() < until) absl::SleepFor(absl::Milliseconds(20));
  }
};

BatchConsumer::BatchConsumer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BatchConsumer::~BatchConsumer() = default;

absl::StatusOr<std::unique_ptr<BatchConsumer>> BatchConsumer::Create(
    BatchConsumerOptions options, kafka::Publisher* dead_letters) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->dead_letters = dead_letters;
  impl->metrics = std::make_unique<metrics::OperationMetrics>(
      "mkt_" + options.consumer.metrics_name + "_batch", "Kafka batches handled");
  std::string err;
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::map<std::string, std::string> props = {
      {"bootstrap.servers", options.consumer.client.bootstrap_servers},
      {"client.id", options.consumer.client.client_id},
      {"group.id", options.consumer.group_id},
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"session.timeout.ms", "6000"},
      {"isolation.level", "read_committed"},
      {"auto.offset.reset", options.consumer.auto_offset_reset},
      {"fetch.wait.max.ms", "10"},
  };
  for (const auto& [k, v] : options.consumer.client.properties) props[k] = v;
  for (const auto& [k, v] : props) {
    if (conf->set(k, v, err) != RdKafka::Conf::CONF_OK) {
      return absl::InvalidArgumentError("kafka property " + k + ": " + err);
    }
  }
  if (options.consumer.topics.empty())
    return absl::InvalidArgumentError("kafka consumer: no topics");
  impl->consumer.reset(RdKafka::KafkaConsumer::create(conf.get(), err));
  if (impl->consumer == nullptr) return absl::InvalidArgumentError("kafka consumer: " + err);
  // Subscribed in Run(), once `ready`: a member that joined the group and did not poll would
  // hold its partitions idle.
  return std::unique_ptr<BatchConsumer>(new BatchConsumer(std::move(impl)));
}

void BatchConsumer::Stop() { impl_->stop = true; }

void BatchConsumer::Run(const BatchHandler& handler) {
  Impl& impl = *impl_;
  while (!impl.stop && impl.options.ready && !impl.options.ready()) {
    impl.SleepUnlessStopped(absl::Milliseconds(100));
  }
  while (!impl.stop) {
    const RdKafka::ErrorCode e = impl.consumer->subscribe(impl.options.consumer.topics);
    if (e == RdKafka::ERR_NO_ERROR) break;
    spdlog::error("events consumer: cannot subscribe to {} (retrying): {}",
                  impl.options.consumer.topics.front(), RdKafka::err2str(e));
    impl.SleepUnlessStopped(absl::Seconds(1));
  }
  std::vector<kafka::IncomingMessage> batch;
  while (!impl.stop) {
    batch.clear();
    absl::Time first = absl::InfiniteFuture();
    while (!impl.stop && static_cast<int>(batch.size()) < impl.options.max_batch) {
      const absl::Duration left =
          batch.empty() ? absl::Milliseconds(100) : first + impl.options.linger - absl::Now();
      if (left <= absl::ZeroDuration()) break;
      std::unique_ptr<RdKafka::Message> msg(impl.consumer->consume(
          static_cast<int>(std::max<int64_t>(1, absl::ToInt64Milliseconds(left)))));
      if (msg == nullptr) continue;
      if (msg->err() == RdKafka::ERR__TIMED_OUT || msg->err() == RdKafka::ERR__PARTITION_EOF) {
        if (!batch.empty()) break;
        continue;
      }
      if (msg->err() != RdKafka::ERR_NO_ERROR) {
        spdlog::warn("events consumer: {}", msg->errstr());
        continue;
      }
      kafka::IncomingMessage in;
      in.topic = msg->topic_name();
      in.partition = msg->partition();
      in.offset = msg->offset();
      if (msg->key_pointer() != nullptr) {
        in.key.assign(static_cast<const char*>(msg->key_pointer()), msg->key_len());
      }
      if (msg->payload() != nullptr) {
        in.value.assign(static_cast<const char*>(msg->payload()), msg->len());
      }
      if (RdKafka::Headers* headers = msg->headers(); headers != nullptr) {
        for (const auto& h : headers->get_all()) {
          in.headers.emplace_back(
              h.key(), h.value() == nullptr
                           ? std::string()
                           : std::string(static_cast<const char*>(h.value()), h.value_size()));
        }
      }
      if (batch.empty()) first = absl::Now();
      batch.push_back(std::move(in));
    }
    if (batch.empty()) continue;
    while (!impl.stop) {
      std::vector<Rejected> rejected;
      const absl::Time start = absl::Now();
      absl::Status status;
      try {
        status = handler(batch, &rejected);
      } catch (const std::exception& e) {
        status = Internal(std::string("the batch handler threw: ") + e.what());
      }
      impl.metrics->Record("batch", status.ok() ? "" : absl::StatusCodeToString(status.code()),
                           absl::ToDoubleSeconds(absl::Now() - start));
      if (status.ok() && !rejected.empty()) {
        auto letters_of = [&](bool minimal) {
          std::vector<kafka::OutgoingMessage> letters;
          for (const Rejected& r : rejected) {
            letters.push_back(impl.DeadLetter(batch[r.index], r.reason, minimal));
          }
          return letters;
        };
        status = impl.dead_letters == nullptr
                     ? absl::OkStatus()
                     : impl.dead_letters->Publish(letters_of(false), absl::Seconds(10));
        if (kafka::IsPermanent(status)) {
          // Refused for good (still too large for this producer): the letters without the
          // messages, so that the partition goes on.
          spdlog::error("events consumer: dead letters refused ({}); sending them without values",
                        status);
          status = impl.dead_letters->Publish(letters_of(true), absl::Seconds(10));
        }
        if (status.ok()) {
          spdlog::warn("events consumer: {} message(s) dead-lettered to {}, first: {}",
                       rejected.size(), impl.options.consumer.dead_letter_topic,
                       rejected[0].reason);
        }
      }
      if (status.ok()) {
        impl.Commit(batch);
        break;
      }
      spdlog::warn("events consumer: batch of {} failed, retrying: {}", batch.size(), status);
      impl.SleepUnlessStopped(impl.options.consumer.retry_backoff);
    }
  }
}

}  // namespace mkt::events

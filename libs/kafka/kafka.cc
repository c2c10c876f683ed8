#include "libs/kafka/kafka.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafkacpp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "libs/auth/crypto.h"
#include "libs/core/status.h"
#include "libs/metrics/metrics.h"
#include "marketing/common/v1/envelope.pb.h"
#include "spdlog/spdlog.h"

namespace mkt::kafka {
namespace {

// Sets every property or returns the first one librdkafka rejects.
absl::Status SetAll(RdKafka::Conf& conf, const std::map<std::string, std::string>& properties) {
  std::string errstr;
  for (const auto& [name, value] : properties) {
    if (conf.set(name, value, errstr) != RdKafka::Conf::CONF_OK) {
      return absl::InvalidArgumentError(
          absl::StrCat("kafka property ", name, "=", value, ": ", errstr));
    }
  }
  return absl::OkStatus();
}

// Forwards librdkafka's own errors and warnings to our log; nothing below warn, so a healthy
// client stays quiet.
class LogEvents final : public RdKafka::EventCb {
 public:
  void event_cb(RdKafka::Event& event) override {
    switch (event.type()) {
      case RdKafka::Event::EVENT_ERROR:
        if (event.fatal()) {
          spdlog::error("kafka fatal error: {} ({})", RdKafka::err2str(event.err()), event.str());
        } else {
          spdlog::warn("kafka error: {} ({})", RdKafka::err2str(event.err()), event.str());
        }
        break;
      case RdKafka::Event::EVENT_LOG:
        if (event.severity() <= RdKafka::Event::EVENT_SEVERITY_WARNING) {
          spdlog::warn("kafka {}: {}", event.fac(), event.str());
        }
        break;
      default:
        break;
    }
  }
};

absl::StatusOr<std::unique_ptr<RdKafka::Conf>> BaseConf(const ClientOptions& options,
                                                        RdKafka::EventCb* events) {
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::map<std::string, std::string> base = {{"bootstrap.servers", options.bootstrap_servers}};
  if (!options.client_id.empty()) base["client.id"] = options.client_id;
  absl::Status s = SetAll(*conf, base);
  if (!s.ok()) return s;
  std::string errstr;
  if (conf->set("event_cb", events, errstr) != RdKafka::Conf::CONF_OK) {
    return absl::InternalError(absl::StrCat("kafka event_cb: ", errstr));
  }
  return conf;
}

int TimeoutMs(absl::Duration d) {
  return static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(d), 0, 1 << 30));
}

// What one Publish() call waits for. Shared with the delivery reports of its messages, which may
// arrive after the call gave up (timeout), so it lives as long as its last message.
struct PublishCall {
  std::mutex mu;
  std::condition_variable done;
  size_t pending = 0;
  RdKafka::ErrorCode first_error = RdKafka::ERR_NO_ERROR;
  std::string first_error_topic;
  std::string first_error_text;
};

class DeliveryReports final : public RdKafka::DeliveryReportCb {
 public:
  void dr_cb(RdKafka::Message& message) override {
    // Each message carries its own reference to its call, released here exactly once.
    auto* ref = static_cast<std::shared_ptr<PublishCall>*>(message.msg_opaque());
    if (ref == nullptr) return;
    std::shared_ptr<PublishCall> call = std::move(*ref);
    delete ref;
    std::lock_guard<std::mutex> lock(call->mu);
    if (message.err() != RdKafka::ERR_NO_ERROR && call->first_error == RdKafka::ERR_NO_ERROR) {
      call->first_error = message.err();
      call->first_error_topic = message.topic_name();
      call->first_error_text = message.errstr();
    }
    if (--call->pending == 0) call->done.notify_all();
  }
};

}  // namespace

// ----------------------------------------------------------------------------------------------
// Producer

struct Producer::Impl {
  LogEvents events;
  DeliveryReports reports;
  std::unique_ptr<RdKafka::Producer> producer;
  // Serves delivery reports so that Publish() callers only wait on their own call's state.
  std::thread poller;
  std::atomic<bool> stopping{false};

  ~Impl() {
    stopping = true;
    if (poller.joinable()) poller.join();
    if (producer == nullptr) return;
    // Give queued messages a moment, then fail what is left so every delivery report (and the
    // reference it holds) is served before the handle goes away.
    producer->flush(2000);
    producer->purge(RdKafka::Producer::PURGE_QUEUE | RdKafka::Producer::PURGE_INFLIGHT);
    producer->flush(1000);
    producer->poll(0);
  }
};

Producer::Producer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Producer::~Producer() = default;

absl::StatusOr<std::unique_ptr<Producer>> Producer::Create(const ClientOptions& options) {
  auto impl = std::make_unique<Impl>();
  auto conf = BaseConf(options, &impl->events);
  if (!conf.ok()) return conf.status();
  absl::Status s = SetAll(**conf, {{"enable.idempotence", "true"},
                                   {"acks", "all"},
                                   {"linger.ms", "5"},
                                   {"compression.type", "lz4"}});
  if (!s.ok()) return s;
  s = SetAll(**conf, options.properties);
  if (!s.ok()) return s;
  std::string errstr;
  if ((*conf)->set("dr_cb", &impl->reports, errstr) != RdKafka::Conf::CONF_OK) {
    return absl::InternalError(absl::StrCat("kafka dr_cb: ", errstr));
  }
  impl->producer.reset(RdKafka::Producer::create(conf->get(), errstr));
  if (impl->producer == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("kafka producer: ", errstr));
  }
  Impl* raw = impl.get();
  impl->poller = std::thread([raw] {
    while (!raw->stopping) raw->producer->poll(100);
  });
  return std::unique_ptr<Producer>(new Producer(std::move(impl)));
}

absl::Status Producer::Publish(const std::vector<OutgoingMessage>& messages,
                               absl::Duration timeout) {
  if (messages.empty()) return absl::OkStatus();
  const absl::Time deadline = absl::Now() + timeout;
  RdKafka::Producer& producer = *impl_->producer;

  std::string fatal_text;
  if (producer.fatal_error(fatal_text) != RdKafka::ERR_NO_ERROR) {
    return absl::UnavailableError(absl::StrCat("kafka producer failed fatally: ", fatal_text));
  }

  auto call = std::make_shared<PublishCall>();
  call->pending = messages.size();
  for (size_t i = 0; i < messages.size(); ++i) {
    const OutgoingMessage& m = messages[i];
    RdKafka::ErrorCode err;
    while (true) {
      RdKafka::Headers* headers = RdKafka::Headers::create();
      for (const auto& [name, value] : m.headers) headers->add(name, value);
      auto* ref = new std::shared_ptr<PublishCall>(call);
      err = producer.produce(m.topic, RdKafka::Topic::PARTITION_UA, RdKafka::Producer::RK_MSG_COPY,
                             const_cast<char*>(m.value.data()), m.value.size(),
                             m.key.empty() ? nullptr : m.key.data(), m.key.size(), 0, headers, ref);
      if (err == RdKafka::ERR_NO_ERROR) break;  // librdkafka owns the headers now
      delete headers;
      delete ref;
      if (err != RdKafka::ERR__QUEUE_FULL || absl::Now() >= deadline) break;
      // The local queue is full: let deliveries drain it, then try the same message again.
      producer.poll(10);
    }
    if (err != RdKafka::ERR_NO_ERROR) {
      // Messages already queued finish on their own; their reports release `call`.
      std::lock_guard<std::mutex> lock(call->mu);
      call->pending -= messages.size() - i;
      const std::string text =
          absl::StrCat("kafka publish to ", m.topic, " failed: ", RdKafka::err2str(err));
      // Too large for message.max.bytes: sending it again can never work.
      if (err == RdKafka::ERR_MSG_SIZE_TOO_LARGE) {
        return mkt::InvalidArgument("value", absl::StrCat(text, " (", m.value.size(), " bytes)"));
      }
      return absl::UnavailableError(text);
    }
  }

  std::unique_lock<std::mutex> lock(call->mu);
  bool all_reported =
      call->done.wait_until(lock, absl::ToChronoTime(deadline), [&] { return call->pending == 0; });
  if (call->first_error != RdKafka::ERR_NO_ERROR) {
    return absl::UnavailableError(absl::StrCat("kafka publish to ", call->first_error_topic,
                                               " failed: ", call->first_error_text));
  }
  if (!all_reported) {
    return absl::DeadlineExceededError(absl::StrCat(
        "kafka publish to ", messages.front().topic, ": ", call->pending, " of ", messages.size(),
        " messages unacknowledged after ", absl::FormatDuration(timeout)));
  }
  return absl::OkStatus();
}

// ----------------------------------------------------------------------------------------------
// Consumer

OutgoingMessage MakeDeadLetter(const IncomingMessage& in, const std::string& consumer,
                               std::string_view reason, const std::string& topic, bool minimal) {
  marketing::common::v1::DeadLetter letter;
  letter.set_consumer(consumer);
  letter.set_topic(in.topic);
  letter.set_partition(in.partition);
  letter.set_offset(in.offset);
  letter.set_key(in.key.substr(0, kDeadLetterKeyLimit));
  letter.set_reason(std::string(reason));
  const int64_t now_ns = absl::ToUnixNanos(absl::Now());
  letter.mutable_rejected_at()->set_seconds(now_ns / 1000000000);
  letter.mutable_rejected_at()->set_nanos(static_cast<int32_t>(now_ns % 1000000000));
  OutgoingMessage out;
  out.topic = topic;
  out.key = letter.key();
  size_t header_bytes = 0;
  for (const auto& [name, value] : in.headers) header_bytes += name.size() + value.size();
  const size_t value_limit = minimal ? 0 : kDeadLetterValueLimit;
  if (!minimal && header_bytes <= kDeadLetterHeadersLimit) {
    out.headers = in.headers;
  } else if (!in.headers.empty()) {
    out.headers.emplace_back(kDeadLetterHeadersDroppedHeader, std::to_string(in.headers.size()));
  }
  if (in.value.size() > value_limit) {
    letter.set_value(in.value.substr(0, value_limit));
    out.headers.emplace_back(kDeadLetterTruncatedHeader, "true");
    out.headers.emplace_back(kDeadLetterOriginalBytesHeader, std::to_string(in.value.size()));
    out.headers.emplace_back(kDeadLetterOriginalSha256Header, auth::Sha256Hex(in.value));
  } else {
    letter.set_value(in.value);
  }
  out.value = letter.SerializeAsString();
  return out;
}

bool IsPermanent(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kUnimplemented:
      return true;
    default:
      return false;
  }
}

namespace {

// Prometheus names allow [a-zA-Z0-9_:] only.
std::string MetricsPrefix(const ConsumerOptions& options) {
  std::string name = options.metrics_name.empty() ? options.group_id : options.metrics_name;
  for (char& c : name) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) c = '_';
  }
  return absl::StrCat("mkt_", name, "_consumer");
}

std::string CodeName(const absl::Status& status) {
  return status.ok() ? "" : absl::StatusCodeToString(status.code());
}

}  // namespace

struct Consumer::Impl {
  Impl(const ConsumerOptions& o, Publisher* dl)
      : options(o),
        dead_letters(dl),
        metrics(MetricsPrefix(o), "Kafka messages handled by the consumer") {}

  ~Impl() {
    if (consumer != nullptr) consumer->close();
  }

  // Sleeps up to `d`, waking early on Stop().
  void SleepUnlessStopped(absl::Duration d) {
    const absl::Time until = absl::Now() + d;
    while (!stop && absl::Now() < until) {
      absl::SleepFor(std::min(absl::Milliseconds(20), until - absl::Now()));
    }
  }

  OutgoingMessage DeadLetterOf(const IncomingMessage& in, const absl::Status& reason,
                               bool minimal) {
    return MakeDeadLetter(in,
                          options.metrics_name.empty() ? options.group_id : options.metrics_name,
                          std::string(reason.message()), options.dead_letter_topic, minimal);
  }

  absl::Status DeadLetter(const IncomingMessage& in, const absl::Status& reason) {
    absl::Status s = dead_letters->Publish({DeadLetterOf(in, reason, false)}, absl::Seconds(10));
    if (!IsPermanent(s)) return s;
    // Refused for good (still too large for this producer): the letter without the message.
    spdlog::error(
        "kafka consumer {}: dead letter of {}[{}]@{} refused ({}); sending it without "
        "the value and headers",
        options.group_id, in.topic, in.partition, in.offset, s.ToString());
    return dead_letters->Publish({DeadLetterOf(in, reason, true)}, absl::Seconds(10));
  }

  void Commit(const IncomingMessage& in) {
    std::vector<RdKafka::TopicPartition*> offsets = {
        RdKafka::TopicPartition::create(in.topic, in.partition, in.offset + 1)};
    RdKafka::ErrorCode err = consumer->commitSync(offsets);
    RdKafka::TopicPartition::destroy(offsets);
    if (err != RdKafka::ERR_NO_ERROR) {
      // The effect is durable; the message comes back after a rebalance and is deduped.
      spdlog::warn("kafka consumer {}: commit of {}[{}]@{} failed: {}", options.group_id, in.topic,
                   in.partition, in.offset, RdKafka::err2str(err));
    }
  }

  // Handles one message until it succeeds, is dead-lettered, or Stop() is called. Retrying in
  // place (rather than pausing the partition and polling on) keeps the code simple; an outage
  // longer than max.poll.interval.ms (5 min) costs the partition to another member, which gets
  // the uncommitted message again and dedupes it.
  void Handle(const Handler& handler, const IncomingMessage& in) {
    while (!stop) {
      const absl::Time start = absl::Now();
      absl::Status status;
      try {
        status = handler(in);
      } catch (const std::exception& e) {
        // A throwing handler must not end the consumer thread (std::terminate); retry it.
        status = mkt::Internal(std::string("the handler threw: ") + e.what());
      } catch (...) {
        status = mkt::Internal("the handler threw a non-standard exception");
      }
      metrics.Record(in.topic, CodeName(status), absl::ToDoubleSeconds(absl::Now() - start));
      if (status.ok()) {
        Commit(in);
        return;
      }
      if (IsPermanent(status)) {
        if (dead_letters == nullptr) {
          spdlog::error("kafka consumer {}: dropped {}[{}]@{} (no dead-letter publisher): {}",
                        options.group_id, in.topic, in.partition, in.offset, status.ToString());
          Commit(in);
          return;
        }
        while (!stop) {
          absl::Status dl = DeadLetter(in, status);
          if (dl.ok()) {
            spdlog::warn("kafka consumer {}: dead-lettered {}[{}]@{} to {}: {}", options.group_id,
                         in.topic, in.partition, in.offset, options.dead_letter_topic,
                         status.ToString());
            Commit(in);
            return;
          }
          spdlog::warn("kafka consumer {}: dead-lettering {}[{}]@{} failed, retrying: {}",
                       options.group_id, in.topic, in.partition, in.offset, dl.ToString());
          SleepUnlessStopped(options.retry_backoff);
        }
        return;
      }
      spdlog::warn("kafka consumer {}: {}[{}]@{} failed, retrying in {}: {}", options.group_id,
                   in.topic, in.partition, in.offset, absl::FormatDuration(options.retry_backoff),
                   status.ToString());
      SleepUnlessStopped(options.retry_backoff);
    }
  }

  ConsumerOptions options;
  Publisher* dead_letters;
  metrics::OperationMetrics metrics;
  LogEvents events;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer;
  std::atomic<bool> stop{false};
};

Consumer::Consumer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Consumer::~Consumer() = default;

absl::StatusOr<std::unique_ptr<Consumer>> Consumer::Create(const ConsumerOptions& options,
                                                           Publisher* dead_letters) {
  if (options.group_id.empty()) return absl::InvalidArgumentError("kafka consumer: no group_id");
  if (options.topics.empty()) return absl::InvalidArgumentError("kafka consumer: no topics");
  auto impl = std::make_unique<Impl>(options, dead_letters);
  auto conf = BaseConf(options.client, &impl->events);
  if (!conf.ok()) return conf.status();
  absl::Status s = SetAll(**conf, {{"group.id", options.group_id},
                                   {"enable.auto.commit", "false"},
                                   {"enable.auto.offset.store", "false"},
                                   {"session.timeout.ms", "6000"},
                                   {"isolation.level", "read_committed"},
                                   {"auto.offset.reset", options.auto_offset_reset}});
  if (!s.ok()) return s;
  s = SetAll(**conf, options.client.properties);
  if (!s.ok()) return s;
  std::string errstr;
  impl->consumer.reset(RdKafka::KafkaConsumer::create(conf->get(), errstr));
  if (impl->consumer == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("kafka consumer: ", errstr));
  }
  RdKafka::ErrorCode err = impl->consumer->subscribe(options.topics);
  if (err != RdKafka::ERR_NO_ERROR) {
    return absl::InvalidArgumentError(
        absl::StrCat("kafka consumer subscribe: ", RdKafka::err2str(err)));
  }
  return std::unique_ptr<Consumer>(new Consumer(std::move(impl)));
}

void Consumer::Run(const Handler& handler) {
  Impl& impl = *impl_;
  while (!impl.stop) {
    // A short poll keeps Stop() prompt.
    std::unique_ptr<RdKafka::Message> msg(impl.consumer->consume(100));
    if (msg == nullptr) continue;
    switch (msg->err()) {
      case RdKafka::ERR_NO_ERROR:
        break;
      case RdKafka::ERR__TIMED_OUT:
      case RdKafka::ERR__PARTITION_EOF:
        continue;
      default:
        spdlog::warn("kafka consumer {}: {}", impl.options.group_id, msg->errstr());
        continue;
    }
    IncomingMessage in;
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
      for (const RdKafka::Headers::Header& h : headers->get_all()) {
        in.headers.emplace_back(
            h.key(), h.value() == nullptr
                         ? std::string()
                         : std::string(static_cast<const char*>(h.value()), h.value_size()));
      }
    }
    impl.Handle(handler, in);
  }
}

void Consumer::Stop() { impl_->stop = true; }

// ----------------------------------------------------------------------------------------------
// Topics

namespace {

// Owns a C handle used only for admin and metadata requests.
struct AdminHandle {
  rd_kafka_t* rk = nullptr;
  ~AdminHandle() {
    if (rk != nullptr) rd_kafka_destroy(rk);
  }
};

// Returns the partition count the broker reports for `topic`, or 0 while it does not know it.
int PartitionsInMetadata(rd_kafka_t* rk, const std::string& topic, int timeout_ms) {
  const rd_kafka_metadata_t* md = nullptr;
  // All topics rather than one: asking for a single unknown topic would auto-create it on
  // brokers that allow that.
  if (rd_kafka_metadata(rk, 1, nullptr, &md, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR) return 0;
  int partitions = 0;
  for (int i = 0; i < md->topic_cnt; ++i) {
    const rd_kafka_metadata_topic_t& t = md->topics[i];
    if (topic == t.topic && t.err == RD_KAFKA_RESP_ERR_NO_ERROR) partitions = t.partition_cnt;
  }
  rd_kafka_metadata_destroy(md);
  return partitions;
}

// Makes the handle of `options` for admin and metadata requests.
absl::Status OpenAdmin(const ClientOptions& options, AdminHandle& admin) {
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  std::map<std::string, std::string> properties = options.properties;
  properties["bootstrap.servers"] = options.bootstrap_servers;
  if (!options.client_id.empty()) properties["client.id"] = options.client_id;
  for (const auto& [name, value] : properties) {
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return absl::InvalidArgumentError(absl::StrCat("kafka property ", name, ": ", errstr));
    }
  }
  admin.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (admin.rk == nullptr) {
    rd_kafka_conf_destroy(conf);
    return absl::InvalidArgumentError(absl::StrCat("kafka admin client: ", errstr));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status EnsureTopic(const ClientOptions& options, const std::string& topic, int partitions) {
  constexpr int kTimeoutMs = 10000;
  char errstr[512];
  AdminHandle admin;
  MKT_RETURN_IF_ERROR(OpenAdmin(options, admin));

  rd_kafka_NewTopic_t* new_topic =
      rd_kafka_NewTopic_new(topic.c_str(), partitions, 1, errstr, sizeof(errstr));
  if (new_topic == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("kafka topic ", topic, ": ", errstr));
  }
  rd_kafka_AdminOptions_t* admin_options =
      rd_kafka_AdminOptions_new(admin.rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_AdminOptions_set_request_timeout(admin_options, kTimeoutMs, errstr, sizeof(errstr));
  rd_kafka_AdminOptions_set_operation_timeout(admin_options, kTimeoutMs, errstr, sizeof(errstr));
  rd_kafka_queue_t* queue = rd_kafka_queue_new(admin.rk);
  rd_kafka_CreateTopics(admin.rk, &new_topic, 1, admin_options, queue);
  rd_kafka_event_t* event = rd_kafka_queue_poll(queue, kTimeoutMs + 1000);

  absl::Status status;
  if (event == nullptr) {
    status = absl::DeadlineExceededError(absl::StrCat("kafka create topic ", topic, ": no answer"));
  } else if (rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    status = absl::UnavailableError(
        absl::StrCat("kafka create topic ", topic, ": ", rd_kafka_event_error_string(event)));
  } else {
    size_t count = 0;
    const rd_kafka_topic_result_t** results =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event), &count);
    for (size_t i = 0; i < count; ++i) {
      rd_kafka_resp_err_t err = rd_kafka_topic_result_error(results[i]);
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        const char* text = rd_kafka_topic_result_error_string(results[i]);
        status = absl::UnavailableError(absl::StrCat(
            "kafka create topic ", topic, ": ", text != nullptr ? text : rd_kafka_err2str(err)));
      }
    }
  }
  if (event != nullptr) rd_kafka_event_destroy(event);
  rd_kafka_queue_destroy(queue);
  rd_kafka_AdminOptions_destroy(admin_options);
  rd_kafka_NewTopic_destroy(new_topic);
  if (!status.ok()) return status;

  // The controller answers before every broker serves the topic; producers started right away
  // would otherwise see "unknown topic" for a moment. The wait has its own budget: a broker that
  // has just started, on a loaded machine, can spend most of the first one on the creation.
  const absl::Time deadline = absl::Now() + absl::Milliseconds(kTimeoutMs);
  while (true) {
    int remaining = TimeoutMs(deadline - absl::Now());
    if (PartitionsInMetadata(admin.rk, topic, std::max(remaining, 100)) > 0) {
      return absl::OkStatus();
    }
    if (absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("kafka topic ", topic, " created but not visible in metadata"));
}

absl::StatusOr<std::vector<std::string>> ListTopics(const ClientOptions& options) {
  AdminHandle admin;
  MKT_RETURN_IF_ERROR(OpenAdmin(options, admin));
  const rd_kafka_metadata_t* md = nullptr;
  if (rd_kafka_resp_err_t err = rd_kafka_metadata(admin.rk, 1, nullptr, &md, 30000);
      err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::UnavailableError(absl::StrCat("kafka metadata: ", rd_kafka_err2str(err)));
  }
  std::vector<std::string> topics;
  for (int i = 0; i < md->topic_cnt; ++i) topics.emplace_back(md->topics[i].topic);
  rd_kafka_metadata_destroy(md);
  return topics;
}

absl::Status DeleteTopics(const ClientOptions& options, const std::vector<std::string>& topics) {
  constexpr int kTimeoutMs = 60000;
  constexpr size_t kPerRequest = 500;
  AdminHandle admin;
  MKT_RETURN_IF_ERROR(OpenAdmin(options, admin));
  char errstr[512];
  for (size_t start = 0; start < topics.size(); start += kPerRequest) {
    const size_t n = std::min(kPerRequest, topics.size() - start);
    std::vector<rd_kafka_DeleteTopic_t*> deletes;
    for (size_t i = 0; i < n; ++i) {
      deletes.push_back(rd_kafka_DeleteTopic_new(topics[start + i].c_str()));
    }
    rd_kafka_AdminOptions_t* admin_options =
        rd_kafka_AdminOptions_new(admin.rk, RD_KAFKA_ADMIN_OP_DELETETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(admin_options, kTimeoutMs, errstr, sizeof(errstr));
    rd_kafka_AdminOptions_set_operation_timeout(admin_options, kTimeoutMs, errstr, sizeof(errstr));
    rd_kafka_queue_t* queue = rd_kafka_queue_new(admin.rk);
    rd_kafka_DeleteTopics(admin.rk, deletes.data(), deletes.size(), admin_options, queue);
    rd_kafka_event_t* event = rd_kafka_queue_poll(queue, kTimeoutMs + 5000);
    absl::Status status;
    if (event == nullptr) {
      status = absl::DeadlineExceededError("kafka delete topics: no answer");
    } else if (rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      status = absl::UnavailableError(
          absl::StrCat("kafka delete topics: ", rd_kafka_event_error_string(event)));
    } else {
      size_t count = 0;
      const rd_kafka_topic_result_t** results =
          rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(event), &count);
      for (size_t i = 0; i < count && status.ok(); ++i) {
        rd_kafka_resp_err_t err = rd_kafka_topic_result_error(results[i]);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
          status = absl::UnavailableError(absl::StrCat("kafka delete topic ",
                                                       rd_kafka_topic_result_name(results[i]), ": ",
                                                       rd_kafka_err2str(err)));
        }
      }
    }
    if (event != nullptr) rd_kafka_event_destroy(event);
    rd_kafka_queue_destroy(queue);
    rd_kafka_AdminOptions_destroy(admin_options);
    rd_kafka_DeleteTopic_destroy_array(deletes.data(), deletes.size());
    MKT_RETURN_IF_ERROR(status);
  }
  return absl::OkStatus();
}

}  // namespace mkt::kafka

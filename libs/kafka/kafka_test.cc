// Unit tests of libs/kafka: status classification, envelopes, and error paths of the producer
// and consumer against librdkafka's mock cluster (never used here as a stand-in for a broker
// that must keep data; tests/integration covers that against the real one).
#include "libs/kafka/kafka.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/wrappers.pb.h"
#include "gtest/gtest.h"
#include "libs/kafka/outbox.h"

namespace mkt::kafka {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Kafka protocol API key of ProduceRequest (librdkafka keeps the constants private).
constexpr int16_t kProduceApiKey = 0;

TEST(IsPermanentTest, ClassifiesRejectionsAsPermanentAndOutagesAsTransient) {
  EXPECT_TRUE(IsPermanent(absl::InvalidArgumentError("x")));
  EXPECT_TRUE(IsPermanent(absl::FailedPreconditionError("x")));
  EXPECT_TRUE(IsPermanent(absl::NotFoundError("x")));
  EXPECT_TRUE(IsPermanent(absl::AlreadyExistsError("x")));
  EXPECT_TRUE(IsPermanent(absl::OutOfRangeError("x")));
  EXPECT_TRUE(IsPermanent(absl::UnimplementedError("x")));

  EXPECT_FALSE(IsPermanent(absl::OkStatus()));
  EXPECT_FALSE(IsPermanent(absl::UnavailableError("x")));
  EXPECT_FALSE(IsPermanent(absl::AbortedError("x")));
  EXPECT_FALSE(IsPermanent(absl::InternalError("x")));
  EXPECT_FALSE(IsPermanent(absl::DeadlineExceededError("x")));
  EXPECT_FALSE(IsPermanent(absl::ResourceExhaustedError("x")));
  EXPECT_FALSE(IsPermanent(absl::UnknownError("x")));
}

TEST(EnvelopeTest, MakeEnvelopeRoundTripsThroughParseEnvelope) {
  google::protobuf::StringValue payload;
  payload.set_value("fact-7");
  auto a = MakeEnvelope("test.Fact", "org-1", "trace-1", payload);
  auto b = MakeEnvelope("test.Fact", "org-1", "trace-1", payload);
  EXPECT_NE(a.event_id(), b.event_id());
  EXPECT_EQ(a.event_id().size(), 36u);
  EXPECT_GT(a.occurred_at().seconds(), 1600000000);

  IncomingMessage in;
  in.value = a.SerializeAsString();
  auto parsed = ParseEnvelope(in);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->event_id(), a.event_id());
  EXPECT_EQ(parsed->type(), "test.Fact");
  EXPECT_EQ(parsed->org_id(), "org-1");
  EXPECT_EQ(parsed->trace_id(), "trace-1");
  google::protobuf::StringValue unpacked;
  ASSERT_TRUE(parsed->payload().UnpackTo(&unpacked));
  EXPECT_EQ(unpacked.value(), "fact-7");
}

TEST(EnvelopeTest, ParseEnvelopeRejectsGarbageAndMissingEventIdPermanently) {
  IncomingMessage garbage;
  garbage.topic = "t";
  garbage.value = std::string("\xff\xff\xff\xff", 4);
  auto bad = ParseEnvelope(garbage);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(IsPermanent(bad.status()));

  marketing::common::v1::Envelope no_id;
  no_id.set_type("test.Fact");
  IncomingMessage anonymous;
  anonymous.value = no_id.SerializeAsString();
  EXPECT_EQ(ParseEnvelope(anonymous).status().code(), absl::StatusCode::kInvalidArgument);
}

// One mock broker serving real TCP on 127.0.0.1, with a 3-partition topic.
class MockClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char errstr[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
    host_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ASSERT_NE(host_, nullptr) << errstr;
    cluster_ = rd_kafka_mock_cluster_new(host_, 1);
    ASSERT_NE(cluster_, nullptr);
    ASSERT_EQ(rd_kafka_mock_topic_create(cluster_, kTopic, 3, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    options_.bootstrap_servers = rd_kafka_mock_cluster_bootstraps(cluster_);
    options_.client_id = "kafka-test";
  }

  void TearDown() override {
    if (cluster_ != nullptr) rd_kafka_mock_cluster_destroy(cluster_);
    if (host_ != nullptr) rd_kafka_destroy(host_);
  }

  std::unique_ptr<Producer> NewProducer(std::map<std::string, std::string> properties = {}) {
    ClientOptions options = options_;
    options.properties = std::move(properties);
    auto producer = Producer::Create(options);
    EXPECT_TRUE(producer.ok()) << producer.status();
    return producer.ok() ? std::move(*producer) : nullptr;
  }

  static std::vector<OutgoingMessage> Messages(int n, const std::string& prefix = "m") {
    std::vector<OutgoingMessage> out;
    for (int i = 0; i < n; ++i) {
      out.push_back({kTopic,
                     absl::StrCat("key-", i % 4),
                     absl::StrCat(prefix, i),
                     {{"event_id", absl::StrCat(prefix, i)}}});
    }
    return out;
  }

  static constexpr char kTopic[] = "mock.topic";
  rd_kafka_t* host_ = nullptr;
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
  ClientOptions options_;
};

TEST_F(MockClusterTest, PublishSucceedsWhenTheBrokerAcknowledges) {
  auto producer = NewProducer();
  ASSERT_NE(producer, nullptr);
  EXPECT_TRUE(producer->Publish(Messages(20), absl::Seconds(10)).ok());
  EXPECT_TRUE(producer->Publish({}, absl::Seconds(1)).ok());
}

TEST_F(MockClusterTest, PublishFailsFastWithUnavailableOnANonRetriableProduceError) {
  auto producer = NewProducer();
  ASSERT_NE(producer, nullptr);
  // Warm up so the failure below comes from the produce request, not from connecting.
  ASSERT_TRUE(producer->Publish(Messages(1), absl::Seconds(10)).ok());
  rd_kafka_mock_push_request_errors(cluster_, kProduceApiKey, 1,
                                    RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
  const absl::Time start = absl::Now();
  absl::Status s = producer->Publish(Messages(1, "x"), absl::Seconds(10));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("kafka publish to ", kTopic, " failed")));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // The error is not fatal to the producer: librdkafka remembers the topic error until its
  // next metadata refresh, after which publishing works again.
  absl::Status after;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  do {
    after = producer->Publish(Messages(1, "after"), absl::Seconds(2));
    if (!after.ok()) absl::SleepFor(absl::Milliseconds(100));
  } while (!after.ok() && absl::Now() < deadline);
  EXPECT_TRUE(after.ok()) << after;
}

TEST_F(MockClusterTest, PublishReturnsDeadlineExceededWhileTheBrokerKeepsFailing) {
  auto producer = NewProducer();
  ASSERT_NE(producer, nullptr);
  ASSERT_TRUE(producer->Publish(Messages(1), absl::Seconds(10)).ok());
  // Retriable errors: librdkafka would retry for message.timeout.ms (5 minutes by default);
  // Publish must give up at its own timeout instead of hanging.
  std::vector<rd_kafka_resp_err_t> errors(2000, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS);
  rd_kafka_mock_push_request_errors_array(cluster_, kProduceApiKey, errors.size(), errors.data());
  const absl::Time start = absl::Now();
  absl::Status s = producer->Publish(Messages(5, "y"), absl::Milliseconds(800));
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_GE(took, absl::Milliseconds(750));
  EXPECT_LT(took, absl::Seconds(3));

  // Once the broker recovers, the same producer delivers again (and the late messages drain).
  rd_kafka_mock_clear_request_errors(cluster_, kProduceApiKey);
  EXPECT_TRUE(producer->Publish(Messages(5, "z"), absl::Seconds(10)).ok());
}

TEST_F(MockClusterTest, PublishReturnsDeadlineExceededWhenTheBrokerIsDown) {
  auto producer = NewProducer();
  ASSERT_NE(producer, nullptr);
  ASSERT_TRUE(producer->Publish(Messages(1), absl::Seconds(10)).ok());
  rd_kafka_mock_broker_set_down(cluster_, 1);
  const absl::Time start = absl::Now();
  absl::Status s = producer->Publish(Messages(3, "d"), absl::Milliseconds(500));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  rd_kafka_mock_broker_set_up(cluster_, 1);
}

TEST_F(MockClusterTest, ConcurrentPublishersEachWaitForTheirOwnMessages) {
  auto producer = NewProducer();
  ASSERT_NE(producer, nullptr);
  constexpr int kThreads = 4;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int batch = 0; batch < 25; ++batch) {
        absl::Status s = producer->Publish(Messages(10, absl::StrCat("t", t, "b", batch, "-")),
                                           absl::Seconds(10));
        if (!s.ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
}

TEST_F(MockClusterTest, QueueFullIsRetriedUntilTheTimeout) {
  // A local queue of 5 messages: a 50-message batch only fits if Publish waits for deliveries.
  auto producer = NewProducer({{"queue.buffering.max.messages", "5"}});
  ASSERT_NE(producer, nullptr);
  EXPECT_TRUE(producer->Publish(Messages(50, "q"), absl::Seconds(10)).ok());
}

// Records dead letters; fails the first `failures` calls as a broker outage would.
class FakeDeadLetters final : public Publisher {
 public:
  explicit FakeDeadLetters(int failures) : failures_(failures) {}
  absl::Status Publish(const std::vector<OutgoingMessage>& messages, absl::Duration) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++calls_;
    if (failures_ > 0) {
      --failures_;
      return absl::UnavailableError("dead-letter topic down");
    }
    for (const auto& m : messages) published_.push_back(m);
    return absl::OkStatus();
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  std::vector<OutgoingMessage> published() {
    std::lock_guard<std::mutex> lock(mu_);
    return published_;
  }

 private:
  std::mutex mu_;
  int failures_;
  int calls_ = 0;
  std::vector<OutgoingMessage> published_;
};

TEST_F(MockClusterTest, ConsumerRetriesTransientFailuresAndDeadLettersPermanentOnes) {
  auto producer = NewProducer();
  ASSERT_NE(producer, nullptr);
  // One key, so all five land in one partition and their order is defined.
  std::vector<OutgoingMessage> batch;
  for (int i = 0; i < 5; ++i) batch.push_back({kTopic, "one-key", absl::StrCat("v", i), {}});
  ASSERT_TRUE(producer->Publish(batch, absl::Seconds(10)).ok());

  FakeDeadLetters dead_letters(/*failures=*/2);
  ConsumerOptions options;
  options.client = options_;
  options.group_id = "mock-group";
  options.topics = {kTopic};
  options.metrics_name = "mock_test";
  options.retry_backoff = absl::Milliseconds(20);
  options.dead_letter_topic = "mock.dead-letters";
  auto consumer = Consumer::Create(options, &dead_letters);
  ASSERT_TRUE(consumer.ok()) << consumer.status();

  std::mutex mu;
  std::vector<std::string> attempts;
  int v1_failures = 0;
  std::thread runner([&] {
    (*consumer)->Run([&](const IncomingMessage& m) -> absl::Status {
      std::lock_guard<std::mutex> lock(mu);
      attempts.push_back(m.value);
      if (m.value == "v1" && v1_failures++ < 2) return absl::UnavailableError("db down");
      if (m.value == "v3") return absl::InvalidArgumentError("v3 is malformed");
      return absl::OkStatus();
    });
  });
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!attempts.empty() && attempts.back() == "v4") break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  const absl::Time stop_at = absl::Now();
  (*consumer)->Stop();
  runner.join();
  EXPECT_LT(absl::Now() - stop_at, absl::Seconds(2)) << "Stop() was not prompt";

  std::lock_guard<std::mutex> lock(mu);
  // v1 is tried again (nothing after it meanwhile); v3 is handled once and dead-lettered after
  // the dead-letter publisher recovered; v4 follows.
  EXPECT_THAT(attempts, ElementsAre("v0", "v1", "v1", "v1", "v2", "v3", "v4"));
  EXPECT_EQ(dead_letters.calls(), 3);
  auto letters = dead_letters.published();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].topic, "mock.dead-letters");
  EXPECT_EQ(letters[0].key, "one-key");
  marketing::common::v1::DeadLetter letter;
  ASSERT_TRUE(letter.ParseFromString(letters[0].value));
  EXPECT_EQ(letter.reason(), "v3 is malformed");
  EXPECT_EQ(letter.topic(), kTopic);
  EXPECT_EQ(letter.value(), "v3");
  EXPECT_EQ(letter.consumer(), "mock_test");
}

// Forwards to a real producer and keeps what it acknowledged.
class RecordingPublisher final : public Publisher {
 public:
  explicit RecordingPublisher(Publisher& real) : real_(real) {}
  absl::Status Publish(const std::vector<OutgoingMessage>& messages,
                       absl::Duration timeout) override {
    absl::Status s = real_.Publish(messages, timeout);
    std::lock_guard<std::mutex> lock(mu_);
    ++calls_;
    if (s.ok()) {
      for (const auto& m : messages) published_.push_back(m);
    }
    return s;
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  std::vector<OutgoingMessage> published() {
    std::lock_guard<std::mutex> lock(mu_);
    return published_;
  }

 private:
  Publisher& real_;
  std::mutex mu_;
  int calls_ = 0;
  std::vector<OutgoingMessage> published_;
};

TEST_F(MockClusterTest, AMessageTooLargeToWrapWholeIsDeadLetteredTruncatedAndTheConsumerMovesOn) {
  // The original came from a producer allowed larger messages; the dead letters go through one
  // with librdkafka's default message.max.bytes (1,000,000), as in production.
  auto big_producer = NewProducer({{"message.max.bytes", "2000000"}});
  ASSERT_NE(big_producer, nullptr);
  std::string poison(1'000'000, 'p');
  for (size_t i = 0; i < poison.size(); i += 997) poison[i] = static_cast<char>('a' + i % 26);
  ASSERT_TRUE(big_producer
                  ->Publish({{kTopic, "big-key", poison, {{"event_id", "poison-1"}}},
                             {kTopic, "big-key", "after", {}}},
                            absl::Seconds(20))
                  .ok());
  ASSERT_EQ(rd_kafka_mock_topic_create(cluster_, "mock.big-dead-letters", 1, 1),
            RD_KAFKA_RESP_ERR_NO_ERROR);
  auto dl_producer = NewProducer();
  ASSERT_NE(dl_producer, nullptr);
  // A whole wrap of the poison is refused at once, permanently (not UNAVAILABLE).
  absl::Status whole = dl_producer->Publish(
      {{"mock.big-dead-letters", "big-key", poison + std::string(100, 'x'), {}}}, absl::Seconds(5));
  EXPECT_EQ(whole.code(), absl::StatusCode::kInvalidArgument) << whole;
  RecordingPublisher dead_letters(*dl_producer);

  ConsumerOptions options;
  options.client = options_;
  options.client.properties = {{"fetch.message.max.bytes", "2000000"}};
  options.group_id = "mock-big-group";
  options.topics = {kTopic};
  options.metrics_name = "mock_big_test";
  options.retry_backoff = absl::Milliseconds(20);
  options.dead_letter_topic = "mock.big-dead-letters";
  auto consumer = Consumer::Create(options, &dead_letters);
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  std::mutex mu;
  std::vector<std::string> handled;
  std::thread runner([&] {
    (*consumer)->Run([&](const IncomingMessage& m) -> absl::Status {
      if (m.value.size() > 1000) return absl::InvalidArgumentError("poison");
      std::lock_guard<std::mutex> lock(mu);
      handled.push_back(m.value);
      return absl::OkStatus();
    });
  });
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!handled.empty()) break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  (*consumer)->Stop();
  runner.join();

  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_THAT(handled, ElementsAre("after")) << "the partition stalled on the dead letter";
  }
  EXPECT_EQ(dead_letters.calls(), 1);
  auto letters = dead_letters.published();
  ASSERT_EQ(letters.size(), 1u);
  marketing::common::v1::DeadLetter letter;
  ASSERT_TRUE(letter.ParseFromString(letters[0].value));
  EXPECT_EQ(letter.reason(), "poison");
  EXPECT_EQ(letter.value(), poison.substr(0, kDeadLetterValueLimit));
  std::map<std::string, std::string> headers(letters[0].headers.begin(), letters[0].headers.end());
  EXPECT_EQ(headers["event_id"], "poison-1");
  EXPECT_EQ(headers[kDeadLetterTruncatedHeader], "true");
  EXPECT_EQ(headers[kDeadLetterOriginalBytesHeader], "1000000");
  EXPECT_EQ(headers[kDeadLetterOriginalSha256Header].size(), 64u);
}

TEST_F(MockClusterTest, StopEndsRunPromptlyEvenDuringTransientRetries) {
  auto producer = NewProducer();
  ASSERT_NE(producer, nullptr);
  ASSERT_TRUE(producer->Publish(Messages(1, "s"), absl::Seconds(10)).ok());
  ConsumerOptions options;
  options.client = options_;
  options.group_id = "mock-stop-group";
  options.topics = {kTopic};
  options.metrics_name = "mock_stop_test";
  options.retry_backoff = absl::Seconds(30);  // Stop must not wait this out
  auto consumer = Consumer::Create(options, nullptr);
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  std::atomic<int> calls{0};
  std::thread runner([&] {
    (*consumer)->Run([&](const IncomingMessage&) {
      ++calls;
      return absl::UnavailableError("always down");
    });
  });
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (calls == 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  ASSERT_GT(calls, 0);
  const absl::Time stop_at = absl::Now();
  (*consumer)->Stop();
  runner.join();
  EXPECT_LT(absl::Now() - stop_at, absl::Seconds(2));
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace mkt::kafka

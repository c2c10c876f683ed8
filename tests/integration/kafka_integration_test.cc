// libs/kafka against the real broker: delivery and per-key order, retry of transient handler
// failures with offsets committed only after success, and dead-lettering of permanent ones.
#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "libs/kafka/kafka.h"
#include "libs/testing/testing.h"
#include "marketing/common/v1/envelope.pb.h"

namespace mkt::kafka {
namespace {

using ::testing::Each;
using ::testing::ElementsAre;

ClientOptions Client(const std::string& client_id) {
  ClientOptions options;
  options.bootstrap_servers = mkt::testing::KafkaBootstrap();
  options.client_id = client_id;
  return options;
}

ConsumerOptions ConsumerFor(const std::string& topic, const std::string& group) {
  ConsumerOptions options;
  options.client = Client("kafka-integration-test");
  options.group_id = group;
  options.topics = {topic};
  options.metrics_name = "kafka_integration_test";
  options.retry_backoff = absl::Milliseconds(50);
  return options;
}

std::unique_ptr<Producer> NewProducer() {
  auto producer = Producer::Create(Client("kafka-integration-test"));
  EXPECT_TRUE(producer.ok()) << producer.status();
  return producer.ok() ? std::move(*producer) : nullptr;
}

// Runs a consumer on its own thread; Stop() (or destruction) stops it and leaves the group.
class RunningConsumer {
 public:
  RunningConsumer(const ConsumerOptions& options, Publisher* dead_letters, Handler handler) {
    auto consumer = Consumer::Create(options, dead_letters);
    EXPECT_TRUE(consumer.ok()) << consumer.status();
    if (!consumer.ok()) return;
    consumer_ = std::move(*consumer);
    thread_ = std::thread([this, handler = std::move(handler)] { consumer_->Run(handler); });
  }
  ~RunningConsumer() { Stop(); }

  void Stop() {
    if (consumer_ == nullptr) return;
    consumer_->Stop();
    thread_.join();
    consumer_.reset();  // closes the consumer: leaves the group so the next member joins fast
  }

 private:
  std::unique_ptr<Consumer> consumer_;
  std::thread thread_;
};

// What handlers saw, shared with the test thread.
class Log {
 public:
  void Add(const std::string& value) {
    std::lock_guard<std::mutex> lock(mu_);
    values_.push_back(value);
  }
  std::vector<std::string> values() {
    std::lock_guard<std::mutex> lock(mu_);
    return values_;
  }
  // Waits until `done` holds for the values seen so far, or `timeout` passes.
  bool WaitFor(const std::function<bool(const std::vector<std::string>&)>& done,
               absl::Duration timeout = absl::Seconds(30)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (done(values())) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return done(values());
  }
  bool WaitForValue(const std::string& value, int times = 1) {
    return WaitFor([&](const std::vector<std::string>& v) {
      return std::count(v.begin(), v.end(), value) >= times;
    });
  }

 private:
  std::mutex mu_;
  std::vector<std::string> values_;
};

TEST(KafkaIntegrationTest, EveryMessageArrivesAndEachKeyKeepsItsOrder) {
  const std::string topic = mkt::testing::NewTopic("kit.order", 3);
  auto producer = NewProducer();
  ASSERT_NE(producer, nullptr);
  constexpr int kKeys = 6;
  constexpr int kPerKey = 100;
  // Two threads publish at once, each its own keys in batches of ten per key; a key's order is
  // the order its thread published it in.
  auto publish_keys = [&](int parity) {
    for (int seq = 0; seq < kPerKey; seq += 10) {
      std::vector<OutgoingMessage> batch;
      for (int s = seq; s < seq + 10; ++s) {
        for (int k = parity; k < kKeys; k += 2) {
          batch.push_back({topic,
                           absl::StrCat("customer-", k),
                           absl::StrCat(k, ":", s),
                           {{"seq", absl::StrCat(s)}}});
        }
      }
      absl::Status status = producer->Publish(batch, absl::Seconds(10));
      EXPECT_TRUE(status.ok()) << status;
    }
  };
  std::thread even(publish_keys, 0);
  std::thread odd(publish_keys, 1);
  even.join();
  odd.join();

  Log log;
  std::mutex mu;
  std::map<std::string, std::vector<int>> seqs_by_key;
  int header_mismatches = 0;
  RunningConsumer consumer(ConsumerFor(topic, "order-" + topic), nullptr,
                           [&](const IncomingMessage& m) {
                             std::vector<std::string> parts = absl::StrSplit(m.value, ':');
                             int seq = -1;
                             EXPECT_TRUE(parts.size() == 2 && absl::SimpleAtoi(parts[1], &seq));
                             {
                               std::lock_guard<std::mutex> lock(mu);
                               seqs_by_key[m.key].push_back(seq);
                               if (m.headers.size() != 1 || m.headers[0].first != "seq" ||
                                   m.headers[0].second != parts[1]) {
                                 ++header_mismatches;
                               }
                             }
                             log.Add(m.value);
                             return absl::OkStatus();
                           });
  ASSERT_TRUE(log.WaitFor([&](const std::vector<std::string>& v) {
    return v.size() >= kKeys * kPerKey;
  })) << "received "
      << log.values().size() << " of " << kKeys * kPerKey;
  // Nothing beyond what was sent trickles in later.
  absl::SleepFor(absl::Milliseconds(500));
  consumer.Stop();

  std::vector<std::string> values = log.values();
  EXPECT_EQ(values.size(), static_cast<size_t>(kKeys * kPerKey));
  std::set<std::string> distinct(values.begin(), values.end());
  EXPECT_EQ(distinct.size(), static_cast<size_t>(kKeys * kPerKey));
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(seqs_by_key.size(), static_cast<size_t>(kKeys));
  std::vector<int> expected(kPerKey);
  for (int i = 0; i < kPerKey; ++i) expected[i] = i;
  for (const auto& [key, seqs] : seqs_by_key) EXPECT_EQ(seqs, expected) << key;
  EXPECT_EQ(header_mismatches, 0);
}

TEST(KafkaIntegrationTest, TransientFailureIsRetriedAndTheOffsetCommittedOnlyAfterSuccess) {
  const std::string topic = mkt::testing::NewTopic("kit.retry", 1);
  const std::string group = "retry-" + topic;
  auto producer = NewProducer();
  ASSERT_NE(producer, nullptr);
  auto publish = [&](std::vector<std::string> values) {
    std::vector<OutgoingMessage> batch;
    for (auto& v : values) batch.push_back({topic, "account-1", v, {}});
    ASSERT_TRUE(producer->Publish(batch, absl::Seconds(10)).ok());
  };
  publish({"m0", "m1", "m2", "m3", "m4"});

  // Phase 1: m2 fails twice, then succeeds; nothing after it is handled meanwhile.
  Log first;
  {
    int m2_failures = 0;
    RunningConsumer consumer(ConsumerFor(topic, group), nullptr, [&](const IncomingMessage& m) {
      first.Add(m.value);
      if (m.value == "m2" && m2_failures++ < 2) return absl::UnavailableError("database busy");
      return absl::OkStatus();
    });
    ASSERT_TRUE(first.WaitForValue("m4"));
  }
  EXPECT_THAT(first.values(), ElementsAre("m0", "m1", "m2", "m2", "m2", "m3", "m4"));

  // Phase 2: the same group resumes after m4 (all committed); m5 never succeeds before Stop.
  publish({"m5", "m6"});
  Log second;
  {
    RunningConsumer consumer(ConsumerFor(topic, group), nullptr, [&](const IncomingMessage& m) {
      second.Add(m.value);
      if (m.value == "m5") return absl::UnavailableError("downstream down");
      return absl::OkStatus();
    });
    ASSERT_TRUE(second.WaitForValue("m5", 2));
  }
  ASSERT_FALSE(second.values().empty());
  EXPECT_THAT(second.values(), Each(std::string("m5")));

  // Phase 3: m5 was not committed, so the next member of the group gets it again.
  Log third;
  {
    RunningConsumer consumer(ConsumerFor(topic, group), nullptr, [&](const IncomingMessage& m) {
      third.Add(m.value);
      return absl::OkStatus();
    });
    ASSERT_TRUE(third.WaitForValue("m6"));
  }
  EXPECT_THAT(third.values(), ElementsAre("m5", "m6"));
}

TEST(KafkaIntegrationTest, PermanentFailureIsDeadLetteredWithTheReasonAndConsumptionContinues) {
  const std::string topic = mkt::testing::NewTopic("kit.rejects", 1);
  const std::string dead_letter_topic = mkt::testing::NewTopic("kit.dead-letters", 1);
  auto producer = NewProducer();
  ASSERT_NE(producer, nullptr);
  std::vector<OutgoingMessage> batch;
  for (const char* v : {"p0", "p1", "p2"}) {
    batch.push_back({topic, "order-1", v, {{"event_id", absl::StrCat("event-", v)}}});
  }
  ASSERT_TRUE(producer->Publish(batch, absl::Seconds(10)).ok());

  Log handled;
  {
    ConsumerOptions options = ConsumerFor(topic, "rejects-" + topic);
    options.dead_letter_topic = dead_letter_topic;
    RunningConsumer consumer(options, producer.get(), [&](const IncomingMessage& m) {
      handled.Add(m.value);
      if (m.value == "p1") return absl::InvalidArgumentError("p1 names an unknown campaign");
      return absl::OkStatus();
    });
    ASSERT_TRUE(handled.WaitForValue("p2"));
  }
  // p1 is handled once (a permanent error is not retried) and p2 follows it.
  EXPECT_THAT(handled.values(), ElementsAre("p0", "p1", "p2"));

  std::mutex mu;
  std::vector<IncomingMessage> letters;
  Log seen;
  {
    RunningConsumer reader(ConsumerFor(dead_letter_topic, "reader-" + dead_letter_topic), nullptr,
                           [&](const IncomingMessage& m) {
                             {
                               std::lock_guard<std::mutex> lock(mu);
                               letters.push_back(m);
                             }
                             seen.Add(m.value);
                             return absl::OkStatus();
                           });
    ASSERT_TRUE(seen.WaitFor([](const std::vector<std::string>& v) { return !v.empty(); }));
    absl::SleepFor(absl::Milliseconds(300));
  }
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].key, "order-1");
  marketing::common::v1::DeadLetter letter;
  ASSERT_TRUE(letter.ParseFromString(letters[0].value));
  EXPECT_EQ(letter.reason(), "p1 names an unknown campaign");
  EXPECT_EQ(letter.topic(), topic);
  EXPECT_EQ(letter.partition(), 0);
  EXPECT_EQ(letter.offset(), 1);
  EXPECT_EQ(letter.key(), "order-1");
  EXPECT_EQ(letter.value(), "p1");
  EXPECT_EQ(letter.consumer(), "kafka_integration_test");
  EXPECT_GT(letter.rejected_at().seconds(), 0);
}

}  // namespace
}  // namespace mkt::kafka

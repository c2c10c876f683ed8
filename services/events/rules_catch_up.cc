#include "services/events/rules_catch_up.h"

#include <librdkafka/rdkafkacpp.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "libs/metrics/metrics.h"
#include "prometheus/gauge.h"
#include "spdlog/spdlog.h"

namespace mkt::events {
namespace {

// 1 once the rules caught up with the campaign changes published before start-up (business
// events are matched only then), 0 while they have not.
prometheus::Gauge& CaughtUpGauge() {
  static prometheus::Gauge* gauge = &prometheus::BuildGauge()
                                         .Name("mkt_events_rules_caught_up")
                                         .Help(
                                             "1 once the rules caught up with the campaign "
                                             "changes published before start-up and business "
                                             "events are matched; 0 while they wait for it")
                                         .Register(metrics::Registry())
                                         .Add({});
  return *gauge;
}

constexpr absl::Duration kLogEvery = absl::Seconds(10);

}  // namespace

absl::StatusOr<Watermarks> ReadWatermarks(const kafka::ClientOptions& client,
                                          const std::string& topic, absl::Duration timeout) {
  std::string err;
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::map<std::string, std::string> props = {{"bootstrap.servers", client.bootstrap_servers},
                                              {"client.id", client.client_id + "-watermarks"}};
  for (const auto& [k, v] : client.properties) props[k] = v;
  for (const auto& [k, v] : props) {
    if (conf->set(k, v, err) != RdKafka::Conf::CONF_OK) {
      return absl::InvalidArgumentError("kafka property " + k + ": " + err);
    }
  }
  // Any handle answers metadata and watermark queries; a producer joins no group.
  std::unique_ptr<RdKafka::Producer> handle(RdKafka::Producer::create(conf.get(), err));
  if (handle == nullptr) return absl::InvalidArgumentError("kafka handle: " + err);
  std::unique_ptr<RdKafka::Topic> topic_handle(
      RdKafka::Topic::create(handle.get(), topic, nullptr, err));
  if (topic_handle == nullptr) return absl::InvalidArgumentError("kafka topic: " + err);
  const int timeout_ms = static_cast<int>(absl::ToInt64Milliseconds(timeout));
  RdKafka::Metadata* raw = nullptr;
  RdKafka::ErrorCode code = handle->metadata(false, topic_handle.get(), &raw, timeout_ms);
  std::unique_ptr<RdKafka::Metadata> metadata(raw);
  if (code != RdKafka::ERR_NO_ERROR) {
    return absl::UnavailableError(
        absl::StrCat("metadata of ", topic, ": ", RdKafka::err2str(code)));
  }
  std::vector<int32_t> partitions;
  for (const RdKafka::TopicMetadata* t : *metadata->topics()) {
    if (t->topic() != topic) continue;
    if (t->err() != RdKafka::ERR_NO_ERROR) {
      return absl::UnavailableError(absl::StrCat(topic, ": ", RdKafka::err2str(t->err())));
    }
    for (const RdKafka::PartitionMetadata* p : *t->partitions()) partitions.push_back(p->id());
  }
  if (partitions.empty()) return absl::UnavailableError(topic + " has no partitions yet");
  Watermarks out;
  for (int32_t p : partitions) {
    int64_t low = 0, high = 0;
    code = handle->query_watermark_offsets(topic, p, &low, &high, timeout_ms);
    if (code != RdKafka::ERR_NO_ERROR) {
      return absl::UnavailableError(
          absl::StrCat("watermarks of ", topic, "[", p, "]: ", RdKafka::err2str(code)));
    }
    out[p] = {low, high};
  }
  return out;
}

// The first progress line comes kLogEvery after start-up: most start-ups catch up before.
RulesCatchUp::RulesCatchUp() : started_(absl::Now()), logged_(started_) { CaughtUpGauge().Set(0); }

void RulesCatchUp::Capture(const kafka::ClientOptions& client, const std::string& topic) {
  absl::Duration backoff = absl::Milliseconds(200);
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (cancelled_) return;
    }
    absl::StatusOr<Watermarks> watermarks = ReadWatermarks(client, topic, absl::Seconds(5));
    if (watermarks.ok()) {
      SetTargets(*watermarks);
      return;
    }
    spdlog::warn(
        "events: cannot read the end of {} ({}); business events wait until the rules have "
        "caught up with the campaign changes published before start-up (retrying in {} ms)",
        topic, std::string(watermarks.status().message()), absl::ToInt64Milliseconds(backoff));
    if (absl::IsUnavailable(watermarks.status())) {
      // The topic may not exist yet (created at start-up only when the broker answered).
      (void)kafka::EnsureTopic(client, topic, 3);
    }
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&cancelled_), backoff);
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
}

void RulesCatchUp::SetTargets(const Watermarks& watermarks) {
  absl::MutexLock lock(&mu_);
  targets_ = watermarks;
  has_targets_ = true;
  int64_t changes = 0;
  for (const auto& [partition, range] : targets_) changes += range.second - range.first;
  spdlog::info(
      "events: {} campaign change(s) on {} partition(s) were published before start-up; business "
      "events are matched once the rules have caught up with them",
      changes, targets_.size());
}

void RulesCatchUp::Handled(int32_t partition, int64_t offset) {
  absl::MutexLock lock(&mu_);
  int64_t& next = handled_[partition];
  next = std::max(next, offset + 1);
}

bool RulesCatchUp::CaughtUpLocked() const {
  if (!has_targets_) return false;
  for (const auto& [partition, range] : targets_) {
    const auto [low, high] = range;
    if (low >= high) continue;  // nothing to read there
    auto it = handled_.find(partition);
    if (it == handled_.end() || it->second < high) return false;
  }
  return true;
}

bool RulesCatchUp::CaughtUp() {
  absl::MutexLock lock(&mu_);
  if (caught_up_) return true;
  const absl::Time now = absl::Now();
  if (CaughtUpLocked()) {
    caught_up_ = true;
    CaughtUpGauge().Set(1);
    spdlog::info(
        "events: the rules caught up with the campaign changes published before start-up in {} "
        "ms; matching business events",
        absl::ToInt64Milliseconds(now - started_));
    return true;
  }
  if (now - logged_ >= kLogEvery) {
    logged_ = now;
    std::string progress;
    for (const auto& [partition, range] : targets_) {
      auto it = handled_.find(partition);
      absl::StrAppend(&progress, progress.empty() ? "" : ", ", "[", partition, "] ",
                      it == handled_.end() ? range.first : it->second, "/", range.second);
    }
    spdlog::info(
        "events: waiting for the rules to catch up with the campaign changes published before "
        "start-up before matching business events ({})",
        has_targets_ ? progress : "the end of the topic is not known yet");
  }
  return false;
}

void RulesCatchUp::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
}

}  // namespace mkt::events

// Third-party benefits delivered by a supplier (decision 011, "Third-party fulfilment"). Issuing a
// THIRD_PARTY coupon gives the customer the holding (as for any coupon) and, in the same
// transaction, a fulfilment row: PENDING → SUBMITTED → FULFILLED | RETRYING | FAILED. Attempts go
// to the supplier through a SupplierAdapter; the supplier's results come back through the
// adapter's sink, deduplicated by event id in the transaction that applies them. Transient
// failures and attempts left unanswered are retried with exponential backoff; a permanent failure
// or the last attempt failing makes the fulfilment FAILED and voids the coupon with a compensating
// reversal of its issue (budget, stock and holding go back), all through ledger intents with
// deterministic transfer ids, so a crash anywhere is finished by Benefits::RepairLedger and the
// scheduler (RunDue).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libs/core/ids.h"
#include "libs/kafka/kafka.h"
#include "libs/pg/pool.h"
#include "marketing/rewards/v1/benefits.pb.h"
#include "services/rewards/benefits.h"

namespace mkt::rewards {

inline constexpr char kFulfilmentCommandsTopic[] = "mkt.fulfilment-commands.v1";
inline constexpr char kFulfilmentResultsTopic[] = "mkt.fulfilment-results.v1";

// Receives the supplier's result of an attempt; `event_id` identifies the delivery (a redelivery
// carries the same one). OK once the effect is durable; errors follow kafka::Handler's rules.
using FulfilmentResultSink =
    std::function<absl::Status(const std::string& event_id, const pb::FulfilmentResult& result)>;

// The seam to a supplier.
class SupplierAdapter {
 public:
  virtual ~SupplierAdapter() = default;

  // Hands one attempt to the supplier inside `tx`, the transaction that records it as SUBMITTED
  // (so an attempt leaves only if that is committed). OK: accepted, the result comes later
  // through the sink. A permanent error (kafka::IsPermanent): the supplier will never take it.
  // Any other error: transient, retried after a backoff. An adapter that returns an error must
  // not have written anything to `tx`.
  virtual absl::Status Submit(pqxx::work& tx, const pb::FulfilmentCommand& command) = 0;

  // Delivers results to `sink` (on the adapter's own thread) until Stop().
  virtual absl::Status Start(FulfilmentResultSink sink) = 0;
  virtual void Stop() = 0;
};

struct KafkaSupplierOptions {
  kafka::ClientOptions client;
  std::string commands_topic = kFulfilmentCommandsTopic;
  std::string results_topic = kFulfilmentResultsTopic;
  std::string group_id = "rewards-fulfilment-results";
  std::string dead_letter_topic = kafka::kDeadLetterTopic;
  // Receives rejected results; must outlive the adapter. Required by Start().
  kafka::Publisher* dead_letters = nullptr;
};

// A supplier reached through Kafka: FulfilmentCommand on the commands topic through the outbox
// (event id "fulfilment-command:<id>:<attempt>", key the fulfilment id), FulfilmentResult read
// from the results topic with a kafka::Consumer.
class KafkaSupplierAdapter final : public SupplierAdapter {
 public:
  explicit KafkaSupplierAdapter(KafkaSupplierOptions options) : options_(std::move(options)) {}
  ~KafkaSupplierAdapter() override { Stop(); }

  absl::Status Submit(pqxx::work& tx, const pb::FulfilmentCommand& command) override;
  absl::Status Start(FulfilmentResultSink sink) override;
  void Stop() override;

  // Parses one message of the results topic and hands it to `sink`: what the consumer runs.
  // Not a FulfilmentResult: INVALID_ARGUMENT (dead-lettered).
  static absl::Status HandleMessage(const kafka::IncomingMessage& message,
                                    const FulfilmentResultSink& sink);

 private:
  const KafkaSupplierOptions options_;
  std::unique_ptr<kafka::Consumer> consumer_;
  std::thread thread_;
};

struct FulfilmentOptions {
  // Attempt n failing transiently waits min(base * 2^(n-1), max) before attempt n+1.
  absl::Duration backoff_base = absl::Seconds(30);
  absl::Duration backoff_max = absl::Minutes(30);
  // Attempts in all; the last one failing (or left unanswered) makes the fulfilment FAILED.
  int max_attempts = 5;
  // How long a SUBMITTED attempt waits for its result before it counts as a transient failure.
  absl::Duration result_timeout = absl::Minutes(10);
};

class Fulfilments {
 public:
  // Attaches itself to `benefits`, which then submits a THIRD_PARTY coupon's first attempt right
  // after issuing it (and detaches on destruction).
  Fulfilments(pg::Pool& pool, Benefits& benefits, SupplierAdapter& supplier, const Clock& clock,
              FulfilmentOptions options);
  ~Fulfilments();
  Fulfilments(const Fulfilments&) = delete;
  Fulfilments& operator=(const Fulfilments&) = delete;

  // Sends the first attempt for THIRD_PARTY coupon `coupon_id` once it is ISSUED; any later call
  // (a replayed issue, the scheduler) finds it sent and changes nothing.
  absl::Status SubmitFirst(int64_t coupon_id);

  // Applies one supplier result (the adapter's sink). A duplicate event, a retryable failure of
  // an attempt already superseded and any result for a settled fulfilment change nothing (a late
  // success after FAILED is recorded in the history and logged for an operator). NOT_FOUND for an
  // unknown fulfilment, INVALID_ARGUMENT for a malformed result (both dead-lettered).
  absl::Status HandleResult(const std::string& event_id, const pb::FulfilmentResult& result);

  // The retry scheduler: sends PENDING fulfilments whose coupon is ISSUED, resubmits RETRYING ones
  // whose backoff passed and SUBMITTED ones whose result is overdue, and fails (with compensation)
  // those out of attempts and PENDING ones whose coupon expired before they were ever sent. Up to
  // `limit`; returns how many changed state.
  absl::StatusOr<int> RunDue(int limit);

  // By fulfilment id or coupon code, with its history.
  absl::StatusOr<pb::Fulfilment> GetFulfilment(const pb::GetFulfilmentRequest& request);

  // The wait after attempt `attempt` (1-based) failed transiently.
  absl::Duration BackoffAfter(int attempt) const;

 private:
  // Moves fulfilment `id` on if it is due; `first_only` limits it to PENDING → SUBMITTED.
  absl::StatusOr<bool> Advance(const std::string& id, bool first_only);

  pg::Pool& pool_;
  Benefits& benefits_;
  SupplierAdapter& supplier_;
  const Clock& clock_;
  const FulfilmentOptions options_;
};

// Inserts the PENDING fulfilment of THIRD_PARTY coupon `coupon_id` in its issue transaction
// (Benefits::IssueCoupon); id "ful-<coupon_id>".
void InsertPendingFulfilment(pqxx::work& tx, int64_t coupon_id, const pb::BenefitTemplate& t,
                             const std::string& customer_id, absl::Time now);

// The id and state of coupon `coupon_id`'s fulfilment, if it has one (for the wallet).
std::optional<std::pair<std::string, pb::FulfilmentState>> FulfilmentOfCoupon(pqxx::work& tx,
                                                                              int64_t coupon_id);

}  // namespace mkt::rewards

#include "services/rewards/fulfilment.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/kafka/outbox.h"
#include "libs/log/log.h"
#include "spdlog/spdlog.h"

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::common::v1;

constexpr char kConsumerName[] = "rewards-fulfilment-results";

#define MKT_FULFILMENT_COLUMNS                                                                     \
  "f.id, f.coupon_id, f.org_id, f.customer_id, f.template_id, f.supplier_id, f.sku, "              \
  "f.quantity, f.state, f.attempt, (extract(epoch from f.next_attempt_at) * 1000000)::bigint, "    \
  "f.supplier_reference, f.failure_reason, (extract(epoch from f.created_at) * 1000000)::bigint, " \
  "(extract(epoch from f.updated_at) * 1000000)::bigint, c.code, c.state"

constexpr char kInsertFulfilment[] =
    "INSERT INTO fulfilments (id, coupon_id, org_id, customer_id, template_id, supplier_id, sku, "
    "quantity, state, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9::timestamptz, $9::timestamptz) "
    "ON CONFLICT (coupon_id) DO NOTHING";
constexpr char kSelectOfCoupon[] = "SELECT id, state FROM fulfilments WHERE coupon_id = $1";
constexpr char kSelectIdOfCoupon[] =
    "SELECT f.id FROM fulfilments f JOIN coupons c ON c.id = f.coupon_id WHERE c.code = $1";
constexpr char kSelectFulfilment[] = "SELECT " MKT_FULFILMENT_COLUMNS
                                     " FROM fulfilments f JOIN coupons c ON c.id = f.coupon_id "
                                     "WHERE f.id = $1";
constexpr char kLockFulfilment[] = "SELECT " MKT_FULFILMENT_COLUMNS
                                   " FROM fulfilments f JOIN coupons c ON c.id = f.coupon_id "
                                   "WHERE f.id = $1 FOR UPDATE OF f";
constexpr char kUpdateFulfilment[] =
    "UPDATE fulfilments SET state = $2, attempt = $3, next_attempt_at = $4::timestamptz, "
    "supplier_reference = $5, failure_reason = $6, updated_at = $7::timestamptz WHERE id = $1";
constexpr char kInsertEvent[] =
    "INSERT INTO fulfilment_events (fulfilment_id, seq, from_state, to_state, attempt, actor, "
    "cause, detail, at) "
    "SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5, $6, $7, $8::timestamptz "
    "FROM fulfilment_events WHERE fulfilment_id = $1";
constexpr char kSelectEvents[] =
    "SELECT from_state, to_state, attempt, actor, cause, detail, "
    "(extract(epoch from at) * 1000000)::bigint FROM fulfilment_events WHERE fulfilment_id = $1 "
    "ORDER BY seq";
// Both halves use an index: PENDING by creation, SUBMITTED/RETRYING by their due time. A PENDING
// one is due once its coupon is ISSUED (sent) or EXPIRED before it was ever sent (failed and
// compensated); one being issued (coupon state 0) waits for its issue.
constexpr char kSelectDue[] =
    "(SELECT f.id FROM fulfilments f JOIN coupons c ON c.id = f.coupon_id "
    " WHERE f.state = 1 AND c.state IN (1, 4) ORDER BY f.created_at LIMIT $2) "
    "UNION ALL "
    "(SELECT id FROM fulfilments WHERE state IN (2, 3) AND next_attempt_at <= $1::timestamptz "
    " ORDER BY next_attempt_at LIMIT $2)";

std::string PgTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", t, absl::UTCTimeZone());
}

void SetTime(google::protobuf::Timestamp* ts, absl::Time t) {
  const int64_t micros = absl::ToUnixMicros(t);
  ts->set_seconds(micros / 1000000);
  ts->set_nanos(static_cast<int32_t>(micros % 1000000) * 1000);
}

bool IsKey(const std::string& s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == ':' ||
           c == '-';
  });
}

bool IsTerminal(pb::FulfilmentState s) {
  return s == pb::FULFILMENT_FULFILLED || s == pb::FULFILMENT_FAILED;
}

struct Row {
  pb::Fulfilment f;
  int64_t coupon_id = 0;
  int coupon_state = 0;
  std::optional<absl::Time> next_attempt_at;

  static Row From(const pqxx::row& r) {
    Row row;
    pb::Fulfilment& f = row.f;
    f.set_id(r[0].as<std::string>());
    row.coupon_id = r[1].as<int64_t>();
    f.set_org_id(r[2].as<std::string>());
    f.set_customer_id(r[3].as<std::string>());
    f.set_template_id(r[4].as<std::string>());
    f.set_supplier_id(r[5].as<std::string>());
    f.set_sku(r[6].as<std::string>());
    f.set_quantity(r[7].as<int64_t>());
    f.set_state(static_cast<pb::FulfilmentState>(r[8].as<int>()));
    f.set_attempt(r[9].as<int>());
    if (!r[10].is_null()) {
      row.next_attempt_at = absl::FromUnixMicros(r[10].as<int64_t>());
      SetTime(f.mutable_next_attempt_at(), *row.next_attempt_at);
    }
    f.set_supplier_reference(r[11].as<std::string>());
    f.set_failure_reason(r[12].as<std::string>());
    SetTime(f.mutable_created_at(), absl::FromUnixMicros(r[13].as<int64_t>()));
    SetTime(f.mutable_updated_at(), absl::FromUnixMicros(r[14].as<int64_t>()));
    f.set_coupon_code(r[15].as<std::string>());
    row.coupon_state = r[16].as<int>();
    return row;
  }
};

// One state change of a fulfilment: the row and its history entry, in the caller's transaction.
void Record(pqxx::work& tx, const Row& before, const pb::Fulfilment& after,
            std::optional<absl::Time> next, const std::string& actor, const std::string& cause,
            const std::string& detail, absl::Time now) {
  tx.exec_params(kUpdateFulfilment, after.id(), static_cast<int>(after.state()), after.attempt(),
                 next ? std::optional<std::string>(PgTime(*next)) : std::nullopt,
                 StorableText(after.supplier_reference(), 200),
                 StorableText(after.failure_reason(), 500), PgTime(now));
  tx.exec_params(kInsertEvent, after.id(), static_cast<int>(before.f.state()),
                 static_cast<int>(after.state()), after.attempt(), actor, cause,
                 StorableText(detail, 500), PgTime(now));
}

}  // namespace

// ---- The Kafka adapter.

absl::Status KafkaSupplierAdapter::Submit(pqxx::work& tx, const pb::FulfilmentCommand& command) {
  auto envelope = kafka::MakeEnvelope("rewards.FulfilmentCommand", command.org_id(),
                                      command.fulfilment_id(), command);
  envelope.set_event_id(
      absl::StrCat("fulfilment-command:", command.fulfilment_id(), ":", command.attempt()));
  kafka::AppendToOutbox(tx, options_.commands_topic, command.fulfilment_id(), envelope);
  return absl::OkStatus();
}

absl::Status KafkaSupplierAdapter::HandleMessage(const kafka::IncomingMessage& message,
                                                 const FulfilmentResultSink& sink) {
  MKT_ASSIGN_OR_RETURN(const cpb::Envelope envelope, kafka::ParseEnvelope(message));
  pb::FulfilmentResult result;
  if (!envelope.payload().UnpackTo(&result) || envelope.event_id().empty()) {
    return InvalidArgument("payload", "the message is not a FulfilmentResult");
  }
  return sink(envelope.event_id(), result);
}

absl::Status KafkaSupplierAdapter::Start(FulfilmentResultSink sink) {
  if (consumer_) return absl::OkStatus();
  if (options_.dead_letters == nullptr) {
    return InvalidArgument("dead_letters", "the Kafka supplier adapter needs a dead-letter sink");
  }
  MKT_ASSIGN_OR_RETURN(consumer_,
                       kafka::Consumer::Create({.client = options_.client,
                                                .group_id = options_.group_id,
                                                .topics = {options_.results_topic},
                                                .metrics_name = "rewards_fulfilment_results",
                                                .dead_letter_topic = options_.dead_letter_topic},
                                               options_.dead_letters));
  thread_ = std::thread([this, sink = std::move(sink)] {
    consumer_->Run([&sink](const kafka::IncomingMessage& m) { return HandleMessage(m, sink); });
  });
  return absl::OkStatus();
}

void KafkaSupplierAdapter::Stop() {
  if (consumer_) consumer_->Stop();
  if (thread_.joinable()) thread_.join();
  consumer_.reset();
}

// ---- Rows written by the issue.

void InsertPendingFulfilment(pqxx::work& tx, int64_t coupon_id, const pb::BenefitTemplate& t,
                             const std::string& customer_id, absl::Time now) {
  tx.exec_params(kInsertFulfilment, absl::StrCat("ful-", coupon_id), coupon_id, t.org_id(),
                 customer_id, t.id(), t.supplier_id(), t.supplier_sku(), int64_t{1}, PgTime(now));
  tx.exec_params(kInsertEvent, absl::StrCat("ful-", coupon_id), 0,
                 static_cast<int>(pb::FULFILMENT_PENDING), 0, "issuer", "issue", "", PgTime(now));
}

std::optional<std::pair<std::string, pb::FulfilmentState>> FulfilmentOfCoupon(pqxx::work& tx,
                                                                              int64_t coupon_id) {
  pqxx::result r = tx.exec_params(kSelectOfCoupon, coupon_id);
  if (r.empty()) return std::nullopt;
  return std::make_pair(r[0][0].as<std::string>(),
                        static_cast<pb::FulfilmentState>(r[0][1].as<int>()));
}

// ---- The fulfilment state machine.

Fulfilments::Fulfilments(pg::Pool& pool, Benefits& benefits, SupplierAdapter& supplier,
                         const Clock& clock, FulfilmentOptions options)
    : pool_(pool),
      benefits_(benefits),
      supplier_(supplier),
      clock_(clock),
      options_(std::move(options)) {
  benefits_.AttachFulfilments(this);
}

Fulfilments::~Fulfilments() { benefits_.AttachFulfilments(nullptr); }

absl::Duration Fulfilments::BackoffAfter(int attempt) const {
  absl::Duration d = options_.backoff_base;
  for (int i = 1; i < attempt && d < options_.backoff_max; ++i) d *= 2;
  return std::min(d, options_.backoff_max);
}

absl::Status Fulfilments::SubmitFirst(int64_t coupon_id) {
  std::optional<std::string> id;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    if (auto f = FulfilmentOfCoupon(tx, coupon_id)) id = f->first;
    return absl::OkStatus();
  }));
  if (!id) return NotFound(absl::StrCat("coupon ", coupon_id, " has no fulfilment"));
  return Advance(*id, /*first_only=*/true).status();
}

absl::StatusOr<bool> Fulfilments::Advance(const std::string& id, bool first_only) {
  bool compensated = false;
  bool changed = false;
  int64_t coupon_id = 0;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    changed = compensated = false;
    pqxx::result r = tx.exec_params(kLockFulfilment, id);
    if (r.empty()) return NotFound("there is no fulfilment \"" + id + "\"");
    const Row row = Row::From(r[0]);
    coupon_id = row.coupon_id;
    const absl::Time now = clock_.Now();
    const pb::FulfilmentState state = row.f.state();
    const bool due = row.next_attempt_at && *row.next_attempt_at <= now;
    std::string cause;
    if (state == pb::FULFILMENT_PENDING) {
      if (row.coupon_state == pb::COUPON_EXPIRED) {
        // Never sent (the process or the supplier was down) and now past its validity: it will
        // not be delivered, so the issue is given back (budget, stock, and the unit the expiry
        // moved), as for any fulfilment that fails.
        pb::Fulfilment next = row.f;
        next.set_state(pb::FULFILMENT_FAILED);
        next.set_failure_reason("the benefit expired before it was sent to the supplier");
        const std::string actor = first_only ? "issuer" : "job:fulfilment-scheduler";
        Record(tx, row, next, std::nullopt, actor, "expired-unsent", next.failure_reason(), now);
        compensated = benefits_.SettleThirdParty(tx, row.coupon_id, false, id, actor, "compensate");
        changed = true;
        return absl::OkStatus();
      }
      // Only a benefit the customer holds is delivered (state 0: its issue is not applied yet).
      if (row.coupon_state != pb::COUPON_ISSUED) return absl::OkStatus();
      cause = "submit";
    } else if (first_only || IsTerminal(state) || !due) {
      return absl::OkStatus();
    } else {
      cause = state == pb::FULFILMENT_SUBMITTED ? "result-timeout" : "retry";
    }
    pb::Fulfilment next = row.f;
    const std::string actor = first_only ? "issuer" : "job:fulfilment-scheduler";
    if (row.f.attempt() >= options_.max_attempts) {
      // The last attempt went unanswered: give up and give the issue back.
      next.set_state(pb::FULFILMENT_FAILED);
      next.set_failure_reason(absl::StrCat("no result after ", row.f.attempt(), " attempts"));
      Record(tx, row, next, std::nullopt, actor, "attempts-exhausted", next.failure_reason(), now);
      compensated = benefits_.SettleThirdParty(tx, row.coupon_id, false, id, actor, "compensate");
      changed = true;
      return absl::OkStatus();
    }
    pb::FulfilmentCommand command;
    command.set_fulfilment_id(id);
    command.set_supplier_id(row.f.supplier_id());
    command.set_sku(row.f.sku());
    command.set_customer_id(row.f.customer_id());
    command.set_org_id(row.f.org_id());
    command.set_template_id(row.f.template_id());
    command.set_quantity(row.f.quantity());
    command.set_attempt(row.f.attempt() + 1);
    next.set_attempt(command.attempt());
    const absl::Status sent = supplier_.Submit(tx, command);
    if (sent.ok()) {
      next.set_state(pb::FULFILMENT_SUBMITTED);
      Record(tx, row, next, now + options_.result_timeout, actor, cause, "", now);
    } else if (kafka::IsPermanent(sent) || next.attempt() >= options_.max_attempts) {
      next.set_state(pb::FULFILMENT_FAILED);
      next.set_failure_reason(std::string(sent.message()));
      Record(tx, row, next, std::nullopt, actor, cause + "-refused", next.failure_reason(), now);
      compensated = benefits_.SettleThirdParty(tx, row.coupon_id, false, id, actor, "compensate");
    } else {
      next.set_state(pb::FULFILMENT_RETRYING);
      Record(tx, row, next, now + BackoffAfter(next.attempt()), actor, cause + "-failed",
             std::string(sent.message()), now);
    }
    changed = true;
    return absl::OkStatus();
  }));
  if (compensated) {
    if (absl::Status s = benefits_.ApplyCouponIntents(coupon_id); !s.ok()) {
      spdlog::warn("fulfilment {} failed, compensation behind (repaired later): {}", id, s);
    }
  }
  return changed;
}

absl::Status Fulfilments::HandleResult(const std::string& event_id,
                                       const pb::FulfilmentResult& result) {
  if (!IsKey(result.fulfilment_id())) {
    return InvalidArgument("fulfilment_id", "the result names no fulfilment");
  }
  if (result.outcome() == pb::FULFILMENT_OUTCOME_UNSPECIFIED ||
      !pb::FulfilmentOutcome_IsValid(result.outcome())) {
    return InvalidArgument("outcome", "the result has no outcome");
  }
  if (event_id.empty() || event_id.size() > 200) {
    return InvalidArgument("event_id", "the result has no usable event id");
  }
  bool settled_coupon = false;
  int64_t coupon_id = 0;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    settled_coupon = false;
    if (!kafka::MarkProcessed(tx, kConsumerName, event_id)) return absl::OkStatus();
    pqxx::result r = tx.exec_params(kLockFulfilment, result.fulfilment_id());
    if (r.empty()) return NotFound("there is no fulfilment \"" + result.fulfilment_id() + "\"");
    const Row row = Row::From(r[0]);
    coupon_id = row.coupon_id;
    const absl::Time now = clock_.Now();
    const pb::FulfilmentState state = row.f.state();
    const std::string actor = "supplier:" + row.f.supplier_id();
    const std::string detail =
        StorableText(absl::StrCat("attempt ", result.attempt(), ": ", result.message()), 500);
    pb::Fulfilment next = row.f;
    switch (result.outcome()) {
      case pb::SUCCEEDED:
        if (state == pb::FULFILMENT_FULFILLED) return absl::OkStatus();
        if (state == pb::FULFILMENT_FAILED) {
          // Delivered after we gave up and compensated: an operator must settle it by hand.
          spdlog::error("fulfilment {}: the supplier delivered after it was failed ({})",
                        row.f.id(), result.supplier_reference());
          tx.exec_params(kInsertEvent, row.f.id(), static_cast<int>(state), static_cast<int>(state),
                         row.f.attempt(), actor, "late-success",
                         StorableText(absl::StrCat(result.supplier_reference(), " ", detail), 500),
                         PgTime(now));
          return absl::OkStatus();
        }
        next.set_state(pb::FULFILMENT_FULFILLED);
        next.set_supplier_reference(result.supplier_reference());
        Record(tx, row, next, std::nullopt, actor, "succeeded", detail, now);
        settled_coupon =
            benefits_.SettleThirdParty(tx, row.coupon_id, true, row.f.id(), actor, "fulfilled");
        return absl::OkStatus();
      case pb::FAILED_RETRYABLE:
        // Only the answer to the attempt in flight counts; an older attempt's is superseded.
        if (state != pb::FULFILMENT_SUBMITTED ||
            (result.attempt() != 0 && result.attempt() != row.f.attempt())) {
          return absl::OkStatus();
        }
        if (row.f.attempt() >= options_.max_attempts) {
          next.set_state(pb::FULFILMENT_FAILED);
          next.set_failure_reason(result.message());
          Record(tx, row, next, std::nullopt, actor, "failed-retryable-last", detail, now);
          settled_coupon =
              benefits_.SettleThirdParty(tx, row.coupon_id, false, row.f.id(), actor, "compensate");
        } else {
          next.set_state(pb::FULFILMENT_RETRYING);
          next.set_failure_reason(result.message());
          Record(tx, row, next, now + BackoffAfter(row.f.attempt()), actor, "failed-retryable",
                 detail, now);
        }
        return absl::OkStatus();
      case pb::FAILED_PERMANENT:
        if (IsTerminal(state)) return absl::OkStatus();
        next.set_state(pb::FULFILMENT_FAILED);
        next.set_failure_reason(result.message());
        Record(tx, row, next, std::nullopt, actor, "failed-permanent", detail, now);
        settled_coupon =
            benefits_.SettleThirdParty(tx, row.coupon_id, false, row.f.id(), actor, "compensate");
        return absl::OkStatus();
      default:
        return InvalidArgument("outcome", "the result has no outcome");
    }
  }));
  if (settled_coupon) {
    if (absl::Status s = benefits_.ApplyCouponIntents(coupon_id); !s.ok()) {
      // The result is recorded; the coupon's ledger catches up through Benefits::RepairLedger.
      spdlog::warn("fulfilment {} settled, ledger behind (repaired later): {}",
                   result.fulfilment_id(), s);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> Fulfilments::RunDue(int limit) {
  std::vector<std::string> ids;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    ids.clear();
    for (const pqxx::row& r : tx.exec_params(kSelectDue, PgTime(clock_.Now()), limit)) {
      ids.push_back(r[0].as<std::string>());
    }
    return absl::OkStatus();
  }));
  int changed = 0;
  for (const std::string& id : ids) {
    absl::StatusOr<bool> done = Advance(id, /*first_only=*/false);
    if (!done.ok()) {
      spdlog::warn("fulfilment {}: scheduling failed (retried next run): {}", id, done.status());
    } else if (*done) {
      ++changed;
    }
  }
  return changed;
}

absl::StatusOr<pb::Fulfilment> Fulfilments::GetFulfilment(const pb::GetFulfilmentRequest& req) {
  if (req.fulfilment_id().empty() == req.coupon_code().empty()) {
    return InvalidArgument("fulfilment_id", "set one of fulfilment_id and coupon_code");
  }
  if (!req.fulfilment_id().empty() && !IsKey(req.fulfilment_id())) {
    return InvalidArgument("fulfilment_id", "fulfilment_id is malformed");
  }
  if (!req.coupon_code().empty() && !IsKey(req.coupon_code())) {
    return InvalidArgument("coupon_code", "coupon_code is malformed");
  }
  std::optional<pb::Fulfilment> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.reset();
    std::string id = req.fulfilment_id();
    if (id.empty()) {
      pqxx::result r = tx.exec_params(kSelectIdOfCoupon, req.coupon_code());
      if (r.empty()) return absl::OkStatus();
      id = r[0][0].as<std::string>();
    }
    pqxx::result r = tx.exec_params(kSelectFulfilment, id);
    if (r.empty()) return absl::OkStatus();
    out = Row::From(r[0]).f;
    for (const pqxx::row& e : tx.exec_params(kSelectEvents, id)) {
      pb::FulfilmentEvent* ev = out->add_events();
      ev->set_from_state(static_cast<pb::FulfilmentState>(e[0].as<int>()));
      ev->set_to_state(static_cast<pb::FulfilmentState>(e[1].as<int>()));
      ev->set_attempt(e[2].as<int>());
      ev->set_actor(e[3].as<std::string>());
      ev->set_cause(e[4].as<std::string>());
      ev->set_detail(e[5].as<std::string>());
      SetTime(ev->mutable_at(), absl::FromUnixMicros(e[6].as<int64_t>()));
    }
    return absl::OkStatus();
  }));
  if (!out) {
    return Error(absl::StatusCode::kNotFound, cpb::NOT_FOUND, "there is no such fulfilment",
                 req.fulfilment_id().empty() ? "coupon_code" : "fulfilment_id");
  }
  return *std::move(out);
}

}  // namespace mkt::rewards

#include "services/rewards/payouts.h"

#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/kafka/outbox.h"
#include "libs/log/log.h"
#include "services/rewards/ledger_service.h"
#include "spdlog/spdlog.h"

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::common::v1;

constexpr char kConsumerName[] = "rewards-payout-results";
// The reservation's spec carries the ledger's longest timeout, as it always has (the spec's
// content makes a resend a replay), but the hold is stored without one
// (LinkedBatch::holds_until_resolved): core banking usually answers within minutes, yet may pay
// days later, and a hold the ledger's sweeper voided meanwhile could no longer be posted: the
// customer would keep the cash core banking paid out (decision 011, amended 2026-11-29).
constexpr int kReserveTimeoutSeconds = 86400;

constexpr char kSelectPayout[] =
    "SELECT id, org_id, customer_id, amount_fen, bank_account, state, failure_reason, "
    "intent_applied, (extract(epoch from created_at) * 1000000)::bigint, "
    "(extract(epoch from updated_at) * 1000000)::bigint FROM payouts WHERE id = $1";
constexpr char kLockPayout[] = "SELECT state FROM payouts WHERE id = $1 FOR UPDATE";
constexpr char kInsertPayout[] =
    "INSERT INTO payouts (id, org_id, customer_id, amount_fen, bank_account, state, created_at, "
    "updated_at) VALUES ($1, $2, $3, $4, $5, 0, $6::timestamptz, $6::timestamptz) "
    "ON CONFLICT (id) DO NOTHING";
// Once its cash is held, the payout is REQUESTED; it is written again with the held content when
// it is missing: a concurrent call with the same request_id whose reservation was refused (before
// the cash arrived) may have deleted the row after this call read it and before its reservation
// was accepted. Returns a row only when this call moved it to REQUESTED (it then sends the
// command); a payout requested already returns none.
constexpr char kMarkRequested[] =
    "INSERT INTO payouts (id, org_id, customer_id, amount_fen, bank_account, state, "
    "intent_applied, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, 1, true, $6::timestamptz, $6::timestamptz) "
    "ON CONFLICT (id) DO UPDATE SET org_id = EXCLUDED.org_id, customer_id = "
    "EXCLUDED.customer_id, amount_fen = EXCLUDED.amount_fen, bank_account = "
    "EXCLUDED.bank_account, state = 1, intent_applied = true, updated_at = EXCLUDED.updated_at "
    "WHERE payouts.state = 0 RETURNING 1";
constexpr char kDeleteUnreserved[] = "DELETE FROM payouts WHERE id = $1 AND state = 0";
constexpr char kSettle[] =
    "UPDATE payouts SET state = $2, failure_reason = $3, core_reference = $4, "
    "intent_applied = false, updated_at = $5::timestamptz WHERE id = $1";
constexpr char kMarkApplied[] = "UPDATE payouts SET intent_applied = true WHERE id = $1";
constexpr char kSelectStale[] =
    "SELECT id FROM payouts WHERE NOT intent_applied AND updated_at < $1::timestamptz LIMIT $2";

std::string PgTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", t, absl::UTCTimeZone());
}

bool IsKey(const std::string& s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == ':' ||
           c == '-';
  });
}

bool IsPermanent(const absl::Status& s) {
  return s.code() == absl::StatusCode::kFailedPrecondition ||
         s.code() == absl::StatusCode::kNotFound ||
         s.code() == absl::StatusCode::kInvalidArgument ||
         s.code() == absl::StatusCode::kAlreadyExists;
}

struct Row {
  pb::Payout payout;
  std::string bank_account;
  bool applied = false;
};

std::optional<Row> ReadRow(pqxx::work& tx, const std::string& id) {
  pqxx::result r = tx.exec_params(kSelectPayout, id);
  if (r.empty()) return std::nullopt;
  Row row;
  pb::Payout& p = row.payout;
  p.set_id(r[0][0].as<std::string>());
  p.set_org_id(r[0][1].as<std::string>());
  p.set_customer_id(r[0][2].as<std::string>());
  p.set_amount_fen(r[0][3].as<int64_t>());
  row.bank_account = r[0][4].as<std::string>();
  p.set_state(static_cast<pb::PayoutState>(r[0][5].as<int>()));
  p.set_failure_reason(r[0][6].as<std::string>());
  row.applied = r[0][7].as<bool>();
  const int64_t created = r[0][8].as<int64_t>();
  const int64_t updated = r[0][9].as<int64_t>();
  p.mutable_created_at()->set_seconds(created / 1000000);
  p.mutable_updated_at()->set_seconds(updated / 1000000);
  return row;
}

std::string ReserveId(const std::string& id) { return "pay." + id + ".reserve"; }

}  // namespace

absl::StatusOr<pb::Payout> Payouts::RequestPayout(const pb::RequestPayoutRequest& req) {
  if (!IsKey(req.request_id())) {
    return InvalidArgument("request_id",
                           "request_id must be 1 to 64 characters of [A-Za-z0-9._:-]");
  }
  if (!IsKey(req.org_id())) return InvalidArgument("org_id", "org_id is malformed");
  if (!IsKey(req.customer_id())) return InvalidArgument("customer_id", "customer_id is malformed");
  if (req.amount_fen() <= 0 || req.amount_fen() > 1'000'000'000'000) {
    return InvalidArgument("amount_fen", "amount_fen must be a positive number of fen");
  }
  const std::string& acct = req.bank_account();
  if (acct.size() < 8 || acct.size() > 34 || !std::all_of(acct.begin(), acct.end(), [](char c) {
        return absl::ascii_isalnum(static_cast<unsigned char>(c));
      })) {
    return InvalidArgument("bank_account", "bank_account must be 8 to 34 letters and digits");
  }
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    std::optional<Row> row;
    // The insert finds the row of a concurrent call with the same request_id; if that call's
    // reservation was refused, it may delete the row before it is read here: insert again.
    for (int attempt = 0; !row && attempt < 3; ++attempt) {
      tx.exec_params(kInsertPayout, req.request_id(), req.org_id(), req.customer_id(),
                     req.amount_fen(), acct, PgTime(clock_.Now()));
      row = ReadRow(tx, req.request_id());
    }
    if (!row) {
      return Error(absl::StatusCode::kAborted, cpb::CONFLICT,
                   "a concurrent request with this request_id is being refused; retry",
                   "request_id");
    }
    if (row->payout.org_id() != req.org_id() || row->payout.customer_id() != req.customer_id() ||
        row->payout.amount_fen() != req.amount_fen() || row->bank_account != acct) {
      return Error(absl::StatusCode::kAlreadyExists, cpb::IDEMPOTENCY_KEY_REUSED,
                   "request_id was used for another payout", "request_id");
    }
    return absl::OkStatus();
  }));
  if (absl::Status s = Settle(req.request_id()); !s.ok()) {
    if (!IsPermanent(s)) return s;
    MKT_ASSIGN_OR_RETURN(const bool held, ForgetUnreserved(req.request_id()));
    // Refused here, but a concurrent call with the same request_id holds the cash now (it
    // arrived in between): that is this request's payout.
    if (!held) return s;
  }
  return GetPayout(req.request_id());
}

absl::StatusOr<bool> Payouts::ForgetUnreserved(const std::string& id) {
  // Deleted only while no reservation exists: a concurrent call's may have been accepted after
  // this call's was refused, and a held payout without its row would never send its command nor
  // be repaired (the hold has no timeout). A reservation accepted after this look-up finds the
  // row gone and writes it again (kMarkRequested).
  absl::StatusOr<pb::Transfer> hold = ledger_.GetTransfer(ReserveId(id));
  if (hold.ok()) {
    MKT_RETURN_IF_ERROR(Settle(id));  // REQUESTED, its command sent (by whichever call is first)
    return true;
  }
  if (!absl::IsNotFound(hold.status())) return hold.status();
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    tx.exec_params(kDeleteUnreserved, id);
    return absl::OkStatus();
  }));
  return false;
}

absl::Status Payouts::Settle(const std::string& id) {
  std::optional<Row> row;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    row = ReadRow(tx, id);
    return absl::OkStatus();
  }));
  if (!row) return NotFound("there is no payout \"" + id + "\"");
  if (row->applied) return absl::OkStatus();
  const pb::Payout& p = row->payout;
  if (p.state() == pb::PAYOUT_STATE_UNSPECIFIED) {
    pb::TransferSpec s;
    s.set_id(ReserveId(id));
    *s.mutable_debit() = CustomerAccount(p.org_id(), pb::CASH_FEN, p.customer_id());
    *s.mutable_credit() = SystemAccount(p.org_id(), pb::CASH_FEN, pb::ROLE_PAYOUT);
    s.set_amount(p.amount_fen());
    s.set_code(pb::PAYOUT);
    s.set_pending(true);
    s.set_timeout_seconds(kReserveTimeoutSeconds);
    (*s.mutable_metadata())["payout_id"] = id;
    MKT_RETURN_IF_ERROR(ValidateTransferSpecs({s}));
    MKT_ASSIGN_OR_RETURN(std::vector<BatchResult> results,
                         ledger_.Apply({LinkedBatch{
                             .batch_id = s.id(), .transfers = {s}, .holds_until_resolved = true}}));
    MKT_RETURN_IF_ERROR(results.at(0).status());
    // The command leaves only once the cash is reserved, and only once (state 0 → 1, or the row
    // written again REQUESTED).
    return pg::WithTransaction(pool_, [&](pqxx::work& tx) {
      if (!tx.exec_params(kMarkRequested, id, p.org_id(), p.customer_id(), p.amount_fen(),
                          row->bank_account, PgTime(clock_.Now()))
               .empty()) {
        pb::PayoutCommand command;
        command.set_payout_id(id);
        command.set_org_id(p.org_id());
        command.set_customer_id(p.customer_id());
        command.set_amount_fen(p.amount_fen());
        command.set_bank_account(row->bank_account);
        auto envelope = kafka::MakeEnvelope("rewards.PayoutCommand", p.org_id(), id, command);
        envelope.set_event_id("payout-command:" + id);
        kafka::AppendToOutbox(tx, kPayoutCommandsTopic, p.customer_id(), envelope);
      }
      return absl::OkStatus();
    });
  }
  if (p.state() == pb::PAYOUT_SUCCEEDED || p.state() == pb::PAYOUT_FAILED) {
    const bool post = p.state() == pb::PAYOUT_SUCCEEDED;
    MKT_RETURN_IF_ERROR(
        ledger_.ResolvePending("pay." + id + (post ? ".post" : ".void"), ReserveId(id), post)
            .status());
    return pg::WithTransaction(pool_, [&](pqxx::work& tx) {
      tx.exec_params(kMarkApplied, id);
      return absl::OkStatus();
    });
  }
  return absl::OkStatus();
}

absl::Status Payouts::HandleResult(const kafka::IncomingMessage& message) {
  MKT_ASSIGN_OR_RETURN(const cpb::Envelope envelope, kafka::ParseEnvelope(message));
  pb::PayoutResult result;
  if (!envelope.payload().UnpackTo(&result) || !IsKey(result.payout_id())) {
    return InvalidArgument("payload", "the message is not a PayoutResult");
  }
  bool changed = false;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
    changed = false;
    if (!kafka::MarkProcessed(tx, kConsumerName, envelope.event_id())) return absl::OkStatus();
    pqxx::result r = tx.exec_params(kLockPayout, result.payout_id());
    if (r.empty()) return NotFound("there is no payout \"" + result.payout_id() + "\"");
    // Only a requested payout settles; a second reply (another event id) changes nothing.
    if (r[0][0].as<int>() != pb::PAYOUT_REQUESTED) return absl::OkStatus();
    tx.exec_params(kSettle, result.payout_id(),
                   static_cast<int>(result.success() ? pb::PAYOUT_SUCCEEDED : pb::PAYOUT_FAILED),
                   StorableText(result.failure_reason(), 500),
                   StorableText(result.core_reference(), 100), PgTime(clock_.Now()));
    changed = true;
    return absl::OkStatus();
  }));
  if (changed) {
    if (absl::Status s = Settle(result.payout_id()); !s.ok()) {
      // The reply is recorded; the ledger catches up through RepairLedger.
      spdlog::warn("payout {} settled, ledger behind (repaired later): {}", result.payout_id(), s);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<pb::Payout> Payouts::GetPayout(const std::string& id) {
  std::optional<Row> row;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    row = ReadRow(tx, id);
    return absl::OkStatus();
  }));
  if (!row) return NotFound("there is no payout \"" + id + "\"");
  return row->payout;
}

absl::StatusOr<int> Payouts::RepairLedger(int limit) {
  std::vector<std::string> ids;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    ids.clear();
    for (const pqxx::row& r :
         tx.exec_params(kSelectStale, PgTime(clock_.Now() - repair_grace_), limit)) {
      ids.push_back(r[0].as<std::string>());
    }
    return absl::OkStatus();
  }));
  int repaired = 0;
  for (const std::string& id : ids) {
    absl::Status s = Settle(id);
    if (s.ok()) {
      ++repaired;
    } else if (IsPermanent(s)) {
      // A reservation the ledger refuses (the cash was spent meanwhile) leaves no payout, unless
      // a concurrent request's was accepted.
      absl::StatusOr<bool> held = ForgetUnreserved(id);
      if (!held.ok()) {
        spdlog::warn("payout {}: repair failed (retried later): {}", id, held.status());
      } else if (*held) {
        ++repaired;
      } else {
        spdlog::warn("payout {} refused by the ledger: {}", id, s);
      }
    } else {
      spdlog::warn("payout {}: repair failed (retried later): {}", id, s);
    }
  }
  return repaired;
}

}  // namespace mkt::rewards

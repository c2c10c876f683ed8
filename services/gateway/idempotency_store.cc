#include "services/gateway/idempotency_store.h"

#include <pqxx/pqxx>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "libs/core/status.h"
#include "libs/pg/pool.h"
#include "libs/pg/prepared.h"
#include "libs/pg/reads.h"

namespace mkt::gateway {
namespace {

namespace pb = ::marketing::common::v1;

// The claim and the record of every POST are prepared (decision 017).
constexpr pg::Prepared kClaim{
    "idempotency.claim",
    "INSERT INTO idempotency_records (scope, key, request_hash) VALUES ($1, $2, $3) "
    "ON CONFLICT (scope, key) DO NOTHING RETURNING 1"};
constexpr char kRead[] =
    "SELECT request_hash, status, coalesce(content_type, ''), coalesce(body, ''), "
    "created_at < now() - make_interval(secs => $3), created_at < now() - make_interval(secs => "
    "$4) "
    "FROM idempotency_records WHERE scope = $1 AND key = $2";
constexpr char kTakeOver[] =
    "UPDATE idempotency_records SET created_at = now(), request_hash = $3 "
    "WHERE scope = $1 AND key = $2 AND status IS NULL "
    "AND created_at < now() - make_interval(secs => $4) RETURNING 1";
constexpr char kDeleteExpired[] =
    "DELETE FROM idempotency_records WHERE scope = $1 AND key = $2 "
    "AND created_at < now() - make_interval(secs => $3)";
constexpr pg::Prepared kComplete{
    "idempotency.complete",
    "UPDATE idempotency_records SET status = $3, content_type = $4, body = $5 "
    "WHERE scope = $1 AND key = $2"};
constexpr char kAbandon[] =
    "DELETE FROM idempotency_records WHERE scope = $1 AND key = $2 AND status IS NULL";
constexpr char kPurge[] =
    "DELETE FROM idempotency_records WHERE created_at < now() - make_interval(secs => $1)";

}  // namespace

PgIdempotencyStore::PgIdempotencyStore(std::function<absl::StatusOr<pg::Pool*>()> pool,
                                       absl::Duration retention, absl::Duration stale_after)
    : pool_(std::move(pool)), retention_(retention), stale_after_(stale_after) {}

absl::StatusOr<IdempotencyStore::BeginResult> PgIdempotencyStore::Begin(
    std::string_view scope, std::string_view key, std::string_view request_hash) {
  MKT_ASSIGN_OR_RETURN(pg::Pool * pool, pool_());
  const std::string s(scope), k(key), h(request_hash);
  const double stale = absl::ToDoubleSeconds(stale_after_);
  const double retention = absl::ToDoubleSeconds(retention_);
  BeginResult result;
  // The common case, a new key, is one autocommit statement; anything else (a replay, a key in
  // use, an expired or stale record) is decided in a transaction below.
  bool claimed = false;
  MKT_RETURN_IF_ERROR(pg::WithStatement(*pool, [&](pqxx::nontransaction& st) {
    claimed = !pg::ExecPrepared(st, kClaim, s, k, h).empty();
    return absl::OkStatus();
  }));
  if (claimed) return result;  // kProceed
  absl::Status status = pg::WithTransaction(*pool, [&](pqxx::work& tx) -> absl::Status {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (!pg::ExecPrepared(tx, kClaim, s, k, h).empty()) {
        result.claim = Claim::kProceed;
        return absl::OkStatus();
      }
      pqxx::result row = tx.exec_params(kRead, s, k, stale, retention);
      if (row.empty()) continue;   // released meanwhile: claim again
      if (row[0][5].as<bool>()) {  // past retention: the key is free again
        tx.exec_params(kDeleteExpired, s, k, retention);
        continue;
      }
      if (row[0][0].as<std::string>() != h) {
        result.claim = Claim::kMismatch;
        return absl::OkStatus();
      }
      if (row[0][1].is_null()) {
        if (row[0][4].as<bool>() && !tx.exec_params(kTakeOver, s, k, h, stale).empty()) {
          result.claim = Claim::kProceed;
        } else {
          result.claim = Claim::kInProgress;
        }
        return absl::OkStatus();
      }
      result.claim = Claim::kReplay;
      result.response.status = row[0][1].as<int>();
      result.response.content_type = row[0][2].as<std::string>();
      result.response.body = row[0][3].as<std::string>();
      return absl::OkStatus();
    }
    result.claim = Claim::kInProgress;
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return result;
}

absl::Status PgIdempotencyStore::Complete(std::string_view scope, std::string_view key,
                                          const StoredResponse& response) {
  MKT_ASSIGN_OR_RETURN(pg::Pool * pool, pool_());
  return pg::WithStatement(*pool, [&](pqxx::nontransaction& st) {
    pg::ExecPrepared(st, kComplete, std::string(scope), std::string(key), response.status,
                     response.content_type, response.body);
    return absl::OkStatus();
  });
}

absl::Status PgIdempotencyStore::Abandon(std::string_view scope, std::string_view key) {
  MKT_ASSIGN_OR_RETURN(pg::Pool * pool, pool_());
  return pg::WithStatement(*pool, [&](pqxx::nontransaction& st) {
    st.exec_params(kAbandon, std::string(scope), std::string(key));
    return absl::OkStatus();
  });
}

absl::StatusOr<int64_t> PgIdempotencyStore::Purge() {
  MKT_ASSIGN_OR_RETURN(pg::Pool * pool, pool_());
  int64_t purged = 0;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(*pool, [&](pqxx::work& tx) {
    purged = tx.exec_params(kPurge, absl::ToDoubleSeconds(retention_)).affected_rows();
    return absl::OkStatus();
  }));
  return purged;
}

absl::StatusOr<StoredResponse> RunIdempotently(IdempotencyStore& store, std::string_view scope,
                                               std::string_view key, std::string_view request_hash,
                                               const std::function<StoredResponse()>& execute,
                                               bool* replayed, absl::Duration wait) {
  *replayed = false;
  const absl::Time give_up = absl::Now() + wait;
  absl::Duration pause = absl::Milliseconds(10);
  while (true) {
    absl::StatusOr<IdempotencyStore::BeginResult> begun = store.Begin(scope, key, request_hash);
    if (!begun.ok()) {
      return Error(absl::StatusCode::kUnavailable, pb::DEPENDENCY_UNAVAILABLE,
                   absl::StrCat("idempotency store: ", begun.status().message()));
    }
    switch (begun->claim) {
      case IdempotencyStore::Claim::kReplay:
        *replayed = true;
        return std::move(begun->response);
      case IdempotencyStore::Claim::kMismatch:
        return Error(absl::StatusCode::kAlreadyExists, pb::IDEMPOTENCY_KEY_REUSED,
                     "this Idempotency-Key was used for a different request; use a new key for a "
                     "new request",
                     "Idempotency-Key");
      case IdempotencyStore::Claim::kInProgress:
        if (absl::Now() >= give_up) {
          return Error(absl::StatusCode::kAborted, pb::CONFLICT,
                       "a request with this Idempotency-Key is still being processed; retry later",
                       "Idempotency-Key");
        }
        std::this_thread::sleep_for(absl::ToChronoMilliseconds(pause));
        pause = std::min(pause * 2, absl::Milliseconds(200));
        continue;
      case IdempotencyStore::Claim::kProceed: {
        StoredResponse response = execute();
        const bool keep = response.status < 500 && response.status != 429;
        // The response goes out even when recording it fails: it happened. A retry after a failed
        // Complete finds the claim stale after a minute and runs again, which backends absorb
        // through their own idempotency (transfer ids, source event ids).
        if (keep) {
          (void)store.Complete(scope, key, response);
        } else {
          (void)store.Abandon(scope, key);
        }
        return response;
      }
    }
  }
}

}  // namespace mkt::gateway

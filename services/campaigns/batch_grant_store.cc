#include "services/campaigns/batch_grant_store.h"

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/log/log.h"
#include "libs/pg/arrays.h"
#include "libs/pg/reads.h"
#include "spdlog/spdlog.h"

namespace mkt::campaigns {
namespace {

using ::marketing::common::v1::CONFLICT;
using ::marketing::common::v1::NOT_FOUND;

constexpr char kRunColumns[] =
    "campaign_id, org_id, state, array_to_string(snapshot_ids, ','), cursor_snapshot, "
    "cursor_token, total, granted, failed, cancelled, campaigns_micros(started_at), "
    "coalesce(campaigns_micros(finished_at), 0), campaigns_micros(updated_at), last_error, "
    "cancelled_by, cancel_reason, lease_owner";

absl::Time FromMicros(int64_t micros) { return absl::FromUnixMicros(micros); }

BatchGrantRun RunFromRow(const pqxx::row& row) {
  BatchGrantRun r;
  r.campaign_id = row[0].as<std::string>();
  r.org_id = row[1].as<std::string>();
  r.state = row[2].as<std::string>();
  const std::string ids = row[3].as<std::string>();
  if (!ids.empty()) {
    for (absl::string_view id : absl::StrSplit(ids, ',')) r.snapshot_ids.emplace_back(id);
  }
  r.cursor_snapshot = row[4].as<int>();
  r.cursor_token = row[5].as<std::string>();
  r.total = row[6].as<int64_t>();
  r.granted = row[7].as<int64_t>();
  r.failed = row[8].as<int64_t>();
  r.cancelled = row[9].as<int64_t>();
  r.started_at = FromMicros(row[10].as<int64_t>());
  if (const int64_t f = row[11].as<int64_t>(); f != 0) r.finished_at = FromMicros(f);
  r.updated_at = FromMicros(row[12].as<int64_t>());
  r.last_error = row[13].as<std::string>();
  r.cancelled_by = row[14].as<std::string>();
  r.cancel_reason = row[15].as<std::string>();
  r.lease_owner = row[16].as<std::string>();
  return r;
}

absl::Status LeaseLost(const std::string& campaign_id) {
  return Error(absl::StatusCode::kFailedPrecondition, CONFLICT,
               "the batch grant of " + campaign_id +
                   " is no longer this runner's (lease lost, cancelled or finished)");
}

std::string Seconds(absl::Duration d) { return std::to_string(absl::ToDoubleSeconds(d)); }

}  // namespace

absl::StatusOr<std::vector<RunnableBatch>> PgBatchGrantStore::ListRunnable(int limit) {
  std::vector<RunnableBatch> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.clear();
    for (const auto& row : tx.exec_params(
             "SELECT c.id, c.org_id FROM campaigns c LEFT JOIN batch_grant_runs r "
             "ON r.campaign_id = c.id WHERE c.state = 'ONLINE' AND c.type = 'BATCH_GRANT' "
             "AND (r.campaign_id IS NULL OR r.state IN ('MATERIALISING', 'RUNNING')) "
             "ORDER BY c.window_start, c.id LIMIT $1",
             limit)) {
      out.push_back({row[0].as<std::string>(), row[1].as<std::string>()});
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::optional<BatchGrantRun>> PgBatchGrantStore::Acquire(
    const std::string& campaign_id, const std::string& org_id, const std::string& owner,
    absl::Duration lease) {
  std::optional<BatchGrantRun> run;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    run.reset();
    tx.exec_params(
        "INSERT INTO batch_grant_runs (campaign_id, org_id, state) VALUES ($1, $2, "
        "'MATERIALISING') ON CONFLICT (campaign_id) DO NOTHING",
        campaign_id, org_id);
    pqxx::result r = tx.exec_params(
        std::string("UPDATE batch_grant_runs SET lease_owner = $2, lease_expires_at = now() + "
                    "$3::float8 * interval '1 second', updated_at = now() WHERE campaign_id = $1 "
                    "AND state IN ('MATERIALISING', 'RUNNING') AND (lease_owner = $2 OR "
                    "lease_expires_at < now()) RETURNING ") +
            kRunColumns,
        campaign_id, owner, Seconds(lease));
    if (!r.empty()) run = RunFromRow(r[0]);
    return absl::OkStatus();
  }));
  return run;
}

absl::Status PgBatchGrantStore::Renew(const std::string& campaign_id, const std::string& owner,
                                      absl::Duration lease) {
  bool renewed = false;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(
        "UPDATE batch_grant_runs SET lease_expires_at = now() + $3::float8 * interval '1 second' "
        "WHERE campaign_id = $1 AND lease_owner = $2 AND state IN ('MATERIALISING', 'RUNNING') "
        "RETURNING 1",
        campaign_id, owner, Seconds(lease));
    renewed = !r.empty();
    return absl::OkStatus();
  }));
  return renewed ? absl::OkStatus() : LeaseLost(campaign_id);
}

absl::Status PgBatchGrantStore::Release(const std::string& campaign_id, const std::string& owner) {
  return pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    tx.exec_params(
        "UPDATE batch_grant_runs SET lease_owner = '', lease_expires_at = '-infinity' "
        "WHERE campaign_id = $1 AND lease_owner = $2",
        campaign_id, owner);
    return absl::OkStatus();
  });
}

absl::Status PgBatchGrantStore::SetSnapshots(const std::string& campaign_id,
                                             const std::string& owner,
                                             const std::vector<std::string>& snapshot_ids) {
  bool set = false;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(
        "UPDATE batch_grant_runs SET snapshot_ids = $3::text[], cursor_snapshot = 0, "
        "cursor_token = '', last_error = '', updated_at = now() WHERE campaign_id = $1 AND "
        "lease_owner = $2 AND state = 'MATERIALISING' RETURNING 1",
        campaign_id, owner, pg::TextArrayLiteral(snapshot_ids));
    set = !r.empty();
    return absl::OkStatus();
  }));
  return set ? absl::OkStatus() : LeaseLost(campaign_id);
}

absl::Status PgBatchGrantStore::AddPage(const std::string& campaign_id, const std::string& owner,
                                        const std::vector<std::string>& customers,
                                        const std::string& state, int next_snapshot,
                                        const std::string& next_token) {
  bool moved = false;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    // The cursor first: it locks the run, so a runner that lost its lease writes nothing.
    pqxx::result r = tx.exec_params(
        "UPDATE batch_grant_runs SET cursor_snapshot = $3, cursor_token = $4, updated_at = now() "
        "WHERE campaign_id = $1 AND lease_owner = $2 AND state = 'MATERIALISING' RETURNING 1",
        campaign_id, owner, next_snapshot, next_token);
    moved = !r.empty();
    if (!moved || customers.empty()) return absl::OkStatus();
    tx.exec_params(
        "INSERT INTO batch_grant_items (campaign_id, customer_id, state) "
        "SELECT $1, c, $3 FROM unnest($2::text[]) AS c ON CONFLICT DO NOTHING",
        campaign_id, pg::TextArrayLiteral(customers), state);
    return absl::OkStatus();
  }));
  return moved ? absl::OkStatus() : LeaseLost(campaign_id);
}

absl::Status PgBatchGrantStore::FinishMaterialising(const std::string& campaign_id,
                                                    const std::string& owner) {
  bool done = false;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(
        "UPDATE batch_grant_runs SET state = 'RUNNING', total = (SELECT count(*) FROM "
        "batch_grant_items WHERE campaign_id = $1 AND state <> 'EXCLUDED'), "
        "updated_at = now() WHERE campaign_id = $1 AND lease_owner = $2 AND "
        "state = 'MATERIALISING' RETURNING 1",
        campaign_id, owner);
    done = !r.empty();
    return absl::OkStatus();
  }));
  if (!done) return LeaseLost(campaign_id);
  // A large audience has just been written: without fresh statistics the planner takes the new
  // campaign's items for a handful and records each chunk of outcomes by scanning them all
  // (measured: 2.8 s per 1,000 outcomes over 1,000,000 items, 10 ms after ANALYZE) until
  // autovacuum gets round to the table a minute or more later.
  absl::Status analyzed = pg::WithStatement(pool_, [](pqxx::nontransaction& st) {
    st.exec("ANALYZE batch_grant_items");
    return absl::OkStatus();
  });
  if (!analyzed.ok()) {
    spdlog::warn("batch grant {}: ANALYZE of the work list failed (autovacuum will): {}",
                 campaign_id, analyzed);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<PendingItem>> PgBatchGrantStore::PendingAfter(
    const std::string& campaign_id, const std::string& after, int limit) {
  std::vector<PendingItem> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.clear();
    for (const auto& row : tx.exec_params(
             "SELECT customer_id, reason = $4 FROM batch_grant_items WHERE campaign_id = $1 AND "
             "state = 'PENDING' AND customer_id > $2 ORDER BY customer_id LIMIT $3",
             campaign_id, after, limit, kStuckReason)) {
      out.push_back({row[0].as<std::string>(), row[1].as<bool>()});
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PgBatchGrantStore::Record(const std::string& campaign_id,
                                       const std::vector<BatchGrantOutcome>& chunk) {
  if (chunk.empty()) return absl::OkStatus();
  std::vector<std::string> customers, states, reasons, messages;
  for (const BatchGrantOutcome& o : chunk) {
    customers.push_back(o.customer_id);
    states.push_back(o.granted ? "GRANTED" : "FAILED");
    reasons.push_back(o.granted ? "" : o.reason);
    messages.push_back(o.granted ? "" : StorableText(o.message, 500));
  }
  return pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    // The run row first: Cancel takes it too, so the counters below see settled item states.
    tx.exec_params("SELECT 1 FROM batch_grant_runs WHERE campaign_id = $1 FOR UPDATE", campaign_id);
    pqxx::result r = tx.exec_params(
        "WITH o AS (SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) "
        "  AS o (customer_id, state, reason, message)), "
        "u AS (UPDATE batch_grant_items i SET state = o.state, reason = o.reason, "
        "  message = o.message, updated_at = now() FROM o, batch_grant_items prev "
        "  WHERE i.campaign_id = $1 AND i.customer_id = o.customer_id AND "
        "  prev.campaign_id = i.campaign_id AND prev.customer_id = i.customer_id AND "
        "  i.state IN ('PENDING', 'CANCELLED') RETURNING o.state AS new_state, "
        "  prev.state AS old_state) "
        "SELECT count(*) FILTER (WHERE new_state = 'GRANTED'), "
        "  count(*) FILTER (WHERE new_state = 'FAILED'), "
        "  count(*) FILTER (WHERE old_state = 'CANCELLED') FROM u",
        campaign_id, pg::TextArrayLiteral(customers), pg::TextArrayLiteral(states),
        pg::TextArrayLiteral(reasons), pg::TextArrayLiteral(messages));
    tx.exec_params(
        "UPDATE batch_grant_runs SET granted = granted + $2, failed = failed + $3, "
        "cancelled = cancelled - $4, updated_at = now() WHERE campaign_id = $1",
        campaign_id, r[0][0].as<int64_t>(), r[0][1].as<int64_t>(), r[0][2].as<int64_t>());
    return absl::OkStatus();
  });
}

absl::StatusOr<bool> PgBatchGrantStore::CompleteIfDone(const std::string& campaign_id,
                                                       const std::string& owner) {
  bool completed = false;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result r = tx.exec_params(
        "UPDATE batch_grant_runs SET state = 'COMPLETED', finished_at = now(), updated_at = now(), "
        "last_error = '', lease_owner = '', lease_expires_at = '-infinity' "
        "WHERE campaign_id = $1 AND lease_owner = $2 AND state = 'RUNNING' AND NOT EXISTS "
        "(SELECT 1 FROM batch_grant_items WHERE campaign_id = $1 AND state = 'PENDING') "
        "RETURNING 1",
        campaign_id, owner);
    // Or completed already: an operator settled its last stuck item (Settle completes it).
    completed = !r.empty() || !tx.exec_params(
                                     "SELECT 1 FROM batch_grant_runs WHERE campaign_id = "
                                     "$1 AND state = 'COMPLETED'",
                                     campaign_id)
                                   .empty();
    return absl::OkStatus();
  }));
  return completed;
}

absl::Status PgBatchGrantStore::SetLastError(const std::string& campaign_id,
                                             const std::string& error) {
  return pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    tx.exec_params(
        "UPDATE batch_grant_runs SET last_error = $2, updated_at = now() WHERE campaign_id = $1",
        campaign_id, StorableText(error, 500));
    return absl::OkStatus();
  });
}

absl::Status PgBatchGrantStore::MarkStuck(const std::string& campaign_id,
                                          const std::string& customer_id, const std::string& reason,
                                          const std::string& message) {
  return pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    tx.exec_params(
        "UPDATE batch_grant_items SET reason = $3, message = $4, updated_at = now() "
        "WHERE campaign_id = $1 AND customer_id = $2 AND state = 'PENDING'",
        campaign_id, customer_id, reason, StorableText(message, 500));
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<BatchGrantFailureRow>> PgBatchGrantStore::Stuck(
    const std::string& campaign_id, const std::string& after, int limit) {
  return ItemsWhere("state = 'PENDING' AND reason <> ''", campaign_id, after, limit);
}

absl::StatusOr<bool> PgBatchGrantStore::StillPending(const std::string& campaign_id,
                                                     const std::string& customer_id) {
  bool pending = false;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pending = !tx.exec_params(
                     "SELECT 1 FROM batch_grant_items WHERE campaign_id = $1 AND "
                     "customer_id = $2 AND state = 'PENDING'",
                     campaign_id, customer_id)
                   .empty();
    return absl::OkStatus();
  }));
  return pending;
}

absl::StatusOr<BatchGrantRun> PgBatchGrantStore::Settle(const std::string& campaign_id,
                                                        const std::string& customer_id,
                                                        const std::string& stuck_reason,
                                                        bool granted, const std::string& reason,
                                                        const std::string& message) {
  std::optional<BatchGrantRun> run;
  std::string refusal;
  bool unknown = false;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    run.reset();
    refusal.clear();
    unknown = false;
    // The run row first, as Record and Cancel take it: the counters move with the item.
    tx.exec_params("SELECT 1 FROM batch_grant_runs WHERE campaign_id = $1 FOR UPDATE", campaign_id);
    pqxx::result item = tx.exec_params(
        "SELECT state, reason FROM batch_grant_items WHERE campaign_id = $1 AND customer_id = $2",
        campaign_id, customer_id);
    if (item.empty() || item[0][0].as<std::string>() == "EXCLUDED") {
      unknown = true;
      return absl::OkStatus();
    }
    const std::string state = item[0][0].as<std::string>();
    if (state != "PENDING" || item[0][1].as<std::string>() != stuck_reason) {
      refusal = state == "PENDING" ? "is still being granted (not stuck)"
                                   : absl::StrCat("is ", state, ", not stuck");
      return absl::OkStatus();
    }
    tx.exec_params(
        "UPDATE batch_grant_items SET state = $3, reason = $4, message = $5, updated_at = now() "
        "WHERE campaign_id = $1 AND customer_id = $2",
        campaign_id, customer_id, granted ? "GRANTED" : "FAILED", reason,
        StorableText(message, 500));
    tx.exec_params(
        "UPDATE batch_grant_runs SET granted = granted + $2, failed = failed + $3, "
        "updated_at = now() WHERE campaign_id = $1",
        campaign_id, granted ? 1 : 0, granted ? 0 : 1);
    // The last pending item settled: the batch is done (the runner, which puts stuck items off
    // for minutes, would only notice later). Its lease is dropped with it.
    tx.exec_params(
        "UPDATE batch_grant_runs SET state = 'COMPLETED', finished_at = now(), updated_at = now(), "
        "last_error = '', lease_owner = '', lease_expires_at = '-infinity' "
        "WHERE campaign_id = $1 AND state = 'RUNNING' AND NOT EXISTS "
        "(SELECT 1 FROM batch_grant_items WHERE campaign_id = $1 AND state = 'PENDING')",
        campaign_id);
    pqxx::result r = tx.exec_params(
        std::string("SELECT ") + kRunColumns + " FROM batch_grant_runs WHERE campaign_id = $1",
        campaign_id);
    if (!r.empty()) run = RunFromRow(r[0]);
    return absl::OkStatus();
  }));
  if (unknown) {
    return Error(
        absl::StatusCode::kNotFound, NOT_FOUND,
        "customer " + customer_id + " is not a recipient of the batch grant of " + campaign_id,
        "customer_id");
  }
  if (!refusal.empty()) {
    return Error(absl::StatusCode::kFailedPrecondition, CONFLICT,
                 "the grant to " + customer_id + " " + refusal + "; only a stuck item is settled",
                 "customer_id");
  }
  if (!run) return Error(absl::StatusCode::kNotFound, NOT_FOUND, "no run");
  return *run;
}

absl::StatusOr<BatchGrantRun> PgBatchGrantStore::Cancel(const std::string& campaign_id,
                                                        const std::string& org_id,
                                                        const std::string& by,
                                                        const std::string& reason) {
  std::optional<BatchGrantRun> run;
  std::string finished_state;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    run.reset();
    finished_state.clear();
    tx.exec_params(
        "INSERT INTO batch_grant_runs (campaign_id, org_id, state) VALUES ($1, $2, "
        "'MATERIALISING') ON CONFLICT (campaign_id) DO NOTHING",
        campaign_id, org_id);
    pqxx::result current = tx.exec_params(
        "SELECT state FROM batch_grant_runs WHERE campaign_id = $1 FOR UPDATE", campaign_id);
    const std::string state = current[0][0].as<std::string>();
    if (state == kRunCompleted || state == kRunCancelled) {
      finished_state = state;
      return absl::OkStatus();
    }
    pqxx::result n = tx.exec_params(
        "WITH u AS (UPDATE batch_grant_items SET state = 'CANCELLED', updated_at = now() "
        "WHERE campaign_id = $1 AND state = 'PENDING' RETURNING 1) SELECT count(*) FROM u",
        campaign_id);
    pqxx::result r = tx.exec_params(
        // While materialising, total is not set yet: the items cancelled are the total, so that
        // pending (total - granted - failed - cancelled) stays 0, not negative.
        std::string("UPDATE batch_grant_runs SET state = 'CANCELLED', cancelled = cancelled + $2, "
                    "total = CASE WHEN state = 'MATERIALISING' THEN total + $2 ELSE total END, "
                    "cancelled_by = $3, cancel_reason = $4, finished_at = now(), "
                    "updated_at = now(), lease_owner = '', lease_expires_at = '-infinity' "
                    "WHERE campaign_id = $1 RETURNING ") +
            kRunColumns,
        campaign_id, n[0][0].as<int64_t>(), by, StorableText(reason, 500));
    run = RunFromRow(r[0]);
    return absl::OkStatus();
  }));
  if (!finished_state.empty()) {
    return Error(absl::StatusCode::kFailedPrecondition, CONFLICT,
                 "the batch grant of " + campaign_id + " is already " + finished_state);
  }
  return *std::move(run);
}

absl::StatusOr<std::vector<std::string>> PgBatchGrantStore::CancelEnded() {
  std::vector<std::string> ids;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    ids.clear();
    for (const auto& row :
         tx.exec("SELECT r.campaign_id, r.org_id FROM batch_grant_runs r JOIN campaigns c "
                 "ON c.id = r.campaign_id WHERE r.state IN ('MATERIALISING', 'RUNNING') AND "
                 "c.state IN ('ENDED', 'ARCHIVED')")) {
      ids.push_back(row[0].as<std::string>());
    }
    return absl::OkStatus();
  }));
  std::vector<std::string> cancelled;
  for (const std::string& id : ids) {
    absl::StatusOr<BatchGrantRun> run = Cancel(id, "", "system", "the campaign ended");
    if (run.ok()) {
      cancelled.push_back(id);
    } else if (run.status().code() != absl::StatusCode::kFailedPrecondition) {
      return run.status();
    }
  }
  return cancelled;
}

absl::StatusOr<std::optional<BatchGrantRun>> PgBatchGrantStore::Get(
    const std::string& campaign_id) {
  std::optional<BatchGrantRun> run;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    run.reset();
    pqxx::result r = tx.exec_params(
        std::string("SELECT ") + kRunColumns + " FROM batch_grant_runs WHERE campaign_id = $1",
        campaign_id);
    if (!r.empty()) {
      run = RunFromRow(r[0]);
      run->stuck = tx.exec_params(
                         "SELECT count(*) FROM batch_grant_items WHERE campaign_id = $1 "
                         "AND state = 'PENDING' AND reason <> ''",
                         campaign_id)[0][0]
                       .as<int64_t>();
    }
    return absl::OkStatus();
  }));
  return run;
}

absl::StatusOr<std::vector<BatchGrantFailureRow>> PgBatchGrantStore::Failures(
    const std::string& campaign_id, const std::string& after, int limit) {
  return ItemsWhere("state = 'FAILED'", campaign_id, after, limit);
}

absl::StatusOr<std::vector<BatchGrantFailureRow>> PgBatchGrantStore::ItemsWhere(
    const char* condition, const std::string& campaign_id, const std::string& after, int limit) {
  std::vector<BatchGrantFailureRow> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.clear();
    for (const auto& row : tx.exec_params(
             absl::StrCat("SELECT customer_id, reason, message, campaigns_micros(updated_at) FROM "
                          "batch_grant_items WHERE campaign_id = $1 AND ",
                          condition, " AND customer_id > $2 ORDER BY customer_id LIMIT $3"),
             campaign_id, after, limit)) {
      out.push_back({row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<std::string>(),
                     FromMicros(row[3].as<int64_t>())});
    }
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace mkt::campaigns

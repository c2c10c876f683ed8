#include "services/rewards/pg_ledger_store.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "libs/auth/crypto.h"
#include "libs/core/status.h"
#include "libs/core/text.h"
#include "libs/kafka/outbox.h"
#include "libs/log/log.h"
#include "libs/pg/arrays.h"
#include "libs/pg/prepared.h"
#include "libs/pg/reads.h"
#include "marketing/rewards/v1/benefits.pb.h"
#include "nlohmann/json.hpp"
#include "services/rewards/points_expiry.h"
#include "spdlog/spdlog.h"

namespace mkt::pg {
const MigrationSet& RewardsMigrationSet();  // embedded by mkt_embed_sql()
}  // namespace mkt::pg

namespace mkt::rewards {
namespace {

namespace cpb = ::marketing::common::v1;
using json = nlohmann::json;

// A unique violation on a transfer id means another replica stored it a moment earlier; the
// next attempt sees it and answers the batch as a replay. The first try and three retries.
constexpr int kApplyAttempts = 4;
constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 500;
constexpr char kFactType[] = "rewards.TransferPosted";
// New lots get their ids from the sequence only when written; until then they carry provisional
// ids that sort after every stored lot, in creation order, as their real ids will.
constexpr int64_t kFirstProvisionalLotId = int64_t{1} << 62;

// ------------------------------------------------------------------------------------------------
// SQL. Times cross as RFC 3339 text ($n::timestamptz in, microseconds since the epoch out);
// many rows cross as one JSON array read with jsonb_populate_recordset (the transfers of a group
// commit as parallel arrays read with unnest, which the server reads fastest), so a whole group
// commit is a handful of statements whatever the number of batches.

#define MKT_ACCOUNT_COLUMNS                                                               \
  "a.id, a.org_id, a.asset, a.asset_ref, a.owner_kind, a.owner_id, "                      \
  "a.debits_must_not_exceed_credits, a.credits_must_not_exceed_debits, a.debits_posted, " \
  "a.credits_posted, a.debits_pending, a.credits_pending, "                               \
  "(extract(epoch from a.created_at) * 1000000)::bigint"

#define MKT_TRANSFER_COLUMNS                                                                  \
  "t.id, t.debit_account_id, t.credit_account_id, d.org_id, d.asset, d.asset_ref, "           \
  "d.owner_kind, d.owner_id, c.org_id, c.asset, c.asset_ref, c.owner_kind, c.owner_id, "      \
  "t.asset, t.amount, t.code, t.state, t.pending, t.campaign_id, t.event_id, t.order_id, "    \
  "t.metadata::text, t.reverses_transfer_id, t.pending_id, t.batch_id, "                      \
  "(extract(epoch from t.created_at) * 1000000)::bigint, "                                    \
  "(extract(epoch from t.timeout_at) * 1000000)::bigint, t.reversed_amount, t.content_hash, " \
  "t.seq, t.debit_balance_after, t.credit_balance_after"

#define MKT_TRANSFER_FROM                                           \
  " FROM transfers t JOIN accounts d ON d.id = t.debit_account_id " \
  "JOIN accounts c ON c.id = t.credit_account_id "

#define MKT_LOT_COLUMNS                                                              \
  "l.id, l.account_id, l.amount, l.remaining, "                                      \
  "(extract(epoch from l.expires_at) * 1000000)::bigint, l.granted_by_transfer_id, " \
  "coalesce(l.restored_from_lot_id, 0), (extract(epoch from l.expired_at) * 1000000)::bigint"

// LATERAL: one unique-index probe per key, whatever the statistics of a young table say (a hash
// join over every account was the planner's choice while autovacuum had not analysed it yet).
// Every statement of a group commit touches a few hundred rows by key. A function scan's fixed
// estimate of 100 rows made the planner hash-join them against every account (or transfer) once
// the tables had a few thousand rows; in this transaction only index lookups are worth planning.
constexpr char kKeyLookupsOnly[] =
    "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; "
    "SET LOCAL enable_mergejoin = off";
constexpr char kSelectAccountIds[] =
    "SELECT a.id, k.ordinality FROM jsonb_populate_recordset(NULL::accounts, $1::jsonb) "
    "WITH ORDINALITY AS k JOIN accounts a ON a.org_id = k.org_id AND a.asset = k.asset "
    "AND a.asset_ref = k.asset_ref AND a.owner_kind = k.owner_kind AND a.owner_id = k.owner_id";
// In key order, so that two transactions creating the same accounts never wait on each other
// crosswise.
constexpr char kInsertAccounts[] =
    "INSERT INTO accounts (org_id, asset, asset_ref, owner_kind, owner_id, "
    "debits_must_not_exceed_credits, credits_must_not_exceed_debits, created_at) "
    "SELECT k.org_id, k.asset, k.asset_ref, k.owner_kind, k.owner_id, "
    "k.debits_must_not_exceed_credits, k.credits_must_not_exceed_debits, k.created_at "
    "FROM jsonb_populate_recordset(NULL::accounts, $1::jsonb) WITH ORDINALITY AS k "
    "ORDER BY k.ordinality "
    "ON CONFLICT (org_id, asset, asset_ref, owner_kind, owner_id) DO NOTHING RETURNING id";
// The sort sits below the row locks, so rows are locked in id order: no deadlocks between
// group commits, whichever accounts they share.
constexpr char kLockAccounts[] = "SELECT " MKT_ACCOUNT_COLUMNS
                                 " FROM accounts a WHERE a.id = ANY($1::bigint[]) "
                                 "ORDER BY a.id FOR UPDATE";
constexpr char kLockAccountsSkipLocked[] = "SELECT " MKT_ACCOUNT_COLUMNS
                                           " FROM accounts a WHERE a.id = ANY($1::bigint[]) "
                                           "ORDER BY a.id FOR UPDATE SKIP LOCKED";
constexpr char kSelectAccountByRef[] =
    "SELECT " MKT_ACCOUNT_COLUMNS
    " FROM accounts a WHERE a.org_id = $1 AND a.asset = $2 AND a.asset_ref = $3 "
    "AND a.owner_kind = $4 AND a.owner_id = $5";
constexpr char kSelectCustomerAccounts[] =
    "SELECT " MKT_ACCOUNT_COLUMNS
    " FROM accounts a WHERE a.org_id = $1 AND a.owner_kind = 1 AND a.owner_id = $2 "
    "ORDER BY a.asset, a.asset_ref";
constexpr char kUpdateAccountTotals[] =
    "UPDATE accounts a SET debits_posted = a.debits_posted + r.debits_posted, "
    "credits_posted = a.credits_posted + r.credits_posted, "
    "debits_pending = a.debits_pending + r.debits_pending, "
    "credits_pending = a.credits_pending + r.credits_pending "
    "FROM jsonb_populate_recordset(NULL::accounts, $1::jsonb) AS r WHERE a.id = r.id";
constexpr char kDeleteAccounts[] = "DELETE FROM accounts WHERE id = ANY($1::bigint[])";

// Most ids of a group commit are new: their existence is checked on the primary key alone, and
// only the ones found are read in full (with their accounts).
constexpr char kSelectExistingTransferIds[] = "SELECT id FROM transfers WHERE id = ANY($1::text[])";
constexpr char kSelectTransfersByIds[] =
    "SELECT " MKT_TRANSFER_COLUMNS MKT_TRANSFER_FROM "WHERE t.id = ANY($1::text[])";
constexpr char kSelectResolutions[] =
    "SELECT " MKT_TRANSFER_COLUMNS MKT_TRANSFER_FROM "WHERE t.pending_id = ANY($1::text[])";
constexpr char kSelectTransfer[] =
    "SELECT " MKT_TRANSFER_COLUMNS MKT_TRANSFER_FROM "WHERE t.id = $1";
constexpr char kSelectBatch[] = "SELECT " MKT_TRANSFER_COLUMNS MKT_TRANSFER_FROM
                                "WHERE t.batch_id = $1 AND t.state = 2 AND NOT t.pending "
                                "ORDER BY t.seq";
// LinkedBatch::exclusive_batch_id: a transaction-scoped advisory lock per batch id, taken before
// anything else the transaction locks and in key order, so two calls never wait crosswise. The
// two-int form keeps these keys apart from single-key locks (the migrations'); 6 is this
// decision's number, naming the class of lock. Then, in a statement of its own (read committed:
// its snapshot is taken after the lock, so it sees what the previous holder committed), what is
// stored under those batch ids (index transfers_by_batch).
constexpr char kLockBatchIds[] =
    "SELECT pg_advisory_xact_lock(6, s.k) FROM (SELECT DISTINCT hashtext(b) AS k "
    "FROM unnest($1::text[]) AS b ORDER BY 1) s";
constexpr char kSelectTransferIdsOfBatches[] =
    "SELECT batch_id, id FROM transfers WHERE batch_id = ANY($1::text[])";
// The EXPIRE transfers of the lots a credit created and of the lots restored from them (points
// put back after their lot had expired), oldest lot first. Restored lots are always younger than
// their origin, so the walk ends.
constexpr char kSelectLotExpiries[] =
    "WITH RECURSIVE g(lot_id) AS (SELECT id FROM lots WHERE granted_by_transfer_id = $1 "
    "UNION SELECT l.id FROM lots l JOIN g ON l.restored_from_lot_id = g.lot_id "
    "WHERE l.restored_from_lot_id IS NOT NULL) "
    "SELECT " MKT_TRANSFER_COLUMNS ", g.lot_id" MKT_TRANSFER_FROM
    "JOIN g ON t.id = 'expire:' || g.lot_id ORDER BY g.lot_id";
// The reservation row is locked before its accounts (the sweeper does the same); nothing that
// holds account locks ever waits for a reservation row, so the two orders cannot cross.
constexpr char kLockReservation[] =
    "SELECT debit_account_id, credit_account_id FROM transfers WHERE id = $1 AND pending "
    "FOR UPDATE";
constexpr char kLockTimedOut[] =
    "SELECT id, debit_account_id, credit_account_id FROM transfers "
    "WHERE state = 1 AND pending AND timeout_at < $1::timestamptz "
    "ORDER BY timeout_at, id LIMIT $2 FOR UPDATE SKIP LOCKED";
// Parallel arrays, one per column, read with unnest: for a group commit's transfers the server
// reads them in about two thirds of the time a JSON row set takes.
constexpr char kInsertTransfers[] =
    "INSERT INTO transfers (id, batch_id, debit_account_id, credit_account_id, asset, amount, "
    "code, state, pending, campaign_id, event_id, order_id, metadata, reverses_transfer_id, "
    "pending_id, reversed_amount, content_hash, debit_balance_after, credit_balance_after, "
    "created_at, timeout_at) "
    "SELECT u.id, u.batch_id, u.debit, u.credit, u.asset, u.amount, u.code, u.state, u.pending, "
    "u.campaign_id, u.event_id, u.order_id, u.metadata::jsonb, u.reverses, u.pending_id, "
    "u.reversed, u.hash, u.debit_after, u.credit_after, u.created_at::timestamptz, "
    "NULLIF(u.timeout_at, '')::timestamptz "
    "FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::smallint[], "
    "$6::bigint[], $7::smallint[], $8::smallint[], $9::boolean[], $10::text[], $11::text[], "
    "$12::text[], $13::text[], $14::text[], $15::text[], $16::bigint[], $17::text[], "
    "$18::bigint[], $19::bigint[], $20::text[], $21::text[]) WITH ORDINALITY AS u(id, batch_id, "
    "debit, credit, asset, amount, code, state, pending, campaign_id, event_id, order_id, "
    "metadata, reverses, pending_id, reversed, hash, debit_after, credit_after, created_at, "
    "timeout_at, ord) ORDER BY u.ord ON CONFLICT (id) DO NOTHING RETURNING 1";
constexpr char kUpdateTransfers[] =
    "UPDATE transfers t SET state = r.state, reversed_amount = t.reversed_amount + "
    "r.reversed_amount FROM jsonb_populate_recordset(NULL::transfers, $1::jsonb) AS r "
    "WHERE t.id = r.id";

constexpr char kSelectOpenLots[] = "SELECT " MKT_LOT_COLUMNS
                                   " FROM lots l WHERE l.account_id = ANY($1::bigint[]) "
                                   "AND l.remaining > 0";
constexpr char kSelectLotsByIds[] =
    "SELECT " MKT_LOT_COLUMNS " FROM lots l WHERE l.id = ANY($1::bigint[])";
constexpr char kSelectTaken[] =
    "SELECT transfer_id, lot_id, amount FROM lot_movements "
    "WHERE transfer_id = ANY($1::text[]) AND amount > 0 ORDER BY transfer_id, lot_id";
constexpr char kSelectPutBack[] =
    "SELECT r.reverses_transfer_id, m.origin_lot_id, -m.amount FROM transfers r "
    "JOIN lot_movements m ON m.transfer_id = r.id "
    "WHERE r.reverses_transfer_id = ANY($1::text[]) AND m.amount < 0";
constexpr char kNextLotIds[] =
    "SELECT nextval(pg_get_serial_sequence('lots', 'id')) FROM generate_series(1, $1)";
constexpr char kInsertLots[] =
    "INSERT INTO lots (id, account_id, amount, remaining, expires_at, granted_by_transfer_id, "
    "restored_from_lot_id, expired_at, created_at) "
    "SELECT r.id, r.account_id, r.amount, r.remaining, r.expires_at, r.granted_by_transfer_id, "
    "r.restored_from_lot_id, r.expired_at, r.created_at "
    "FROM jsonb_populate_recordset(NULL::lots, $1::jsonb) AS r ORDER BY r.id";
// The same rows with ids from the sequence, drawn in provisional-id (creation) order.
constexpr char kInsertLotsDrawingIds[] =
    "INSERT INTO lots (account_id, amount, remaining, expires_at, granted_by_transfer_id, "
    "restored_from_lot_id, expired_at, created_at) "
    "SELECT r.account_id, r.amount, r.remaining, r.expires_at, r.granted_by_transfer_id, "
    "r.restored_from_lot_id, r.expired_at, r.created_at "
    "FROM jsonb_populate_recordset(NULL::lots, $1::jsonb) AS r ORDER BY r.id";
constexpr char kUpdateLots[] =
    "UPDATE lots l SET remaining = r.remaining, expired_at = r.expired_at "
    "FROM jsonb_populate_recordset(NULL::lots, $1::jsonb) AS r WHERE l.id = r.id";
constexpr char kInsertMovements[] =
    "INSERT INTO lot_movements (transfer_id, lot_id, origin_lot_id, amount) "
    "SELECT r.transfer_id, r.lot_id, r.origin_lot_id, r.amount "
    "FROM jsonb_populate_recordset(NULL::lot_movements, $1::jsonb) AS r";
constexpr char kSelectExpiredLots[] =
    "SELECT l.id, l.account_id, a.org_id FROM lots l JOIN accounts a ON a.id = l.account_id "
    "WHERE l.remaining > 0 AND l.expires_at < $1::timestamptz "
    "ORDER BY l.expires_at, l.id LIMIT $2";
constexpr char kSelectExpiringLots[] =
    "SELECT l.id, l.remaining, (extract(epoch from l.expires_at) * 1000000)::bigint, "
    "l.granted_by_transfer_id "
    "FROM lots l JOIN accounts a ON a.id = l.account_id "
    "WHERE a.org_id = $1 AND a.owner_kind = 1 AND a.owner_id = $2 AND a.asset = 1 "
    "AND l.remaining > 0 AND l.expires_at < $3::timestamptz ORDER BY l.expires_at, l.id";

// The wallet's read: the customer's accounts, each (POINTS only) with what of its points lots
// expires from $4 (now) to before $3, and what lots past their expiry at $4 still hold because
// the expiry job has not turned them over yet, in one statement (one range of the open lots'
// index: every lot expired at $4 also expires before $3).
// Prepared: wallets are read again and again (P3).
#define MKT_WALLET_LOTS                                                                    \
  ", coalesce(x.expiring, 0), coalesce(x.expired, 0) FROM accounts a LEFT JOIN LATERAL "   \
  "(SELECT sum(l.remaining) FILTER (WHERE l.expires_at >= $4::timestamptz) AS expiring, "  \
  "sum(l.remaining) FILTER (WHERE l.expires_at < $4::timestamptz) AS expired FROM lots l " \
  "WHERE a.asset = 1 AND l.account_id = a.id AND l.remaining > 0 AND l.expires_at < "      \
  "$3::timestamptz) x ON true "
constexpr pg::Prepared kSelectWalletAccounts{
    "ledger_wallet_accounts", "SELECT " MKT_ACCOUNT_COLUMNS MKT_WALLET_LOTS
                              "WHERE a.org_id = $1 AND a.owner_kind = 1 AND a.owner_id = $2 "
                              "ORDER BY a.asset, a.asset_ref"};
// The same for several customers ($2, a text[]): wallet refreshes read in batches.
constexpr pg::Prepared kSelectWalletAccountsOf{
    "ledger_wallet_accounts_of",
    "SELECT " MKT_ACCOUNT_COLUMNS MKT_WALLET_LOTS
    "WHERE a.org_id = $1 AND a.owner_kind = 1 AND a.owner_id = ANY($2::text[]) "
    "ORDER BY a.owner_id, a.asset, a.asset_ref"};
#undef MKT_WALLET_LOTS

constexpr char kSelectHistory[] =
    "SELECT " MKT_TRANSFER_COLUMNS MKT_TRANSFER_FROM
    "WHERE (t.debit_account_id = ANY($1::bigint[]) OR t.credit_account_id = ANY($1::bigint[])) "
    "AND t.seq < $2 ORDER BY t.seq DESC LIMIT $3";
// Two index range scans merged, so that a hot account's statement does not sort its history.
constexpr char kSelectStatementLines[] =
    "WITH u AS ("
    "(SELECT seq FROM transfers WHERE debit_account_id = $1 AND seq > $2 AND state = 2 "
    "AND NOT pending AND created_at >= $3::timestamptz AND created_at < $4::timestamptz "
    "ORDER BY seq LIMIT $5) UNION ALL "
    "(SELECT seq FROM transfers WHERE credit_account_id = $1 AND seq > $2 AND state = 2 "
    "AND NOT pending AND created_at >= $3::timestamptz AND created_at < $4::timestamptz "
    "ORDER BY seq LIMIT $5)) "
    "SELECT " MKT_TRANSFER_COLUMNS MKT_TRANSFER_FROM
    "WHERE t.seq IN (SELECT seq FROM u ORDER BY seq LIMIT $5) ORDER BY t.seq";
// Every transfer row knows both accounts' posted balances after it, pending ones included.
constexpr char kBalanceBeforeTime[] =
    "SELECT bal FROM ("
    "(SELECT seq, debit_balance_after AS bal FROM transfers WHERE debit_account_id = $1 "
    "AND created_at < $2::timestamptz ORDER BY seq DESC LIMIT 1) UNION ALL "
    "(SELECT seq, credit_balance_after FROM transfers WHERE credit_account_id = $1 "
    "AND created_at < $2::timestamptz ORDER BY seq DESC LIMIT 1)) u ORDER BY seq DESC LIMIT 1";
constexpr char kBalanceAtSeq[] =
    "SELECT bal FROM ("
    "(SELECT seq, debit_balance_after AS bal FROM transfers WHERE debit_account_id = $1 "
    "AND seq <= $2 ORDER BY seq DESC LIMIT 1) UNION ALL "
    "(SELECT seq, credit_balance_after FROM transfers WHERE credit_account_id = $1 "
    "AND seq <= $2 ORDER BY seq DESC LIMIT 1)) u ORDER BY seq DESC LIMIT 1";

// ---- CheckIntegrity: each query returns the first offenders and, in its last column, how many
// there are in all.
constexpr char kCheckZeroSum[] =
    "SELECT asset, sum(credits_posted - debits_posted)::bigint, "
    "(sum(credits_pending) - sum(debits_pending))::bigint, count(*) OVER () FROM accounts "
    "GROUP BY asset HAVING sum(credits_posted - debits_posted) <> 0 "
    "OR sum(credits_pending) <> sum(debits_pending) ORDER BY asset";
constexpr char kCheckFlags[] =
    "SELECT id, credits_posted - debits_posted, credits_posted - debits_posted - debits_pending, "
    "count(*) OVER () FROM accounts "
    "WHERE (debits_must_not_exceed_credits AND (credits_posted - debits_posted < 0 "
    "OR credits_posted - debits_posted - debits_pending < 0)) "
    "OR (credits_must_not_exceed_debits AND (debits_posted - credits_posted < 0 "
    "OR debits_posted - credits_posted - credits_pending < 0)) ORDER BY id LIMIT 5";
constexpr char kCheckTotals[] =
    "WITH d AS (SELECT debit_account_id AS id, "
    "coalesce(sum(amount) FILTER (WHERE state = 2 AND NOT pending), 0) AS posted, "
    "coalesce(sum(amount) FILTER (WHERE state = 1 AND pending), 0) AS pending "
    "FROM transfers GROUP BY 1), "
    "c AS (SELECT credit_account_id AS id, "
    "coalesce(sum(amount) FILTER (WHERE state = 2 AND NOT pending), 0) AS posted, "
    "coalesce(sum(amount) FILTER (WHERE state = 1 AND pending), 0) AS pending "
    "FROM transfers GROUP BY 1) "
    "SELECT a.id, a.debits_posted, coalesce(d.posted, 0), a.credits_posted, "
    "coalesce(c.posted, 0), a.debits_pending, coalesce(d.pending, 0), a.credits_pending, "
    "coalesce(c.pending, 0), count(*) OVER () "
    "FROM accounts a LEFT JOIN d ON d.id = a.id LEFT JOIN c ON c.id = a.id "
    "WHERE a.debits_posted <> coalesce(d.posted, 0) OR a.credits_posted <> coalesce(c.posted, 0) "
    "OR a.debits_pending <> coalesce(d.pending, 0) "
    "OR a.credits_pending <> coalesce(c.pending, 0) ORDER BY a.id LIMIT 5";
constexpr char kCheckLots[] =
    "WITH l AS (SELECT account_id, sum(remaining) AS remaining FROM lots GROUP BY 1) "
    "SELECT a.id, CASE WHEN a.owner_kind = 1 AND a.asset = 1 "
    "THEN a.credits_posted - a.debits_posted - a.debits_pending ELSE 0 END, "
    "coalesce(l.remaining, 0), count(*) OVER () "
    "FROM accounts a LEFT JOIN l ON l.account_id = a.id "
    "WHERE (a.owner_kind = 1 AND a.asset = 1 AND "
    "a.credits_posted - a.debits_posted - a.debits_pending <> coalesce(l.remaining, 0)) "
    "OR (NOT (a.owner_kind = 1 AND a.asset = 1) AND l.remaining IS NOT NULL) "
    "ORDER BY a.id LIMIT 5";
// Transfers and lots name existing accounts (the store resolves every account before it writes;
// the tables carry no foreign keys to accounts since V002, so this check is the guard).
constexpr char kCheckOrphans[] =
    "WITH o AS ("
    "SELECT 'transfer ' || t.id AS what, t.debit_account_id AS account_id FROM transfers t "
    "WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = t.debit_account_id) UNION ALL "
    "SELECT 'transfer ' || t.id, t.credit_account_id FROM transfers t "
    "WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = t.credit_account_id) UNION ALL "
    "SELECT 'lot ' || l.id, l.account_id FROM lots l "
    "WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = l.account_id)) "
    "SELECT what, account_id, count(*) OVER () FROM o ORDER BY what LIMIT 5";
// The coupons that a group's batches issue (decision 017). Inserted ISSUED before the batches are
// applied, in request-id order (two groups never wait on each other crosswise); a request id that
// issued a coupon before keeps it, and its batch is left out. The coupons of batches that then
// fail are deleted again; those of the others get their issue event, applied.
constexpr char kInsertNewCoupons[] =
    "INSERT INTO coupons (id, code, issue_request_id, org_id, template_id, type, customer_id, "
    "campaign_id, state, valid_from, valid_until, issued_at, updated_at, holder_org_id) "
    "SELECT u.id, u.code, u.req, u.org, u.tpl, u.type, u.cust, u.camp, $9, u.vf, u.vu, u.ia, u.ia, "
    "u.holder FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], "
    "$6::smallint[], $7::text[], $8::text[], $10::timestamptz[], $11::timestamptz[], "
    "$12::timestamptz[], $13::text[]) "
    "AS u(id, code, req, org, tpl, type, cust, camp, vf, vu, ia, holder) "
    "ORDER BY u.req ON CONFLICT (issue_request_id) DO NOTHING RETURNING id";
constexpr char kDeleteNewCoupons[] = "DELETE FROM coupons WHERE id = ANY($1::bigint[])";
constexpr char kInsertNewCouponEvents[] =
    "INSERT INTO coupon_events (coupon_id, seq, from_state, to_state, actor, cause, at, intent, "
    "applied) SELECT u.id, 1, 0, $2, u.actor, 'issue', u.at, decode(u.intent, 'hex'), true "
    "FROM unnest($1::bigint[], $3::text[], $4::timestamptz[], $5::text[]) "
    "AS u(id, actor, at, intent)";
// Every transfer that is not a reservation (posted, posting or voiding) is a fact. Rows older
// than the relay's retention may have been deleted once sent; duplicates are wrong at any age.
constexpr char kCheckFacts[] =
    "WITH f AS (SELECT 'ledger:' || id AS event_id FROM transfers "
    "WHERE NOT pending AND recorded_at > now() - $1::interval), "
    "o AS (SELECT event_id, count(*) AS n FROM outbox WHERE topic = $2 "
    "AND event_id LIKE 'ledger:%' GROUP BY event_id), "
    "bad AS (SELECT f.event_id, coalesce(o.n, 0) AS n FROM f LEFT JOIN o USING (event_id) "
    "WHERE coalesce(o.n, 0) <> 1 UNION SELECT event_id, n FROM o WHERE n > 1) "
    "SELECT event_id, n, count(*) OVER () FROM bad ORDER BY event_id LIMIT 5";

// ------------------------------------------------------------------------------------------------
// Small conversions.

using AccountKey = std::tuple<std::string, int, std::string, int, std::string>;
// Looks an AccountKey up without copying the strings (the maps use std::less<>).
using AccountKeyView = std::tuple<std::string_view, int, std::string_view, int, std::string_view>;

AccountKeyView ViewOf(const pb::AccountRef& r) {
  return {r.org_id(), r.asset(), r.asset_ref(), r.owner_kind(), r.owner_id()};
}
AccountKeyView ViewOf(const AccountKey& k) {
  return {std::get<0>(k), std::get<1>(k), std::get<2>(k), std::get<3>(k), std::get<4>(k)};
}

AccountKey KeyOf(const pb::AccountRef& r) {
  return {r.org_id(), r.asset(), r.asset_ref(), r.owner_kind(), r.owner_id()};
}

std::string RoleId(pb::SystemRole role) {
  std::string name = pb::SystemRole_Name(role);
  if (name.rfind("ROLE_", 0) == 0) name = name.substr(5);
  return absl::AsciiStrToLower(name);
}

AccountKey SystemKey(const std::string& org_id, pb::Asset asset, pb::SystemRole role) {
  return {org_id, asset, "", pb::SYSTEM, RoleId(role)};
}

bool IsCustomerPoints(const pb::AccountRef& r) {
  return r.owner_kind() == pb::CUSTOMER && r.asset() == pb::POINTS;
}
// Budget and stock accounts exist only once funded.
bool IsFundedKind(int owner_kind) {
  return owner_kind == pb::CAMPAIGN || owner_kind == pb::TEMPLATE;
}
bool IsFlagged(int owner_kind) { return owner_kind == pb::CUSTOMER || IsFundedKind(owner_kind); }

std::string Unit(pb::Asset asset) {
  switch (asset) {
    case pb::POINTS:
      return "points";
    case pb::CASH_FEN:
    case pb::BUDGET_FEN:
      return "fen";
    case pb::LOTTERY_CHANCE:
      return "chances";
    case pb::STOCK:
      return "units";
    default:
      return "units";
  }
}

std::string Describe(const pb::AccountRef& r) {
  switch (r.owner_kind()) {
    case pb::CAMPAIGN:
      return absl::StrCat("the budget of campaign \"", r.owner_id(), "\" (org ", r.org_id(), ")");
    case pb::TEMPLATE:
      return absl::StrCat("the stock of template \"", r.owner_id(), "\" (org ", r.org_id(), ")");
    case pb::CUSTOMER:
      return absl::StrCat("the ", pb::Asset_Name(r.asset()), " account of customer \"",
                          r.owner_id(), "\" (org ", r.org_id(), ")");
    default:
      return absl::StrCat("the ", pb::Asset_Name(r.asset()), " ", r.owner_id(), " account of org ",
                          r.org_id());
  }
}

absl::Time Truncated(absl::Time t) { return absl::FromUnixMicros(absl::ToUnixMicros(t)); }

// PostgreSQL's timestamptz covers years 4713 BC..294276 AD; callers may pass infinities.
absl::Time Clamped(absl::Time t) {
  static const absl::Time kMin = absl::FromCivil(absl::CivilSecond(1, 1, 1), absl::UTCTimeZone());
  static const absl::Time kMax =
      absl::FromCivil(absl::CivilSecond(9999, 12, 31, 23, 59, 59), absl::UTCTimeZone());
  return std::clamp(t, kMin, kMax);
}

std::string PgTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", Clamped(t), absl::UTCTimeZone());
}

void SetTime(google::protobuf::Timestamp* ts, absl::Time t) {
  const int64_t micros = absl::ToUnixMicros(t);
  int64_t seconds = micros / 1000000;
  int64_t rest = micros % 1000000;
  if (rest < 0) {
    rest += 1000000;
    --seconds;
  }
  ts->set_seconds(seconds);
  ts->set_nanos(static_cast<int32_t>(rest * 1000));
}

absl::Time TimeOf(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

// JSON text by hand rather than through a DOM: it is on the path of every group commit. Text is
// valid UTF-8 (see IsCleanText), so only quotes, backslashes and control characters need escaping.
void AppendJsonQuoted(std::string& out, std::string_view value) {
  out += '"';
  size_t start = 0;
  for (size_t i = 0; i < value.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(value.data() + start, i - start);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else {
      absl::StrAppend(&out, "\\u00", absl::Hex(c, absl::kZeroPad2));
    }
    start = i + 1;
  }
  out.append(value.data() + start, value.size() - start);
  out += '"';
}

// A string map as a JSON object with sorted keys, so that equal maps store equal documents.
void AppendJsonObject(std::string& out,
                      const google::protobuf::Map<std::string, std::string>& map) {
  std::map<std::string_view, std::string_view> sorted(map.begin(), map.end());
  out += '{';
  bool first = true;
  for (const auto& [k, v] : sorted) {
    if (!first) out += ',';
    first = false;
    AppendJsonQuoted(out, k);
    out += ':';
    AppendJsonQuoted(out, v);
  }
  out += '}';
}

// Writes the JSON array of objects that a statement reads with jsonb_populate_recordset.
class JsonRows {
 public:
  JsonRows& Row() {
    out_ += out_.empty() ? "[{" : "},{";
    first_ = true;
    ++rows_;
    return *this;
  }
  JsonRows& Text(std::string_view key, std::string_view value) {
    Key(key);
    AppendQuoted(value);
    return *this;
  }
  JsonRows& Int(std::string_view key, int64_t value) {
    Key(key);
    absl::StrAppend(&out_, value);
    return *this;
  }
  JsonRows& Bool(std::string_view key, bool value) {
    Key(key);
    out_ += value ? "true" : "false";
    return *this;
  }
  JsonRows& Null(std::string_view key) {
    Key(key);
    out_ += "null";
    return *this;
  }
  JsonRows& Time(std::string_view key, absl::Time value) { return Text(key, PgTime(value)); }
  JsonRows& OptionalTime(std::string_view key, const std::optional<absl::Time>& value) {
    return value ? Time(key, *value) : Null(key);
  }
  JsonRows& TextMap(std::string_view key,
                    const google::protobuf::Map<std::string, std::string>& map) {
    Key(key);
    AppendJsonObject(out_, map);
    return *this;
  }

  int rows() const { return rows_; }
  std::string Finish() const { return out_.empty() ? "[]" : out_ + "}]"; }

 private:
  void Key(std::string_view key) {
    if (!first_) out_ += ',';
    first_ = false;
    AppendQuoted(key);
    out_ += ':';
  }
  void AppendQuoted(std::string_view value) { AppendJsonQuoted(out_, value); }

  std::string out_;
  bool first_ = true;
  int rows_ = 0;
};

std::string Deterministic(const google::protobuf::MessageLite& message) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }
  return out;
}

// The idempotency hashes: SHA-256 over a canonical form of what created the transfer (map
// entries sorted by the deterministic serialization), prefixed by what kind of request it was.
std::string SpecHash(const pb::TransferSpec& spec) {
  return auth::Sha256Hex("transfer-spec/v1\n" + Deterministic(spec));
}
std::string ResolutionHash(const std::string& pending_id, bool post) {
  return auth::Sha256Hex(absl::StrCat("resolve/v1\n", post ? "post\n" : "void\n", pending_id));
}
std::string ExpiryHash(int64_t lot_id) {
  return auth::Sha256Hex(absl::StrCat("expire/v1\n", lot_id));
}

absl::Status Exhausted(const pb::AccountRef& ref, int64_t account_id, int64_t available,
                       int64_t amount, const std::string& field) {
  const cpb::ErrorReason reason = ref.asset() == pb::BUDGET_FEN ? cpb::BUDGET_EXHAUSTED
                                  : ref.asset() == pb::STOCK    ? cpb::STOCK_EXHAUSTED
                                                                : cpb::INSUFFICIENT_BALANCE;
  return Error(absl::StatusCode::kFailedPrecondition, reason,
               absl::StrCat(Describe(ref), " (account ", account_id, ") has ", available, " ",
                            Unit(ref.asset()), " available; the transfer needs ", amount),
               field);
}

absl::Status Conflict(std::string_view message, std::string_view field) {
  return Error(absl::StatusCode::kFailedPrecondition, cpb::CONFLICT, message, field);
}

absl::Status KeyReused(const std::string& id, const std::string& field) {
  return Error(
      absl::StatusCode::kAlreadyExists, cpb::IDEMPOTENCY_KEY_REUSED,
      absl::StrCat("transfer id \"", id, "\" was already used for a different transfer or batch"),
      field);
}

// LinkedBatch::exclusive_batch_id: the batch id is taken by transfers of another request.
absl::Status BatchIdReused(const std::string& batch_id) {
  return Error(absl::StatusCode::kAlreadyExists, cpb::IDEMPOTENCY_KEY_REUSED,
               absl::StrCat("request_id \"", batch_id,
                            "\" was already used for a different request (its transfers are not "
                            "the ones this request would make); send a new request_id"),
               "request_id");
}

// ---- Rows.

struct Account {
  int64_t id = 0;
  pb::AccountRef ref;
  bool debits_must_not_exceed_credits = false;
  bool credits_must_not_exceed_debits = false;
  int64_t debits_posted = 0;
  int64_t credits_posted = 0;
  int64_t debits_pending = 0;
  int64_t credits_pending = 0;
  absl::Time created_at;

  int64_t balance() const { return credits_posted - debits_posted; }
  int64_t available() const { return balance() - debits_pending; }
  bool SameTotals(const Account& o) const {
    return debits_posted == o.debits_posted && credits_posted == o.credits_posted &&
           debits_pending == o.debits_pending && credits_pending == o.credits_pending;
  }
};

Account AccountFromRow(const pqxx::row& row) {
  Account a;
  a.id = row[0].as<int64_t>();
  a.ref.set_org_id(row[1].as<std::string>());
  a.ref.set_asset(static_cast<pb::Asset>(row[2].as<int>()));
  a.ref.set_asset_ref(row[3].as<std::string>());
  a.ref.set_owner_kind(static_cast<pb::OwnerKind>(row[4].as<int>()));
  a.ref.set_owner_id(row[5].as<std::string>());
  a.debits_must_not_exceed_credits = row[6].as<bool>();
  a.credits_must_not_exceed_debits = row[7].as<bool>();
  a.debits_posted = row[8].as<int64_t>();
  a.credits_posted = row[9].as<int64_t>();
  a.debits_pending = row[10].as<int64_t>();
  a.credits_pending = row[11].as<int64_t>();
  a.created_at = absl::FromUnixMicros(row[12].as<int64_t>());
  return a;
}

pb::Account ToProto(const Account& a) {
  pb::Account out;
  out.set_id(a.id);
  *out.mutable_ref() = a.ref;
  out.set_debits_must_not_exceed_credits(a.debits_must_not_exceed_credits);
  out.set_credits_must_not_exceed_debits(a.credits_must_not_exceed_debits);
  out.set_debits_posted(a.debits_posted);
  out.set_credits_posted(a.credits_posted);
  out.set_debits_pending(a.debits_pending);
  out.set_credits_pending(a.credits_pending);
  out.set_balance(a.balance());
  out.set_available(a.available());
  SetTime(out.mutable_created_at(), a.created_at);
  return out;
}

struct StoredTransfer {
  pb::Transfer t;
  bool pending = false;  // created as a reservation
  int64_t reversed_amount = 0;
  std::string content_hash;
  int64_t debit_balance_after = 0;
  int64_t credit_balance_after = 0;
  int64_t seq = 0;
  // Bookkeeping of this session: created here, or changed here (state, reversed amount).
  bool is_new = false;
  bool state_changed = false;
  int64_t reversed_delta = 0;
};

pb::AccountRef RefFromRow(const pqxx::row& row, int first) {
  pb::AccountRef r;
  r.set_org_id(row[first].as<std::string>());
  r.set_asset(static_cast<pb::Asset>(row[first + 1].as<int>()));
  r.set_asset_ref(row[first + 2].as<std::string>());
  r.set_owner_kind(static_cast<pb::OwnerKind>(row[first + 3].as<int>()));
  r.set_owner_id(row[first + 4].as<std::string>());
  return r;
}

StoredTransfer TransferFromRow(const pqxx::row& row) {
  StoredTransfer s;
  pb::Transfer& t = s.t;
  t.set_id(row[0].as<std::string>());
  t.set_debit_account_id(row[1].as<int64_t>());
  t.set_credit_account_id(row[2].as<int64_t>());
  *t.mutable_debit() = RefFromRow(row, 3);
  *t.mutable_credit() = RefFromRow(row, 8);
  t.set_asset(static_cast<pb::Asset>(row[13].as<int>()));
  t.set_amount(row[14].as<int64_t>());
  t.set_code(static_cast<pb::TransferCode>(row[15].as<int>()));
  t.set_state(static_cast<pb::TransferState>(row[16].as<int>()));
  s.pending = row[17].as<bool>();
  t.set_campaign_id(row[18].as<std::string>());
  t.set_event_id(row[19].as<std::string>());
  t.set_order_id(row[20].as<std::string>());
  const json metadata = json::parse(row[21].as<std::string>());
  for (auto it = metadata.begin(); it != metadata.end(); ++it) {
    (*t.mutable_metadata())[it.key()] = it.value().get<std::string>();
  }
  t.set_reverses_transfer_id(row[22].as<std::string>());
  t.set_pending_id(row[23].as<std::string>());
  t.set_batch_id(row[24].as<std::string>());
  SetTime(t.mutable_created_at(), absl::FromUnixMicros(row[25].as<int64_t>()));
  if (!row[26].is_null()) {
    SetTime(t.mutable_timeout_at(), absl::FromUnixMicros(row[26].as<int64_t>()));
  }
  s.reversed_amount = row[27].as<int64_t>();
  s.content_hash = row[28].as<std::string>();
  s.seq = row[29].as<int64_t>();
  s.debit_balance_after = row[30].as<int64_t>();
  s.credit_balance_after = row[31].as<int64_t>();
  return s;
}

// One column of a multi-row statement as a PostgreSQL array literal.
class ArrayColumn {
 public:
  void Text(std::string_view value) { pg::AppendTextArrayElement(literal_, value); }
  void Int(int64_t value) {
    if (literal_.size() > 1) literal_ += ',';
    absl::StrAppend(&literal_, value);
  }
  void Bool(bool value) { Int(value ? 1 : 0); }
  std::string Finish() const { return literal_ + "}"; }

 private:
  std::string literal_ = "{";
};

// The new transfers of a group commit, column by column (kInsertTransfers).
struct TransferColumns {
  ArrayColumn id, batch_id, debit, credit, asset, amount, code, state, pending, campaign_id,
      event_id, order_id, metadata, reverses, pending_id, reversed, hash, debit_after, credit_after,
      created_at, timeout_at;
  size_t rows = 0;

  void Add(const StoredTransfer& s) {
    const pb::Transfer& t = s.t;
    id.Text(t.id());
    batch_id.Text(t.batch_id());
    debit.Int(t.debit_account_id());
    credit.Int(t.credit_account_id());
    asset.Int(t.asset());
    amount.Int(t.amount());
    code.Int(t.code());
    state.Int(t.state());
    pending.Bool(s.pending);
    campaign_id.Text(t.campaign_id());
    event_id.Text(t.event_id());
    order_id.Text(t.order_id());
    std::string json;
    AppendJsonObject(json, t.metadata());
    metadata.Text(json);
    reverses.Text(t.reverses_transfer_id());
    pending_id.Text(t.pending_id());
    reversed.Int(s.reversed_amount);
    hash.Text(s.content_hash);
    debit_after.Int(s.debit_balance_after);
    credit_after.Int(s.credit_balance_after);
    created_at.Text(PgTime(TimeOf(t.created_at())));
    timeout_at.Text(t.has_timeout_at() ? PgTime(TimeOf(t.timeout_at())) : "");
    ++rows;
  }

  pqxx::result Insert(pqxx::work& tx) const {
    return tx.exec_params(
        kInsertTransfers, id.Finish(), batch_id.Finish(), debit.Finish(), credit.Finish(),
        asset.Finish(), amount.Finish(), code.Finish(), state.Finish(), pending.Finish(),
        campaign_id.Finish(), event_id.Finish(), order_id.Finish(), metadata.Finish(),
        reverses.Finish(), pending_id.Finish(), reversed.Finish(), hash.Finish(),
        debit_after.Finish(), credit_after.Finish(), created_at.Finish(), timeout_at.Finish());
  }
};

kafka::OutboxMessage FactOf(const pb::Transfer& t) {
  kafka::OutboxMessage m;
  m.topic = kLedgerFactsTopic;
  if (t.debit().owner_kind() == pb::CUSTOMER) {
    m.key = t.debit().owner_id();
  } else if (t.credit().owner_kind() == pb::CUSTOMER) {
    m.key = t.credit().owner_id();
  } else {
    m.key = t.batch_id();
  }
  pb::TransferPosted fact;
  *fact.mutable_transfer() = t;
  m.envelope = kafka::MakeEnvelope(kFactType, t.debit().org_id(), t.batch_id(), fact);
  // Deterministic, so a fact re-published after a relay crash is deduplicated downstream.
  m.envelope.set_event_id("ledger:" + t.id());
  *m.envelope.mutable_occurred_at() = t.created_at();
  return m;
}

struct Lot {
  int64_t id = 0;
  int64_t account_id = 0;
  int64_t amount = 0;
  int64_t remaining = 0;
  absl::Time expires_at;
  std::string granted_by;
  int64_t restored_from = 0;
  std::optional<absl::Time> expired_at;
  bool is_new = false;
  bool dirty = false;
};

Lot LotFromRow(const pqxx::row& row) {
  Lot l;
  l.id = row[0].as<int64_t>();
  l.account_id = row[1].as<int64_t>();
  l.amount = row[2].as<int64_t>();
  l.remaining = row[3].as<int64_t>();
  l.expires_at = absl::FromUnixMicros(row[4].as<int64_t>());
  l.granted_by = row[5].as<std::string>();
  l.restored_from = row[6].as<int64_t>();
  if (!row[7].is_null()) l.expired_at = absl::FromUnixMicros(row[7].as<int64_t>());
  return l;
}

struct Movement {
  std::string transfer_id;
  int64_t lot_id = 0;
  int64_t origin_lot_id = 0;
  int64_t amount = 0;  // > 0 taken, < 0 put back
};

// Refuses per batch what the service's validation should have refused already, so that one bad
// batch can never fail the statements shared with every other batch of the group.
absl::Status CheckRef(const pb::AccountRef& ref, const std::string& field) {
  if (ref.asset() == pb::ASSET_UNSPECIFIED || !pb::Asset_IsValid(ref.asset())) {
    return InvalidArgument(field + ".asset", "unknown asset");
  }
  if (ref.owner_kind() == pb::OWNER_KIND_UNSPECIFIED || !pb::OwnerKind_IsValid(ref.owner_kind())) {
    return InvalidArgument(field + ".owner_kind", "unknown owner kind");
  }
  if (ref.org_id().empty() || !IsWellFormedUtf8(ref.org_id())) {
    return InvalidArgument(field + ".org_id", "the org id must be non-empty UTF-8 text");
  }
  if (ref.owner_id().empty() || !IsWellFormedUtf8(ref.owner_id())) {
    return InvalidArgument(field + ".owner_id", "the owner id must be non-empty UTF-8 text");
  }
  if (!IsWellFormedUtf8(ref.asset_ref())) {
    return InvalidArgument(field + ".asset_ref", "the asset ref must be UTF-8 text");
  }
  return absl::OkStatus();
}

absl::Status CheckShape(const LinkedBatch& batch) {
  if (!IsWellFormedUtf8(batch.batch_id)) {
    return InvalidArgument("batch_id", "the batch id must be UTF-8 text without NUL");
  }
  if (batch.transfers.empty()) {
    return InvalidArgument("transfers", "a batch needs at least one transfer");
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < batch.transfers.size(); ++i) {
    const pb::TransferSpec& spec = batch.transfers[i];
    const std::string field = absl::StrCat("transfers[", i, "]");
    if (spec.id().empty() || !IsWellFormedUtf8(spec.id())) {
      return InvalidArgument(field + ".id", "the transfer id must be non-empty UTF-8 text");
    }
    if (!seen.insert(spec.id()).second) {
      return InvalidArgument(field + ".id", "the transfer id appears twice in the batch");
    }
    if (spec.amount() <= 0) return InvalidArgument(field + ".amount", "the amount must be > 0");
    if (spec.code() == pb::TRANSFER_CODE_UNSPECIFIED || !pb::TransferCode_IsValid(spec.code())) {
      return InvalidArgument(field + ".code", "unknown transfer code");
    }
    MKT_RETURN_IF_ERROR(CheckRef(spec.debit(), field + ".debit"));
    MKT_RETURN_IF_ERROR(CheckRef(spec.credit(), field + ".credit"));
    if (spec.debit().asset() != spec.credit().asset()) {
      return InvalidArgument(field + ".credit.asset", "debit and credit differ in asset");
    }
    if (ViewOf(spec.debit()) == ViewOf(spec.credit())) {
      return InvalidArgument(field + ".credit", "debit and credit are the same account");
    }
    for (const std::string* text :
         {&spec.campaign_id(), &spec.event_id(), &spec.order_id(), &spec.reverses_transfer_id()}) {
      if (!IsWellFormedUtf8(*text)) return InvalidArgument(field, "references must be UTF-8 text");
    }
    for (const auto& [key, value] : spec.metadata()) {
      if (!IsWellFormedUtf8(key) || !IsWellFormedUtf8(value)) {
        return InvalidArgument(field + ".metadata", "metadata must be UTF-8 text");
      }
    }
    if (spec.pending()) {
      if (spec.timeout_seconds() <= 0 || spec.timeout_seconds() > 86400) {
        return InvalidArgument(field + ".timeout_seconds",
                               "a pending transfer needs a timeout of 1 to 86400 seconds");
      }
      if (!spec.reverses_transfer_id().empty()) {
        return InvalidArgument(field + ".pending", "a reversal cannot be pending");
      }
      if (IsCustomerPoints(spec.credit())) {
        return InvalidArgument(field + ".pending",
                               "points are credited to a customer only as posted transfers");
      }
    }
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------------------------------------------
// One attempt of one write transaction: what it loaded under its locks, the in-memory
// simulation of its batches (each undone alone when it fails), and the writes of the survivors.

}  // namespace

// Committed account ids by key. Bounded: when full it starts over (the database answers misses).
class AccountIdCache {
 public:
  std::optional<int64_t> Find(const AccountKey& key) const {
    absl::MutexLock lock(&mu_);
    auto it = ids_.find(key);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }
  template <class Map>
  void Remember(const Map& ids) {
    absl::MutexLock lock(&mu_);
    if (ids_.size() + ids.size() > kMaxEntries) ids_.clear();
    for (const auto& [key, id] : ids) ids_.emplace(key, id);
  }

 private:
  // About 150 bytes an entry: a few tens of MB at most.
  static constexpr size_t kMaxEntries = 200'000;
  mutable absl::Mutex mu_;
  std::map<AccountKey, int64_t> ids_ ABSL_GUARDED_BY(mu_);
};

namespace {

class Session {
 public:
  // `account_ids` (may be null) saves the key -> id lookups of accounts seen before.
  // `look_up_new_ids`: whether the ids of the batches' own transfers are looked up before the
  // simulation (replays, reused keys) or assumed new (group commits; Apply retries with the
  // lookup when one was not).
  Session(pqxx::work& tx, absl::Time now, const AccountIdCache* account_ids = nullptr,
          bool look_up_new_ids = true)
      : tx_(tx),
        now_(Truncated(now)),
        account_ids_(account_ids),
        look_up_new_ids_(look_up_new_ids) {}

  // The accounts this session resolved that exist once it commits.
  // (org, customer) of the customer accounts whose totals this session changed.
  std::set<std::pair<std::string, std::string>> ChangedCustomers() const {
    std::set<std::pair<std::string, std::string>> out;
    for (const auto& [id, a] : accounts_) {
      if (a.ref.owner_kind() != pb::CUSTOMER) continue;
      if (auto it = initial_.find(id); it != initial_.end() && a.SameTotals(it->second)) continue;
      out.emplace(a.ref.org_id(), a.ref.owner_id());
    }
    return out;
  }

  std::map<AccountKey, int64_t> CommittedAccountIds() const {
    std::map<AccountKey, int64_t> out;
    for (const auto& [key, id] : ids_by_key_) {
      if (deleted_accounts_.count(id) == 0) out.emplace(key, id);
    }
    return out;
  }

  // ---- Loading. Everything that decides a batch is read after the account locks are held.

  // LinkedBatch::exclusive_batch_id: locks the ids of such batches among `batches` and loads the
  // transfer ids stored under them. Called first in the transaction, before any other lock.
  void ClaimExclusiveBatchIds(const std::vector<LinkedBatch>& batches) {
    std::set<std::string> batch_ids;
    for (const LinkedBatch& b : batches) {
      if (b.exclusive_batch_id) batch_ids.insert(b.batch_id);
    }
    if (batch_ids.empty()) return;
    const std::string array = pg::TextArrayLiteral(batch_ids);
    tx_.exec_params(kLockBatchIds, array);
    for (const std::string& id : batch_ids) ids_of_batch_[id];
    for (const pqxx::row& row : tx_.exec_params(kSelectTransferIdsOfBatches, array)) {
      ids_of_batch_[row[0].as<std::string>()].insert(row[1].as<std::string>());
    }
  }

  // Finds the ids of `wanted` accounts, creating those marked creatable that do not exist.
  void ResolveAccounts(const std::map<AccountKey, bool>& wanted) {
    if (wanted.empty()) return;
    std::vector<AccountKey> keys;
    for (const auto& [key, creatable] : wanted) {
      if (account_ids_ != nullptr) {
        if (std::optional<int64_t> id = account_ids_->Find(key)) {
          ids_by_key_[key] = *id;
          continue;
        }
      }
      keys.push_back(key);
    }
    if (!keys.empty()) SelectAccountIds(keys);
    std::vector<AccountKey> missing;
    JsonRows rows;
    for (const auto& [key, creatable] : wanted) {
      if (!creatable || ids_by_key_.count(key) > 0) continue;
      missing.push_back(key);
      AddKeyRow(rows, key)
          .Bool("debits_must_not_exceed_credits", IsFlagged(std::get<3>(key)))
          .Bool("credits_must_not_exceed_debits", false)
          .Time("created_at", now_);
    }
    if (missing.empty()) return;
    for (const pqxx::row& row : tx_.exec_params(kInsertAccounts, rows.Finish())) {
      created_accounts_.insert(row[0].as<int64_t>());
    }
    SelectAccountIds(missing);
  }

  // Locks the accounts in id order and loads their totals. With `skip_locked`, accounts another
  // transaction holds are left out; returns the ids locked.
  std::set<int64_t> LockAccounts(std::vector<int64_t> ids, bool skip_locked) {
    std::set<int64_t> locked;
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    if (ids.empty()) return locked;
    for (const pqxx::row& row : tx_.exec_params(
             skip_locked ? kLockAccountsSkipLocked : kLockAccounts, pg::IntArrayLiteral(ids))) {
      Account a = AccountFromRow(row);
      locked.insert(a.id);
      initial_[a.id] = a;
      accounts_[a.id] = std::move(a);
    }
    return locked;
  }

  void LoadTransfers(const std::set<std::string>& ids) {
    if (ids.empty()) return;
    std::vector<std::string> existing;
    for (const pqxx::row& row :
         tx_.exec_params(kSelectExistingTransferIds, pg::TextArrayLiteral(ids))) {
      existing.push_back(row[0].as<std::string>());
    }
    if (existing.empty()) return;
    for (const pqxx::row& row :
         tx_.exec_params(kSelectTransfersByIds, pg::TextArrayLiteral(existing))) {
      StoredTransfer s = TransferFromRow(row);
      const std::string id = s.t.id();
      transfers_.emplace(id, std::move(s));
    }
  }

  // Loads the postings/voidings of the given reservations.
  void LoadResolutionsOf(const std::set<std::string>& pending_ids) {
    if (pending_ids.empty()) return;
    for (const pqxx::row& row :
         tx_.exec_params(kSelectResolutions, pg::TextArrayLiteral(pending_ids))) {
      StoredTransfer s = TransferFromRow(row);
      resolution_of_[s.t.pending_id()] = s.t.id();
      const std::string id = s.t.id();
      transfers_.emplace(id, std::move(s));
    }
  }

  // Loads the lots with points left of customer POINTS accounts that will be debited.
  void LoadOpenLots(const std::set<int64_t>& account_ids) {
    if (account_ids.empty()) return;
    for (const pqxx::row& row :
         tx_.exec_params(kSelectOpenLots, pg::IntArrayLiteral(account_ids))) {
      AddLoadedLot(LotFromRow(row));
    }
  }

  // Loads what the given transfers (reversal targets, reservations to void) took from lots and
  // what earlier reversals already put back, with the lots concerned.
  void LoadLotHistory(const std::set<std::string>& targets) {
    std::set<std::string> sources;
    for (const std::string& id : targets) {
      auto it = transfers_.find(id);
      if (it != transfers_.end()) sources.insert(SourceOf(it->second.t));
    }
    if (sources.empty()) return;
    std::set<int64_t> lot_ids;
    for (const pqxx::row& row : tx_.exec_params(kSelectTaken, pg::TextArrayLiteral(sources))) {
      const int64_t lot_id = row[1].as<int64_t>();
      taken_[row[0].as<std::string>()].push_back({lot_id, row[2].as<int64_t>()});
      lot_ids.insert(lot_id);
    }
    for (const pqxx::row& row : tx_.exec_params(kSelectPutBack, pg::TextArrayLiteral(targets))) {
      put_back_[row[0].as<std::string>()][row[1].as<int64_t>()] += row[2].as<int64_t>();
    }
    std::vector<int64_t> unknown;
    for (int64_t id : lot_ids) {
      if (lots_.count(id) == 0) unknown.push_back(id);
    }
    if (unknown.empty()) return;
    for (const pqxx::row& row : tx_.exec_params(kSelectLotsByIds, pg::IntArrayLiteral(unknown))) {
      AddLoadedLot(LotFromRow(row));
    }
  }

  // Loads the lots that loaded restored lots came from, up the chain, so that a clawback
  // recognises a grant's points in a lot they were put back into (TakeFromLots).
  void LoadRestoredLotOrigins() {
    for (int round = 0; round < 16; ++round) {
      std::set<int64_t> unknown;
      for (const auto& [id, lot] : lots_) {
        if (lot.restored_from != 0 && lots_.count(lot.restored_from) == 0) {
          unknown.insert(lot.restored_from);
        }
      }
      if (unknown.empty()) return;
      for (const pqxx::row& row : tx_.exec_params(kSelectLotsByIds, pg::IntArrayLiteral(unknown))) {
        AddLoadedLot(LotFromRow(row));
      }
    }
  }

  // LinkedBatch::checks_expiry_reversals: loads, for every credit such a batch claws back from a
  // customer's points, the EXPIRE transfers of its lots (the query GetLotExpiries makes). Called
  // with the accounts locked: every lot of the credit (restored ones too) is in the account its
  // clawback debits, and the expiry job expires a lot only while it holds that account, so what
  // this reads cannot change before the commit. Without such a batch (every group commit of
  // grants) nothing is read.
  void LoadLotExpiriesOfClawbacks(const std::vector<LinkedBatch>& batches,
                                  const std::vector<bool>& well_formed) {
    std::set<std::string> credits;
    for (size_t b = 0; b < batches.size(); ++b) {
      if (!well_formed[b] || !batches[b].checks_expiry_reversals) continue;
      for (const pb::TransferSpec& spec : batches[b].transfers) {
        if (!spec.reverses_transfer_id().empty() && IsCustomerPoints(spec.debit())) {
          credits.insert(spec.reverses_transfer_id());
        }
      }
    }
    for (const std::string& credit : credits) {
      std::vector<std::string>& expiries = lot_expiries_[credit];
      for (const pqxx::row& row : tx_.exec_params(kSelectLotExpiries, credit)) {
        StoredTransfer s = TransferFromRow(row);
        const std::string id = s.t.id();
        expiries.push_back(id);
        transfers_.emplace(id, std::move(s));  // one this session loaded already stays as it is
      }
    }
  }

  // The id of an account resolved by ResolveAccounts, locked or not.
  std::optional<int64_t> ResolvedIdOf(const AccountKeyView& key) const {
    auto it = ids_by_key_.find(key);
    if (it == ids_by_key_.end()) return std::nullopt;
    return it->second;
  }

  // The id of a resolved account this session holds locked.
  std::optional<int64_t> AccountIdOf(const AccountKeyView& key) const {
    auto it = ids_by_key_.find(key);
    if (it == ids_by_key_.end() || accounts_.count(it->second) == 0) return std::nullopt;
    return it->second;
  }

  // ---- Simulation.

  // Applies the batches of one Apply call in order; their results, in order.
  std::vector<BatchResult> ApplyBatches(const std::vector<LinkedBatch>& batches) {
    std::vector<BatchResult> results(batches.size(), AppliedBatch{});
    std::vector<bool> well_formed(batches.size(), false);
    std::map<AccountKey, bool> wanted;  // -> may be created
    std::set<std::string> transfer_ids;
    for (size_t b = 0; b < batches.size(); ++b) {
      absl::Status shape = CheckShape(batches[b]);
      if (!shape.ok()) {
        results[b] = shape;
        continue;
      }
      well_formed[b] = true;
      for (const pb::TransferSpec& spec : batches[b].transfers) {
        wanted[KeyOf(spec.debit())] |= !IsFundedKind(spec.debit().owner_kind());
        wanted[KeyOf(spec.credit())] |=
            !IsFundedKind(spec.credit().owner_kind()) || spec.code() == pb::FUND;
        // New ids are assumed new (Write's insert proves it); only a retry looks them up. An
        // exclusive batch's are looked up anyway: its batch id was read already, and a replay
        // is then answered without a retry.
        if (look_up_new_ids_ || batches[b].exclusive_batch_id) transfer_ids.insert(spec.id());
        if (!spec.reverses_transfer_id().empty()) transfer_ids.insert(spec.reverses_transfer_id());
      }
    }
    ResolveAccounts(wanted);
    std::vector<int64_t> account_ids;
    for (const auto& [key, id] : ids_by_key_) account_ids.push_back(id);
    LockAccounts(account_ids, /*skip_locked=*/false);
    LoadTransfers(transfer_ids);
    std::set<int64_t> debited_points;
    std::set<std::string> reversed_to_customer_points;
    bool claws_back_points = false;  // a reversal takes points back from a customer
    for (size_t b = 0; b < batches.size(); ++b) {
      if (!well_formed[b]) continue;
      for (const pb::TransferSpec& spec : batches[b].transfers) {
        if (IsCustomerPoints(spec.debit())) {
          if (auto id = AccountIdOf(ViewOf(spec.debit()))) debited_points.insert(*id);
          claws_back_points = claws_back_points || !spec.reverses_transfer_id().empty();
        }
        if (IsCustomerPoints(spec.credit()) && !spec.reverses_transfer_id().empty()) {
          reversed_to_customer_points.insert(spec.reverses_transfer_id());
        }
      }
    }
    LoadOpenLots(debited_points);
    LoadLotHistory(reversed_to_customer_points);
    if (claws_back_points) LoadRestoredLotOrigins();
    LoadLotExpiriesOfClawbacks(batches, well_formed);
    for (size_t b = 0; b < batches.size(); ++b) {
      if (well_formed[b]) results[b] = ApplyBatch(batches[b]);
    }
    if (!look_up_new_ids_) RefuseOnlyWhatWasNeverStored(batches, well_formed, results);
    return results;
  }

  // Without the lookup of its own ids a refused batch may be a replay of one that succeeded
  // before (its stock since gone, say): it must answer with what was stored, so its ids are
  // checked, and any found sends the call back to Apply's retry with lookups.
  void RefuseOnlyWhatWasNeverStored(const std::vector<LinkedBatch>& batches,
                                    const std::vector<bool>& well_formed,
                                    const std::vector<BatchResult>& results) {
    std::set<std::string> refused_ids;
    for (size_t b = 0; b < batches.size(); ++b) {
      // An exclusive batch's ids were looked up (ApplyBatches): its refusal stands.
      if (!well_formed[b] || results[b].ok() || batches[b].exclusive_batch_id) continue;
      for (const pb::TransferSpec& spec : batches[b].transfers) refused_ids.insert(spec.id());
    }
    if (refused_ids.empty()) return;
    const pqxx::result found =
        tx_.exec_params(kSelectExistingTransferIds, pg::TextArrayLiteral(refused_ids));
    if (!found.empty()) {
      throw pqxx::unique_violation(
          absl::StrCat(found.size(), " transfer id(s) of refused batches already stored"), "",
          "23505");
    }
  }

  // Posts or voids reservation `pending_id` with a new transfer `id`; `created` tells whether a
  // transfer was written (false for a replay or an earlier resolution the same way).
  absl::StatusOr<pb::Transfer> Resolve(const std::string& id, const std::string& pending_id,
                                       bool post, bool* created) {
    *created = false;
    const std::string hash = ResolutionHash(pending_id, post);
    if (auto it = transfers_.find(id); it != transfers_.end()) {
      if (it->second.content_hash == hash) return it->second.t;
      return KeyReused(id, "id");
    }
    auto found = transfers_.find(pending_id);
    if (found == transfers_.end()) {
      return Error(absl::StatusCode::kNotFound, cpb::NOT_FOUND,
                   absl::StrCat("no pending transfer \"", pending_id, "\""), "pending_id");
    }
    const StoredTransfer& p = found->second;
    if (!p.pending) {
      return Conflict(absl::StrCat("transfer \"", pending_id, "\" is not a pending transfer"),
                      "pending_id");
    }
    const pb::TransferState wanted = post ? pb::POSTED : pb::VOIDED;
    if (p.t.state() != pb::PENDING) {
      auto resolution = resolution_of_.find(pending_id);
      if (p.t.state() == wanted && resolution != resolution_of_.end()) {
        return transfers_.at(resolution->second).t;
      }
      return Conflict(absl::StrCat("pending transfer \"", pending_id, "\" was already ",
                                   p.t.state() == pb::POSTED ? "posted" : "voided",
                                   resolution != resolution_of_.end()
                                       ? absl::StrCat(" by \"", resolution->second, "\"")
                                       : ""),
                      "pending_id");
    }
    if (post && p.t.has_timeout_at() && now_ >= TimeOf(p.t.timeout_at())) {
      return Conflict(
          absl::StrCat("pending transfer \"", pending_id, "\" timed out at ",
                       absl::FormatTime(TimeOf(p.t.timeout_at())), "; it can only be voided"),
          "pending_id");
    }
    const int64_t debit_id = p.t.debit_account_id();
    const int64_t credit_id = p.t.credit_account_id();
    if (accounts_.count(debit_id) == 0 || accounts_.count(credit_id) == 0) {
      return Internal("the accounts of the pending transfer are not locked");
    }
    const int64_t amount = p.t.amount();
    if (!post && IsCustomerPoints(accounts_.at(debit_id).ref)) {
      MKT_RETURN_IF_ERROR(PutBack(id, p.t, debit_id, amount, "pending_id"));
    }
    Account& d = MutableAccount(debit_id);
    Account& c = MutableAccount(credit_id);
    d.debits_pending -= amount;
    c.credits_pending -= amount;
    if (post) {
      d.debits_posted += amount;
      c.credits_posted += amount;
    }
    StoredTransfer& reservation = MutableTransfer(pending_id);
    reservation.t.set_state(wanted);
    reservation.state_changed = true;

    StoredTransfer s;
    s.t = reservation.t;
    s.t.set_id(id);
    s.t.set_state(wanted);
    s.t.set_pending_id(pending_id);
    s.t.set_batch_id(id);
    s.t.clear_timeout_at();
    SetTime(s.t.mutable_created_at(), now_);
    s.content_hash = hash;
    s.debit_balance_after = d.balance();
    s.credit_balance_after = c.balance();
    pb::Transfer out = s.t;
    AddTransfer(std::move(s));
    resolution_of_[pending_id] = id;
    undo_.push_back([this, pending_id] { resolution_of_.erase(pending_id); });
    *created = true;
    return out;
  }

  // Turns what is left of lot `lot_id` into an EXPIRE transfer if it expired before `as_of`;
  // returns the points expired (0 when there was nothing to do).
  absl::StatusOr<int64_t> ExpireLot(int64_t lot_id, absl::Time as_of) {
    auto it = lots_.find(lot_id);
    if (it == lots_.end() || it->second.remaining <= 0 || it->second.expires_at >= as_of) return 0;
    const std::string id = absl::StrCat("expire:", lot_id);
    if (transfers_.count(id) > 0) return 0;
    const Lot& lot = it->second;
    auto account = accounts_.find(lot.account_id);
    if (account == accounts_.end()) return 0;  // another transaction holds it; next run
    const std::optional<int64_t> expiry_id =
        AccountIdOf(ViewOf(SystemKey(account->second.ref.org_id(), pb::POINTS, pb::ROLE_EXPIRY)));
    if (!expiry_id) return Internal("the org's points expiry account is not locked");
    const int64_t amount = lot.remaining;
    if (account->second.available() < amount) {
      return Conflict(
          absl::StrCat("lot ", lot_id, " holds ", amount, " points but account ", lot.account_id,
                       " has only ", account->second.available(), " available; run CheckIntegrity"),
          "lot");
    }
    Lot& expired = MutableLot(lot_id);
    expired.remaining = 0;
    expired.expired_at = now_;
    expired.dirty = true;
    AddMovement(id, lot_id, lot_id, amount);
    Account& d = MutableAccount(lot.account_id);
    Account& c = MutableAccount(*expiry_id);
    d.debits_posted += amount;
    c.credits_posted += amount;
    StoredTransfer s;
    s.t.set_id(id);
    s.t.set_debit_account_id(d.id);
    s.t.set_credit_account_id(c.id);
    *s.t.mutable_debit() = d.ref;
    *s.t.mutable_credit() = c.ref;
    s.t.set_asset(pb::POINTS);
    s.t.set_amount(amount);
    s.t.set_code(pb::EXPIRE);
    s.t.set_state(pb::POSTED);
    s.t.set_batch_id(id);
    SetTime(s.t.mutable_created_at(), now_);
    s.content_hash = ExpiryHash(lot_id);
    s.debit_balance_after = d.balance();
    s.credit_balance_after = c.balance();
    AddTransfer(std::move(s));
    return amount;
  }

  // ---- Batches: everything a batch changes is undone when one of its transfers fails.

  struct Mark {
    size_t undo;
    size_t transfers;
    size_t movements;
    int64_t next_lot;
  };
  Mark Begin() const {
    return {undo_.size(), new_transfer_ids_.size(), movements_.size(), next_provisional_lot_};
  }
  void Rollback(const Mark& mark) {
    while (undo_.size() > mark.undo) {
      undo_.back()();
      undo_.pop_back();
    }
    while (new_transfer_ids_.size() > mark.transfers) {
      transfers_.erase(new_transfer_ids_.back());
      new_transfer_ids_.pop_back();
    }
    movements_.resize(mark.movements);
    next_provisional_lot_ = mark.next_lot;
  }
  void Commit() { undo_.clear(); }

  // ---- Writing: a handful of multi-row statements for everything the session did.
  void Write() {
    std::map<int64_t, int64_t> real_lot_ids;  // provisional -> from the sequence
    std::vector<int64_t> provisional;
    // Only a new lot that another row names (a movement, a restored lot) needs its real id
    // before it is written; otherwise the insert draws them, in creation order (a grant's case).
    bool new_lot_named = false;
    for (const auto& [id, lot] : lots_) {
      if (lot.is_new) provisional.push_back(id);
      new_lot_named = new_lot_named || lot.restored_from >= kFirstProvisionalLotId;
    }
    for (const Movement& m : movements_) {
      new_lot_named = new_lot_named || m.lot_id >= kFirstProvisionalLotId ||
                      m.origin_lot_id >= kFirstProvisionalLotId;
    }
    if (new_lot_named) {
      std::vector<int64_t> ids;
      for (const pqxx::row& row :
           tx_.exec_params(kNextLotIds, static_cast<int>(provisional.size()))) {
        ids.push_back(row[0].as<int64_t>());
      }
      std::sort(ids.begin(), ids.end());
      for (size_t i = 0; i < provisional.size() && i < ids.size(); ++i) {
        real_lot_ids[provisional[i]] = ids[i];
      }
    }
    auto lot_id = [&](int64_t id) {
      auto it = real_lot_ids.find(id);
      return it == real_lot_ids.end() ? id : it->second;
    };

    if (!new_transfer_ids_.empty()) {
      TransferColumns columns;
      for (const std::string& id : new_transfer_ids_) columns.Add(transfers_.at(id));
      const pqxx::result inserted = columns.Insert(tx_);
      if (inserted.size() != new_transfer_ids_.size()) {
        // An id assumed new was stored already (a replay, or another replica a moment ago):
        // treated like the unique violation it would have been, the call is retried with lookups.
        throw pqxx::unique_violation(absl::StrCat(new_transfer_ids_.size() - inserted.size(),
                                                  " transfer id(s) already stored"),
                                     "", "23505");
      }
    }

    JsonRows deltas;
    for (const auto& [id, a] : accounts_) {
      const Account& before = initial_.at(id);
      if (a.SameTotals(before)) continue;
      deltas.Row()
          .Int("id", id)
          .Int("debits_posted", a.debits_posted - before.debits_posted)
          .Int("credits_posted", a.credits_posted - before.credits_posted)
          .Int("debits_pending", a.debits_pending - before.debits_pending)
          .Int("credits_pending", a.credits_pending - before.credits_pending);
    }
    if (deltas.rows() > 0) tx_.exec_params(kUpdateAccountTotals, deltas.Finish());

    JsonRows new_lots;
    JsonRows changed_lots;
    for (const auto& [id, lot] : lots_) {
      if (lot.is_new) {
        new_lots.Row()
            .Int("id", lot_id(id))
            .Int("account_id", lot.account_id)
            .Int("amount", lot.amount)
            .Int("remaining", lot.remaining)
            .Time("expires_at", lot.expires_at)
            .Text("granted_by_transfer_id", lot.granted_by)
            .OptionalTime("expired_at", lot.expired_at)
            .Time("created_at", now_);
        if (lot.restored_from != 0) {
          new_lots.Int("restored_from_lot_id", lot_id(lot.restored_from));
        } else {
          new_lots.Null("restored_from_lot_id");
        }
      } else if (lot.dirty) {
        changed_lots.Row()
            .Int("id", id)
            .Int("remaining", lot.remaining)
            .OptionalTime("expired_at", lot.expired_at);
      }
    }
    if (new_lots.rows() > 0) {
      tx_.exec_params(new_lot_named ? kInsertLots : kInsertLotsDrawingIds, new_lots.Finish());
    }
    if (changed_lots.rows() > 0) tx_.exec_params(kUpdateLots, changed_lots.Finish());

    std::map<std::pair<std::string, int64_t>, std::pair<int64_t, int64_t>> movements;
    for (const Movement& m : movements_) {
      auto& [origin, amount] = movements[{m.transfer_id, lot_id(m.lot_id)}];
      origin = lot_id(m.origin_lot_id);
      amount += m.amount;
    }
    JsonRows movement_rows;
    for (const auto& [key, value] : movements) {
      if (value.second == 0) continue;
      movement_rows.Row()
          .Text("transfer_id", key.first)
          .Int("lot_id", key.second)
          .Int("origin_lot_id", value.first)
          .Int("amount", value.second);
    }
    if (movement_rows.rows() > 0) tx_.exec_params(kInsertMovements, movement_rows.Finish());

    JsonRows changed_transfers;
    for (const auto& [id, s] : transfers_) {
      if (s.is_new || (!s.state_changed && s.reversed_delta == 0)) continue;
      changed_transfers.Row()
          .Text("id", id)
          .Int("state", s.t.state())
          .Int("reversed_amount", s.reversed_delta);
    }
    if (changed_transfers.rows() > 0) {
      tx_.exec_params(kUpdateTransfers, changed_transfers.Finish());
    }

    std::vector<kafka::OutboxMessage> facts;
    for (const std::string& id : new_transfer_ids_) {
      const StoredTransfer& s = transfers_.at(id);
      if (!s.pending) facts.push_back(FactOf(s.t));
    }
    kafka::AppendManyToOutbox(tx_, facts);

    // A budget or stock account created for a FUND whose batch then failed never existed.
    std::vector<int64_t> unfunded;
    for (int64_t id : created_accounts_) {
      auto it = accounts_.find(id);
      if (it != accounts_.end() && IsFundedKind(it->second.ref.owner_kind()) &&
          funded_.count(id) == 0) {
        unfunded.push_back(id);
      }
    }
    if (!unfunded.empty()) tx_.exec_params(kDeleteAccounts, pg::IntArrayLiteral(unfunded));
    deleted_accounts_.insert(unfunded.begin(), unfunded.end());
  }

 private:
  static JsonRows& AddKeyRow(JsonRows& rows, const AccountKey& key) {
    return rows.Row()
        .Text("org_id", std::get<0>(key))
        .Int("asset", std::get<1>(key))
        .Text("asset_ref", std::get<2>(key))
        .Int("owner_kind", std::get<3>(key))
        .Text("owner_id", std::get<4>(key));
  }

  void SelectAccountIds(const std::vector<AccountKey>& keys) {
    JsonRows rows;
    for (const AccountKey& key : keys) AddKeyRow(rows, key);
    for (const pqxx::row& row : tx_.exec_params(kSelectAccountIds, rows.Finish())) {
      const auto ordinal = row[1].as<int64_t>();
      if (ordinal >= 1 && ordinal <= static_cast<int64_t>(keys.size())) {
        ids_by_key_[keys[ordinal - 1]] = row[0].as<int64_t>();
      }
    }
  }

  void AddLoadedLot(Lot lot) {
    if (lots_.count(lot.id) > 0) return;
    lots_by_account_[lot.account_id].push_back(lot.id);
    const int64_t id = lot.id;
    lots_.emplace(id, std::move(lot));
  }

  // The transfer whose lot movements a reversal or void of `t` puts back: a posting's
  // reservation took the lots.
  static std::string SourceOf(const pb::Transfer& t) {
    return t.pending_id().empty() ? t.id() : t.pending_id();
  }

  Account& MutableAccount(int64_t id) {
    Account& a = accounts_.at(id);
    undo_.push_back([this, id, copy = a] { accounts_[id] = copy; });
    return a;
  }
  Lot& MutableLot(int64_t id) {
    Lot& l = lots_.at(id);
    undo_.push_back([this, id, copy = l] { lots_[id] = copy; });
    return l;
  }
  StoredTransfer& MutableTransfer(const std::string& id) {
    StoredTransfer& s = transfers_.at(id);
    undo_.push_back([this, id, copy = s] { transfers_[id] = copy; });
    return s;
  }
  void AddTransfer(StoredTransfer s) {
    s.is_new = true;
    const std::string id = s.t.id();
    transfers_[id] = std::move(s);
    new_transfer_ids_.push_back(id);
  }
  void AddMovement(const std::string& transfer_id, int64_t lot_id, int64_t origin, int64_t amount) {
    movements_.push_back({transfer_id, lot_id, origin, amount});
    if (amount > 0) {
      taken_[transfer_id].push_back({lot_id, amount});
      undo_.push_back([this, transfer_id] {
        auto& list = taken_[transfer_id];
        list.pop_back();
        if (list.empty()) taken_.erase(transfer_id);
      });
    }
  }
  int64_t NewLot(int64_t account_id, int64_t amount, absl::Time expires_at,
                 const std::string& granted_by, int64_t restored_from) {
    const int64_t id = next_provisional_lot_++;
    Lot lot;
    lot.id = id;
    lot.account_id = account_id;
    lot.amount = amount;
    lot.remaining = amount;
    lot.expires_at = expires_at;
    lot.granted_by = granted_by;
    lot.restored_from = restored_from;
    lot.is_new = true;
    lots_.emplace(id, std::move(lot));
    lots_by_account_[account_id].push_back(id);
    undo_.push_back([this, id, account_id] {
      lots_.erase(id);
      lots_by_account_[account_id].pop_back();
    });
    return id;
  }

  // The transfer that created the lot `lot` holds points of: its own creator, or for a restored
  // lot (points put back after their lot expired) that of the lot they came from.
  const std::string& OriginalGrantOf(const Lot& lot) const {
    const Lot* l = &lot;
    while (l->restored_from != 0) {
      auto it = lots_.find(l->restored_from);
      if (it == lots_.end()) break;
      l = &it->second;
    }
    return l->granted_by;
  }

  // Takes `amount` from the account's lots: first from those holding points `preferred` (a
  // reversed grant) created, then soonest-expiring first, ties by lot id. A lot past its expiry
  // (expires_at before this transaction's time: the expiry job's rule) is not taken even while
  // the job has not turned it over yet, so that nobody spends expired points; only a clawback of
  // the grant that brought it takes it, as it would take them back from EXPIRY once the job had
  // run (decision 006). The account's totals still count such points until then, so this, not
  // the totals' check, refuses a spend they would have covered: INSUFFICIENT_BALANCE.
  absl::Status TakeFromLots(const std::string& transfer_id, int64_t account_id, int64_t amount,
                            const std::string& preferred_grant, const std::string& field) {
    std::vector<const Lot*> open;
    int64_t expired = 0;
    for (int64_t id : lots_by_account_[account_id]) {
      const Lot& lot = lots_.at(id);
      if (lot.remaining <= 0) continue;
      if (lot.expires_at < now_ &&
          (preferred_grant.empty() || OriginalGrantOf(lot) != preferred_grant)) {
        expired += lot.remaining;
        continue;
      }
      open.push_back(&lot);
    }
    auto order_key = [&](const Lot* lot) {
      const bool preferred = !preferred_grant.empty() && OriginalGrantOf(*lot) == preferred_grant;
      return std::make_tuple(!preferred, lot->expires_at, lot->id);
    };
    std::sort(open.begin(), open.end(),
              [&](const Lot* a, const Lot* b) { return order_key(a) < order_key(b); });
    std::vector<int64_t> order;
    for (const Lot* lot : open) order.push_back(lot->id);
    int64_t left = amount;
    for (int64_t id : order) {
      if (left == 0) break;
      Lot& lot = MutableLot(id);
      const int64_t n = std::min(lot.remaining, left);
      lot.remaining -= n;
      lot.dirty = true;
      AddMovement(transfer_id, id, id, n);
      left -= n;
    }
    if (left > 0) {
      return Error(
          absl::StatusCode::kFailedPrecondition, cpb::INSUFFICIENT_BALANCE,
          absl::StrCat("the points lots of account ", account_id, " hold ", amount - left,
                       " points",
                       expired > 0 ? absl::StrCat(" (and ", expired, " that have expired)") : "",
                       "; the transfer needs ", amount),
          field);
    }
    return absl::OkStatus();
  }

  // Puts `amount` points back into the lots `target` (a reversed debit, or a reservation being
  // voided) took them from, latest-expiring first; into a new lot with the same expiry when the
  // original has expired meanwhile, so that the expiry job turns them over with their own id.
  absl::Status PutBack(const std::string& transfer_id, const pb::Transfer& target,
                       int64_t account_id, int64_t amount, const std::string& field) {
    std::map<int64_t, int64_t> took;  // lot -> amount
    if (auto it = taken_.find(SourceOf(target)); it != taken_.end()) {
      for (const auto& [lot, n] : it->second) took[lot] += n;
    }
    std::map<int64_t, int64_t>& already = put_back_[target.id()];
    std::vector<int64_t> order;
    for (const auto& [lot, n] : took) {
      if (n > already[lot] && lots_.count(lot) > 0) order.push_back(lot);
    }
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return std::tie(lots_.at(b).expires_at, b) < std::tie(lots_.at(a).expires_at, a);
    });
    int64_t left = amount;
    for (int64_t origin : order) {
      if (left == 0) break;
      const int64_t n = std::min(took[origin] - already[origin], left);
      const Lot& lot = lots_.at(origin);
      if (!lot.expired_at && lot.account_id == account_id && lot.remaining + n <= lot.amount) {
        Lot& back = MutableLot(origin);
        back.remaining += n;
        back.dirty = true;
        AddMovement(transfer_id, origin, origin, -n);
      } else {
        const int64_t fresh = NewLot(account_id, n, lot.expires_at, transfer_id, origin);
        AddMovement(transfer_id, fresh, origin, -n);
      }
      const std::string target_id = target.id();
      put_back_[target_id][origin] += n;
      undo_.push_back([this, target_id, origin, n] { put_back_[target_id][origin] -= n; });
      left -= n;
    }
    if (left > 0) {
      return Conflict(
          absl::StrCat("cannot tell which lots to put ", left, " points back into: ", "transfer \"",
                       target.id(), "\" took only ", amount - left, " more from lots"),
          field);
    }
    return absl::OkStatus();
  }

  // Returns the id of a spec's account, or ACCOUNT_NOT_FOUND. A budget or stock account made
  // in this session exists for other transfers only once a FUND into it has stuck.
  absl::StatusOr<int64_t> UsableAccount(const pb::AccountRef& ref, const pb::TransferSpec& spec,
                                        bool is_credit, const std::string& field) const {
    std::optional<int64_t> id = AccountIdOf(ViewOf(ref));
    if (id && IsFundedKind(ref.owner_kind()) && created_accounts_.count(*id) > 0 &&
        funded_.count(*id) == 0 && !(is_credit && spec.code() == pb::FUND)) {
      id.reset();
    }
    if (!id) {
      return Error(
          absl::StatusCode::kNotFound, cpb::ACCOUNT_NOT_FOUND,
          absl::StrCat(Describe(ref), " does not exist",
                       IsFundedKind(ref.owner_kind()) ? " (it is created by funding it)" : ""),
          field);
    }
    return *id;
  }

  BatchResult ApplyBatch(const LinkedBatch& batch) {
    // An exclusive batch id already names other transfers (stored, or applied earlier in this
    // call): another request under the same key, even when none of its ids collides.
    std::set<std::string>* ids_of_batch = nullptr;
    if (auto it = ids_of_batch_.find(batch.batch_id); it != ids_of_batch_.end()) {
      ids_of_batch = &it->second;
    }
    if (batch.exclusive_batch_id && ids_of_batch != nullptr && !ids_of_batch->empty()) {
      std::set<std::string> ids;
      for (const pb::TransferSpec& spec : batch.transfers) ids.insert(spec.id());
      if (ids != *ids_of_batch) return BatchIdReused(batch.batch_id);
    }
    // A replay: every id stored with the same content. Any other overlap is a reused key.
    size_t existing = 0;
    for (size_t i = 0; i < batch.transfers.size(); ++i) {
      auto it = transfers_.find(batch.transfers[i].id());
      if (it == transfers_.end()) continue;
      ++existing;
      if (it->second.content_hash != SpecHash(batch.transfers[i])) {
        return KeyReused(it->first, absl::StrCat("transfers[", i, "].id"));
      }
    }
    if (existing > 0 && existing < batch.transfers.size()) {
      for (size_t i = 0; i < batch.transfers.size(); ++i) {
        if (transfers_.count(batch.transfers[i].id()) > 0) {
          return KeyReused(batch.transfers[i].id(), absl::StrCat("transfers[", i, "].id"));
        }
      }
    }
    AppliedBatch out;
    if (existing > 0) {
      if (batch.replay_needs_whole_batch && !ReplaysWholeBatch(batch)) {
        return BatchIdReused(batch.batch_id);
      }
      for (const pb::TransferSpec& spec : batch.transfers)
        out.transfers.push_back(transfers_.at(spec.id()).t);
      out.account = Report(batch);
      return out;
    }
    if (batch.checks_expiry_reversals) MKT_RETURN_IF_ERROR(CheckExpiryReversals(batch));
    const Mark mark = Begin();
    for (size_t i = 0; i < batch.transfers.size(); ++i) {
      absl::StatusOr<pb::Transfer> t =
          ApplyTransfer(batch.batch_id, batch.transfers[i], absl::StrCat("transfers[", i, "]"),
                        batch.holds_until_resolved);
      if (!t.ok()) {
        Rollback(mark);
        return t.status();
      }
      out.transfers.push_back(*std::move(t));
    }
    Commit();
    // A later copy of this batch in the same call is then a replay of what was just applied.
    if (ids_of_batch == nullptr && batch.replay_needs_whole_batch) {
      ids_of_batch = &ids_of_batch_[batch.batch_id];
    }
    if (ids_of_batch != nullptr) {
      for (const pb::TransferSpec& spec : batch.transfers) ids_of_batch->insert(spec.id());
    }
    out.account = Report(batch);
    return out;
  }

  // LinkedBatch::replay_needs_whole_batch: whether the transfers stored under the batch's id
  // are exactly its ids. Read on the first replay of that batch id in this session.
  bool ReplaysWholeBatch(const LinkedBatch& batch) {
    auto it = ids_of_batch_.find(batch.batch_id);
    if (it == ids_of_batch_.end()) {
      it = ids_of_batch_.emplace(batch.batch_id, std::set<std::string>()).first;
      for (const pqxx::row& row :
           tx_.exec_params(kSelectTransferIdsOfBatches,
                           pg::TextArrayLiteral(std::vector<std::string>{batch.batch_id}))) {
        it->second.insert(row[1].as<std::string>());
      }
    }
    std::set<std::string> ids;
    for (const pb::TransferSpec& spec : batch.transfers) ids.insert(spec.id());
    return ids == it->second;
  }

  // LinkedBatch::checks_expiry_reversals: for each credit of a customer's points the batch claws
  // back, what the batch gives back of the EXPIRE transfers of its lots must cover what of them
  // expired and was not given back yet (by earlier reversals, or earlier batches of this
  // session), up to what the batch claws back, as LedgerService::Reverse computes it from a
  // fresh read. Less means points expired after the caller read the expiries: the clawback would
  // take them from the customer's other points a second time.
  absl::Status CheckExpiryReversals(const LinkedBatch& batch) const {
    std::map<std::string, int64_t> clawed_back;  // credit -> what the batch takes back of it
    std::map<std::string, size_t> leg_of;        // credit -> its first clawback leg
    std::map<std::string, int64_t> given_back;   // other reversed transfer -> what is given back
    for (size_t i = 0; i < batch.transfers.size(); ++i) {
      const pb::TransferSpec& spec = batch.transfers[i];
      if (spec.reverses_transfer_id().empty()) continue;
      if (IsCustomerPoints(spec.debit())) {
        clawed_back[spec.reverses_transfer_id()] += spec.amount();
        leg_of.emplace(spec.reverses_transfer_id(), i);
      } else {
        given_back[spec.reverses_transfer_id()] += spec.amount();
      }
    }
    for (const auto& [credit, amount] : clawed_back) {
      auto expiries = lot_expiries_.find(credit);
      if (expiries == lot_expiries_.end()) continue;
      int64_t expired = 0;  // expired and not given back yet
      int64_t given = 0;
      for (const std::string& id : expiries->second) {
        const StoredTransfer& expiry = transfers_.at(id);
        expired += expiry.t.amount() - expiry.reversed_amount;
        if (auto it = given_back.find(id); it != given_back.end()) given += it->second;
      }
      const int64_t owed = std::min(expired, amount);
      if (given < owed) {
        return Error(absl::StatusCode::kAborted, cpb::CONFLICT,
                     absl::StrCat("points of transfer \"", credit,
                                  "\" expired while its reversal was prepared: the reversal gives ",
                                  given, " expired points back, ", owed,
                                  " are due; build it again from the expiries as they are now"),
                     absl::StrCat("transfers[", leg_of.at(credit), "]"));
      }
    }
    return absl::OkStatus();
  }

  // The batch's report account as this session holds it now (locked, so it is what commits).
  std::optional<pb::Account> Report(const LinkedBatch& batch) const {
    if (!batch.report_account) return std::nullopt;
    const std::optional<int64_t> id = AccountIdOf(ViewOf(*batch.report_account));
    if (!id) return std::nullopt;
    return ToProto(accounts_.at(*id));
  }

  // `no_timeout`: LinkedBatch::holds_until_resolved.
  absl::StatusOr<pb::Transfer> ApplyTransfer(const std::string& batch_id,
                                             const pb::TransferSpec& spec, const std::string& field,
                                             bool no_timeout) {
    MKT_ASSIGN_OR_RETURN(const int64_t debit_id,
                         UsableAccount(spec.debit(), spec, /*is_credit=*/false, field));
    MKT_ASSIGN_OR_RETURN(const int64_t credit_id,
                         UsableAccount(spec.credit(), spec, /*is_credit=*/true, field));
    const int64_t amount = spec.amount();
    const Account& debit = accounts_.at(debit_id);
    const Account& credit = accounts_.at(credit_id);

    std::string target_id;
    if (!spec.reverses_transfer_id().empty()) {
      target_id = spec.reverses_transfer_id();
      auto it = transfers_.find(target_id);
      if (it == transfers_.end()) {
        return Error(absl::StatusCode::kNotFound, cpb::NOT_FOUND,
                     absl::StrCat("there is no transfer \"", target_id, "\" to reverse"),
                     field + ".reverses_transfer_id");
      }
      const StoredTransfer& target = it->second;
      if (target.pending || target.t.state() != pb::POSTED) {
        return Conflict(
            absl::StrCat("transfer \"", target_id, "\" is ",
                         target.pending ? "a reservation (reverse its posting)" : "not posted",
                         "; only posted transfers can be reversed"),
            field + ".reverses_transfer_id");
      }
      if (target.t.debit_account_id() != credit_id || target.t.credit_account_id() != debit_id) {
        return Conflict(absl::StrCat("a reversal of \"", target_id,
                                     "\" must debit the account it credited and credit the "
                                     "account it debited"),
                        field + ".reverses_transfer_id");
      }
      const int64_t left = target.t.amount() - target.reversed_amount;
      if (amount > left) {
        return Conflict(absl::StrCat("only ", left, " of transfer \"", target_id,
                                     "\" is left to reverse; the reversal asks for ", amount),
                        field + ".amount");
      }
    }

    int64_t sum;
    if (__builtin_add_overflow(debit.debits_posted + debit.debits_pending, amount, &sum) ||
        __builtin_add_overflow(credit.credits_posted + credit.credits_pending, amount, &sum)) {
      return InvalidArgument(field + ".amount", "the amount would overflow an account's totals");
    }
    if (debit.debits_must_not_exceed_credits &&
        debit.debits_posted + debit.debits_pending + amount > debit.credits_posted) {
      return Exhausted(debit.ref, debit.id, debit.available(), amount, field);
    }
    if (credit.credits_must_not_exceed_debits &&
        credit.credits_posted + credit.credits_pending + amount > credit.debits_posted) {
      return Error(absl::StatusCode::kFailedPrecondition, cpb::INSUFFICIENT_BALANCE,
                   absl::StrCat(Describe(credit.ref), " (account ", credit.id,
                                ") may not be credited beyond its debits"),
                   field);
    }

    if (IsCustomerPoints(debit.ref)) {
      MKT_RETURN_IF_ERROR(TakeFromLots(spec.id(), debit_id, amount, target_id, field));
    }
    if (IsCustomerPoints(credit.ref)) {
      if (spec.pending()) {
        return InvalidArgument(field + ".pending",
                               "points are credited to a customer only as posted transfers");
      }
      if (!target_id.empty()) {
        MKT_RETURN_IF_ERROR(
            PutBack(spec.id(), transfers_.at(target_id).t, credit_id, amount, field));
      } else {
        absl::StatusOr<absl::Time> expires_at = ExpiryOf(spec.expiry(), now_);
        if (!expires_at.ok()) {
          return InvalidArgument(field + ".expiry", std::string(expires_at.status().message()));
        }
        NewLot(credit_id, amount, *expires_at, spec.id(), 0);
      }
    }

    Account& d = MutableAccount(debit_id);
    Account& c = MutableAccount(credit_id);
    if (spec.pending()) {
      d.debits_pending += amount;
      c.credits_pending += amount;
    } else {
      d.debits_posted += amount;
      c.credits_posted += amount;
    }
    if (!target_id.empty()) {
      StoredTransfer& target = MutableTransfer(target_id);
      target.reversed_amount += amount;
      if (!target.is_new) target.reversed_delta += amount;
    }
    if (spec.code() == pb::FUND && created_accounts_.count(credit_id) > 0 &&
        funded_.insert(credit_id).second) {
      undo_.push_back([this, credit_id] { funded_.erase(credit_id); });
    }

    StoredTransfer s;
    pb::Transfer& t = s.t;
    t.set_id(spec.id());
    t.set_debit_account_id(debit_id);
    t.set_credit_account_id(credit_id);
    *t.mutable_debit() = d.ref;
    *t.mutable_credit() = c.ref;
    t.set_asset(spec.debit().asset());
    t.set_amount(amount);
    t.set_code(spec.code());
    t.set_state(spec.pending() ? pb::PENDING : pb::POSTED);
    t.set_campaign_id(spec.campaign_id());
    t.set_event_id(spec.event_id());
    t.set_order_id(spec.order_id());
    *t.mutable_metadata() = spec.metadata();
    t.set_reverses_transfer_id(spec.reverses_transfer_id());
    t.set_batch_id(batch_id);
    SetTime(t.mutable_created_at(), now_);
    if (spec.pending() && !no_timeout) {
      SetTime(t.mutable_timeout_at(), now_ + absl::Seconds(spec.timeout_seconds()));
    }
    s.pending = spec.pending();
    s.content_hash = SpecHash(spec);
    s.debit_balance_after = d.balance();
    s.credit_balance_after = c.balance();
    pb::Transfer out = t;
    AddTransfer(std::move(s));
    return out;
  }

  pqxx::work& tx_;
  const absl::Time now_;

  std::map<AccountKey, int64_t, std::less<>> ids_by_key_;
  std::set<int64_t> created_accounts_;
  std::set<int64_t> deleted_accounts_;
  const AccountIdCache* account_ids_;
  const bool look_up_new_ids_;
  std::set<int64_t> funded_;
  std::map<int64_t, Account> accounts_;  // locked, with the session's changes
  std::map<int64_t, Account> initial_;   // as locked
  std::map<std::string, StoredTransfer> transfers_;
  // Exclusive batch id -> the transfer ids under it, stored or applied by this session.
  std::map<std::string, std::set<std::string>> ids_of_batch_;
  std::vector<std::string> new_transfer_ids_;         // in creation order
  std::map<std::string, std::string> resolution_of_;  // reservation -> posting/voiding
  std::map<int64_t, Lot> lots_;
  std::map<int64_t, std::vector<int64_t>> lots_by_account_;
  int64_t next_provisional_lot_ = kFirstProvisionalLotId;
  // transfer -> (lot, amount) it took; reversed transfer -> origin lot -> amount put back.
  std::map<std::string, std::vector<std::pair<int64_t, int64_t>>> taken_;
  std::map<std::string, std::map<int64_t, int64_t>> put_back_;
  // LinkedBatch::checks_expiry_reversals: clawed-back credit -> the ids of its lots' EXPIRE
  // transfers (loaded into transfers_), as read under the account locks.
  std::map<std::string, std::vector<std::string>> lot_expiries_;
  std::vector<Movement> movements_;
  std::vector<std::function<void()>> undo_;
};

bool IsUniqueViolation(const absl::Status& status) {
  return status.code() == absl::StatusCode::kAlreadyExists &&
         ReasonOf(status) == cpb::ALREADY_EXISTS;
}

int PageSize(int limit) {
  if (limit <= 0) return kDefaultPageSize;
  return std::min(limit, kMaxPageSize);
}

absl::StatusOr<int64_t> ParsePageToken(const std::string& token) {
  if (token.empty()) return 0;
  int64_t seq = 0;
  if (!absl::SimpleAtoi(token, &seq) || seq <= 0) {
    return InvalidArgument("page.page_token", "the page token is not one this service returned");
  }
  return seq;
}

pb::IntegrityCheck MakeCheck(std::string name, bool ok, std::string detail) {
  pb::IntegrityCheck check;
  check.set_name(std::move(name));
  check.set_ok(ok);
  check.set_detail(std::move(detail));
  return check;
}

}  // namespace

const pg::MigrationSet& RewardsMigrations() { return pg::RewardsMigrationSet(); }

PgLedgerStore::PgLedgerStore(pg::Pool& pool, const Clock& clock, absl::Duration outbox_retention)
    : pool_(pool),
      clock_(clock),
      outbox_retention_(outbox_retention),
      account_ids_(std::make_unique<AccountIdCache>()) {}

PgLedgerStore::~PgLedgerStore() = default;

absl::StatusOr<std::vector<BatchResult>> PgLedgerStore::Apply(
    const std::vector<LinkedBatch>& batches) {
  std::vector<BatchResult> results;
  if (batches.empty()) return results;
  absl::Status status;
  std::map<AccountKey, int64_t> account_ids;
  std::set<std::pair<std::string, std::string>> changed;
  for (int attempt = 1; attempt <= kApplyAttempts; ++attempt) {
    // The first attempt assumes every transfer id is new (the common case, one lookup less under
    // the hot locks); after a unique violation the next one looks them up.
    const bool look_up_new_ids = attempt > 1;
    status = pg::WithTransaction(pool_, [&](pqxx::work& tx) {
      tx.exec(kKeyLookupsOnly);
      Session session(tx, clock_.Now(), account_ids_.get(), look_up_new_ids);
      session.ClaimExclusiveBatchIds(batches);
      // Batches whose coupon's request id issued one before are left out (a replay).
      std::vector<std::optional<BatchResult>> left_out = InsertNewCoupons(tx, batches);
      std::vector<LinkedBatch> kept;
      const bool any_left_out = std::any_of(left_out.begin(), left_out.end(),
                                            [](const auto& r) { return r.has_value(); });
      if (any_left_out) {
        for (size_t i = 0; i < batches.size(); ++i) {
          if (!left_out[i]) kept.push_back(batches[i]);
        }
      }
      const std::vector<LinkedBatch>& applied = any_left_out ? kept : batches;
      std::vector<BatchResult> applied_results = session.ApplyBatches(applied);
      session.Write();
      FinishNewCoupons(tx, applied, applied_results);
      results.clear();
      for (size_t i = 0, a = 0; i < batches.size(); ++i) {
        results.push_back(left_out[i] ? *std::move(left_out[i]) : std::move(applied_results[a++]));
      }
      account_ids = session.CommittedAccountIds();
      changed = session.ChangedCustomers();
      return absl::OkStatus();
    });
    if (!IsUniqueViolation(status)) break;
  }
  MKT_RETURN_IF_ERROR(status);
  account_ids_->Remember(account_ids);
  NotifyChanged(changed);
  return results;
}

std::vector<std::optional<BatchResult>> PgLedgerStore::InsertNewCoupons(
    pqxx::work& tx, const std::vector<LinkedBatch>& batches) {
  std::vector<std::optional<BatchResult>> left_out(batches.size());
  std::vector<int64_t> ids, types;
  std::vector<std::string> codes, requests, orgs, templates, customers, campaigns, from, until,
      issued, holders;
  for (const LinkedBatch& b : batches) {
    if (!b.new_coupon) continue;
    const NewCoupon& c = *b.new_coupon;
    ids.push_back(c.id);
    codes.push_back(c.code);
    requests.push_back(c.issue_request_id);
    orgs.push_back(c.org_id);
    templates.push_back(c.template_id);
    types.push_back(c.type);
    customers.push_back(c.customer_id);
    campaigns.push_back(c.campaign_id);
    from.push_back(PgTime(c.valid_from));
    until.push_back(PgTime(c.valid_until));
    issued.push_back(PgTime(c.issued_at));
    holders.push_back(c.holder_org_id);
  }
  if (ids.empty()) return left_out;
  std::set<int64_t> inserted;
  for (const pqxx::row& r :
       tx.exec_params(kInsertNewCoupons, pg::IntArrayLiteral(ids), pg::TextArrayLiteral(codes),
                      pg::TextArrayLiteral(requests), pg::TextArrayLiteral(orgs),
                      pg::TextArrayLiteral(templates), pg::IntArrayLiteral(types),
                      pg::TextArrayLiteral(customers), pg::TextArrayLiteral(campaigns),
                      static_cast<int>(pb::COUPON_ISSUED), pg::TextArrayLiteral(from),
                      pg::TextArrayLiteral(until), pg::TextArrayLiteral(issued),
                      pg::TextArrayLiteral(holders))) {
    inserted.insert(r[0].as<int64_t>());
  }
  for (size_t i = 0; i < batches.size(); ++i) {
    if (batches[i].new_coupon && inserted.count(batches[i].new_coupon->id) == 0) {
      left_out[i] =
          Error(absl::StatusCode::kAlreadyExists, cpb::ALREADY_EXISTS,
                "request " + batches[i].new_coupon->issue_request_id + " issued a coupon already",
                "request_id");
    }
  }
  return left_out;
}

void PgLedgerStore::FinishNewCoupons(pqxx::work& tx, const std::vector<LinkedBatch>& batches,
                                     const std::vector<BatchResult>& results) {
  std::vector<int64_t> failed, issued;
  std::vector<std::string> actors, at, intents;
  for (size_t i = 0; i < batches.size(); ++i) {
    if (!batches[i].new_coupon) continue;
    const NewCoupon& c = *batches[i].new_coupon;
    if (!results[i].ok()) {
      failed.push_back(c.id);
      continue;
    }
    issued.push_back(c.id);
    actors.push_back(c.actor);
    at.push_back(PgTime(c.issued_at));
    intents.push_back(absl::BytesToHexString(c.intent));
  }
  if (!failed.empty()) tx.exec_params(kDeleteNewCoupons, pg::IntArrayLiteral(failed));
  if (!issued.empty()) {
    tx.exec_params(kInsertNewCouponEvents, pg::IntArrayLiteral(issued),
                   static_cast<int>(pb::COUPON_ISSUED), pg::TextArrayLiteral(actors),
                   pg::TextArrayLiteral(at), pg::TextArrayLiteral(intents));
  }
}

absl::StatusOr<pb::Transfer> PgLedgerStore::ResolvePending(const std::string& id,
                                                           const std::string& pending_id,
                                                           bool post) {
  if (id.empty() || !IsWellFormedUtf8(id))
    return InvalidArgument("id", "the id must be UTF-8 text");
  if (pending_id.empty() || !IsWellFormedUtf8(pending_id)) {
    return InvalidArgument("pending_id", "the pending id must be UTF-8 text");
  }
  pb::Transfer result;
  absl::Status status;
  std::set<std::pair<std::string, std::string>> changed;
  for (int attempt = 1; attempt <= kApplyAttempts; ++attempt) {
    status = pg::WithTransaction(pool_, [&](pqxx::work& tx) -> absl::Status {
      Session session(tx, clock_.Now());
      pqxx::result reservation = tx.exec_params(kLockReservation, pending_id);
      if (!reservation.empty()) {
        session.LockAccounts({reservation[0][0].as<int64_t>(), reservation[0][1].as<int64_t>()},
                             false);
      }
      session.LoadTransfers({id, pending_id});
      session.LoadResolutionsOf({pending_id});
      session.LoadLotHistory({pending_id});
      bool created = false;
      MKT_ASSIGN_OR_RETURN(result, session.Resolve(id, pending_id, post, &created));
      session.Write();
      changed = session.ChangedCustomers();
      return absl::OkStatus();
    });
    if (!IsUniqueViolation(status)) break;
  }
  MKT_RETURN_IF_ERROR(status);
  NotifyChanged(changed);
  return result;
}

absl::StatusOr<int> PgLedgerStore::VoidTimedOutPending(absl::Time now, int limit) {
  if (limit <= 0) return InvalidArgument("limit", "limit must be > 0");
  int voided = 0;
  absl::Status status;
  std::set<std::pair<std::string, std::string>> changed;
  for (int attempt = 1; attempt <= kApplyAttempts; ++attempt) {
    status = pg::WithTransaction(pool_, [&](pqxx::work& tx) {
      voided = 0;
      Session session(tx, clock_.Now());
      // Reservations another sweeper holds are left to it.
      pqxx::result due = tx.exec_params(kLockTimedOut, PgTime(now), limit);
      if (due.empty()) return absl::OkStatus();
      std::vector<std::string> pending_ids;
      std::set<std::string> ids;
      std::vector<int64_t> accounts;
      for (const pqxx::row& row : due) {
        pending_ids.push_back(row[0].as<std::string>());
        ids.insert(pending_ids.back());
        ids.insert("timeout:" + pending_ids.back());
        accounts.push_back(row[1].as<int64_t>());
        accounts.push_back(row[2].as<int64_t>());
      }
      session.LockAccounts(accounts, false);
      session.LoadTransfers(ids);
      const std::set<std::string> pending_set(pending_ids.begin(), pending_ids.end());
      session.LoadResolutionsOf(pending_set);
      session.LoadLotHistory(pending_set);
      for (const std::string& pending_id : pending_ids) {
        const auto mark = session.Begin();
        bool created = false;
        absl::StatusOr<pb::Transfer> r =
            session.Resolve("timeout:" + pending_id, pending_id, /*post=*/false, &created);
        if (!r.ok()) {
          session.Rollback(mark);
          spdlog::warn("ledger: cannot void timed-out transfer {}: {}", pending_id, r.status());
          continue;
        }
        session.Commit();
        if (created) ++voided;
      }
      session.Write();
      changed = session.ChangedCustomers();
      return absl::OkStatus();
    });
    if (!IsUniqueViolation(status)) break;
  }
  MKT_RETURN_IF_ERROR(status);
  NotifyChanged(changed);
  return voided;
}

absl::StatusOr<pb::RunExpiryResponse> PgLedgerStore::ExpireLots(absl::Time as_of, int limit) {
  if (limit <= 0) return InvalidArgument("limit", "limit must be > 0");
  pb::RunExpiryResponse response;
  absl::Status status;
  std::set<std::pair<std::string, std::string>> changed;
  for (int attempt = 1; attempt <= kApplyAttempts; ++attempt) {
    status = pg::WithTransaction(pool_, [&](pqxx::work& tx) {
      response.Clear();
      Session session(tx, clock_.Now());
      pqxx::result due = tx.exec_params(kSelectExpiredLots, PgTime(as_of), limit);
      if (due.empty()) return absl::OkStatus();
      std::vector<int64_t> lot_ids;
      std::vector<int64_t> customers;
      std::map<AccountKey, bool> expiry_accounts;
      for (const pqxx::row& row : due) {
        lot_ids.push_back(row[0].as<int64_t>());
        customers.push_back(row[1].as<int64_t>());
        expiry_accounts[SystemKey(row[2].as<std::string>(), pb::POINTS, pb::ROLE_EXPIRY)] = true;
      }
      // The expiry accounts are waited for (everyone takes them in id order); customers held by
      // another transaction (a spend, another replica's expiry run) are left to the next run, so
      // this job never waits while holding a customer.
      session.ResolveAccounts(expiry_accounts);
      std::vector<int64_t> expiry_ids;
      for (const auto& [key, unused] : expiry_accounts) {
        if (auto id = session.ResolvedIdOf(ViewOf(key))) expiry_ids.push_back(*id);
      }
      session.LockAccounts(expiry_ids, /*skip_locked=*/false);
      const std::set<int64_t> locked = session.LockAccounts(customers, /*skip_locked=*/true);
      session.LoadOpenLots(locked);
      std::set<std::string> ids;
      for (int64_t lot : lot_ids) ids.insert(absl::StrCat("expire:", lot));
      session.LoadTransfers(ids);
      for (int64_t lot : lot_ids) {
        const auto mark = session.Begin();
        absl::StatusOr<int64_t> expired = session.ExpireLot(lot, as_of);
        if (!expired.ok()) {
          session.Rollback(mark);
          spdlog::warn("ledger: cannot expire lot {}: {}", lot, expired.status());
          continue;
        }
        session.Commit();
        if (*expired > 0) {
          response.set_lots_expired(response.lots_expired() + 1);
          response.set_points_expired(response.points_expired() + *expired);
        }
      }
      session.Write();
      changed = session.ChangedCustomers();
      return absl::OkStatus();
    });
    if (!IsUniqueViolation(status)) break;
  }
  MKT_RETURN_IF_ERROR(status);
  NotifyChanged(changed);
  return response;
}

absl::StatusOr<pb::Account> PgLedgerStore::GetAccount(const pb::AccountRef& ref) {
  std::optional<pb::Account> found;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result rows =
        tx.exec_params(kSelectAccountByRef, ref.org_id(), static_cast<int>(ref.asset()),
                       ref.asset_ref(), static_cast<int>(ref.owner_kind()), ref.owner_id());
    if (!rows.empty()) found = ToProto(AccountFromRow(rows[0]));
    return absl::OkStatus();
  }));
  if (!found) {
    return Error(absl::StatusCode::kNotFound, cpb::ACCOUNT_NOT_FOUND,
                 absl::StrCat(Describe(ref), " does not exist"), "ref");
  }
  return *std::move(found);
}

// Index transfers_by_credit; FUND transfers are few beside the grants debiting the account.
// The codes are literals so that the released sum can use the partial index on RELEASE
// transfers (V008); a budget's debits are its grants, far too many to read.
static_assert(pb::FUND == 5 && pb::RELEASE == 8, "kSelectBudgetFlows names the codes by number");
constexpr char kSelectBudgetFlows[] =
    "SELECT COALESCE((SELECT sum(t.amount) FROM transfers t "
    "WHERE t.credit_account_id = a.id AND t.code = 5), 0)::bigint, "
    "COALESCE((SELECT sum(t.amount) FROM transfers t "
    "WHERE t.debit_account_id = a.id AND t.code = 8), 0)::bigint, "
    "a.credits_posted - a.debits_posted - a.debits_pending "
    "FROM accounts a "
    "WHERE a.org_id = $1 AND a.asset = $2 AND a.asset_ref = $3 AND a.owner_kind = $4 "
    "AND a.owner_id = $5";

BudgetFlows BudgetFlowsIn(pqxx::work& tx, const pb::AccountRef& ref) {
  const pqxx::result rows =
      tx.exec_params(kSelectBudgetFlows, ref.org_id(), static_cast<int>(ref.asset()),
                     ref.asset_ref(), static_cast<int>(ref.owner_kind()), ref.owner_id());
  if (rows.empty()) return {};
  return {.funded = rows[0][0].as<int64_t>(),
          .released = rows[0][1].as<int64_t>(),
          .available = rows[0][2].as<int64_t>()};
}

absl::StatusOr<BudgetFlows> PgLedgerStore::GetBudgetFlows(const pb::AccountRef& ref) {
  BudgetFlows flows;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    flows = BudgetFlowsIn(tx, ref);
    return absl::OkStatus();
  }));
  return flows;
}

absl::StatusOr<std::vector<pb::Account>> PgLedgerStore::GetCustomerAccounts(
    const std::string& org_id, const std::string& customer_id) {
  std::vector<pb::Account> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.clear();
    for (const pqxx::row& row : tx.exec_params(kSelectCustomerAccounts, org_id, customer_id)) {
      out.push_back(ToProto(AccountFromRow(row)));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<pb::ListExpiringLotsResponse> PgLedgerStore::ListExpiringLots(
    const std::string& org_id, const std::string& customer_id, absl::Time until) {
  pb::ListExpiringLotsResponse out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.Clear();
    for (const pqxx::row& row :
         tx.exec_params(kSelectExpiringLots, org_id, customer_id, PgTime(until))) {
      pb::ExpiringLot* lot = out.add_lots();
      lot->set_lot_id(row[0].as<int64_t>());
      lot->set_remaining(row[1].as<int64_t>());
      SetTime(lot->mutable_expires_at(), absl::FromUnixMicros(row[2].as<int64_t>()));
      lot->set_granted_by_transfer_id(row[3].as<std::string>());
      out.set_total(out.total() + lot->remaining());
    }
    return absl::OkStatus();
  }));
  return out;
}

void PgLedgerStore::NotifyChanged(
    const std::set<std::pair<std::string, std::string>>& customers) const {
  if (!listener_) return;
  for (const auto& [org, customer] : customers) listener_(org, customer);
}

absl::StatusOr<WalletBalances> PgLedgerStore::GetWalletBalances(const std::string& org_id,
                                                                const std::string& customer_id,
                                                                absl::Time until) {
  WalletBalances out;
  const absl::Time now = clock_.Now();  // the time a spend's lots are judged by
  MKT_RETURN_IF_ERROR(pg::WithReads(pool_, [&](pqxx::nontransaction& reads) {
    out = WalletBalances{};
    for (const pqxx::row& row : pg::ExecPrepared(reads, kSelectWalletAccounts, org_id, customer_id,
                                                 PgTime(until), PgTime(now))) {
      out.accounts.push_back(ToProto(AccountFromRow(row)));
      out.points_expiring += row[13].as<int64_t>();
      out.points_expired += row[14].as<int64_t>();
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<absl::flat_hash_map<std::string, WalletBalances>> PgLedgerStore::GetWalletBalancesOf(
    const std::string& org_id, const std::vector<std::string>& customer_ids, absl::Time until) {
  absl::flat_hash_map<std::string, WalletBalances> out;
  const std::string ids = pg::TextArrayLiteral(customer_ids);
  const absl::Time now = clock_.Now();  // the time a spend's lots are judged by
  MKT_RETURN_IF_ERROR(pg::WithReads(pool_, [&](pqxx::nontransaction& reads) {
    out.clear();
    for (const std::string& customer_id : customer_ids) out[customer_id];
    for (const pqxx::row& row : pg::ExecPrepared(reads, kSelectWalletAccountsOf, org_id, ids,
                                                 PgTime(until), PgTime(now))) {
      pb::Account account = ToProto(AccountFromRow(row));
      WalletBalances& balances = out[account.ref().owner_id()];
      balances.points_expiring += row[13].as<int64_t>();
      balances.points_expired += row[14].as<int64_t>();
      balances.accounts.push_back(std::move(account));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<pb::ListHistoryResponse> PgLedgerStore::ListHistory(const std::string& org_id,
                                                                   const std::string& customer_id,
                                                                   const std::string& page_token,
                                                                   int limit) {
  MKT_ASSIGN_OR_RETURN(const int64_t before, ParsePageToken(page_token));
  const int size = PageSize(limit);
  pb::ListHistoryResponse out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.Clear();
    std::vector<int64_t> accounts;
    for (const pqxx::row& row : tx.exec_params(kSelectCustomerAccounts, org_id, customer_id)) {
      accounts.push_back(row[0].as<int64_t>());
    }
    if (accounts.empty()) return absl::OkStatus();
    pqxx::result rows =
        tx.exec_params(kSelectHistory, pg::IntArrayLiteral(accounts),
                       before > 0 ? before : std::numeric_limits<int64_t>::max(), size + 1);
    int64_t last_seq = 0;
    for (int i = 0; i < static_cast<int>(rows.size()) && i < size; ++i) {
      StoredTransfer s = TransferFromRow(rows[i]);
      last_seq = s.seq;
      *out.add_transfers() = std::move(s.t);
    }
    if (static_cast<int>(rows.size()) > size) {
      out.mutable_page()->set_next_page_token(absl::StrCat(last_seq));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<pb::GetStatementResponse> PgLedgerStore::GetStatement(const pb::AccountRef& account,
                                                                     absl::Time from, absl::Time to,
                                                                     const std::string& page_token,
                                                                     int limit) {
  MKT_ASSIGN_OR_RETURN(const int64_t after, ParsePageToken(page_token));
  MKT_ASSIGN_OR_RETURN(const pb::Account found, GetAccount(account));
  const int size = PageSize(limit);
  pb::GetStatementResponse out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.Clear();
    const int64_t id = found.id();
    pqxx::result rows =
        tx.exec_params(kSelectStatementLines, id, after, PgTime(from), PgTime(to), size + 1);
    int64_t last_seq = 0;
    for (int i = 0; i < static_cast<int>(rows.size()) && i < size; ++i) {
      StoredTransfer s = TransferFromRow(rows[i]);
      pb::StatementLine* line = out.add_lines();
      const bool credited = s.t.credit_account_id() == id;
      line->set_delta(credited ? s.t.amount() : -s.t.amount());
      line->set_balance_after(credited ? s.credit_balance_after : s.debit_balance_after);
      last_seq = s.seq;
      *line->mutable_transfer() = std::move(s.t);
    }
    if (out.lines_size() > 0) {
      out.set_opening_balance(out.lines(0).balance_after() - out.lines(0).delta());
      out.set_closing_balance(out.lines(out.lines_size() - 1).balance_after());
    } else {
      pqxx::result balance = after > 0 ? tx.exec_params(kBalanceAtSeq, id, after)
                                       : tx.exec_params(kBalanceBeforeTime, id, PgTime(from));
      const int64_t value = balance.empty() ? 0 : balance[0][0].as<int64_t>();
      out.set_opening_balance(value);
      out.set_closing_balance(value);
    }
    if (static_cast<int>(rows.size()) > size) {
      out.mutable_page()->set_next_page_token(absl::StrCat(last_seq));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<pb::Transfer>> PgLedgerStore::GetBatch(const std::string& batch_id) {
  std::vector<pb::Transfer> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.clear();
    for (const pqxx::row& row : tx.exec_params(kSelectBatch, batch_id)) {
      out.push_back(TransferFromRow(row).t);
    }
    return absl::OkStatus();
  }));
  if (out.empty()) {
    return NotFound(absl::StrCat("batch \"", batch_id, "\" has no posted transfer"));
  }
  return out;
}

absl::StatusOr<pb::Transfer> PgLedgerStore::GetTransfer(const std::string& id) {
  std::optional<pb::Transfer> found;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    pqxx::result rows = tx.exec_params(kSelectTransfer, id);
    if (!rows.empty()) found = TransferFromRow(rows[0]).t;
    return absl::OkStatus();
  }));
  if (!found) return NotFound(absl::StrCat("there is no transfer \"", id, "\""));
  return *std::move(found);
}

absl::StatusOr<std::vector<LotExpiry>> PgLedgerStore::GetLotExpiries(
    const std::string& transfer_id) {
  std::vector<LotExpiry> out;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(pool_, [&](pqxx::work& tx) {
    out.clear();
    for (const pqxx::row& row : tx.exec_params(kSelectLotExpiries, transfer_id)) {
      StoredTransfer s = TransferFromRow(row);
      LotExpiry& e = out.emplace_back();
      e.lot_id = row[32].as<int64_t>();
      e.reversed_amount = s.reversed_amount;
      e.expiry = std::move(s.t);
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<pb::CheckIntegrityResponse> PgLedgerStore::CheckIntegrity() {
  pb::CheckIntegrityResponse out;
  // One snapshot for all six checks, so that they describe the same moment.
  pg::TxOptions options;
  options.isolation = pg::Isolation::kRepeatableRead;
  MKT_RETURN_IF_ERROR(pg::WithTransaction(
      pool_,
      [&](pqxx::work& tx) {
        out.Clear();
        auto add = [&](std::string name, const pqxx::result& rows,
                       const std::function<std::string(const pqxx::row&)>& describe) {
          if (rows.empty()) {
            *out.add_checks() = MakeCheck(std::move(name), true, "ok");
            return;
          }
          std::vector<std::string> parts;
          for (const pqxx::row& row : rows) parts.push_back(describe(row));
          const int64_t total = rows[0][rows.columns() - 1].as<int64_t>();
          *out.add_checks() =
              MakeCheck(std::move(name), false,
                        absl::StrCat(total, " offending: ", absl::StrJoin(parts, "; "),
                                     total > static_cast<int64_t>(rows.size()) ? "; ..." : ""));
        };
        add("zero_sum", tx.exec(kCheckZeroSum), [](const pqxx::row& r) {
          return absl::StrCat("asset ", pb::Asset_Name(static_cast<pb::Asset>(r[0].as<int>())),
                              ": sum of balances ", r[1].as<int64_t>(),
                              ", pending credits - pending debits ", r[2].as<int64_t>());
        });
        add("no_negative_flagged_account", tx.exec(kCheckFlags), [](const pqxx::row& r) {
          return absl::StrCat("account ", r[0].as<int64_t>(), ": balance ", r[1].as<int64_t>(),
                              ", available ", r[2].as<int64_t>());
        });
        add("totals_match_transfers", tx.exec(kCheckTotals), [](const pqxx::row& r) {
          return absl::StrCat("account ", r[0].as<int64_t>(), ": debits_posted ",
                              r[1].as<int64_t>(), " vs ", r[2].as<int64_t>(), ", credits_posted ",
                              r[3].as<int64_t>(), " vs ", r[4].as<int64_t>(), ", debits_pending ",
                              r[5].as<int64_t>(), " vs ", r[6].as<int64_t>(), ", credits_pending ",
                              r[7].as<int64_t>(), " vs ", r[8].as<int64_t>());
        });
        add("lots_match_available", tx.exec(kCheckLots), [](const pqxx::row& r) {
          return absl::StrCat("account ", r[0].as<int64_t>(), ": available ", r[1].as<int64_t>(),
                              ", lots remaining ", r[2].as<int64_t>());
        });
        add("transfers_and_lots_name_accounts", tx.exec(kCheckOrphans), [](const pqxx::row& r) {
          return absl::StrCat(r[0].as<std::string>(), " names missing account ",
                              r[1].as<int64_t>());
        });
        add("one_fact_per_posted_transfer",
            tx.exec_params(kCheckFacts,
                           absl::StrCat(absl::ToInt64Seconds(outbox_retention_), " seconds"),
                           std::string(kLedgerFactsTopic)),
            [](const pqxx::row& r) {
              return absl::StrCat(r[0].as<std::string>(), ": ", r[1].as<int64_t>(), " outbox rows");
            });
        bool ok = true;
        for (const auto& check : out.checks()) ok = ok && check.ok();
        out.set_ok(ok);
        return absl::OkStatus();
      },
      options));
  return out;
}

}  // namespace mkt::rewards

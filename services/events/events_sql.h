// The SQL of the events store, as named constants (parameterised; arrays for multi-row writes).
#pragma once

namespace mkt::events {

inline constexpr char kInsertEventTypeIfAbsent[] =
    "INSERT INTO event_types (name, definition) VALUES ($1, $2) ON CONFLICT DO NOTHING";
inline constexpr char kUpsertEventType[] =
    "INSERT INTO event_types (name, definition) VALUES ($1, $2) "
    "ON CONFLICT (name) DO UPDATE SET definition = EXCLUDED.definition, updated_at = now()";
inline constexpr char kSelectEventTypes[] = "SELECT definition FROM event_types ORDER BY name";

inline constexpr char kUpsertRule[] =
    "INSERT INTO trigger_rules (rule_id, campaign_id, revision, definition, lifecycle) "
    "VALUES ($1, $2, $3, $4, $5) "
    "ON CONFLICT (rule_id) DO UPDATE SET campaign_id = EXCLUDED.campaign_id, "
    "  revision = EXCLUDED.revision, definition = EXCLUDED.definition, "
    "  lifecycle = EXCLUDED.lifecycle, updated_at = now() "
    "WHERE trigger_rules.revision <= EXCLUDED.revision RETURNING rule_id";
// The rules written since a moment (microseconds since the epoch), and a minute before it.
inline constexpr char kSelectRulesChangedSince[] =
    "SELECT definition, lifecycle FROM trigger_rules WHERE updated_at > "
    "to_timestamp($1::bigint / 1000000.0) - interval '1 minute' ORDER BY rule_id";
// The stored definitions of rules a reversal needs that are not held in memory.
inline constexpr char kSelectRuleDefinitions[] =
    "SELECT rule_id, definition FROM trigger_rules WHERE rule_id = ANY($1::text[])";

inline constexpr char kInsertEventKeys[] =
    "INSERT INTO event_keys (event_key, customer_id, org_id, event_type, occurred_at, amount_fen) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], "
    "  $6::bigint[]) "
    "ON CONFLICT DO NOTHING RETURNING event_key";

inline constexpr char kInsertEventLog[] =
    "INSERT INTO event_log (occurred_at, event_key, customer_id, org_id, event_type, amount_fen, "
    "  product_code, attributes, envelope_id) "
    "SELECT t, k, c, o, ty, a, p, at::jsonb, env FROM unnest($1::timestamptz[], $2::text[], "
    "  $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::text[]) "
    "  AS x(t, k, c, o, ty, a, p, at, env)";

inline constexpr char kSelectContributions[] =
    "SELECT event_key, rule_id, customer_id, window_key, amount_fen, refunded_fen, cancelled "
    "FROM match_outcomes WHERE event_key = ANY($1::text[]) ORDER BY event_key, rule_id";

// Which of the originals named by reversals were applied before (known, whatever they matched).
inline constexpr char kSelectKnownEvents[] =
    "SELECT event_key FROM event_keys WHERE event_key = ANY($1::text[])";

// Reversals waiting for the events of a batch (decision 030), oldest first; locked, since the
// batch deletes them once applied.
inline constexpr char kSelectParkedReversals[] =
    "SELECT event_key, original_key, reversal, amount_fen FROM parked_reversals "
    "WHERE original_key = ANY($1::text[]) ORDER BY seq FOR UPDATE";

inline constexpr char kInsertParkedReversals[] =
    "INSERT INTO parked_reversals (event_key, original_key, reversal, amount_fen, customer_id, "
    "  org_id) "
    "SELECT k, o, r, a, c, g FROM unnest($1::text[], $2::text[], $3::smallint[], $4::bigint[], "
    "  $5::text[], $6::text[]) WITH ORDINALITY AS x(k, o, r, a, c, g, n) ORDER BY n";

inline constexpr char kDeleteParkedReversals[] =
    "DELETE FROM parked_reversals WHERE event_key = ANY($1::text[])";

// Sorted, so that two writers never lock the same rows in opposite orders.
inline constexpr char kLockAggregates[] =
    "SELECT rule_id, customer_id, window_key, event_count, amount_fen, tiers_granted "
    "FROM rule_aggregates WHERE (rule_id, customer_id, window_key) IN "
    "  (SELECT * FROM unnest($1::text[], $2::text[], $3::text[])) "
    "ORDER BY rule_id, customer_id, window_key FOR UPDATE";

inline constexpr char kSelectActiveGrants[] =
    "SELECT rule_id, customer_id, window_key, grant_id, event_key, tier FROM grants "
    "WHERE (rule_id, customer_id, window_key) IN "
    "  (SELECT * FROM unnest($1::text[], $2::text[], $3::text[])) "
    "  AND state IN ('pending', 'granted') ORDER BY seq";

// The new values are computed in memory (rules.cc ApplyMatch/ApplyReversal, saturating at the
// int64 maximum), not added up here: nothing in this statement can overflow bigint.
inline constexpr char kUpsertAggregates[] =
    "INSERT INTO rule_aggregates (rule_id, customer_id, window_key, event_count, amount_fen, "
    "  tiers_granted) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], "
    "  $6::bigint[]) "
    "ON CONFLICT (rule_id, customer_id, window_key) DO UPDATE SET "
    "  event_count = EXCLUDED.event_count, amount_fen = EXCLUDED.amount_fen, "
    "  tiers_granted = EXCLUDED.tiers_granted, updated_at = now()";

inline constexpr char kInsertOutcomes[] =
    "INSERT INTO match_outcomes (event_key, rule_id, customer_id, window_key, amount_fen, "
    "  decision) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], "
    "  $6::text[]) ON CONFLICT DO NOTHING";

inline constexpr char kUpdateOutcomes[] =
    "UPDATE match_outcomes m SET refunded_fen = x.f, cancelled = x.c "
    "FROM unnest($1::text[], $2::text[], $3::bigint[], $4::boolean[]) AS x(k, r, f, c) "
    "WHERE m.event_key = x.k AND m.rule_id = x.r";

inline constexpr char kInsertGrants[] =
    "INSERT INTO grants (grant_id, event_key, rule_id, tier, campaign_id, org_id, customer_id, "
    "  window_key, asset, quantity, budget_cost_fen, stock_template_id, stock_units, expiry_days, "
    "  state) "
    "SELECT *, 'pending' FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], "
    "  $6::text[], $7::text[], $8::text[], $9::int[], $10::bigint[], $11::bigint[], $12::text[], "
    "  $13::bigint[], $14::int[]) ON CONFLICT DO NOTHING";

inline constexpr char kRequestReversal[] =
    "UPDATE grants SET state = 'reverse_pending', next_attempt_at = now(), updated_at = now() "
    "WHERE grant_id = ANY($1::text[]) AND state IN ('pending', 'granted')";

// Among rows just read ($1: the seqs the sender found to be reversals never attempted, created
// after it started, not held), cancels the ones still in that state: a grant never sent needs no
// ledger call. Rows of an earlier process may have reached the ledger before a crash, so those are
// granted (idempotently) and then reversed instead. Only the rows read are touched: a scan of the
// whole outbox per read would cost more than the read itself under a backlog.
inline constexpr char kCancelUnsent[] =
    "UPDATE grants SET state = 'cancelled', updated_at = now() "
    "WHERE seq = ANY($1::bigint[]) AND state = 'reverse_pending' AND NOT granted "
    "  AND attempts = 0 RETURNING seq";

// Rows the sender has not seen yet (seq above its cursor $1): the hot path, an index range scan.
inline constexpr char kSelectDueAfter[] =
    "SELECT seq, grant_id, event_key, rule_id, tier, campaign_id, org_id, customer_id, asset, "
    "  quantity, budget_cost_fen, stock_template_id, stock_units, expiry_days, state, granted, "
    "  attempts, (extract(epoch FROM now() - created_at) * 1000000)::bigint, "
    "  (extract(epoch FROM now() - unfunded_since) * 1000000)::bigint "
    "FROM grants WHERE state IN ('pending', 'reverse_pending') AND next_attempt_at <= now() "
    "  AND seq > $1 ORDER BY seq LIMIT $2";

// Rows at or below the cursor ($1) that are due again and not held by the sender ($2): retries
// whose backoff ended, reversals requested after a grant, rows whose transaction committed late.
inline constexpr char kSelectDueAgain[] =
    "SELECT seq, grant_id, event_key, rule_id, tier, campaign_id, org_id, customer_id, asset, "
    "  quantity, budget_cost_fen, stock_template_id, stock_units, expiry_days, state, granted, "
    "  attempts, (extract(epoch FROM now() - created_at) * 1000000)::bigint, "
    "  (extract(epoch FROM now() - unfunded_since) * 1000000)::bigint "
    "FROM grants WHERE state IN ('pending', 'reverse_pending') AND next_attempt_at <= now() "
    "  AND seq <= $1 AND seq <> ALL($2::bigint[]) ORDER BY seq LIMIT $3";

inline constexpr char kSelectMaxGrantSeq[] = "SELECT coalesce(max(seq), 0) FROM grants";

// The aggregates a refused grant gives back to (EventStore::Finish): read before they are locked
// (kLockAggregates), then the grants read again, locked, to see which are still pending.
inline constexpr char kSelectPendingGrantWindows[] =
    "SELECT rule_id, customer_id, window_key FROM grants "
    "WHERE grant_id = ANY($1::text[]) AND state = 'pending'";
inline constexpr char kLockPendingGrants[] =
    "SELECT rule_id, customer_id, window_key, tier FROM grants "
    "WHERE grant_id = ANY($1::text[]) AND state = 'pending' ORDER BY grant_id FOR UPDATE";

// Gives back what refused grants took: $4 grants from the count of '*grants' rows, the tier bits
// $5 from window rows (each row has one or the other; the other is 0). Never below 0, never an
// overflow.
inline constexpr char kGiveBackGrants[] =
    "UPDATE rule_aggregates a SET "
    "  event_count = CASE WHEN a.event_count > x.n THEN a.event_count - x.n ELSE 0 END, "
    "  tiers_granted = a.tiers_granted & ~x.b, updated_at = now() "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) "
    "  AS x(r, c, w, n, b) "
    "WHERE a.rule_id = x.r AND a.customer_id = x.c AND a.window_key = x.w";

// A grant that succeeded while a reversal was requested stays reverse_pending (now granted), so
// the sender picks it up again and reverses it. A grant refused while pending becomes rejected
// and gives back its count and tier bit (kGiveBackGrants, same transaction).
//
// A row cancelled as "never sent" while a Grant for it was in fact in flight (a sender of another
// replica held it: `attempts` counts recorded outcomes, not calls) whose Grant then succeeded, or
// whose outcome is unknown (retry: it may have reached the ledger), goes back to reverse_pending
// and is due at once: the grant is (idempotently) granted if need be, then reversed. Left
// cancelled, the customer would keep a reward for a reversed event.
//
// A retry of a pending grant the ledger refused with ACCOUNT_NOT_FOUND (x.unfunded: its campaign's
// budget not funded yet) stamps unfunded_since once, at the first such refusal: the sender
// retries it for unfunded_retry from then (decision 010, amended).
inline constexpr char kFinishGrants[] =
    "UPDATE grants g SET "
    "  granted = g.granted OR x.kind = 'granted', "
    "  state = CASE "
    "    WHEN x.kind = 'granted' AND g.state = 'pending' THEN 'granted' "
    "    WHEN x.kind IN ('granted', 'retry') AND g.state = 'cancelled' THEN 'reverse_pending' "
    "    WHEN x.kind = 'rejected' AND g.state = 'pending' THEN 'rejected' "
    "    WHEN x.kind = 'rejected' AND g.state = 'reverse_pending' THEN 'cancelled' "
    "    WHEN x.kind IN ('reversed', 'reverse_failed') THEN x.kind "
    "    ELSE g.state END, "
    "  reason = x.reason, "
    "  attempts = g.attempts + 1, "
    "  next_attempt_at = CASE "
    "    WHEN x.kind IN ('granted', 'retry') AND g.state = 'cancelled' THEN now() "
    "    WHEN x.kind = 'retry' "
    "    THEN now() + least(30, power(2, least(g.attempts, 5)) * 0.2) * interval '1 second' "
    "    ELSE g.next_attempt_at END, "
    "  unfunded_since = CASE "
    "    WHEN x.unfunded AND x.kind = 'retry' AND g.state = 'pending' "
    "    THEN coalesce(g.unfunded_since, now()) "
    "    ELSE g.unfunded_since END, "
    "  updated_at = now() "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::boolean[]) AS x(id, kind, reason, "
    "  unfunded) "
    "WHERE g.grant_id = x.id";

inline constexpr char kListCustomerEvents[] =
    "SELECT event_key, event_type, customer_id, org_id, "
    "  (extract(epoch FROM occurred_at) * 1000000)::bigint, amount_fen, product_code, "
    "  attributes::text "
    "FROM event_log WHERE customer_id = $1 "
    "  AND ($2 = '' OR org_id = $2 OR starts_with(org_id, $2 || '.')) "
    "  AND occurred_at >= $3::timestamptz AND occurred_at < $4::timestamptz "
    "ORDER BY occurred_at DESC LIMIT $5";

inline constexpr char kSelectLoggedEvent[] =
    "SELECT l.event_key, l.event_type, l.customer_id, l.org_id, "
    "  (extract(epoch FROM l.occurred_at) * 1000000)::bigint, l.amount_fen, l.product_code, "
    "  l.attributes::text, l.envelope_id "
    "FROM event_keys k JOIN event_log l "
    "  ON l.occurred_at = k.occurred_at AND l.event_key = k.event_key "
    "WHERE k.event_key = $1";

inline constexpr char kSelectDecision[] =
    "SELECT decision || CASE WHEN cancelled THEN ' (later cancelled)' "
    "  WHEN refunded_fen > 0 THEN ' (refunded ' || refunded_fen || ' fen)' ELSE '' END "
    "FROM match_outcomes WHERE event_key = $1 AND rule_id = $2";

inline constexpr char kSelectAggregate[] =
    "SELECT event_count, amount_fen, tiers_granted FROM rule_aggregates "
    "WHERE rule_id = $1 AND customer_id = $2 AND window_key = $3";

inline constexpr char kSelectGrantsOf[] =
    "SELECT grant_id, rule_id, tier, state, reason, event_key FROM grants "
    "WHERE event_key = $1 AND ($2 = '' OR rule_id = $2) ORDER BY seq";

}  // namespace mkt::events

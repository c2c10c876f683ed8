-- Event types and their attribute schemas (seeded by the service on first start).
CREATE TABLE event_types (
  name        text PRIMARY KEY,
  definition  text        NOT NULL,  -- marketing.events.v1.EventType as JSON
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Trigger rules (from mkt.campaign-changes.v1 or UpsertRule).
CREATE TABLE trigger_rules (
  rule_id     text PRIMARY KEY,
  campaign_id text        NOT NULL,
  revision    bigint      NOT NULL,
  definition  text        NOT NULL,  -- marketing.events.v1.TriggerRule as JSON
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every event applied once: the dedupe record (source:source_event_id), written in the same
-- transaction as the effect, and the index a reversal finds its original in.
CREATE TABLE event_keys (
  event_key    text PRIMARY KEY,
  customer_id  text        NOT NULL,
  org_id       text        NOT NULL,
  event_type   text        NOT NULL,
  occurred_at  timestamptz NOT NULL,
  amount_fen   bigint      NOT NULL,
  received_at  timestamptz NOT NULL DEFAULT now()
);

-- The event log, partitioned by month of occurrence; partitions are created on demand.
CREATE TABLE event_log (
  occurred_at   timestamptz NOT NULL,
  event_key     text        NOT NULL,
  customer_id   text        NOT NULL,
  org_id        text        NOT NULL,
  event_type    text        NOT NULL,
  amount_fen    bigint      NOT NULL,
  product_code  text        NOT NULL,
  attributes    jsonb       NOT NULL,
  envelope_id   text        NOT NULL,
  received_at   timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (occurred_at);
CREATE INDEX event_log_customer ON event_log (customer_id, occurred_at DESC);

-- A customer's running state per rule and window (count, amount, tiers granted). Window
-- '*grants' counts the grants made for per-customer limits.
CREATE TABLE rule_aggregates (
  rule_id        text   NOT NULL,
  customer_id    text   NOT NULL,
  window_key     text   NOT NULL,
  event_count    bigint NOT NULL,
  amount_fen     bigint NOT NULL,
  tiers_granted  bigint NOT NULL,
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (rule_id, customer_id, window_key)
);

-- What each matching (event, rule) did: its contribution to the aggregate (so a reversal can
-- take it back) and the decision, for operators.
CREATE TABLE match_outcomes (
  event_key     text   NOT NULL,
  rule_id       text   NOT NULL,
  customer_id   text   NOT NULL,
  window_key    text   NOT NULL,
  amount_fen    bigint NOT NULL,
  refunded_fen  bigint NOT NULL DEFAULT 0,
  cancelled     boolean NOT NULL DEFAULT false,
  decision      text   NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (event_key, rule_id)
);

-- The grant outbox: grants decided in the matching transaction and sent to the rewards ledger
-- after it commits (and again after a crash) with their deterministic ids.
-- state: pending → granted | rejected; reverse_pending → reversed | cancelled | reverse_failed.
CREATE TABLE grants (
  seq                bigserial,
  grant_id           text PRIMARY KEY,
  event_key          text    NOT NULL,
  rule_id            text    NOT NULL,
  tier               int     NOT NULL,
  campaign_id        text    NOT NULL,
  org_id             text    NOT NULL,
  customer_id        text    NOT NULL,
  window_key         text    NOT NULL,
  asset              int     NOT NULL,
  quantity           bigint  NOT NULL,
  budget_cost_fen    bigint  NOT NULL,
  stock_template_id  text    NOT NULL,
  stock_units        bigint  NOT NULL,
  expiry_days        int     NOT NULL,
  state              text    NOT NULL,
  granted            boolean NOT NULL DEFAULT false,
  reason             text    NOT NULL DEFAULT '',
  attempts           int     NOT NULL DEFAULT 0,
  next_attempt_at    timestamptz NOT NULL DEFAULT now(),
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX grants_due ON grants (seq) WHERE state IN ('pending', 'reverse_pending');
CREATE INDEX grants_by_event ON grants (event_key);
CREATE INDEX grants_by_window ON grants (rule_id, customer_id, window_key);

-- Asset-growth tasks (资产提升, decision 014): an enrolment is a participation with status
-- ENROLLED and a recorded baseline; the customers' end-of-day balances come from asset_balance
-- business events; every tier reached is marked once and granted under a derived request id.
ALTER TABLE participations DROP CONSTRAINT participations_status_check;
ALTER TABLE participations ADD CONSTRAINT participations_status_check
  CHECK (status IN ('PENDING', 'GRANTED', 'NO_PRIZE', 'REJECTED', 'ENROLLED'));

-- A customer's end-of-day balance (China days) as last reported: a later report of the same day
-- (by as_of, then event key) replaces an earlier one, so replays and reordering converge.
CREATE TABLE asset_balances (
  customer_id  text        NOT NULL,
  day          date        NOT NULL,
  balance_fen  bigint      NOT NULL,
  as_of        timestamptz NOT NULL,
  event_key    text        NOT NULL,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (customer_id, day)
);

-- One row per enrolment (participation ENROLLED), written in the transaction that records it.
CREATE TABLE asset_growth_enrolments (
  participation_id   text        PRIMARY KEY,
  campaign_id        text        NOT NULL,
  org_id             text        NOT NULL,
  customer_id        text        NOT NULL,
  enrolled_on        date        NOT NULL,
  baseline_fen       bigint      NOT NULL,
  baseline_days      integer     NOT NULL,
  -- The campaign's end_time at enrolment: evaluation counts days up to the window's last day.
  window_end         timestamptz NOT NULL,
  average_fen        bigint      NOT NULL DEFAULT 0,
  growth_fen         bigint      NOT NULL DEFAULT 0,
  evaluated_through  date,
  evaluated_at       timestamptz,
  created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX asset_growth_enrolments_by_customer ON asset_growth_enrolments (customer_id);
CREATE INDEX asset_growth_enrolments_by_end ON asset_growth_enrolments (window_end);

-- A tier reached: marked once (the primary key), then granted through the RewardIssuer under
-- request_id; PENDING until the rewards service answered, so a crash in between is retried by the
-- sweep with the same id (the ledger answers it idempotently).
CREATE TABLE asset_growth_grants (
  participation_id  text        NOT NULL REFERENCES asset_growth_enrolments (participation_id),
  tier              integer     NOT NULL,
  campaign_id       text        NOT NULL,
  customer_id       text        NOT NULL,
  request_id        text        NOT NULL UNIQUE,
  -- The tier (threshold and rewards) as configured when it was reached, JSON of GrowthTier.
  tier_config       jsonb       NOT NULL,
  growth_fen        bigint      NOT NULL,
  state             text        NOT NULL CHECK (state IN ('PENDING', 'GRANTED', 'REJECTED')),
  reason            text        NOT NULL DEFAULT '',
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (participation_id, tier)
);
CREATE INDEX asset_growth_grants_pending ON asset_growth_grants (updated_at)
  WHERE state = 'PENDING';

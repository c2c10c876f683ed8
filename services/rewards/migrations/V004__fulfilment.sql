-- Third-party benefit fulfilment (decision 011, "Third-party fulfilment"). One row per THIRD_PARTY
-- coupon, inserted in the coupon's issue transaction (so it is idempotent by the issue request
-- and vanishes with a coupon whose issue the ledger refused). The row is the truth of where the
-- supplier's delivery stands; fulfilment_events is its history (who, what, when).
CREATE TABLE fulfilments (
  id text PRIMARY KEY,                 -- 'ful-<coupon id>': the supplier's idempotency key
  coupon_id bigint NOT NULL UNIQUE REFERENCES coupons (id) ON DELETE CASCADE,
  org_id text NOT NULL,
  customer_id text NOT NULL,
  template_id text NOT NULL,
  supplier_id text NOT NULL,
  sku text NOT NULL,
  quantity bigint NOT NULL CHECK (quantity > 0),
  state smallint NOT NULL,             -- FulfilmentState
  attempt integer NOT NULL DEFAULT 0,  -- attempts sent so far
  next_attempt_at timestamptz,         -- SUBMITTED: result deadline; RETRYING: next attempt
  supplier_reference text NOT NULL DEFAULT '',
  failure_reason text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);
CREATE INDEX fulfilments_due ON fulfilments (next_attempt_at) WHERE state IN (2, 3);
CREATE INDEX fulfilments_pending ON fulfilments (created_at) WHERE state = 1;

CREATE TABLE fulfilment_events (
  fulfilment_id text NOT NULL REFERENCES fulfilments (id) ON DELETE CASCADE,
  seq integer NOT NULL,
  from_state smallint NOT NULL,
  to_state smallint NOT NULL,
  attempt integer NOT NULL,
  actor text NOT NULL,   -- who: scheduler, supplier:<id>, issuer
  cause text NOT NULL,   -- what: submit, resubmit, accepted, result, timeout, compensate, ...
  detail text NOT NULL DEFAULT '',
  at timestamptz NOT NULL,
  PRIMARY KEY (fulfilment_id, seq)
);

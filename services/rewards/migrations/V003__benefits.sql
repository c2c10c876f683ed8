-- Benefits (decision 011): templates, coupon/voucher instances and the history of their states,
-- redemptions (online locks and offline QR uses), single-use QR tokens, red-envelope payouts.
-- A coupon row is the source of truth of its state; every state change writes a coupon_events
-- row in the same transaction whose `intent` (a LedgerIntent) names the ledger transfer(s) that
-- mirror it with deterministic ids; `applied` turns true once the ledger has them, and the
-- repair sweeper applies what a crash left behind.
CREATE TABLE benefit_templates (
  id text PRIMARY KEY,
  org_id text NOT NULL,
  type smallint NOT NULL,
  status smallint NOT NULL,
  spec bytea NOT NULL,  -- the BenefitTemplate message
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);
CREATE INDEX benefit_templates_by_org ON benefit_templates (org_id);

CREATE TABLE coupons (
  id bigserial PRIMARY KEY,
  code text NOT NULL UNIQUE,
  issue_request_id text NOT NULL UNIQUE,
  org_id text NOT NULL,
  template_id text NOT NULL REFERENCES benefit_templates (id),
  type smallint NOT NULL,
  customer_id text NOT NULL,
  campaign_id text NOT NULL DEFAULT '',
  state smallint NOT NULL,  -- CouponState; 0 while being issued
  version integer NOT NULL DEFAULT 0,
  valid_from timestamptz NOT NULL,
  valid_until timestamptz NOT NULL,
  redemption_id text,
  collected_at timestamptz,
  issued_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);
CREATE INDEX coupons_by_customer ON coupons (org_id, customer_id, state);
CREATE INDEX coupons_by_customer_only ON coupons (customer_id);
CREATE INDEX coupons_expiring ON coupons (valid_until) WHERE state = 1;

CREATE TABLE coupon_events (
  coupon_id bigint NOT NULL REFERENCES coupons (id) ON DELETE CASCADE,
  seq integer NOT NULL,
  from_state smallint NOT NULL,
  to_state smallint NOT NULL,
  actor text NOT NULL,  -- who: customer, terminal, operator or job
  cause text NOT NULL,  -- what: issue, lock, confirm, cancel, lock-timeout, reverse, ...
  redemption_id text,
  at timestamptz NOT NULL,
  intent bytea,         -- LedgerIntent; NULL when the change moves nothing in the ledger
  applied boolean NOT NULL,
  PRIMARY KEY (coupon_id, seq)
);
CREATE INDEX coupon_events_unapplied ON coupon_events (at) WHERE NOT applied;

CREATE TABLE redemptions (
  id text PRIMARY KEY,
  coupon_id bigint NOT NULL REFERENCES coupons (id),
  order_id text NOT NULL,
  state smallint NOT NULL,  -- RedemptionState
  detail bytea NOT NULL,    -- the Redemption message
  lock_expires_at timestamptz,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  UNIQUE (order_id, coupon_id)
);
CREATE INDEX redemptions_lock_due ON redemptions (lock_expires_at) WHERE state = 1;

CREATE TABLE qr_tokens (
  jti text PRIMARY KEY,
  coupon_id bigint NOT NULL REFERENCES coupons (id),
  customer_id text NOT NULL,
  expires_at timestamptz NOT NULL,
  used_at timestamptz,
  terminal_id text,
  redemption_id text
);

CREATE TABLE payouts (
  id text PRIMARY KEY,            -- the caller's request id
  org_id text NOT NULL,
  customer_id text NOT NULL,
  amount_fen bigint NOT NULL CHECK (amount_fen > 0),
  bank_account text NOT NULL,
  state smallint NOT NULL,        -- PayoutState; 0 while the ledger reservation is pending
  failure_reason text NOT NULL DEFAULT '',
  core_reference text NOT NULL DEFAULT '',
  intent_applied boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);
CREATE INDEX payouts_unapplied ON payouts (updated_at) WHERE NOT intent_applied;

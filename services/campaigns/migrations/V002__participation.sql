-- Participation (decision 013): one row per claim, draw or exchange that got past the in-memory
-- checks, the counters behind the participation limits, exclusion-group claims and the lottery's
-- draw log. The global stock of a coupon is the ledger's and is not kept here.

CREATE TABLE participations (
  id                text        PRIMARY KEY,
  campaign_id       text        NOT NULL REFERENCES campaigns (id),
  -- The channel's idempotency key: a replay finds this row and answers with it.
  idempotency_key   text        NOT NULL,
  -- SHA-256 of what the request asked for; the same key with another hash is refused.
  request_hash      text        NOT NULL,
  customer_id       text        NOT NULL,
  customer_org      text        NOT NULL,
  channel           text        NOT NULL,
  campaign_version  integer     NOT NULL,
  status            text        NOT NULL
                    CHECK (status IN ('PENDING', 'GRANTED', 'NO_PRIZE', 'REJECTED')),
  reason            text        NOT NULL DEFAULT '',
  -- The counters this participation took; a rejection gives them back.
  counters          text[]      NOT NULL,
  -- The Participation message (planned rewards, draw, outcome).
  body              jsonb       NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  UNIQUE (campaign_id, idempotency_key)
);
-- What the recovery sweep finishes: participations whose grant outcome is unknown.
CREATE INDEX participations_pending ON participations (created_at) WHERE status = 'PENDING';
CREATE INDEX participations_by_customer ON participations (customer_id, campaign_id);

-- Limit counters: "c:<customer>:all", "c:<customer>:d:<date>", "c:<customer>:w:<week>",
-- "o:<org>:all", "g:all", "free:<customer>:d:<date>", "prize:<i>:all", "prize:<i>:d:<date>".
-- A counter is taken with one conditional upsert (n < cap), whose row lock makes a limit hold
-- under concurrency, across replicas.
CREATE TABLE participation_counters (
  campaign_id  text   NOT NULL,
  counter      text   NOT NULL,
  n            bigint NOT NULL CHECK (n >= 0),
  cap          bigint NOT NULL,
  PRIMARY KEY (campaign_id, counter)
) WITH (fillfactor = 70);

-- A customer takes part in at most one campaign of an exclusion group (per owning org).
CREATE TABLE exclusion_claims (
  org_id       text NOT NULL,
  group_name   text NOT NULL,
  customer_id  text NOT NULL,
  campaign_id  text NOT NULL,
  PRIMARY KEY (org_id, group_name, customer_id)
);

-- Every lottery draw, for audit and for checking the realised distribution.
CREATE TABLE lottery_draws (
  participation_id  text        PRIMARY KEY,
  campaign_id       text        NOT NULL,
  table_version     integer     NOT NULL,
  random_value      bigint      NOT NULL,
  drawn_prize       integer     NOT NULL,
  awarded_prize     integer     NOT NULL,
  fallback_used     boolean     NOT NULL,
  free_draw         boolean     NOT NULL,
  drawn_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lottery_draws_by_campaign ON lottery_draws (campaign_id, drawn_at);
CREATE INDEX exclusion_claims_by_customer ON exclusion_claims (customer_id);

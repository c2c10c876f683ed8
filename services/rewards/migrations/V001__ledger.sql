-- The benefit ledger (docs/decisions/006-ledger.md): accounts with running totals, transfers
-- that are never deleted, points lots, and the lot movements that say which lots a debit took.
-- Enum columns hold the proto enum numbers of marketing.rewards.v1.

-- One row per (org, asset, asset_ref, owner): customers, campaign budgets, template stock and the
-- org's system accounts. The totals are updated only by the transaction that holds the row lock.
CREATE TABLE accounts (
  id               bigserial   PRIMARY KEY,
  org_id           text        NOT NULL,
  asset            smallint    NOT NULL,
  asset_ref        text        NOT NULL,
  owner_kind       smallint    NOT NULL,
  owner_id         text        NOT NULL,
  debits_must_not_exceed_credits boolean NOT NULL,
  credits_must_not_exceed_debits boolean NOT NULL,
  debits_posted    bigint      NOT NULL DEFAULT 0,
  credits_posted   bigint      NOT NULL DEFAULT 0,
  debits_pending   bigint      NOT NULL DEFAULT 0,
  credits_pending  bigint      NOT NULL DEFAULT 0,
  created_at       timestamptz NOT NULL,
  UNIQUE (org_id, asset, asset_ref, owner_kind, owner_id),
  CHECK (debits_posted >= 0 AND credits_posted >= 0 AND debits_pending >= 0
         AND credits_pending >= 0),
  -- The last line of defence: the store checks the flags before writing, so a violation here
  -- is a bug, and it fails the whole transaction instead of storing a negative balance.
  CHECK (NOT debits_must_not_exceed_credits OR debits_posted + debits_pending <= credits_posted),
  CHECK (NOT credits_must_not_exceed_debits OR credits_posted + credits_pending <= debits_posted)
);
-- A customer's accounts (balances, history).
CREATE INDEX accounts_by_customer ON accounts (org_id, owner_id) WHERE owner_kind = 1;

-- Transfers. `pending` marks a two-phase reservation: its `state` moves from PENDING (1) to
-- POSTED (2) or VOIDED (3) when a posting/voiding transfer (with pending_id set) resolves it.
-- Posted totals are the sums of POSTED transfers that are not reservations; pending totals the
-- sums of reservations still PENDING.
CREATE TABLE transfers (
  id                    text        PRIMARY KEY,
  -- Insertion order; per account it is also lock order, which the *_balance_after columns follow.
  seq                   bigserial   NOT NULL UNIQUE,
  batch_id              text        NOT NULL,
  debit_account_id      bigint      NOT NULL REFERENCES accounts (id),
  credit_account_id     bigint      NOT NULL REFERENCES accounts (id),
  asset                 smallint    NOT NULL,
  amount                bigint      NOT NULL CHECK (amount > 0),
  code                  smallint    NOT NULL,
  state                 smallint    NOT NULL,
  pending               boolean     NOT NULL,
  campaign_id           text        NOT NULL,
  event_id              text        NOT NULL,
  order_id              text        NOT NULL,
  metadata              jsonb       NOT NULL,
  reverses_transfer_id  text        NOT NULL,
  pending_id            text        NOT NULL,
  reversed_amount       bigint      NOT NULL DEFAULT 0
                                    CHECK (reversed_amount >= 0 AND reversed_amount <= amount),
  -- SHA-256 of the canonical form of the request that created the transfer (idempotency).
  content_hash          text        NOT NULL,
  -- Posted balances (credits - debits) of both accounts right after this transfer.
  debit_balance_after   bigint      NOT NULL,
  credit_balance_after  bigint      NOT NULL,
  created_at            timestamptz NOT NULL,
  timeout_at            timestamptz,
  -- The database's own clock, for the outbox retention check of CheckIntegrity.
  recorded_at           timestamptz NOT NULL DEFAULT now(),
  CHECK (debit_account_id <> credit_account_id)
);
CREATE INDEX transfers_by_debit ON transfers (debit_account_id, seq);
CREATE INDEX transfers_by_credit ON transfers (credit_account_id, seq);
CREATE INDEX transfers_by_batch ON transfers (batch_id, seq);
CREATE INDEX transfers_pending_by_timeout ON transfers (timeout_at) WHERE state = 1;
-- A reservation is resolved once.
CREATE UNIQUE INDEX transfers_by_pending_id ON transfers (pending_id) WHERE pending_id <> '';
CREATE INDEX transfers_by_reversed ON transfers (reverses_transfer_id)
  WHERE reverses_transfer_id <> '';
CREATE INDEX transfers_by_recorded_at ON transfers (recorded_at);

-- Points lots: every posted credit of POINTS to a customer (and every put-back into a lot that
-- has already expired) creates one. Σ remaining = the account's available balance.
CREATE TABLE lots (
  id                      bigserial   PRIMARY KEY,
  account_id              bigint      NOT NULL REFERENCES accounts (id),
  amount                  bigint      NOT NULL CHECK (amount > 0),
  remaining               bigint      NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
  expires_at              timestamptz NOT NULL,
  granted_by_transfer_id  text        NOT NULL,
  -- Set when this lot holds points put back (void/reversal) after their own lot had expired.
  restored_from_lot_id    bigint      REFERENCES lots (id),
  -- Set when the expiry job turned what was left into an EXPIRE transfer.
  expired_at              timestamptz,
  created_at              timestamptz NOT NULL
);
CREATE INDEX lots_open_by_account ON lots (account_id, expires_at, id) WHERE remaining > 0;
CREATE INDEX lots_open_by_expiry ON lots (expires_at, id) WHERE remaining > 0;
CREATE INDEX lots_by_grant ON lots (granted_by_transfer_id);

-- Which lots a transfer took from (amount > 0) or put back into (amount < 0). A put-back names
-- the lot the points were originally taken from (origin_lot_id), which is another lot than
-- lot_id when the original had expired meanwhile; a take has origin_lot_id = lot_id.
CREATE TABLE lot_movements (
  transfer_id    text   NOT NULL,
  lot_id         bigint NOT NULL REFERENCES lots (id),
  origin_lot_id  bigint NOT NULL REFERENCES lots (id),
  amount         bigint NOT NULL CHECK (amount <> 0),
  PRIMARY KEY (transfer_id, lot_id)
);
CREATE INDEX lot_movements_by_lot ON lot_movements (lot_id);

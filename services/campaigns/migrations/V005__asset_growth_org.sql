-- Asset-growth customers are (member bank, customer id), not a customer id alone (decision 014,
-- amended). Two member banks of the federation may each have a customer "c1": before this
-- migration their end-of-day balances shared one row per day, and a report of bank-b's c1 moved
-- the average (and granted the tiers) of bank-a's c1. Customer ids are a member bank's
-- core-system ids, so the key is the member bank of the customer's org — a branch is where a
-- customer is served, not who they are ("bank-a.branch-01" → "bank-a", "fed" stays "fed",
-- tenancy::MemberBankOf) — and an enrolment made at a branch matches reports sent for the bank.

-- Enrolments: the customer's org as enrolled comes from their participation (written in the same
-- transaction, so always there); the campaign's org would only stand in for a missing one.
ALTER TABLE asset_growth_enrolments ADD COLUMN customer_org_id text;
ALTER TABLE asset_growth_enrolments ADD COLUMN customer_bank text;
UPDATE asset_growth_enrolments e
  SET customer_org_id = coalesce(
    (SELECT nullif(p.customer_org, '') FROM participations p WHERE p.id = e.participation_id),
    e.org_id);
UPDATE asset_growth_enrolments SET customer_bank = split_part(customer_org_id, '.', 1);
ALTER TABLE asset_growth_enrolments ALTER COLUMN customer_org_id SET NOT NULL;
ALTER TABLE asset_growth_enrolments ALTER COLUMN customer_bank SET NOT NULL;
DROP INDEX asset_growth_enrolments_by_customer;
CREATE INDEX asset_growth_enrolments_by_customer
  ON asset_growth_enrolments (customer_bank, customer_id);

-- Balances: the events' org was not kept, so an existing row is given the member bank of every
-- participation of its customer id (a customer id seen in one bank — the usual case — gets that
-- bank; an id seen in several keeps, for these old days only, the mixed balance it had). A row
-- whose customer id never took part in anything gets customer_bank '' ("recorded before V005,
-- org unknown"): never a valid org id, so no enrolment reads it, yet kept for an operator to
-- reassign. Guessing 'fed' instead would hand those days to federation-org customers of that id.
ALTER TABLE asset_balances DROP CONSTRAINT asset_balances_pkey;
ALTER TABLE asset_balances ADD COLUMN customer_bank text NOT NULL DEFAULT '';
INSERT INTO asset_balances (customer_bank, customer_id, day, balance_fen, as_of, event_key,
                            updated_at)
  SELECT k.bank, b.customer_id, b.day, b.balance_fen, b.as_of, b.event_key, b.updated_at
  FROM asset_balances b
  JOIN (SELECT DISTINCT customer_id, split_part(customer_org, '.', 1) AS bank
        FROM participations WHERE customer_org <> '') k ON k.customer_id = b.customer_id
  WHERE b.customer_bank = '';
DELETE FROM asset_balances b
  WHERE b.customer_bank = ''
    AND EXISTS (SELECT 1 FROM participations p
                WHERE p.customer_id = b.customer_id AND p.customer_org <> '');
ALTER TABLE asset_balances ALTER COLUMN customer_bank DROP DEFAULT;
ALTER TABLE asset_balances ADD PRIMARY KEY (customer_bank, customer_id, day);

-- The recovery sweep (decision 013) takes PENDING participations oldest first. A participation it
-- cannot complete (a hold voided by its timeout, a reward that can no longer be priced, a coupon
-- issued while the other rewards were refused, a retry the ledger calls a reused key) stayed
-- PENDING at the head of that order, so once a sweep's worth of them existed every sweep retried
-- only them and newer participations were never completed. Each failed attempt is now counted and
-- the participation waits before the next one, longer each time; the sweep takes what is due.
ALTER TABLE participations ADD COLUMN recovery_attempts integer NOT NULL DEFAULT 0;
-- NULL: never tried by the sweep (due once older than the sweep's delay, by created_at).
ALTER TABLE participations ADD COLUMN next_recovery_at timestamptz;

DROP INDEX participations_pending;
CREATE INDEX participations_pending
  ON participations ((coalesce(next_recovery_at, created_at))) WHERE status = 'PENDING';

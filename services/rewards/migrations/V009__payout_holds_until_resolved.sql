-- A payout's cash hold waits for core banking's answer however long it takes (decision 011,
-- amended 2026-11-29; LinkedBatch::holds_until_resolved). The holds requested before lose the
-- 24-hour timeout they were given, so that the sweeper of timed-out reservations cannot void one
-- that core banking may still pay. Code 6 is PAYOUT; only pending holds (state 1) change.
UPDATE transfers SET timeout_at = NULL
WHERE state = 1 AND pending AND code = 6 AND id LIKE 'pay.%.reserve';

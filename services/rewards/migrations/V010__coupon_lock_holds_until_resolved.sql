-- A coupon lock's hold waits for the coupon's confirm, cancel or lock timeout however late their
-- ledger intent is applied (decision 011, second amendment of 2026-11-29: Benefits stores it with
-- LinkedBatch::holds_until_resolved). The holds of locks taken before lose the timeout of lock
-- TTL + 1 h they were given, so that the sweeper of timed-out reservations cannot void one whose
-- confirm is still to be posted (the coupon REDEEMED, the unit given back). Code 2 is SPEND; only
-- pending holds (state 1) of coupon locks ('rdm-<hex>.lock') change.
UPDATE transfers SET timeout_at = NULL
WHERE state = 1 AND pending AND code = 2 AND id LIKE 'rdm-%.lock';

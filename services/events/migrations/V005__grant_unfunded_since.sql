-- When the ledger first refused a pending grant with ACCOUNT_NOT_FOUND (its campaign's budget not
-- funded yet by rewards; decision 010, amended): the grant is retried for unfunded_retry_s from
-- then, not from the row's creation, so a row that waited for the ledger (rewards down, its sends
-- failing with UNAVAILABLE) still gets the whole window once rewards answers. NULL until the first
-- such refusal.
ALTER TABLE grants ADD COLUMN unfunded_since timestamptz;

-- The grant path writes two transfers and a lot per grant; each foreign key to accounts was a
-- per-row trigger query on that path (about a fifth of the write cost, measured with the
-- ledger-grants ceiling: 6,943 → 8,671 grants/s). The store resolves and locks every account
-- before it writes, and CheckIntegrity's "transfers_and_lots_name_accounts" finds any orphan,
-- so the database no longer re-checks it per row. Lot movements keep theirs (spends only).
ALTER TABLE transfers DROP CONSTRAINT transfers_debit_account_id_fkey;
ALTER TABLE transfers DROP CONSTRAINT transfers_credit_account_id_fkey;
ALTER TABLE lots DROP CONSTRAINT lots_account_id_fkey;

-- Only CheckIntegrity's fact check filtered on recorded_at, and it reads every recent transfer
-- anyway; a sequential scan serves it, and every insert saved one index entry.
DROP INDEX transfers_by_recorded_at;

-- Account totals change on every transfer; leaving room on each page lets PostgreSQL update them
-- in place (HOT) instead of writing new entries into the three account indexes.
ALTER TABLE accounts SET (fillfactor = 70);

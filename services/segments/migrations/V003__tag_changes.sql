-- Replicas converge on every write (decision 037). Each replica keeps its own index; a write made
-- by one replica (CSV import, RFM write-back, profile, a customer created by a list or a business
-- event) reaches the others through this change log: one row per (writing transaction, customer),
-- inserted in that transaction. A replica reads the rows of every transaction below the xmin of a
-- fresh snapshot (all of them have ended, so the set is final whatever order they committed in),
-- re-reads those customers and applies them to its index.
CREATE TABLE tag_changes (
  xid       xid8    NOT NULL DEFAULT pg_current_xact_id(),
  dense_id  integer NOT NULL,
  -- The primary key is also the index on xid the readers range over.
  PRIMARY KEY (xid, dense_id)
);

-- Changes are kept for a while after their transaction ended (changes_retention_s), then deleted
-- by any replica. pruned_below is the xid below which rows may be gone: a replica that has not
-- read that far missed changes and re-reads every customer instead.
CREATE TABLE tag_changes_horizon (
  id            boolean PRIMARY KEY DEFAULT true CHECK (id),
  pruned_below  xid8    NOT NULL
);
INSERT INTO tag_changes_horizon (pruned_below) VALUES ('0');

-- Bumped (under the row's lock) by every transaction that changes the customer's tag values or
-- home org, and carried with the state read back in that transaction: a replica applies a state
-- only if it is newer than the one its index holds, whatever order the appliers run in.
ALTER TABLE customers ADD COLUMN revision bigint NOT NULL DEFAULT 1;

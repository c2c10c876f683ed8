-- Reversals (CANCEL, REFUND) that arrived before the event they undo (decision 030). Each waits
-- here, in the order it came, until its original is applied; the batch that applies the original
-- applies them right after it, then deletes them. A reversal whose original never arrives stays
-- (operators list them with the query in docs/operations.md).
CREATE TABLE parked_reversals (
  seq           bigserial,
  -- The reversal's own dedupe key (source:source_event_id).
  event_key     text        PRIMARY KEY,
  -- The key of the event it undoes.
  original_key  text        NOT NULL,
  -- marketing.events.v1.ReversalKind: 1 CANCEL, 2 REFUND.
  reversal      smallint    NOT NULL CHECK (reversal IN (1, 2)),
  amount_fen    bigint      NOT NULL,
  customer_id   text        NOT NULL,
  org_id        text        NOT NULL,
  parked_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parked_reversals_by_original ON parked_reversals (original_key, seq);

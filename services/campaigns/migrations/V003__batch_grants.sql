-- Batch grants (issue 8 item 7): one run per BATCH_GRANT campaign and one item per recipient.
-- The items are the resumable work list: a runner that crashes leaves PENDING items, and the next
-- one sends them again under the same ledger request id ("batch:<campaign>:<customer>"), which
-- the ledger answers idempotently, so nobody is granted twice.

CREATE TABLE batch_grant_runs (
  campaign_id       text        PRIMARY KEY REFERENCES campaigns (id),
  org_id            text        NOT NULL,
  state             text        NOT NULL
                    CHECK (state IN ('MATERIALISING', 'RUNNING', 'COMPLETED', 'CANCELLED')),
  -- The segments snapshots, in reading order: excluded ones first ("exclude:<id>", "include:<id>").
  snapshot_ids      text[]      NOT NULL DEFAULT '{}',
  -- Where materialisation stopped: the index in snapshot_ids and that snapshot's page token.
  cursor_snapshot   integer     NOT NULL DEFAULT 0,
  cursor_token      text        NOT NULL DEFAULT '',
  total             bigint      NOT NULL DEFAULT 0,
  -- Kept with every recorded chunk (pending = total - granted - failed - cancelled).
  granted           bigint      NOT NULL DEFAULT 0,
  failed            bigint      NOT NULL DEFAULT 0,
  cancelled         bigint      NOT NULL DEFAULT 0,
  started_at        timestamptz NOT NULL DEFAULT now(),
  finished_at       timestamptz,
  updated_at        timestamptz NOT NULL DEFAULT now(),
  last_error        text        NOT NULL DEFAULT '',
  cancelled_by      text        NOT NULL DEFAULT '',
  cancel_reason     text        NOT NULL DEFAULT '',
  -- Who runs it now: a runner takes a run whose lease expired; two replicas never run one batch.
  lease_owner       text        NOT NULL DEFAULT '',
  lease_expires_at  timestamptz NOT NULL DEFAULT '-infinity'
);

CREATE TABLE batch_grant_items (
  campaign_id  text        NOT NULL REFERENCES batch_grant_runs (campaign_id),
  customer_id  text        NOT NULL,
  -- EXCLUDED: in an excluded segment (read first, so the include pages cannot add it back).
  state        text        NOT NULL
               CHECK (state IN ('PENDING', 'GRANTED', 'FAILED', 'CANCELLED', 'EXCLUDED')),
  reason       text        NOT NULL DEFAULT '',
  message      text        NOT NULL DEFAULT '',
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (campaign_id, customer_id)
);
-- The work list and the failure report.
CREATE INDEX batch_grant_items_pending ON batch_grant_items (campaign_id, customer_id)
  WHERE state = 'PENDING';
CREATE INDEX batch_grant_items_failed ON batch_grant_items (campaign_id, customer_id)
  WHERE state = 'FAILED';

-- The audit trail of operator requests that change something (ARCHITECTURE.md: "every change
-- written to an audit log"): one row written before the request runs, its answer added after.
-- Kept without a retention limit; a bank archives it by its own rules.
CREATE TABLE admin_requests (
  id          bigserial   PRIMARY KEY,
  at          timestamptz NOT NULL DEFAULT now(),
  request_id  text        NOT NULL,
  operator_id text        NOT NULL,
  org_id      text        NOT NULL,
  roles       text[]      NOT NULL,
  method      text        NOT NULL,
  route       text        NOT NULL,
  path        text        NOT NULL,
  -- The JSON body, passwords and secrets replaced by "***", at most 16 KiB.
  body        text        NOT NULL,
  -- NULL until the answer is known (a gateway that stopped mid-request leaves it NULL).
  status      integer,
  error_code  text,
  finished_at timestamptz
);
CREATE INDEX admin_requests_org_at ON admin_requests (org_id, id DESC);
CREATE INDEX admin_requests_operator_at ON admin_requests (operator_id, id DESC);

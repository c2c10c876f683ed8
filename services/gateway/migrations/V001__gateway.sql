-- The gateway's own state: idempotency records of POST requests, operator accounts and their
-- sessions (the revocation list of the admin bearer tokens).

CREATE TABLE idempotency_records (
  -- "channel:<id>" or "operator:<id>": a key is unique per caller, never across callers.
  scope        text        NOT NULL,
  key          text        NOT NULL,
  -- SHA-256 of method, route and body: the same key with another request is refused.
  request_hash text        NOT NULL,
  -- NULL while the first request is being executed.
  status       integer,
  content_type text,
  body         text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_records_created ON idempotency_records (created_at);

CREATE TABLE operators (
  id              text        PRIMARY KEY,
  org_id          text        NOT NULL,
  roles           text[]      NOT NULL,
  display_name    text        NOT NULL DEFAULT '',
  -- "scrypt$N$r$p$<salt hex>$<hash hex>"
  password_hash   text        NOT NULL,
  disabled        boolean     NOT NULL DEFAULT false,
  failed_sign_ins integer     NOT NULL DEFAULT 0,
  locked_until    timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operators_org ON operators (org_id);

CREATE TABLE admin_sessions (
  id          text        PRIMARY KEY,
  operator_id text        NOT NULL REFERENCES operators (id),
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  revoked_at  timestamptz
);
CREATE INDEX admin_sessions_operator ON admin_sessions (operator_id);
CREATE INDEX admin_sessions_expires ON admin_sessions (expires_at);

-- The channel registry: customer-facing systems and their (encrypted) HMAC secrets.
CREATE TABLE channels (
  id                 text        PRIMARY KEY,
  org_id             text        NOT NULL,
  code               text        NOT NULL,
  display_name       text        NOT NULL,
  enabled            boolean     NOT NULL DEFAULT true,
  version            bigint      NOT NULL DEFAULT 1 CHECK (version > 0),
  -- AES-256-GCM of the secret under the service's key, bound to the channel id (never plaintext).
  sealed_secret      text        NOT NULL,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  secret_rotated_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (org_id, code)
);
CREATE INDEX channels_by_org ON channels (org_id, id);

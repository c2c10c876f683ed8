-- The tag dictionary. Names are platform-wide; org_id owns (writes) the tag, 'fed' tags are
-- readable by every org.
CREATE TABLE tags (
  name            text        PRIMARY KEY,
  org_id          text        NOT NULL,
  type            smallint    NOT NULL CHECK (type BETWEEN 1 AND 5),
  description     text        NOT NULL DEFAULT '',
  source          text        NOT NULL DEFAULT '',
  allowed_values  text[]      NOT NULL DEFAULT '{}',
  multi_valued    boolean     NOT NULL DEFAULT false,
  version         bigint      NOT NULL DEFAULT 1,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Customers, with the dense integer id that is their position in every bitmap, and the org that
-- serves them (their home org, which scopes who may see them in a segment).
CREATE TABLE customers (
  dense_id         integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  customer_id      text        NOT NULL UNIQUE,
  org_id           text        NOT NULL,
  profile_version  bigint      NOT NULL DEFAULT 0,
  updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The source of truth of tag values; the bitmap index is rebuilt from it at start-up.
-- value is the canonical text of services/segments/tag_value.h.
CREATE TABLE tag_values (
  dense_id    integer     NOT NULL REFERENCES customers (dense_id),
  tag         text        NOT NULL REFERENCES tags (name),
  value       text        NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (dense_id, tag)
);
CREATE INDEX tag_values_by_tag ON tag_values (tag);

CREATE TABLE segments (
  id              text        PRIMARY KEY,
  org_id          text        NOT NULL,
  latest_version  bigint      NOT NULL,
  archived        boolean     NOT NULL DEFAULT false,
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX segments_by_org ON segments (org_id, id);

-- Every version of every segment stays, so a campaign can keep using the version it was approved
-- with. definition is a serialized marketing.segments.v1.SegmentDefinition (lists without their
-- ids); list_members the portable CRoaring serialization of a list segment's dense ids.
CREATE TABLE segment_versions (
  segment_id    text        NOT NULL REFERENCES segments (id),
  version       bigint      NOT NULL,
  name          text        NOT NULL,
  description   text        NOT NULL DEFAULT '',
  kind          smallint    NOT NULL CHECK (kind BETWEEN 1 AND 3),
  definition    bytea       NOT NULL,
  list_members  bytea       NOT NULL,
  list_size     bigint      NOT NULL DEFAULT 0,
  created_by    text        NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (segment_id, version)
);

-- Materialised memberships (for touches and batch grants), read back page by page.
CREATE TABLE snapshots (
  id          text        PRIMARY KEY,
  org_id      text        NOT NULL,
  segment_id  text        NOT NULL,
  version     bigint      NOT NULL,
  purpose     text        NOT NULL DEFAULT '',
  count       bigint      NOT NULL,
  members     bytea       NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- Transaction aggregates for RFM scoring (from mkt.business-events.v1).
CREATE TABLE rfm_aggregates (
  dense_id        integer     PRIMARY KEY REFERENCES customers (dense_id),
  txn_count       bigint      NOT NULL,
  amount_fen      bigint      NOT NULL,
  last_txn_day    integer     NOT NULL,
  updated_at      timestamptz NOT NULL DEFAULT now()
);

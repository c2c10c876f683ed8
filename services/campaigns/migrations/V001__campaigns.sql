-- The campaigns service's own database: org reference data, campaigns (the configuration body as
-- JSON, the columns queried on as real columns), their immutable submitted versions, templates,
-- and the audit trail.

-- Times cross the driver as microseconds since the epoch.
CREATE FUNCTION campaigns_ts(micros bigint) RETURNS timestamptz
  LANGUAGE sql IMMUTABLE AS $$ SELECT 'epoch'::timestamptz + micros * interval '1 microsecond' $$;
CREATE FUNCTION campaigns_micros(t timestamptz) RETURNS bigint
  LANGUAGE sql IMMUTABLE AS $$ SELECT (extract(epoch FROM t) * 1000000)::bigint $$;

-- Reference data of the org tree; the tree itself is in the ids (decision 007).
CREATE TABLE orgs (
  id            text        PRIMARY KEY,
  parent_id     text        REFERENCES orgs (id),
  display_name  text        NOT NULL,
  region        text        NOT NULL DEFAULT '',
  created_at    timestamptz NOT NULL DEFAULT now(),
  CHECK ((id = 'fed') = (parent_id IS NULL))
);
INSERT INTO orgs (id, parent_id, display_name, region)
  VALUES ('fed', NULL, 'Provincial Rural Credit Federation', '');

CREATE TABLE campaigns (
  id            text        PRIMARY KEY,
  org_id        text        NOT NULL REFERENCES orgs (id),
  state         text        NOT NULL,
  -- Of the live version once there is one, else of the draft.
  type          text        NOT NULL,
  window_start  timestamptz,
  window_end    timestamptz,
  revision      bigint      NOT NULL CHECK (revision > 0),
  live_version  integer     NOT NULL DEFAULT 0,
  -- The Campaign message (draft configuration, flags, change state...) without the live config,
  -- which is read from campaign_versions.
  body          jsonb       NOT NULL,
  created_at    timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL
);
CREATE INDEX campaigns_by_org ON campaigns (org_id, id);
-- What the scheduler looks for: campaigns to start and campaigns to end.
CREATE INDEX campaigns_to_start ON campaigns (window_start) WHERE state = 'SCHEDULED';
CREATE INDEX campaigns_to_end ON campaigns (window_end)
  WHERE state IN ('APPROVED', 'SCHEDULED', 'ONLINE', 'PAUSED');

-- Every submitted configuration, kept for good: running participations refer to the version they
-- started with. Only the decision columns may change.
CREATE TABLE campaign_versions (
  campaign_id   text        NOT NULL REFERENCES campaigns (id),
  version       integer     NOT NULL CHECK (version > 0),
  config        jsonb       NOT NULL,
  submitted_by  text        NOT NULL,
  submitted_at  timestamptz NOT NULL,
  decision      text        NOT NULL DEFAULT 'PENDING'
                CHECK (decision IN ('PENDING', 'APPROVED', 'REJECTED', 'WITHDRAWN')),
  decided_by    text        NOT NULL DEFAULT '',
  decided_at    timestamptz,
  comment       text        NOT NULL DEFAULT '',
  PRIMARY KEY (campaign_id, version)
);

CREATE FUNCTION campaign_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'campaign versions are never deleted' USING ERRCODE = 'check_violation';
  END IF;
  IF NEW.config IS DISTINCT FROM OLD.config OR NEW.campaign_id <> OLD.campaign_id
     OR NEW.version <> OLD.version OR NEW.submitted_by <> OLD.submitted_by THEN
    RAISE EXCEPTION 'a submitted campaign version is immutable' USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER campaign_versions_immutable BEFORE UPDATE OR DELETE ON campaign_versions
  FOR EACH ROW EXECUTE FUNCTION campaign_versions_immutable();

CREATE TABLE templates (
  id          text        PRIMARY KEY,
  org_id      text        NOT NULL REFERENCES orgs (id),
  type        text        NOT NULL,
  -- The Template message.
  body        jsonb       NOT NULL,
  created_at  timestamptz NOT NULL
);
CREATE INDEX templates_by_org ON templates (org_id, id);

-- Who changed what, when: one row per change of a campaign, template or org.
CREATE TABLE audit_log (
  id              bigserial   PRIMARY KEY,
  at              timestamptz NOT NULL,
  org_id          text        NOT NULL,
  entity          text        NOT NULL,
  entity_id       text        NOT NULL,
  action          text        NOT NULL,
  actor_org       text        NOT NULL,
  actor_operator  text        NOT NULL,
  before          jsonb,
  after           jsonb,
  comment         text        NOT NULL DEFAULT '',
  request_id      text        NOT NULL DEFAULT ''
);
CREATE INDEX audit_by_entity ON audit_log (entity_id, id);
CREATE INDEX audit_by_actor ON audit_log (actor_operator, id);
CREATE INDEX audit_by_time ON audit_log (at);

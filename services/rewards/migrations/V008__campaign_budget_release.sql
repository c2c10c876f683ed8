-- When each campaign with a budget ends, as the rewards service learnt it from
-- mkt.campaign-changes.v1 (decision 035). Once `ends_at` is longer ago than the release delay,
-- what the campaign's budget holds and no participation has reserved goes back to the org's
-- funding account as a RELEASE transfer.
CREATE TABLE campaign_budget_ends (
  org_id       text        NOT NULL,
  campaign_id  text        NOT NULL,
  -- The end of the published window, or when the campaign was ended early.
  ends_at      timestamptz NOT NULL,
  -- Set once an ENDED or ARCHIVED change was read: a published change read after it (a replay
  -- from an earlier offset) then moves nothing.
  ended        boolean     NOT NULL DEFAULT false,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (org_id, campaign_id)
);
CREATE INDEX campaign_budget_ends_by_end ON campaign_budget_ends (ends_at);

-- What each budget released: only RELEASE transfers are indexed, so a grant's insert pays
-- nothing for it, and a budget's released sum never reads its grants.
CREATE INDEX transfers_released ON transfers (debit_account_id) WHERE code = 8;

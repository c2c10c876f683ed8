-- An approved version of an asset-growth task moves the window end of its enrolments
-- (PgCampaignStore::UpdateCampaign, decision 036), inside the transaction that holds the
-- campaign's row: by this index, not by a scan of every task's enrolments.
CREATE INDEX asset_growth_enrolments_by_campaign ON asset_growth_enrolments (campaign_id);

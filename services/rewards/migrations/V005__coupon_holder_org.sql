-- The org a coupon was granted in (the granting campaign's org: a member bank's campaign granting
-- a federation template gives the coupon to the bank's customer), so the bank's wallet shows it
-- and a sibling bank's customer of the same id does not. Until now it was the template's org.
ALTER TABLE coupons ADD COLUMN holder_org_id text;
UPDATE coupons SET holder_org_id = org_id;
ALTER TABLE coupons ALTER COLUMN holder_org_id SET NOT NULL;
CREATE INDEX coupons_by_holder ON coupons (holder_org_id, customer_id, state);

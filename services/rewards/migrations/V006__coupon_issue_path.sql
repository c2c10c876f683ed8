-- The coupon issue path writes a coupon row and then moves it to ISSUED (non-HOT: `state` is in
-- the wallet index and in the expiry index's predicate), so every index of coupons is written
-- twice per issued coupon (decision 017).
-- The wallet reads by holder (coupons_by_holder, V005) and nothing reads by (org_id, customer_id)
-- or by customer_id alone any more: two index entries fewer per write.
DROP INDEX coupons_by_customer;
DROP INDEX coupons_by_customer_only;
-- The foreign key to benefit_templates made every coupon insert lock its template's row
-- (FOR KEY SHARE): during a grab every claim took a shared lock on the same row, a multixact and
-- a WAL record per coupon, which is the one-row-lock-per-claim this design avoids for stock and
-- budgets. Coupons are issued only for a template the service has read, and templates are never
-- deleted (they are retired by status), so the reference cannot dangle.
ALTER TABLE coupons DROP CONSTRAINT coupons_template_id_fkey;

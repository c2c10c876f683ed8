-- A grant's reversal first gives back from EXPIRY what of its points expired: in the grant's own
-- lots and in the lots those points were put back into after their lot had expired (decision
-- 006). It follows restored_from_lot_id from the grant's lots; only restored lots are indexed,
-- so a grant's insert (restored_from_lot_id NULL) pays nothing for it.
CREATE INDEX lots_by_restored_origin ON lots (restored_from_lot_id)
  WHERE restored_from_lot_id IS NOT NULL;

-- Batch-grant items whose grant could not be confirmed (reason STUCK, still PENDING): counted on
-- every progress read (GetBatchGrant) and listed for operators to settle, by this index rather
-- than by a walk over a large batch's pending items.
CREATE INDEX batch_grant_items_stuck ON batch_grant_items (campaign_id, customer_id)
  WHERE state = 'PENDING' AND reason <> '';

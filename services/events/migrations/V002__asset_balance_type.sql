-- The event type asset_balance (资产提升, issue 8 item 6): a customer's balance as of a day, from
-- the core systems. The campaigns service keeps the end-of-day balances for asset-growth tasks;
-- registering the type here keeps this service from dead-lettering it. Same JSON as the seeded
-- types (marketing.events.v1.EventType); an operator's own definition is left alone.
INSERT INTO event_types (name, definition) VALUES ('asset_balance',
  '{"name":"asset_balance","description":"A customer''s total assets as of a day (balance_fen; as_of_date YYYY-MM-DD or RFC 3339, default the day of occurred_at, China time)","attributes":[{"name":"balance_fen","type":"DECIMAL_FEN","required":true},{"name":"as_of_date","type":"STRING"}],"version":"1"}')
ON CONFLICT (name) DO NOTHING;

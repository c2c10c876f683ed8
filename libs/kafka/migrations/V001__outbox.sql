-- Facts waiting to leave through Kafka, written in the business transaction that caused them.
CREATE TABLE outbox (
  id          bigserial PRIMARY KEY,
  topic       text        NOT NULL,
  msg_key     bytea       NOT NULL,
  msg_value   bytea       NOT NULL,
  event_id    text        NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  sent_at     timestamptz
);
-- The relay reads unsent rows in id order.
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- Events a consumer has already applied, written in the same transaction as the effect.
CREATE TABLE processed_events (
  consumer      text        NOT NULL,
  event_id      text        NOT NULL,
  processed_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, event_id)
);

-- What a campaign's state changes did to its rule (decision 010, amended 2026-11-29, later): when it
-- ended (late events that occurred before then still match, for late_events_s) and the periods it
-- was paused (events that occurred then never match). JSON (rules.cc LifecycleToJson); '' for a
-- rule never paused or ended.
ALTER TABLE trigger_rules ADD COLUMN lifecycle text NOT NULL DEFAULT '';

-- What the upstream said each call cost, in its own units (the filter's
-- limits.units_header response header; the ai-server reports the characters
-- it analysed): one more counted quantity of the ledger, 0 for the rows
-- stored before it and for calls whose upstream said nothing.
ALTER TABLE usage_log
    ADD COLUMN units BIGINT NOT NULL DEFAULT 0;

-- The rollups keep units as they keep the byte counts: the sums of their
-- high and low 32 bits, exact whatever a row holds. Rows already rolled up
-- counted no units, so 0 is their true sum and nothing is backfilled.
ALTER TABLE usage_hourly
    ADD COLUMN units_high BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN units_low  BIGINT NOT NULL DEFAULT 0;

ALTER TABLE usage_daily
    ADD COLUMN units_high BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN units_low  BIGINT NOT NULL DEFAULT 0;

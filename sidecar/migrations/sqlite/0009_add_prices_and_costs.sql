-- Prices of LLM models, and the cost of every LLM call's usage row.
--
-- A price is kept exactly: whole micro-units (millionths of the currency)
-- per per_tokens tokens (1, 1000 or 1000000), never a float. A model's
-- versions are told apart by the instant they take effect (from_ms, Unix
-- milliseconds): a row is priced by the latest version whose from_ms is at
-- or before the row's time. Versions are only added, never changed.
CREATE TABLE prices (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    model               TEXT    NOT NULL,
    from_ms             INTEGER NOT NULL,
    currency            TEXT    NOT NULL,
    per_tokens          INTEGER NOT NULL,
    input_micros        INTEGER NOT NULL,
    cached_input_micros INTEGER NOT NULL,
    output_micros       INTEGER NOT NULL,
    created_ms          INTEGER NOT NULL,
    UNIQUE (model, from_ms)
);

-- A row's cost, computed once at ingestion and rounded half up to a whole
-- micro-unit: NULL for a call that is not an LLM call, and for an LLM call
-- of a model with no price at its time (unpriced). Rows stored before this
-- migration were never priced.
ALTER TABLE usage_log ADD COLUMN cost_micros INTEGER NULL;
ALTER TABLE usage_log ADD COLUMN currency TEXT NULL;

-- The rollups sum the rows' stored costs (as the sums of their high and
-- low 32 bits, like bytes and units), and count the LLM rows priced and
-- unpriced. The LLM rows rolled up so far (model <> '') were never priced:
-- they are counted unpriced.
ALTER TABLE usage_hourly ADD COLUMN cost_micros_high INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN cost_micros_low INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN priced_rows INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN unpriced_rows INTEGER NOT NULL DEFAULT 0;
UPDATE usage_hourly SET unpriced_rows = requests WHERE model <> '';

ALTER TABLE usage_daily ADD COLUMN cost_micros_high INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN cost_micros_low INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN priced_rows INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN unpriced_rows INTEGER NOT NULL DEFAULT 0;
UPDATE usage_daily SET unpriced_rows = requests WHERE model <> '';

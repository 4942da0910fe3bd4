-- Prices of LLM models, and the cost of every LLM call's usage row.
--
-- A price is kept exactly: whole micro-units (millionths of the currency)
-- per per_tokens tokens (1, 1000 or 1000000), never a float. A model's
-- versions are told apart by the instant they take effect (from_ms, Unix
-- milliseconds): a row is priced by the latest version whose from_ms is at
-- or before the row's time. Versions are only added, never changed.
CREATE TABLE prices (
    id                  BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    model               VARCHAR(256) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    from_ms             BIGINT       NOT NULL,
    currency            CHAR(3)      CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    per_tokens          BIGINT       NOT NULL,
    input_micros        BIGINT       NOT NULL,
    cached_input_micros BIGINT       NOT NULL,
    output_micros       BIGINT       NOT NULL,
    created_ms          BIGINT       NOT NULL,
    UNIQUE KEY uq_prices_model_from (model, from_ms)
) ENGINE = InnoDB;

-- A row's cost, computed once at ingestion and rounded half up to a whole
-- micro-unit: NULL for a call that is not an LLM call, and for an LLM call
-- of a model with no price at its time (unpriced). Rows stored before this
-- migration were never priced.
ALTER TABLE usage_log
    ADD COLUMN cost_micros BIGINT NULL,
    ADD COLUMN currency    CHAR(3) CHARACTER SET ascii COLLATE ascii_bin NULL;

-- The rollups sum the rows' stored costs (as the sums of their high and
-- low 32 bits, like bytes and units), and count the LLM rows priced and
-- unpriced. The LLM rows rolled up so far (model <> '') were never priced:
-- they are counted unpriced.
ALTER TABLE usage_hourly
    ADD COLUMN cost_micros_high BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cost_micros_low  BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN priced_rows      BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN unpriced_rows    BIGINT NOT NULL DEFAULT 0;
UPDATE usage_hourly SET unpriced_rows = requests WHERE model <> '';

ALTER TABLE usage_daily
    ADD COLUMN cost_micros_high BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cost_micros_low  BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN priced_rows      BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN unpriced_rows    BIGINT NOT NULL DEFAULT 0;
UPDATE usage_daily SET unpriced_rows = requests WHERE model <> '';

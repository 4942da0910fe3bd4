-- LLM metering: what each call was as an LLM call (UsageRecord::llm). A row
-- of any other call, and every row stored before this migration, keeps the
-- defaults: no api or model (NULL), not streamed, no tokens, usage_source
-- 'none'. Token counts are at most 2^30 each (ingestion refuses more), so
-- their sums are plain 64-bit sums, exact for 2^33 rows.
ALTER TABLE usage_log ADD COLUMN api TEXT NULL;
ALTER TABLE usage_log ADD COLUMN model TEXT NULL;
ALTER TABLE usage_log ADD COLUMN streamed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_log ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_log ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_log ADD COLUMN cached_input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_log ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_log ADD COLUMN usage_source TEXT NOT NULL DEFAULT 'none';

-- The rollups are kept per key, bucket, outcome and model ('' for calls that
-- are not LLM calls, which every row rolled up so far is), with the token
-- sums. SQLite cannot change a primary key in place: each table is rebuilt
-- with its rows, which become the model '' rows of their (key, bucket,
-- outcome), their token sums 0.
CREATE TABLE usage_hourly_by_model (
    api_key_id          INTEGER NOT NULL,
    bucket_start        TEXT    NOT NULL,
    outcome             TEXT    NOT NULL,
    model               TEXT    NOT NULL DEFAULT '',
    requests            INTEGER NOT NULL,
    request_bytes_high  INTEGER NOT NULL,
    request_bytes_low   INTEGER NOT NULL,
    response_bytes_high INTEGER NOT NULL,
    response_bytes_low  INTEGER NOT NULL,
    units_high          INTEGER NOT NULL DEFAULT 0,
    units_low           INTEGER NOT NULL DEFAULT 0,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (api_key_id, bucket_start, outcome, model)
) WITHOUT ROWID;

INSERT INTO usage_hourly_by_model
    (api_key_id, bucket_start, outcome, model, requests, request_bytes_high,
     request_bytes_low, response_bytes_high, response_bytes_low, units_high, units_low)
SELECT api_key_id, bucket_start, outcome, '', requests, request_bytes_high,
       request_bytes_low, response_bytes_high, response_bytes_low, units_high, units_low
FROM usage_hourly;

DROP TABLE usage_hourly;
ALTER TABLE usage_hourly_by_model RENAME TO usage_hourly;
CREATE INDEX ix_usage_hourly_bucket ON usage_hourly (bucket_start);

CREATE TABLE usage_daily_by_model (
    api_key_id          INTEGER NOT NULL,
    bucket_start        TEXT    NOT NULL,
    outcome             TEXT    NOT NULL,
    model               TEXT    NOT NULL DEFAULT '',
    requests            INTEGER NOT NULL,
    request_bytes_high  INTEGER NOT NULL,
    request_bytes_low   INTEGER NOT NULL,
    response_bytes_high INTEGER NOT NULL,
    response_bytes_low  INTEGER NOT NULL,
    units_high          INTEGER NOT NULL DEFAULT 0,
    units_low           INTEGER NOT NULL DEFAULT 0,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (api_key_id, bucket_start, outcome, model)
) WITHOUT ROWID;

INSERT INTO usage_daily_by_model
    (api_key_id, bucket_start, outcome, model, requests, request_bytes_high,
     request_bytes_low, response_bytes_high, response_bytes_low, units_high, units_low)
SELECT api_key_id, bucket_start, outcome, '', requests, request_bytes_high,
       request_bytes_low, response_bytes_high, response_bytes_low, units_high, units_low
FROM usage_daily;

DROP TABLE usage_daily;
ALTER TABLE usage_daily_by_model RENAME TO usage_daily;
CREATE INDEX ix_usage_daily_bucket ON usage_daily (bucket_start);

-- LLM metering: what each call was as an LLM call (UsageRecord::llm). A row
-- of any other call, and every row stored before this migration, keeps the
-- defaults: no api or model (NULL), not streamed, no tokens, usage_source
-- 'none'. Token counts are at most 2^30 each (ingestion refuses more), so
-- their sums are plain 64-bit sums, exact for 2^33 rows.
ALTER TABLE usage_log
    ADD COLUMN api                 VARCHAR(32)  NULL,
    ADD COLUMN model               VARCHAR(256) NULL,
    ADD COLUMN streamed            BOOLEAN      NOT NULL DEFAULT FALSE,
    ADD COLUMN input_tokens        BIGINT       NOT NULL DEFAULT 0,
    ADD COLUMN output_tokens       BIGINT       NOT NULL DEFAULT 0,
    ADD COLUMN cached_input_tokens BIGINT       NOT NULL DEFAULT 0,
    ADD COLUMN reasoning_tokens    BIGINT       NOT NULL DEFAULT 0,
    ADD COLUMN usage_source        VARCHAR(16)  NOT NULL DEFAULT 'none';

-- The rollups are kept per key, bucket, outcome and model ('' for calls that
-- are not LLM calls, which every row rolled up so far is), with the token
-- sums. The model is kept as bytes (VARBINARY: up to 256 characters of
-- utf8mb4): the utf8mb4 collations MySQL and MariaDB share compare two
-- names that differ only in case or in trailing spaces as one key, and two
-- models must stay two rows.
ALTER TABLE usage_hourly
    ADD COLUMN model               VARBINARY(1024) NOT NULL DEFAULT '',
    ADD COLUMN input_tokens        BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN output_tokens       BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cached_input_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN reasoning_tokens    BIGINT NOT NULL DEFAULT 0,
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (api_key_id, bucket_start, outcome, model);

ALTER TABLE usage_daily
    ADD COLUMN model               VARBINARY(1024) NOT NULL DEFAULT '',
    ADD COLUMN input_tokens        BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN output_tokens       BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cached_input_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN reasoning_tokens    BIGINT NOT NULL DEFAULT 0,
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (api_key_id, bucket_start, outcome, model);

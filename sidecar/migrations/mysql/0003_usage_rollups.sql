-- Per-key rollups of usage_log, per hour and per day (UTC), one row per
-- (key, bucket, outcome): what summaries and the usage series read, so that
-- neither scans the ledger. The sidecar adds each usage batch's new rows to
-- both in the same transaction as the rows themselves, so the rollups always
-- equal the ledger; `tollgate usage prune` deletes old usage_log rows and
-- keeps these. Byte counts are kept as the sums of their high and low 32 bits
-- (as the summary has summed usage_log since 0001's rows could hold up to
-- 2^63-1): a half's sum overflows only past 2^31 rows of one bucket. A later
-- counted quantity (units) is one more pair of columns.
CREATE TABLE usage_hourly (
    api_key_id          BIGINT      NOT NULL,
    -- The hour's first instant (UTC).
    bucket_start        DATETIME    NOT NULL,
    outcome             VARCHAR(64) NOT NULL,
    requests            BIGINT      NOT NULL,
    request_bytes_high  BIGINT      NOT NULL,
    request_bytes_low   BIGINT      NOT NULL,
    response_bytes_high BIGINT      NOT NULL,
    response_bytes_low  BIGINT      NOT NULL,
    PRIMARY KEY (api_key_id, bucket_start, outcome),
    KEY ix_usage_hourly_bucket (bucket_start)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE usage_daily (
    api_key_id          BIGINT      NOT NULL,
    -- The day's first instant (UTC midnight).
    bucket_start        DATETIME    NOT NULL,
    outcome             VARCHAR(64) NOT NULL,
    requests            BIGINT      NOT NULL,
    request_bytes_high  BIGINT      NOT NULL,
    request_bytes_low   BIGINT      NOT NULL,
    response_bytes_high BIGINT      NOT NULL,
    response_bytes_low  BIGINT      NOT NULL,
    PRIMARY KEY (api_key_id, bucket_start, outcome),
    KEY ix_usage_daily_bucket (bucket_start)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Pruning finds old rows by time, whatever their key.
CREATE INDEX ix_usage_log_created ON usage_log (created_at);

-- The rows already in the ledger.
INSERT INTO usage_hourly
SELECT api_key_id, DATE_FORMAT(created_at, '%Y-%m-%d %H:00:00'), outcome, COUNT(*),
       SUM(request_bytes >> 32), SUM(request_bytes & 4294967295),
       SUM(response_bytes >> 32), SUM(response_bytes & 4294967295)
FROM usage_log
GROUP BY api_key_id, DATE_FORMAT(created_at, '%Y-%m-%d %H:00:00'), outcome;

INSERT INTO usage_daily
SELECT api_key_id, bucket_start_day, outcome, SUM(requests),
       SUM(request_bytes_high), SUM(request_bytes_low),
       SUM(response_bytes_high), SUM(response_bytes_low)
FROM (SELECT api_key_id, DATE(bucket_start) AS bucket_start_day, outcome, requests,
             request_bytes_high, request_bytes_low, response_bytes_high, response_bytes_low
      FROM usage_hourly) AS hours
GROUP BY api_key_id, bucket_start_day, outcome;

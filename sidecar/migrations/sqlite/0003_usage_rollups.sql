-- Per-key rollups of usage_log, per hour and per day (UTC), one row per
-- (key, bucket, outcome): what summaries and the usage series read, so that
-- neither scans the ledger. The sidecar adds each usage batch's new rows to
-- both in the same transaction as the rows themselves, so the rollups always
-- equal the ledger; `tollgate usage prune` deletes old usage_log rows and
-- keeps these. Byte counts are kept as the sums of their high and low 32 bits
-- (as the summary has summed usage_log since 0001's rows could hold up to
-- 2^63-1): a half's sum overflows only past 2^31 rows of one bucket. A later
-- counted quantity (units) is one more pair of columns.
-- bucket_start is the bucket's first instant, as UTC text like created_at
-- ('YYYY-MM-DD HH:00:00.000').
CREATE TABLE usage_hourly (
    api_key_id          INTEGER NOT NULL,
    bucket_start        TEXT    NOT NULL,
    outcome             TEXT    NOT NULL,
    requests            INTEGER NOT NULL,
    request_bytes_high  INTEGER NOT NULL,
    request_bytes_low   INTEGER NOT NULL,
    response_bytes_high INTEGER NOT NULL,
    response_bytes_low  INTEGER NOT NULL,
    PRIMARY KEY (api_key_id, bucket_start, outcome)
) WITHOUT ROWID;

CREATE INDEX ix_usage_hourly_bucket ON usage_hourly (bucket_start);

CREATE TABLE usage_daily (
    api_key_id          INTEGER NOT NULL,
    bucket_start        TEXT    NOT NULL,
    outcome             TEXT    NOT NULL,
    requests            INTEGER NOT NULL,
    request_bytes_high  INTEGER NOT NULL,
    request_bytes_low   INTEGER NOT NULL,
    response_bytes_high INTEGER NOT NULL,
    response_bytes_low  INTEGER NOT NULL,
    PRIMARY KEY (api_key_id, bucket_start, outcome)
) WITHOUT ROWID;

CREATE INDEX ix_usage_daily_bucket ON usage_daily (bucket_start);

-- Pruning finds old rows by time, whatever their key.
CREATE INDEX ix_usage_log_created ON usage_log (created_at);

-- The rows already in the ledger.
INSERT INTO usage_hourly
SELECT api_key_id, substr(created_at, 1, 13) || ':00:00.000', outcome, COUNT(*),
       SUM(request_bytes >> 32), SUM(request_bytes & 4294967295),
       SUM(response_bytes >> 32), SUM(response_bytes & 4294967295)
FROM usage_log
GROUP BY api_key_id, substr(created_at, 1, 13), outcome;

INSERT INTO usage_daily
SELECT api_key_id, substr(bucket_start, 1, 10) || ' 00:00:00.000', outcome, SUM(requests),
       SUM(request_bytes_high), SUM(request_bytes_low),
       SUM(response_bytes_high), SUM(response_bytes_low)
FROM usage_hourly
GROUP BY api_key_id, substr(bucket_start, 1, 10), outcome;

-- The key change feed. key_feed holds one row: head_seq is the newest
-- change's position. A change of a key updates that row in the key's own
-- transaction, so positions are handed out in commit order and a reader
-- that sees head_seq = n sees every change up to n. purged_through:
-- changes up to it have been deleted, so a reader standing before it has
-- missed some and must drop its cache.
CREATE TABLE key_feed (
    shard           INTEGER PRIMARY KEY,
    head_seq        INTEGER NOT NULL,
    purged_through  INTEGER NOT NULL
);

INSERT INTO key_feed (shard, head_seq, purged_through) VALUES (1, 0, 0);

-- One row per change, kept for the feed's retention.
CREATE TABLE key_changes (
    seq         INTEGER PRIMARY KEY,
    key_hash    TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    -- Milliseconds since the Unix epoch.
    created_ms  INTEGER NOT NULL
);

CREATE INDEX ix_key_changes_created ON key_changes (created_ms);

-- Fleet-scoped replay protection: one row per claimed jti (the first 16
-- bytes of its SHA-256, hex), kept until the token can no longer be
-- accepted (expires_at, seconds since the Unix epoch), then purged in
-- batches.
CREATE TABLE jti_claims (
    fingerprint  TEXT    PRIMARY KEY,
    api_key_id   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);

CREATE INDEX ix_jti_claims_expires ON jti_claims (expires_at);

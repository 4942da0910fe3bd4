-- The key change feed. key_feed holds one row: head_seq is the newest
-- change's position. A change of a key updates that row in the key's own
-- transaction, so positions are handed out in commit order (the row lock is
-- held until the commit) and a reader that sees head_seq = n sees every
-- change up to n. purged_through: changes up to it have been deleted, so a
-- reader standing before it has missed some and must drop its cache.
CREATE TABLE key_feed (
    shard           TINYINT NOT NULL,
    head_seq        BIGINT  NOT NULL,
    purged_through  BIGINT  NOT NULL,
    PRIMARY KEY (shard)
) ENGINE = InnoDB;

INSERT INTO key_feed (shard, head_seq, purged_through) VALUES (1, 0, 0);

-- One row per change, kept for the feed's retention.
CREATE TABLE key_changes (
    seq         BIGINT      NOT NULL,
    key_hash    CHAR(64)    CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    kind        VARCHAR(32) CHARACTER SET ascii NOT NULL,
    -- Milliseconds since the Unix epoch.
    created_ms  BIGINT      NOT NULL,
    PRIMARY KEY (seq),
    KEY ix_key_changes_created (created_ms)
) ENGINE = InnoDB;

-- Fleet-scoped replay protection: one row per claimed jti (the first 16
-- bytes of its SHA-256, hex), kept until the token can no longer be
-- accepted (expires_at, seconds since the Unix epoch), then purged in
-- batches.
CREATE TABLE jti_claims (
    fingerprint  CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    api_key_id   BIGINT   NOT NULL,
    expires_at   BIGINT   NOT NULL,
    PRIMARY KEY (fingerprint),
    KEY ix_jti_claims_expires (expires_at)
) ENGINE = InnoDB;

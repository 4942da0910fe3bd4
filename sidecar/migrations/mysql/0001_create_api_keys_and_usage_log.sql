-- The key registry: only the SHA-256 of a key is kept; the plaintext is shown once at creation.
CREATE TABLE api_keys (
    id          BIGINT       NOT NULL AUTO_INCREMENT,
    name        VARCHAR(200) NOT NULL,
    prefix      VARCHAR(16)  NOT NULL,
    -- Lowercase hex; binary collation so the look-up is an exact match.
    key_hash    CHAR(64)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    status      VARCHAR(16)  NOT NULL DEFAULT 'ACTIVE',
    created_at  DATETIME(3)  NOT NULL,
    revoked_at  DATETIME(3)  NULL,
    expires_at  DATETIME(3)  NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_api_keys_key_hash (key_hash),
    CONSTRAINT ck_api_keys_status CHECK (status IN ('ACTIVE', 'REVOKED'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The usage ledger. There is deliberately no foreign key to api_keys: a batch
-- from the filter must never fail because one record names a key id that is
-- unknown here (deleted, or registered in another environment); metering keeps
-- what it is given.
CREATE TABLE usage_log (
    id              BIGINT       NOT NULL AUTO_INCREMENT,
    -- Minted by the gateway; unique so that a retried batch never double-counts.
    request_id      VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    api_key_id      BIGINT       NOT NULL,
    method          VARCHAR(16)  NOT NULL,
    endpoint        VARCHAR(512) NOT NULL,
    status_code     SMALLINT     NOT NULL,
    outcome         VARCHAR(64)  NOT NULL,
    request_bytes   BIGINT       NOT NULL,
    response_bytes  BIGINT       NOT NULL,
    duration_ms     BIGINT       NOT NULL,
    -- When the request arrived (UTC), from the record's timestamp_ms.
    created_at      DATETIME(3)  NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_usage_log_request_id (request_id),
    KEY ix_usage_log_key_created (api_key_id, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

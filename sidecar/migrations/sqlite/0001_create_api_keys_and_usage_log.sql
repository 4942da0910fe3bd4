-- Timestamps are UTC text 'YYYY-MM-DD HH:MM:SS.mmm' (fixed width, so text
-- order is time order).

-- The key registry: only the SHA-256 of a key is kept; the plaintext is shown once at creation.
CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    prefix      TEXT    NOT NULL,
    key_hash    TEXT    NOT NULL UNIQUE,
    status      TEXT    NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'REVOKED')),
    created_at  TEXT    NOT NULL,
    revoked_at  TEXT    NULL,
    expires_at  TEXT    NULL
);

-- The usage ledger. There is deliberately no foreign key to api_keys: a batch
-- from the filter must never fail because one record names a key id that is
-- unknown here (deleted, or registered in another environment); metering keeps
-- what it is given.
CREATE TABLE usage_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Minted by the gateway; unique so that a retried batch never double-counts.
    request_id      TEXT    NOT NULL UNIQUE,
    api_key_id      INTEGER NOT NULL,
    method          TEXT    NOT NULL,
    endpoint        TEXT    NOT NULL,
    status_code     INTEGER NOT NULL,
    outcome         TEXT    NOT NULL,
    request_bytes   INTEGER NOT NULL,
    response_bytes  INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    created_at      TEXT    NOT NULL
);

CREATE INDEX ix_usage_log_key_created ON usage_log (api_key_id, created_at);

-- A key's limits, in the canonical spelling of tollgate_wire::limits
-- ('rate=10/s burst=20 requests=1000/day ...', sizes in bytes, ASCII).
-- NULL: the key has no limit.
ALTER TABLE api_keys ADD COLUMN limits_spec TEXT NULL;

-- The authority for each key's quota in each window: one row per (key,
-- quota kind, window start). charged is what was granted ahead (requests,
-- request_bytes: net of returns) or settled after the fact
-- (response_bytes, units). A grant is one conditional UPDATE of this row,
-- so for the kinds charged at admission charged never passes limit_value.
-- last_grant: the amount the row's latest grant took, read back in the
-- grant's transaction. Times are milliseconds since the Unix epoch.
CREATE TABLE limit_counters (
    api_key_id       INTEGER NOT NULL,
    quota            TEXT    NOT NULL,
    window_start_ms  INTEGER NOT NULL,
    window_end_ms    INTEGER NOT NULL,
    limit_value      INTEGER NOT NULL,
    charged          INTEGER NOT NULL,
    last_grant       INTEGER NOT NULL,
    PRIMARY KEY (api_key_id, quota, window_start_ms)
);

-- One row per grant or settlement, by the id its sender minted: a retried
-- call finds its row and is answered as before, never charged twice.
-- returned: what a grant gave back (once; returned_ms NULL until then).
CREATE TABLE limit_charges (
    charge_id        TEXT    PRIMARY KEY,
    api_key_id       INTEGER NOT NULL,
    quota            TEXT    NOT NULL,
    window_start_ms  INTEGER NOT NULL,
    kind             TEXT    NOT NULL,
    amount           INTEGER NOT NULL,
    returned         INTEGER NOT NULL,
    returned_ms      INTEGER NULL,
    created_ms       INTEGER NOT NULL
);

CREATE INDEX ix_limit_charges_created ON limit_charges (created_ms);

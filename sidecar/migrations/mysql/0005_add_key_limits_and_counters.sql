-- A key's limits, in the canonical spelling of tollgate_wire::limits
-- ('rate=10/s burst=20 requests=1000/day ...', sizes in bytes, ASCII).
-- NULL: the key has no limit.
ALTER TABLE api_keys
    ADD COLUMN limits_spec VARCHAR(512) CHARACTER SET ascii COLLATE ascii_bin NULL;

-- The authority for each key's quota in each window: one row per (key,
-- quota kind, window start). charged is what was granted ahead (requests,
-- request_bytes: net of returns) or settled after the fact
-- (response_bytes, units). A grant is one conditional UPDATE of this row,
-- so for the kinds charged at admission charged never passes limit_value.
-- last_grant: the amount the row's latest grant took, read back in the
-- grant's transaction. Times are milliseconds since the Unix epoch.
CREATE TABLE limit_counters (
    api_key_id       BIGINT      NOT NULL,
    quota            VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    window_start_ms  BIGINT      NOT NULL,
    window_end_ms    BIGINT      NOT NULL,
    limit_value      BIGINT      NOT NULL,
    charged          BIGINT      NOT NULL,
    last_grant       BIGINT      NOT NULL,
    PRIMARY KEY (api_key_id, quota, window_start_ms)
) ENGINE = InnoDB;

-- One row per grant or settlement, by the id its sender minted: a retried
-- call finds its row and is answered as before, never charged twice.
-- returned: what a grant gave back (once; returned_ms NULL until then).
CREATE TABLE limit_charges (
    charge_id        CHAR(32)    CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    api_key_id       BIGINT      NOT NULL,
    quota            VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    window_start_ms  BIGINT      NOT NULL,
    kind             VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    amount           BIGINT      NOT NULL,
    returned         BIGINT      NOT NULL,
    returned_ms      BIGINT      NULL,
    created_ms       BIGINT      NOT NULL,
    PRIMARY KEY (charge_id),
    KEY ix_limit_charges_created (created_ms)
) ENGINE = InnoDB;

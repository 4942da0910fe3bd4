-- Teams: a team holds keys, and its own rate and quotas (limits_spec, the
-- spelling of api_keys.limits_spec; NULL: none) shared by all of them.
-- name follows the rule of every name (domain/names.rs), unique byte for
-- byte. created_at as api_keys'.
CREATE TABLE teams (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL UNIQUE,
    limits_spec  TEXT    NULL,
    created_at   TEXT    NOT NULL
);

-- The team a key belongs to (NULL: none). The foreign key refuses a team
-- that does not exist and the deletion of a team that still has keys.
ALTER TABLE api_keys ADD COLUMN team_id INTEGER NULL REFERENCES teams (id);

CREATE INDEX ix_api_keys_team ON api_keys (team_id);

-- A budget's owner is a key or a team (tollgate_wire::BudgetOwner): a key's
-- counters and charges are (api_key_id = key, team_id = 0), a team's
-- (api_key_id = 0, team_id = team); no key and no team has id 0. Counters
-- take team_id into their primary key, so the table is rebuilt with its
-- rows (at most 40 days of counters).
CREATE TABLE limit_counters_0011 (
    api_key_id       INTEGER NOT NULL,
    team_id          INTEGER NOT NULL DEFAULT 0,
    quota            TEXT    NOT NULL,
    window_start_ms  INTEGER NOT NULL,
    window_end_ms    INTEGER NOT NULL,
    limit_value      INTEGER NOT NULL,
    charged          INTEGER NOT NULL,
    last_grant       INTEGER NOT NULL,
    PRIMARY KEY (api_key_id, team_id, quota, window_start_ms)
);

INSERT INTO limit_counters_0011 (api_key_id, team_id, quota, window_start_ms, window_end_ms,
    limit_value, charged, last_grant)
SELECT api_key_id, 0, quota, window_start_ms, window_end_ms, limit_value, charged, last_grant
FROM limit_counters;

DROP TABLE limit_counters;

ALTER TABLE limit_counters_0011 RENAME TO limit_counters;

ALTER TABLE limit_charges ADD COLUMN team_id INTEGER NOT NULL DEFAULT 0;

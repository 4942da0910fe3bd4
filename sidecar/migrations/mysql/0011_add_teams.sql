-- Teams: a team holds keys, and its own rate and quotas (limits_spec, the
-- spelling of api_keys.limits_spec; NULL: none) shared by all of them.
-- name follows the rule of every name (domain/names.rs), unique byte for
-- byte (utf8mb4_bin, as SQLite compares), at most 200 characters: 800
-- bytes of index key, below InnoDB's 3072 (DYNAMIC rows).
CREATE TABLE teams (
    id           BIGINT        NOT NULL AUTO_INCREMENT,
    name         VARCHAR(200)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    limits_spec  VARCHAR(8192) CHARACTER SET ascii COLLATE ascii_bin NULL,
    created_at   DATETIME(3)   NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_teams_name (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The team a key belongs to (NULL: none). The foreign key refuses a team
-- that does not exist and the deletion of a team that still has keys.
ALTER TABLE api_keys
    ADD COLUMN team_id BIGINT NULL,
    ADD KEY ix_api_keys_team (team_id),
    ADD CONSTRAINT fk_api_keys_team FOREIGN KEY (team_id) REFERENCES teams (id);

-- A budget's owner is a key or a team (tollgate_wire::BudgetOwner): a key's
-- counters and charges are (api_key_id = key, team_id = 0), a team's
-- (api_key_id = 0, team_id = team); no key and no team has id 0. Counters
-- take team_id into their primary key (a copy of the table: it holds at
-- most 40 days of counters).
ALTER TABLE limit_counters
    ADD COLUMN team_id BIGINT NOT NULL DEFAULT 0 AFTER api_key_id,
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (api_key_id, team_id, quota, window_start_ms);

ALTER TABLE limit_charges
    ADD COLUMN team_id BIGINT NOT NULL DEFAULT 0 AFTER api_key_id;

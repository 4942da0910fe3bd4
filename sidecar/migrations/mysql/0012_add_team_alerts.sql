-- Budget alerts on a team's budget. An alert's owner is a key or a team,
-- as a budget's is (migration 0011, tollgate_wire::BudgetOwner): a key's
-- alert is (api_key_id = key, team_id = 0), a team's (api_key_id = 0,
-- team_id = team); no key and no team has id 0. Every alert stored before
-- is a key's, as it was. An outbox row names the team whose budget it is
-- about (0: a key's); its uniqueness stays (alert_id, quota,
-- window_start_ms, threshold): once per alert, quota, window and
-- threshold. No foreign key: a team's deletion is refused while alerts
-- name it (store/teams.rs, one statement). The columns are added last,
-- with a constant default, so neither table is copied (the index is built
-- apart, in place).
ALTER TABLE alerts
    ADD COLUMN team_id BIGINT NOT NULL DEFAULT 0;

CREATE INDEX alerts_by_team ON alerts (team_id);

ALTER TABLE alert_events
    ADD COLUMN team_id BIGINT NOT NULL DEFAULT 0;

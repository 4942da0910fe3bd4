-- Budget alerts: a key's thresholds (percent of each of its quotas in the
-- current window) and the webhook URL told when one is crossed.
-- The signing secret is either read at delivery from the environment
-- variable secret_env names (never stored), or generated and kept sealed
-- under the master key (sealed_secret, the format of
-- api_keys.signing_secret_sealed). Times are Unix milliseconds.
CREATE TABLE alerts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    api_key_id    INTEGER NOT NULL,
    thresholds    TEXT    NOT NULL,
    url           TEXT    NOT NULL,
    secret_env    TEXT    NULL,
    sealed_secret TEXT    NULL,
    created_ms    INTEGER NOT NULL
);
CREATE INDEX alerts_by_key ON alerts (api_key_id);

-- The outbox: one row per threshold crossed, per alert, quota and window.
-- The unique key makes the row exist once whatever the number of sidecars
-- that saw the crossing (ON CONFLICT DO NOTHING). payload is the event's
-- JSON body, fixed at insertion so every attempt sends the same bytes;
-- event_id is the webhook-id. state: pending, delivered or failed. A sender
-- claims a due pending row by moving lease_until_ms past now, counting the
-- attempt; the row is due again once the lease runs out (a sender that
-- died mid-send).
CREATE TABLE alert_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE,
    alert_id        INTEGER NOT NULL,
    quota           TEXT    NOT NULL,
    window_start_ms INTEGER NOT NULL,
    threshold       INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    lease_until_ms  INTEGER NOT NULL,
    last_error      TEXT    NULL,
    created_ms      INTEGER NOT NULL,
    delivered_ms    INTEGER NULL,
    UNIQUE (alert_id, quota, window_start_ms, threshold)
);
CREATE INDEX alert_events_due ON alert_events (state, next_attempt_ms);

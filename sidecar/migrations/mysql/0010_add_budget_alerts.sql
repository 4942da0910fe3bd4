-- Budget alerts: a key's thresholds (percent of each of its quotas in the
-- current window) and the webhook URL told when one is crossed.
-- The signing secret is either read at delivery from the environment
-- variable secret_env names (never stored), or generated and kept sealed
-- under the master key (sealed_secret, the format of
-- api_keys.signing_secret_sealed). Times are Unix milliseconds.
CREATE TABLE alerts (
    id            BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    api_key_id    BIGINT        NOT NULL,
    thresholds    VARCHAR(400)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    url           VARCHAR(2048) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    secret_env    VARCHAR(128)  CHARACTER SET ascii COLLATE ascii_bin NULL,
    sealed_secret VARCHAR(255)  CHARACTER SET ascii COLLATE ascii_bin NULL,
    created_ms    BIGINT        NOT NULL,
    INDEX alerts_by_key (api_key_id)
) ENGINE = InnoDB;

-- The outbox: one row per threshold crossed, per alert, quota and window.
-- The unique key makes the row exist once whatever the number of sidecars
-- that saw the crossing (INSERT IGNORE). payload is the event's JSON body,
-- fixed at insertion so every attempt sends the same bytes; event_id is the
-- webhook-id. state: pending, delivered or failed. A sender claims a due
-- pending row by moving lease_until_ms past now, counting the attempt; the
-- row is due again once the lease runs out (a sender that died mid-send).
CREATE TABLE alert_events (
    id              BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_id        VARCHAR(64)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    alert_id        BIGINT        NOT NULL,
    quota           VARCHAR(300)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    window_start_ms BIGINT        NOT NULL,
    threshold       INT           NOT NULL,
    payload         TEXT          CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    state           VARCHAR(16)   CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    attempts        INT           NOT NULL,
    next_attempt_ms BIGINT        NOT NULL,
    lease_until_ms  BIGINT        NOT NULL,
    last_error      VARCHAR(512)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    created_ms      BIGINT        NOT NULL,
    delivered_ms    BIGINT        NULL,
    UNIQUE KEY alert_events_once (alert_id, quota, window_start_ms, threshold),
    UNIQUE KEY alert_events_by_event_id (event_id),
    INDEX alert_events_due (state, next_attempt_ms)
) ENGINE = InnoDB;

"""The benchmark's usage check: what the upstreams served against ``usage_log``.

Two checks, per metered scenario (each has its own API key):

* counts: oha's 2xx answers (smoke and warm-up runs included) equal the
  key's rows with a 2xx status;
* identities: the request ids the upstream served under the key (its access
  log: the key id and request id the filter set on the request it let
  through) equal the ``request_id`` of the key's ``allowed`` rows: nothing
  missing, nothing extra.

The fast upstream (an Envoy) and the ai-server (gunicorn) each write one
line per request, ``SERVED_FORMAT`` of bench/envoys.py and
``AI_SERVER_SERVED_FORMAT`` here; requests that no filter let through carry
no key id (``-``) and are not counted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tollgate_tooling.gateway import mysql_connect

#: The ai-server's access-log line (gunicorn ``access_log_format``): a marker,
#: so the lines stand out among its other log lines, then key id and request id.
AI_SERVER_SERVED_MARKER = "served"
AI_SERVER_SERVED_FORMAT = f"{AI_SERVER_SERVED_MARKER} %({{x-tollgate-key-id}}i)s %({{x-request-id}}i)s"


def query(url: str, database: str, sql: str, params: tuple = ()) -> list[dict]:
    conn = mysql_connect(url, database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def ok_rows(url: str, database: str, key_ids: list[int]) -> dict[int, int]:
    """Rows of successful (2xx) requests in usage_log, per API key id."""
    if not key_ids:
        return {}
    marks = ", ".join(["%s"] * len(key_ids))
    rows = query(url, database, "SELECT api_key_id, COUNT(*) AS n FROM usage_log "
                 f"WHERE status_code BETWEEN 200 AND 299 AND api_key_id IN ({marks}) "
                 "GROUP BY api_key_id", tuple(key_ids))
    return {int(r["api_key_id"]): int(r["n"]) for r in rows}


def grant_count(url: str, database: str, key_id: int) -> int:
    """Grants of its quotas the sidecar gave key ``key_id`` (``limit_charges``)."""
    rows = query(url, database, "SELECT COUNT(*) AS n FROM limit_charges "
                 "WHERE api_key_id = %s AND kind = 'grant'", (key_id,))
    return int(rows[0]["n"]) if rows else 0


def allowed_ids(url: str, database: str, key_ids: list[int]) -> dict[int, set[str]]:
    """The request ids of the ``allowed`` rows in usage_log, per API key id."""
    out: dict[int, set[str]] = {k: set() for k in key_ids}
    if not key_ids:
        return out
    marks = ", ".join(["%s"] * len(key_ids))
    for row in query(url, database, "SELECT api_key_id, request_id FROM usage_log "
                     f"WHERE outcome = 'allowed' AND api_key_id IN ({marks})", tuple(key_ids)):
        out[int(row["api_key_id"])].add(row["request_id"])
    return out


def served_ids(log: Path, marker: str | None = None) -> dict[int, set[str]]:
    """Request ids per key id from an upstream's access log.

    Lines are ``KEY_ID REQUEST_ID``, after ``marker`` when there is one
    (other lines are skipped); a request without a key id (``-``) is none
    of a metered key's.
    """
    out: dict[int, set[str]] = {}
    with open(log, errors="replace") as lines:
        for line in lines:
            fields = line.split()
            if marker is not None:
                if not fields or fields[0] != marker:
                    continue
                fields = fields[1:]
            if len(fields) != 2 or not fields[0].isdigit():
                continue
            out.setdefault(int(fields[0]), set()).add(fields[1])
    return out


@dataclasses.dataclass
class KeyLedger:
    """One metered scenario's check."""

    scenario: str
    ok_answers: int  # oha's 2xx answers (and the smoke request)
    ok_rows: int  # usage_log rows with a 2xx status
    served: int  # distinct request ids the upstream served
    allowed_rows: int  # distinct request ids of the allowed rows
    missing: int  # served, no allowed row
    extra: int  # an allowed row the upstream never served

    @property
    def exact(self) -> bool:
        return self.ok_answers == self.ok_rows and self.missing == 0 and self.extra == 0

    def describe(self) -> str:
        return (f"{self.scenario}: {self.missing} ids missing, {self.extra} extra "
                f"({self.served} served, {self.allowed_rows} allowed rows; "
                f"{self.ok_rows} 2xx rows for {self.ok_answers} 2xx answers)")


def compare(scenario: str, ok_answers: int, ok_row_count: int, served: set[str],
            allowed: set[str]) -> KeyLedger:
    return KeyLedger(scenario, ok_answers, ok_row_count, len(served), len(allowed),
                     len(served - allowed), len(allowed - served))

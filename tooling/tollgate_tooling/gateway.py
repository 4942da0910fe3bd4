"""A client's view of a running tollgate stack, for the end-to-end tests.

Requests go out with ``requests`` and tokens are minted with PyJWT, the
libraries of the servers that call this gateway today. The usage ledger is
read straight from the sidecar's database (MariaDB or SQLite).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Iterable
from urllib.parse import urlparse

import jwt
import pymysql
import requests

from tollgate_tooling.stack import Stack

ANALYZE = "/proxy/analyze"


def mysql_connect(url: str, database: str | None = None) -> pymysql.connections.Connection:
    """A PyMySQL connection to the server a ``mysql://`` URL names."""
    parts = urlparse(url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=database,
        autocommit=True,
        cursorclass=pymysql.cursors.DictCursor,
    )


@dataclass
class Ledger:
    """Read access to the sidecar's tables."""

    mysql_url: str | None = None
    sqlite_path: str | None = None

    def query(self, sql: str, params: Iterable = ()) -> list[dict]:
        if self.mysql_url:
            parts = urlparse(self.mysql_url)
            conn = mysql_connect(self.mysql_url, parts.path.lstrip("/"))
            try:
                with conn.cursor() as cur:
                    cur.execute(sql.replace("?", "%s"), tuple(params))
                    return list(cur.fetchall())
            finally:
                conn.close()
        conn = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in conn.execute(sql, tuple(params))]
        finally:
            conn.close()

    def usage_rows(self, request_id: str) -> list[dict]:
        return self.query("SELECT * FROM usage_log WHERE request_id = ?", [request_id])

    def wait_usage_row(self, request_id: str, timeout: float = 10.0) -> dict:
        """The one usage row of ``request_id``, waiting for the filter's flush."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.usage_rows(request_id)
            if rows:
                assert len(rows) == 1, f"{len(rows)} usage rows for {request_id}"
                return rows[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no usage row for {request_id} after {timeout}s")
            time.sleep(0.2)


@dataclass
class Gateway:
    """The running stack as a client and an operator see it."""

    stack: Stack
    ledger: Ledger
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def secret(self) -> str:
        return self.stack.config.jwt_secret

    def token(self, body: bytes, ttl: int = 60, secret: str | None = None,
              algorithm: str = "HS256", headers: dict | None = None, **claims) -> str:
        """An X-Auth-Token for ``body`` minted with PyJWT; claims override the defaults."""
        now = int(time.time())
        payload = {"iat": now, "exp": now + ttl, "body_sha256": hashlib.sha256(body).hexdigest()}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, secret or self.secret, algorithm=algorithm, headers=headers)

    def post(self, body: bytes, key: str | None, token: str | None = None, *,
             path: str = ANALYZE, headers: dict | None = None, chunked: bool = False,
             method: str = "POST") -> requests.Response:
        """Send ``body`` through Envoy; a token for it is minted unless given."""
        sent = {"Content-Type": "application/json"}
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        if token is None:
            token = self.token(body)
        if token:
            sent["X-Auth-Token"] = token
        sent.update(headers or {})
        data: bytes | Iterable[bytes] = body
        if chunked:
            data = (body[i:i + 16384] for i in range(0, len(body), 16384)) if body else iter([b""])
        return self.session.request(method, self.stack.gateway + path, data=data,
                                    headers=sent, timeout=30)

    def analyze_direct(self, body: bytes) -> requests.Response:
        """The same call made straight to the ai-server, bypassing the gateway."""
        return requests.post(self.stack.ai_server_url + "/analyze", data=body,
                             headers={"Content-Type": "application/json"}, timeout=30)

    def upstream_seen(self) -> dict:
        """What the ai-server received (its debug endpoint, on in the tests)."""
        resp = requests.get(self.stack.ai_server_url + "/_debug/requests", timeout=5)
        resp.raise_for_status()
        return resp.json()

    def new_key(self, name: str, *extra: str) -> dict:
        return self.stack.create_key(name, *extra)

    def post_refused(self, *args, **kwargs) -> requests.Response:
        """``post`` a request the gateway must refuse, and check that it did
        not reach the AI service (its request count did not move)."""
        before = self.upstream_seen()["count"]
        resp = self.post(*args, **kwargs)
        after = self.upstream_seen()["count"]
        assert after == before, \
            f"a refused request reached the upstream ({resp.status_code} {resp.text[:200]})"
        return resp


def sidecar_request(stack: Stack, method: str, path: str, body=None,
                    headers: dict | None = None) -> requests.Response:
    """A call to the sidecar's HTTP API; a key it creates is remembered by the
    stack (``Stack.created_keys``), like one the CLI creates."""
    resp = requests.request(method, stack.sidecar_url + path, json=body, headers=headers,
                            timeout=10)
    if resp.status_code == 201 and resp.headers.get("content-type", "").startswith(
            "application/json"):
        stack.remember_key(resp.json())
    return resp


def assert_error(resp: requests.Response, status: int, code: str) -> dict:
    """``resp`` is the client contract's JSON error ``code`` with ``status``."""
    assert resp.status_code == status, f"{resp.status_code} {resp.text[:300]}"
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    assert body.get("request_id"), body
    if status == 401:
        assert resp.headers.get("www-authenticate", "").startswith("Bearer"), resp.headers
    return body


#: The names the RateLimit fields give a key's limits (issue 11's contract).
LIMIT_NAMES = ("rate", "requests", "request_bytes", "response_bytes", "units")

_SF_NAME = re.compile(r'"([a-z_]+)"')
_SF_PARAM = re.compile(r"([a-z][a-z0-9_*.-]*)=(-?[0-9]{1,15})")


def ratelimit_items(value: str) -> dict[str, dict[str, int]]:
    """A ``RateLimit`` or ``RateLimit-Policy`` field value, read strictly as
    the structured-field list that draft-ietf-httpapi-ratelimit-headers
    makes it: ``"rate";q=50;w=1, "requests";q=200;w=86400`` is
    ``{"rate": {"q": 50, "w": 1}, "requests": {"q": 200, "w": 86400}}``."""
    items: dict[str, dict[str, int]] = {}
    for member in value.split(","):
        name, *params = (part.strip() for part in member.strip().split(";"))
        quoted = _SF_NAME.fullmatch(name)
        assert quoted, f"{member!r} does not start with a string item, in {value!r}"
        assert quoted[1] not in items, f"{quoted[1]} named twice in {value!r}"
        parsed = {}
        for param in params:
            match = _SF_PARAM.fullmatch(param)
            assert match, f"parameter {param!r} is not key=integer, in {value!r}"
            parsed[match[1]] = int(match[2])
        items[quoted[1]] = parsed
    return items


@dataclass(frozen=True)
class RateLimitField:
    """The ``RateLimit`` field of an answer: the one limit it speaks of."""

    name: str
    remaining: int  # r
    reset_s: int  # t


def ratelimit_field(resp: requests.Response) -> RateLimitField:
    """The answer's ``RateLimit`` field, which must name one known limit
    with its remaining ``r`` and its reset ``t``, both >= 0."""
    value = resp.headers.get("ratelimit")
    assert value, f"no RateLimit field on a {resp.status_code}: {dict(resp.headers)}"
    items = ratelimit_items(value)
    assert len(items) == 1, f"RateLimit names {len(items)} limits: {value!r}"
    (name, params), = items.items()
    assert name in LIMIT_NAMES, f"RateLimit names an unknown limit: {value!r}"
    assert {"r", "t"} <= set(params), f"RateLimit lacks r or t: {value!r}"
    assert params["r"] >= 0 and params["t"] >= 0, value
    return RateLimitField(name, params["r"], params["t"])


def ratelimit_policy(resp: requests.Response) -> dict[str, tuple[int, int]]:
    """The answer's ``RateLimit-Policy``: each limit's (q, w), the limit and
    its window in seconds."""
    value = resp.headers.get("ratelimit-policy")
    assert value, f"no RateLimit-Policy on a {resp.status_code}: {dict(resp.headers)}"
    policy = {}
    for name, params in ratelimit_items(value).items():
        assert name in LIMIT_NAMES, f"RateLimit-Policy names an unknown limit: {value!r}"
        assert {"q", "w"} <= set(params), f"{name} lacks q or w: {value!r}"
        assert params["q"] >= 1 and params["w"] >= 1, value
        policy[name] = (params["q"], params["w"])
    return policy


@dataclass(frozen=True)
class LimitDenial:
    """What a 429 of a limit told the client."""

    retry_after_s: int
    policy: dict[str, tuple[int, int]]
    denied_by: RateLimitField


def assert_limited(resp: requests.Response, code: str,
                   policy: dict[str, tuple[int, int]]) -> LimitDenial:
    """``resp`` is a limit's denial: the contract's JSON error 429 ``code``
    (``rate_limited`` or ``quota_exceeded``) with ``Retry-After`` in whole
    seconds (>= 1), ``RateLimit-Policy`` listing exactly the key's limits
    ``policy`` ({name: (q, w)}), and ``RateLimit`` naming one of them,
    within its limit and window."""
    assert_error(resp, 429, code)
    retry_after = resp.headers.get("retry-after", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, \
        f"Retry-After {retry_after!r} is not whole seconds >= 1"
    seen = ratelimit_policy(resp)
    assert seen == policy, f"RateLimit-Policy {seen} for a key whose limits are {policy}"
    field = ratelimit_field(resp)
    assert field.name in policy, f"RateLimit names {field.name}, not a limit of the key"
    limit, window_s = policy[field.name]
    assert field.remaining < limit and field.reset_s <= window_s, (field, policy)
    return LimitDenial(int(retry_after), seen, field)

"""The reference AI server that tollgate protects: a Flask profanity analyser.

Endpoints
---------
``POST /analyze``      ``{"text": "..."}`` -> the verdict of `profanity.analyse`:
                       ``{"language", "length", "matches", "profane", "score"}``,
                       with ``X-Usage-Units: <n>``, what the call cost: the
                       characters analysed (``len(text)``, code points).
``GET /healthz``       ``{"status": "ok"}``.
``GET /_debug/requests``, ``POST /_debug/reset``
                       only when ``AI_SERVER_DEBUG_ENDPOINTS=1``: what the server
                       received (see `RequestLog`), so end-to-end tests can prove
                       what the gateway let through. 404 otherwise.

Every answer, errors included, is JSON (``application/json; charset=utf-8``)
written with sorted keys and no spaces, so the same request always gets the
same bytes. Errors are ``{"error": {"code": ..., "message": ...}}``; client
input never causes a 500.

Run it with gunicorn (``gunicorn -c gunicorn.conf.py app:app``); Flask's own
server (``flask --app app run``) is for debugging only.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

import profanity

MAX_BODY_BYTES = 2 * 1024 * 1024  # the gateway's own limit (900 KiB) is the one that bites
MAX_TEXT_CHARS = 1_000_000
UNITS_HEADER = "X-Usage-Units"  # what a call cost; tollgate's filter records it (limits.units_header)
DEBUG_HISTORY = 50  # requests whose headers /_debug/requests keeps
UNCOUNTED_PATHS = ("/healthz", "/_debug/")  # health checks and the debug endpoints themselves

ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal_error",
}


def json_response(payload, status: int = 200, headers=None) -> Response:
    """Deterministic JSON: same payload, same bytes."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                      allow_nan=False)
    return Response(body.encode("utf-8"), status=status, headers=headers,
                    content_type="application/json; charset=utf-8")


def error_response(status: int, message: str, headers=None) -> Response:
    code = ERROR_CODES.get(status, "error")
    return json_response({"error": {"code": code, "message": message}}, status, headers)


class ClientError(Exception):
    """A client error, answered as JSON with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


#: How many times the request log runs a transaction SQLite refused.
TRANSACTION_ATTEMPTS = 10


class RequestLog:
    """Counts the requests the server received and keeps their headers.

    gunicorn's workers are separate processes, so the log lives in a SQLite
    file (``<state_dir>/requests.sqlite3``) that SQLite locks for us; every
    worker sees the same count.
    """

    def __init__(self, state_dir: str, history: int = DEBUG_HISTORY):
        os.makedirs(state_dir, exist_ok=True)
        self.path = os.path.join(state_dir, "requests.sqlite3")
        self.history = history

        def create(db):
            db.execute("CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY CHECK (id = 0),"
                       " n INTEGER NOT NULL)")
            db.execute("INSERT OR IGNORE INTO counter (id, n) VALUES (0, 0)")
            db.execute("CREATE TABLE IF NOT EXISTS seen (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                       " method TEXT NOT NULL, path TEXT NOT NULL, headers TEXT NOT NULL)")

        self._transaction(create)

    def _transaction(self, work):
        """``work(db)`` in one IMMEDIATE transaction on a fresh connection,
        its result once committed. SQLite may refuse any statement of it,
        the commit too (busy, locked, or a transient "disk I/O error" when
        many workers write at once): the whole transaction is then rolled
        back and run again, up to ``TRANSACTION_ATTEMPTS`` times, so a
        request is counted exactly once or the error is raised."""
        for attempt in range(TRANSACTION_ATTEMPTS):
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                db.execute("BEGIN IMMEDIATE")
                result = work(db)
                db.execute("COMMIT")
                return result
            except sqlite3.OperationalError:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # no transaction was open, or it is gone already
                if attempt == TRANSACTION_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
            finally:
                db.close()
        raise AssertionError("unreachable")

    def record(self, method: str, path: str, headers: dict[str, str]) -> None:
        def work(db):
            db.execute("UPDATE counter SET n = n + 1 WHERE id = 0")
            db.execute("INSERT INTO seen (method, path, headers) VALUES (?, ?, ?)",
                       (method, path, json.dumps(headers, sort_keys=True)))
            db.execute("DELETE FROM seen WHERE seq <= (SELECT MAX(seq) FROM seen) - ?",
                       (self.history,))

        self._transaction(work)

    def snapshot(self) -> dict:
        def work(db):
            (count,) = db.execute("SELECT n FROM counter WHERE id = 0").fetchone()
            rows = db.execute("SELECT method, path, headers FROM seen ORDER BY seq").fetchall()
            return count, rows

        count, rows = self._transaction(work)
        return {
            "count": count,
            "last_headers": [json.loads(h) for _, _, h in rows],
            "last_requests": [{"method": m, "path": p} for m, p, _ in rows],
        }

    def reset(self) -> None:
        def work(db):
            db.execute("UPDATE counter SET n = 0 WHERE id = 0")
            db.execute("DELETE FROM seen")

        self._transaction(work)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _parse_text(raw: bytes, max_chars: int) -> str:
    """The ``text`` of an /analyze body, or `ClientError`."""
    try:
        doc = json.loads(raw.decode("utf-8-sig"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ClientError(400, "the body is not valid UTF-8") from None
    except (ValueError, RecursionError):
        raise ClientError(400, "the body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ClientError(400, 'the body must be a JSON object like {"text": "..."}')
    if "text" not in doc:
        raise ClientError(400, 'the field "text" is missing')
    text = doc["text"]
    if not isinstance(text, str):
        raise ClientError(400, 'the field "text" must be a string')
    if len(text) > max_chars:
        raise ClientError(413, f'"text" is longer than {max_chars} characters')
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ClientError(400, '"text" holds an unpaired surrogate escape') from None
    return text


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def create_app(config: dict | None = None) -> Flask:
    """Build the app. ``config`` overrides the settings read from the environment:

    ``DEBUG_ENDPOINTS`` (``AI_SERVER_DEBUG_ENDPOINTS=1``), ``STATE_DIR``
    (``AI_SERVER_STATE_DIR``, default a new temporary directory),
    ``MAX_CONTENT_LENGTH`` (2 MiB), ``MAX_TEXT_CHARS`` (1,000,000).
    """
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        MAX_TEXT_CHARS=MAX_TEXT_CHARS,
        DEBUG_ENDPOINTS=_env_flag("AI_SERVER_DEBUG_ENDPOINTS"),
        STATE_DIR=os.environ.get("AI_SERVER_STATE_DIR") or None,
    )
    app.config.update(config or {})
    analyser = profanity.default_analyser()

    @app.errorhandler(ClientError)
    def _bad_request(exc: ClientError):
        return error_response(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        headers = {}
        if exc.code == 405:
            allow = exc.get_headers()
            headers = {k: v for k, v in allow if k.lower() == "allow"}
        messages = {
            404: "no such endpoint",
            405: f"method {request.method} is not allowed here",
            413: f"the body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes",
        }
        return error_response(exc.code or 500, messages.get(exc.code, exc.description or exc.name),
                              headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("unexpected error")
        return error_response(500, "internal error")

    @app.get("/healthz")
    def healthz():
        return json_response({"status": "ok"})

    @app.post("/analyze")
    def analyze():
        if request.mimetype != "application/json":
            raise ClientError(415, "send the body as Content-Type: application/json")
        raw = request.get_data(cache=False)
        limit = app.config["MAX_CONTENT_LENGTH"]
        if request.content_length is None and limit is not None and len(raw) >= limit:
            # A streamed (chunked) body is cut at the limit, silently: refuse it.
            raise ClientError(413, f"the body is larger than {limit} bytes")
        text = _parse_text(raw, app.config["MAX_TEXT_CHARS"])
        # Only an answered analysis costs something; errors carry no units.
        return json_response(analyser.analyse(text), headers={UNITS_HEADER: str(len(text))})

    if app.config["DEBUG_ENDPOINTS"]:
        state_dir = app.config["STATE_DIR"] or tempfile.mkdtemp(prefix="ai-server-state-")
        log = RequestLog(state_dir)
        app.extensions["request_log"] = log

        @app.before_request
        def _count():
            if not request.path.startswith(UNCOUNTED_PATHS):
                headers = {k.lower(): v for k, v in request.headers.items()}
                log.record(request.method, request.path, headers)

        @app.get("/_debug/requests")
        def debug_requests():
            return json_response(log.snapshot())

        @app.post("/_debug/reset")
        def debug_reset():
            log.reset()
            return json_response({"count": 0})

    return app


app = create_app()

"""Hostile input gets a clear, documented answer and never hurts the gateway.

Every case of ``hostile_cases.json`` is sent through Envoy on a raw socket
(so duplicated headers, bytes that are not UTF-8, lying content-lengths and
broken chunking reach Envoy exactly as written) and must get:

* the documented status and, for an error, the contract's JSON error with the
  documented code (401s with ``WWW-Authenticate: Bearer``);
* no 5xx at all (none of these cases may make the sidecar's verdict
  unavailable);
* no request reaching the ai-server unless the case expects it to answer;
* Envoy still ready afterwards; and, once the corpus is through, no Wasm
  panic or trap in Envoy's log.

A case names who answers: the ``filter``, ``envoy`` itself (its HTTP codec or
router, through ``local_reply_config``) or the ``ai-server`` (after the filter
let the request through). The JSON file documents how each case is built:

``headers``        overrides of the default headers (``null`` removes one);
``extra_headers``  more ``[name, value]`` pairs, duplicates included;
``body``           the body (default: a small JSON document);
``token``          how to build the X-Auth-Token: ``header``/``header_raw``,
                   ``claims`` (merged over valid defaults; ``null`` drops a
                   claim, ``{"now": n}`` is now + n seconds, ``{"digest": ...}``
                   a spelling of the body's SHA-256), ``payload_raw`` (where
                   ``{iat}``, ``{exp}`` and ``{body_sha256}`` stand for the
                   valid defaults' values), ``mac``
                   (HS256 default, ``none`` for an empty signature), ``secret:
                   wrong``, ``encoding`` and a ``segments`` template;
``framing``        ``content-length`` (default), ``chunked``,
                   ``chunked_trailers``, ``chunked_bad_size`` or ``none``;
``content_length`` a literal Content-Length value; ``half_close`` to shut the
                   client's side after sending; ``method``, ``path``,
                   ``request_line``.

A value is text (with ``{key}``, ``{unknown_key}``, ``{token}``),
``{"base64": ...}`` for raw bytes, ``{"repeat": s, "times": n}``, or a list of
values joined together.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import socket
import time
from pathlib import Path

import pytest

from conftest import WASM_FAILURE
from tollgate_tooling.gateway import Gateway
from tollgate_tooling.stack import http_get

CASES = json.loads((Path(__file__).parent / "hostile_cases.json").read_text())
DEFAULT_BODY = b'{"text": "hostile input must get a clear answer"}'
UNKNOWN_KEY = "tg_" + "0" * 40
WRONG_SECRET = b"not-the-gateway-secret-" + b"x" * 20
MACS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def test_the_corpus_is_large_and_well_formed():
    names = [c["name"] for c in CASES]
    assert len(names) >= 60
    assert len(set(names)) == len(names), "case names repeat"
    for case in CASES:
        assert case["expect"]["by"] in ("filter", "envoy", "ai-server"), case["name"]
        assert case.get("about"), f"{case['name']} does not say what it tries"


# -- building requests --------------------------------------------------------
def value(spec, subst: dict[str, bytes]) -> bytes:
    """The bytes a value spec of the case file stands for."""
    if isinstance(spec, list):
        return b"".join(value(part, subst) for part in spec)
    if isinstance(spec, dict) and "base64" in spec:
        return base64.b64decode(spec["base64"])
    if isinstance(spec, dict) and "repeat" in spec:
        return spec["repeat"].encode() * spec["times"]
    data = spec.encode()
    for name, replacement in subst.items():
        data = data.replace(b"{" + name.encode() + b"}", replacement)
    return data


def b64(data: bytes, encoding: str = "url") -> str:
    if encoding == "padded":
        return base64.urlsafe_b64encode(data).decode()
    if encoding == "standard":
        return base64.b64encode(data).decode().rstrip("=")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def digest_spelling(spec, body: bytes):
    """A claim value: ``{"now": n}``, ``{"digest": ...}``, ``{"sha256_of": ...}``, ``{"null": true}``."""
    if not isinstance(spec, dict):
        return spec
    if "now" in spec:
        return time.time() + spec["now"] if isinstance(spec["now"], float) else \
            int(time.time()) + spec["now"]
    if "null" in spec:
        return None
    if "sha256_of" in spec:
        return hashlib.sha256(spec["sha256_of"].encode()).hexdigest()
    raw = hashlib.sha256(body).digest()
    return {"upper": raw.hex().upper(), "base64": base64.b64encode(raw).decode(),
            "short": raw.hex()[:63], "long": raw.hex() + "0"}[spec["digest"]]


def build_token(recipe: dict, body: bytes, secret: bytes) -> bytes:
    """A compact JWS following ``recipe`` (see the module docstring)."""
    now = int(time.time())
    if "header_raw" in recipe:
        header = value(recipe["header_raw"], {})
    else:
        header = json.dumps(recipe.get("header", {"alg": "HS256", "typ": "JWT"}),
                            separators=(",", ":")).encode()
    if "payload_raw" in recipe:
        defaults = {"iat": str(now).encode(), "exp": str(now + 60).encode(),
                    "body_sha256": hashlib.sha256(body).hexdigest().encode()}
        payload = value(recipe["payload_raw"], defaults)
    else:
        claims = {"iat": now, "exp": now + 60, "body_sha256": hashlib.sha256(body).hexdigest()}
        for name, spec in recipe.get("claims", {}).items():
            if spec is None:
                claims.pop(name, None)
            else:
                claims[name] = digest_spelling(spec, body)
        payload = json.dumps(claims, separators=(",", ":")).encode()
    encoding = recipe.get("encoding", "url")
    h, p = b64(header, encoding), b64(payload, encoding)
    mac = recipe.get("mac", "HS256")
    key = WRONG_SECRET if recipe.get("secret") == "wrong" else secret
    signature = b"" if mac == "none" else \
        hmac.new(key, f"{h}.{p}".encode(), MACS[mac]).digest()
    s = b64(signature, encoding)
    flipped = bytes([signature[0] ^ 1]) + signature[1:] if signature else b""
    # s_half keeps a length that is valid base64url, so only the MAC is wrong.
    parts = {"h": h, "p": p, "s": s, "s_half": s[: len(s) // 2 // 4 * 4], "s_flipped": b64(flipped)}
    template = recipe.get("segments", "{h}.{p}.{s}")
    return template.format(**parts).encode()


def build_request(case: dict, gw: Gateway, key: str) -> bytes:
    """The exact bytes of the case's request."""
    body = value(case["body"], {}) if "body" in case else DEFAULT_BODY
    token = build_token(case.get("token", {}), body, gw.secret.encode())
    subst = {"key": key.encode(), "unknown_key": UNKNOWN_KEY.encode(), "token": token}
    method = case.get("method", "POST")
    path = case.get("path", "/proxy/analyze")
    line = case.get("request_line", f"{method} {path} HTTP/1.1")

    headers = {"host": "tollgate.test", "authorization": "Bearer {key}",
               "x-auth-token": "{token}", "content-type": "application/json",
               "connection": "close"}
    headers.update(case.get("headers", {}))
    pairs = [(name, spec) for name, spec in headers.items() if spec is not None]
    pairs += [tuple(pair) for pair in case.get("extra_headers", [])]

    framing = case.get("framing", "content-length")
    if framing == "content-length":
        pairs.append(("content-length", case.get("content_length", str(len(body)))))
    elif framing.startswith("chunked"):
        pairs.append(("transfer-encoding", "chunked"))
        body = chunked(body, framing)
    head = line.encode() + b"\r\n" + b"".join(
        name.encode() + b": " + value(spec, subst) + b"\r\n" for name, spec in pairs)
    return head + b"\r\n" + body


def chunked(body: bytes, framing: str) -> bytes:
    """``body`` in chunked transfer coding (16 KiB chunks)."""
    if framing == "chunked_bad_size":
        return b"zz\r\n" + body + b"\r\n0\r\n\r\n"
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 16384]), body[i:i + 16384])
                   for i in range(0, len(body), 16384))
    trailer = b"x-trailer: yes\r\n" if framing == "chunked_trailers" else b""
    return out + b"0\r\n" + trailer + b"\r\n"


def send(port: int, request: bytes, method: str, half_close: bool):
    """(status, headers, body) of the reply, or None when the connection
    closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # Envoy may refuse before reading everything; its reply is still there
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        resp = http.client.HTTPResponse(sock, method=method)
        try:
            resp.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


# -- the corpus ----------------------------------------------------------------
@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.new_key("hostile-corpus")["key"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_hostile_input(gateway: Gateway, key: str, case: dict):
    expect = case["expect"]
    request = build_request(case, gateway, key)
    method = case.get("request_line", case.get("method", "POST")).split(" ")[0]
    before = gateway.upstream_seen()["count"]

    reply = send(gateway.stack.config.envoy_port, request, method, case.get("half_close", False))

    assert http_get(f"{gateway.stack.envoy_admin}/ready")[0] == 200, "Envoy is not ready"
    reached = gateway.upstream_seen()["count"] - before
    assert reached == (1 if expect["by"] == "ai-server" else 0), \
        f"{reached} requests reached the ai-server"
    if expect["status"] is None:
        assert reply is None, f"expected no answer, got {reply[0]} {reply[2][:300]!r}"
        return
    assert reply is not None, "the connection closed without an answer"
    status, headers, body = reply
    assert status < 500, f"{status} {body[:300]!r}"
    assert status == expect["status"], f"{status} {body[:300]!r}"
    assert headers.get("content-type", "").startswith("application/json"), headers
    doc = json.loads(body)
    if expect["code"] is None:
        assert "error" not in doc, doc
        return
    assert doc["error"]["code"] == expect["code"], doc
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"], doc
    if expect["by"] != "ai-server":
        # Null only when Envoy refused the request before reading its headers.
        assert "request_id" in doc, doc
    if expect["by"] == "filter":
        assert doc["request_id"] == headers.get("x-request-id"), (doc, headers)
    if status == 401:
        assert headers.get("www-authenticate", "").startswith("Bearer"), headers


def verify_calls(gw: Gateway) -> int:
    """Key verifications the sidecar has answered (its own metric)."""
    status, body = http_get(f"{gw.stack.sidecar_url}/metrics")
    assert status == 200, body
    for line in body.decode().splitlines():
        if line.startswith("tollgate_key_verify_duration_seconds_count "):
            return int(float(line.split()[1]))
    raise AssertionError("the sidecar's /metrics has no key verification count")


IMPOSSIBLE_KEYS = [c for c in CASES if c["name"].startswith("key_") and
                   c["expect"]["code"] == "invalid_api_key"]


def test_keys_that_cannot_be_registered_cost_no_sidecar_call(gateway: Gateway):
    """Malformed keys, and keys of a length or alphabet no minted or
    imported key has, are refused by the filter alone."""
    assert len(IMPOSSIBLE_KEYS) >= 8
    before = verify_calls(gateway)
    for case in IMPOSSIBLE_KEYS:
        reply = send(gateway.stack.config.envoy_port, build_request(case, gateway, "unused"),
                     "POST", False)
        assert reply is not None and reply[0] == 401, (case["name"], reply)
    # A well-formed unknown key does ask, so the count can move.
    assert gateway.post(DEFAULT_BODY, UNKNOWN_KEY.replace("0", "9")).status_code == 401
    assert verify_calls(gateway) == before + 1


def test_no_wasm_failure_after_the_corpus(gateway: Gateway):
    assert gateway.stack.envoy.alive()
    failures = [line for line in gateway.stack.envoy.log_text().splitlines()
                if WASM_FAILURE.search(line)]
    assert not failures, "Envoy's log shows a Wasm failure:\n" + "\n".join(failures[:20])

"""Secrets stay secret: the sidecar's internal and admin endpoints refuse
callers without their tokens, ``api_keys`` holds no plaintext key (on MariaDB
and SQLite, not even in SQLite's files), and the sidecar listens on loopback
unless told otherwise.

That no key, token or secret reaches a log is checked once the whole suite has
run (``conftest.no_credentials_in_logs``, with ``leaks.find_credentials``);
the last test here proves that check finds what it looks for.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import secrets
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tollgate_tooling.gateway import Gateway, sidecar_request
from tollgate_tooling.leaks import find_credentials
from tollgate_tooling.stack import SIDECAR_BIN, Stack

VERIFY = ("POST", "/v1/internal/keys/verify", {"key_hash": "0" * 64})
INGEST = ("POST", "/v1/internal/usage", [])
ADMIN = [("GET", "/v1/keys", None), ("POST", "/v1/keys", {"name": "by-admin"}),
         ("POST", "/v1/keys/1/revoke", None), ("GET", "/v1/usage/summary", None)]


def call(stack: Stack, method: str, path: str, body, headers: dict) -> requests.Response:
    return sidecar_request(stack, method, path, body, headers)


def assert_refused(resp: requests.Response) -> None:
    assert resp.status_code == 401, f"{resp.status_code} {resp.text[:200]}"
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("endpoint", [VERIFY, INGEST], ids=["verify", "ingest"])
def test_internal_endpoints_need_the_internal_token(gateway: Gateway, endpoint):
    stack, (method, path, body) = gateway.stack, endpoint
    c = stack.config
    for headers in ({}, {"x-tollgate-internal-token": ""},
                    {"x-tollgate-internal-token": c.internal_token[:-1]},
                    {"x-tollgate-internal-token": c.admin_token},
                    {"Authorization": f"Bearer {c.internal_token}"}):
        assert_refused(call(stack, method, path, body, headers))
    ok = call(stack, method, path, body, {"x-tollgate-internal-token": c.internal_token})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("endpoint", ADMIN, ids=[f"{m} {p}" for m, p, _ in ADMIN])
def test_admin_endpoints_need_the_admin_token(gateway: Gateway, endpoint):
    stack, (method, path, body) = gateway.stack, endpoint
    c = stack.config
    for headers in ({}, {"Authorization": "Bearer "},
                    {"Authorization": f"Bearer {c.admin_token[:-1]}"},
                    {"Authorization": f"Basic {c.admin_token}"},
                    {"Authorization": f"Bearer {c.internal_token}"},
                    {"x-tollgate-internal-token": c.internal_token}):
        assert_refused(call(stack, method, path, body, headers))
    if path.endswith("/revoke"):
        path = f"/v1/keys/{gateway.new_key('to-revoke-by-admin')['id']}/revoke"
    ok = call(stack, method, path, body, {"Authorization": f"Bearer {c.admin_token}"})
    assert ok.status_code in (200, 201), ok.text


def test_api_keys_hold_no_plaintext(any_gateway: Gateway):
    key = any_gateway.new_key("plaintext-check")
    plaintext, secret_part = key["key"], key["key"].removeprefix("tg_")
    assert any_gateway.post(b'{"text": "hi"}', plaintext).status_code == 200  # a usage row too

    for table in ("api_keys", "usage_log"):
        for row in any_gateway.ledger.query(f"SELECT * FROM {table}"):
            for column, cell in row.items():
                assert secret_part not in str(cell), f"{table}.{column} holds the key"
    row = any_gateway.ledger.query("SELECT * FROM api_keys WHERE id = ?", [key["id"]])[0]
    assert row["key_hash"] == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext.startswith(row["prefix"]) and len(row["prefix"]) < 12
    if any_gateway.ledger.sqlite_path:
        for path in Path(any_gateway.ledger.sqlite_path).parent.glob("tollgate.db*"):
            assert secret_part.encode() not in path.read_bytes(), f"{path} holds the key"


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 4), ("tcp6", 16)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
            found.append((str(ipaddress.ip_address(raw)), int(hex_port, 16)))
    return found


def test_sidecar_listens_on_loopback_unless_told_otherwise(gateway: Gateway):
    usage = subprocess.run([str(SIDECAR_BIN), "serve", "--help"], capture_output=True,
                           text=True, env={"PATH": os.environ.get("PATH", "")}).stdout
    assert "[default: 127.0.0.1:9000]" in usage, usage

    stack = gateway.stack
    for service in (stack.sidecar, stack.envoy, stack.ai_server):
        addresses = listening_addresses(service.proc.pid)
        assert addresses, f"{service.name} listens on nothing"
        assert all(ipaddress.ip_address(a).is_loopback for a, _ in addresses), \
            f"{service.name} listens on {addresses}"
    assert f"listening address=127.0.0.1:{stack.config.sidecar_port}" in stack.sidecar.log_text()


def encodings(value: str) -> dict[str, str]:
    """``value`` as a log might hold it encoded."""
    raw = value.encode()
    return {
        "base64": base64.b64encode(raw).decode(),
        "base64, unpadded": base64.b64encode(raw).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(raw).decode(),
        "base64url, unpadded": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "url-encoded": "".join(f"%{b:02X}" for b in raw),
        "url-encoded, partly": quote(value, safe="").replace("_", "%5F").replace("-", "%2D"),
    }


def test_the_log_check_finds_planted_credentials(tmp_path: Path):
    key = "tg_" + "ab12" * 10
    secret = "super-secret-internal-token-value"
    imported = "legacy-Key-4f1b9c2e7d"  # a key created during the run, of no known shape
    token = "eyJhbGciOiJIUzI1NiJ9.eyJpYXQiOjF9.c2lnbmF0dXJl"
    payload = "eyJpYXQiOjE3NjQ2MzcyMDAsImV4cCI6MTc2NDYzNzI2MH0"
    planted = {"key": f"authorization: Bearer {key}", "token": f"x-auth-token={token}",
               "secret": f"internal {secret} here", "imported key": f"key {imported} used",
               "payload alone": f"claims {payload} seen"}
    for name, value in (("key", key), ("secret", secret), ("token", token),
                        ("imported key", imported)):
        for how, text in encodings(value).items():
            planted[f"{name} as {how}"] = f"value={text};"
    # Encoded with what surrounds it, and not on a base64 group boundary.
    planted["key inside base64 of a header"] = \
        base64.b64encode(f"Authorization: Bearer {key}".encode()).decode()
    planted["secret inside base64, misaligned"] = \
        "x/" + base64.b64encode(f"t={secret}".encode()).decode()
    harmless = ["fine line", "prefix tg_ab12ab ok",
                f"request {secrets.token_hex(16)} took 3 ms",
                "source/extensions/common/wasm/context.cc:1195 wasm log tollgate",
                base64.b64encode(b"nothing secret in here at all").decode(),
                "%7B%22status%22%3A%22ok%22%7D"]
    lines = [*harmless, *planted.values()]
    log = tmp_path / "planted.txt"  # not *.log: the session check would find it too
    log.write_text("\n".join(lines) + "\n")

    found = find_credentials([log], [secret], keys=[key, imported])

    flagged = {int(f.split(":")[1]) for f in found}
    missed = [name for i, name in enumerate(planted, len(harmless) + 1) if i not in flagged]
    assert not missed, f"the log check missed: {missed}"
    assert flagged == set(range(len(harmless) + 1, len(lines) + 1)), \
        f"harmless lines flagged: {[f for f in found if int(f.split(':')[1]) <= len(harmless)]}"
    # What is reported names the credential without printing it whole.
    assert not any(key in f or secret in f or token in f for f in found), found

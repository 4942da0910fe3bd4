"""The rows of the client contract that Envoy answers itself, on a stack of
their own with short timeouts: a request not received in time is 408
``request_timeout`` and never reaches the AI service; the AI service down is
503 ``upstream_unavailable``; the AI service too slow is 504
``upstream_timeout``. Each is the contract's JSON error. And a filter
configuration that does not load keeps the listener closed: Envoy refuses
to start, naming the field, and nothing reaches the AI service."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest
import requests

from conftest import STARTED, TEST_FILTER_OVERRIDES, sqlite_gateway_of_its_own, stop_stack
from tollgate_tooling.gateway import ANALYZE, Gateway, assert_error
from tollgate_tooling.stack import Stack, StackConfig, StackError

BODY = b'{"text": "is anyone there?"}'

#: Envoy's bounds in this stack (``request_timeout``, the route's ``timeout``).
REQUEST_TIMEOUT_S = 2
ROUTE_TIMEOUT_S = 2
#: How much later than its bound an answer may come on two shared cores.
MARGIN_S = 1.0


@pytest.fixture(scope="module")
def gw(tmp_path_factory, filter_build) -> Gateway:
    with sqlite_gateway_of_its_own(tmp_path_factory.mktemp("stack-envoy-replies"),
                                   request_timeout_s=REQUEST_TIMEOUT_S,
                                   route_timeout_s=ROUTE_TIMEOUT_S) as gw:
        yield gw


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    return gw.new_key("envoy-replies")["key"]


def read_response(sock: socket.socket, timeout: float) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one HTTP/1.1 response read from ``sock``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed in the middle of the answer"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def test_a_request_not_received_in_time_is_408(gw: Gateway, key: str):
    before = gw.upstream_seen()["count"]
    head = (f"POST {ANALYZE} HTTP/1.1\r\nHost: tollgate.test\r\n"
            f"Authorization: Bearer {key}\r\nX-Auth-Token: {gw.token(BODY)}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gw.stack.config.envoy_port)) as sock:
        started = time.monotonic()
        sock.sendall(head.encode() + BODY[:5])  # and the rest never comes
        status, headers, body = read_response(sock, REQUEST_TIMEOUT_S + MARGIN_S + 5)
        took = time.monotonic() - started

    assert status == 408, (status, body)
    assert headers["content-type"].startswith("application/json"), headers
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and error["message"], error
    assert REQUEST_TIMEOUT_S - 0.5 <= took <= REQUEST_TIMEOUT_S + MARGIN_S, took
    assert gw.upstream_seen()["count"] == before, "a request never received reached the upstream"


def test_the_ai_service_down_is_503_upstream_unavailable(gw: Gateway, key: str):
    assert gw.stack.ai_server.stop() == 0
    try:
        resp = gw.post(BODY, key)
    finally:
        gw.stack.start_ai_server()
    assert_error(resp, 503, "upstream_unavailable")
    assert resp.headers["x-request-id"] == resp.json()["request_id"]
    # The AI service is back, and answers through the gateway again.
    assert gw.post(BODY, key).status_code == 200


def test_the_ai_service_too_slow_is_504_upstream_timeout(gw: Gateway, key: str):
    group = gw.stack.ai_server.proc.pid  # gunicorn's session leader: master and workers
    os.killpg(group, signal.SIGSTOP)  # accepts connections (the kernel does), answers nothing
    try:
        started = time.monotonic()
        resp = gw.post(BODY, key)
        took = time.monotonic() - started
    finally:
        os.killpg(group, signal.SIGCONT)
    assert_error(resp, 504, "upstream_timeout")
    assert ROUTE_TIMEOUT_S - 0.5 <= took <= ROUTE_TIMEOUT_S + MARGIN_S, took
    assert gw.post(BODY, key).status_code == 200


def test_a_filter_configuration_that_does_not_load_keeps_the_listener_closed(tmp_path):
    state_dir = tmp_path / "stack-bad-config"
    stack = Stack(StackConfig.ephemeral(
        state_dir, ai_server_debug=True,
        filter_overrides={**TEST_FILTER_OVERRIDES, "callout_timeout_ms": 0}))
    STARTED.append(stack)  # its logs are checked for credentials too
    stack.start_sidecar()
    stack.start_ai_server()
    try:
        with pytest.raises(StackError, match="envoy exited during start"):
            stack.start_envoy()
        code = stack.envoy.stop()
        log = stack.envoy.log_text()
        with socket.socket() as sock:
            refused = sock.connect_ex(("127.0.0.1", stack.config.envoy_port))
        with pytest.raises(requests.ConnectionError):
            requests.post(stack.gateway + ANALYZE, data=BODY, timeout=10,
                          headers={"Authorization": f"Bearer {stack.create_key('bad')['key']}"})
        seen = requests.get(stack.ai_server_url + "/_debug/requests", timeout=5).json()
    finally:
        stop_stack(stack)
    assert code not in (0, None), f"envoy exited with {code}"
    assert "invalid plugin configuration: callout_timeout_ms" in log, log[-2000:]
    # Each build's way of refusing to serve without the filter: proxy-wasm's
    # fail-closed policy, or the dynamic module's rejected configuration.
    refusal = {"wasm": "Plugin configured to fail closed failed to load",
               "native": "Failed to initialize dynamic module"}[stack.config.filter_build]
    assert refusal in log, log[-2000:]
    assert refused != 0, "the listener accepted a connection"
    assert seen["count"] == 0, "a request reached the upstream"

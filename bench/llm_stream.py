"""The LLM stream rows: a streamed OpenAI chat completion through Envoy.

* The answer is llm-upstream's own (llm-upstream/, the reference provider),
  recorded once at start for ``BODY`` with ``REPLY_TOKENS`` tokens: the role
  chunk, one chunk per token, the finish chunk, the usage chunk (the body
  asks for it) and ``data: [DONE]``.
* ``sse-upstream`` (bench/src/sse_upstream.rs) replays it to every request,
  one write per event, with no delay: fast and deterministic, the same
  bytes for the bare and the gated rows; it logs the key id and request id
  of each request it answers, the usage check's witness.
* ``ttfb_run``: time to first byte of the body, the latency run of these
  rows. One keep-alive connection, streams one after another (no
  queueing): from the moment the request is sent to the first byte of the
  first SSE chunk's data; the rest of the stream is then read to its end
  and checked (200, chunked, ends with ``data: [DONE]``).

The throughput run of these rows is loadgen's oha run: whole streams per
second over 16 connections, Envoy's CPU per stream.
"""

from __future__ import annotations

import json
import socket
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

import loadgen
from tollgate_tooling import REPO_ROOT as ROOT
from tollgate_tooling.stack import Service, free_port

SSE_UPSTREAM = ROOT / "target/release/sse-upstream"
#: The path of the rows: the gateway's route for OpenAI chat completions.
PATH = "/v1/chat/completions"
#: Tokens of the recorded answer (llm-upstream's ``x-llm-upstream-reply-tokens``).
REPLY_TOKENS = 20
#: What every stream request sends: a small chat, streamed, asking for usage
#: (so the filter reads the usage chunk and needs no body rewrite).
BODY = json.dumps({
    "model": "gpt-bench",
    "messages": [{"role": "user", "content": "say twenty words about the gateway"}],
    "stream": True,
    "stream_options": {"include_usage": True},
    "max_completion_tokens": 64,
}, separators=(",", ":")).encode()
DONE = b"data: [DONE]"


def record_answer(llm_upstream_url: str, out: Path) -> bytes:
    """llm-upstream's streamed answer to ``BODY``, written to ``out``."""
    resp = requests.post(llm_upstream_url + PATH, data=BODY, timeout=10, headers={
        "Content-Type": "application/json",
        "x-llm-upstream-reply-tokens": str(REPLY_TOKENS)})
    if resp.status_code != 200 or DONE not in resp.content:
        raise RuntimeError(f"llm-upstream answered {resp.status_code}: {resp.text[:300]}")
    out.write_bytes(resp.content)
    return resp.content


def responder(workdir: Path, events: Path, served_log: Path) -> tuple[Service, int]:
    """The ``sse-upstream`` process (not started) and its port."""
    if not SSE_UPSTREAM.exists():
        raise FileNotFoundError(f"{SSE_UPSTREAM} is missing: bench/run.sh builds it")
    port = free_port()
    return Service("sse-upstream", [str(SSE_UPSTREAM), "--port", str(port), "--events",
                                    str(events), "--served-log", str(served_log)],
                   {}, workdir / "logs" / "sse-upstream.log"), port


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sse-upstream not listening on {port} after {timeout}s")


def _request_bytes(url: str, headers: dict, body: bytes) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}",
             f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return (parts.hostname or "127.0.0.1", parts.port or 80,
            ("\r\n".join(lines) + "\r\n\r\n").encode() + body)


class _Stream:
    """One answer read off the connection: status, then body chunks."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the gateway closed the connection")
        self.buf += data

    def head(self) -> tuple[int, bool]:
        while b"\r\n\r\n" not in self.buf:
            self.more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        chunked = any(line.lower().replace(" ", "") == "transfer-encoding:chunked"
                      for line in lines[1:])
        return status, chunked

    def first_data(self) -> None:
        """Returns once a byte of the first chunk's data has arrived."""
        while b"\r\n" not in self.buf or len(self.buf) <= self.buf.index(b"\r\n") + 2:
            self.more()

    def rest(self) -> bytes:
        """The chunked body up to its end (the zero-size chunk), as received."""
        while not self.buf.endswith(b"\r\n0\r\n\r\n"):
            self.more()
        body, self.buf = self.buf, b""
        return body


def ttfb_run(url: str, headers: dict, body: bytes, streams: int,
             watch: dict[str, int]) -> loadgen.RunResult:
    """``streams`` streams one after another on one connection; p50/p99 of
    their time to the first body byte, and the CPU each watched process
    spent per stream."""
    host, port, request = _request_bytes(url, headers, body)
    samples: list[float] = []
    errors: dict[str, int] = {}
    cpu_before = {name: loadgen.cpu_seconds(pid) for name, pid in watch.items()}
    started = time.monotonic()
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = _Stream(sock)
    try:
        for _ in range(streams):
            sent = time.perf_counter_ns()
            sock.sendall(request)
            status, chunked = reader.head()
            if status != 200 or not chunked:
                key = str(status) if status != 200 else "not chunked"
                errors[key] = errors.get(key, 0) + 1
                break  # the connection's framing is unknown from here
            reader.first_data()
            first = time.perf_counter_ns()
            if DONE not in reader.rest():
                errors["no [DONE]"] = errors.get("no [DONE]", 0) + 1
                continue
            samples.append((first - sent) / 1e6)
    except OSError as err:
        errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
    finally:
        sock.close()
    elapsed = time.monotonic() - started
    cpu_after = {name: loadgen.cpu_seconds(pid) for name, pid in watch.items()}
    ok = len(samples)
    q = statistics.quantiles(samples, n=100, method="inclusive") if ok >= 2 else None
    return loadgen.RunResult(
        kind="ttfb", seconds=round(elapsed, 2), requests=ok + sum(errors.values()), ok=ok,
        errors=sum(errors.values()), rps=ok / elapsed if elapsed else 0.0,
        p50_ms=q[49] if q else float("nan"), p99_ms=q[98] if q else float("nan"),
        error_detail=errors,
        cpu_us_per_req={name: round((cpu_after[name] - cpu_before[name]) * 1e6 / ok, 1)
                        if ok else None for name in cpu_before},
        settle_s=0.0)

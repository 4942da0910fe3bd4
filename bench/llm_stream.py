"""The LLM stream rows: a streamed OpenAI chat completion through Envoy.

* The answer is llm-upstream's own (llm-upstream/, the reference provider),
  recorded once at start for ``BODY`` with ``REPLY_TOKENS`` tokens: the role
  chunk, one chunk per token, the finish chunk, the usage chunk (the body
  asks for it) and ``data: [DONE]``.
* ``sse-upstream`` (bench/src/sse_upstream.rs) replays it to every request,
  one write per event, with no delay: fast and deterministic, the same
  bytes for the bare and the gated rows; it logs the key id and request id
  of each request it answers, the usage check's witness.
* ``ttfb_interleaved``: time to first byte of the body, the latency run of
  these rows, all of them in one run: one keep-alive connection per row,
  one stream at a time (no queueing), the rows taking turns; each stream
  timed from the moment its request is sent to the first byte of the
  first SSE chunk's data, then read to its end and checked (200, chunked,
  ends with ``data: [DONE]``).

The throughput run of these rows is loadgen's oha run: whole streams per
second over 16 connections, Envoy's CPU per stream.
"""

from __future__ import annotations

import dataclasses
import json
import random
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


@dataclasses.dataclass
class TtfbTarget:
    """One row of an interleaved time-to-first-byte run."""

    name: str
    url: str
    headers: dict
    body: bytes
    watch: dict[str, int]  # processes whose CPU per stream the run reports


class _Connection:
    """One keep-alive connection to a row's gateway, sending its request."""

    def __init__(self, target: TtfbTarget):
        host, port, self.request = _request_bytes(target.url, target.headers, target.body)
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = _Stream(self.sock)
        self.broken = False

    def stream(self) -> float | str:
        """One whole stream: its time to first body byte in ms, or what went wrong."""
        sent = time.perf_counter_ns()
        self.sock.sendall(self.request)
        status, chunked = self.reader.head()
        if status != 200 or not chunked:
            self.broken = True  # the connection's framing is unknown from here
            return str(status) if status != 200 else "not chunked"
        self.reader.first_data()
        first = time.perf_counter_ns()
        return (first - sent) / 1e6 if DONE in self.reader.rest() else "no [DONE]"


def ttfb_interleaved(targets: list[TtfbTarget], streams: int,
                     rng: random.Random) -> dict[str, loadgen.RunResult]:
    """``streams`` streams per row, one at a time, the rows taking turns in
    an order shuffled per turn, each on its own connection: a drift of the
    machine reaches every row alike. Per row: p50/p99 of the time to the
    first body byte, and the CPU each watched process spent per stream
    (processes the rows share, such as the upstream, are left out)."""
    counts: dict[int, int] = {}
    for t in targets:
        for pid in t.watch.values():
            counts[pid] = counts.get(pid, 0) + 1
    watch = {t.name: {n: pid for n, pid in t.watch.items() if counts[pid] == 1} for t in targets}
    samples: dict[str, list[float]] = {t.name: [] for t in targets}
    errors: dict[str, dict[str, int]] = {t.name: {} for t in targets}
    cpu_before = {t.name: {n: loadgen.cpu_seconds(pid) for n, pid in watch[t.name].items()}
                  for t in targets}
    started = time.monotonic()
    conns = {t.name: _Connection(t) for t in targets}
    turn = list(targets)
    try:
        for _ in range(streams):
            rng.shuffle(turn)
            for t in turn:
                conn = conns[t.name]
                if conn.broken:
                    continue
                try:
                    got = conn.stream()
                except OSError as err:
                    conn.broken, got = True, type(err).__name__
                if isinstance(got, float):
                    samples[t.name].append(got)
                else:
                    errors[t.name][got] = errors[t.name].get(got, 0) + 1
    finally:
        for conn in conns.values():
            conn.sock.close()
    elapsed = time.monotonic() - started
    out = {}
    for t in targets:
        ok, errs = len(samples[t.name]), errors[t.name]
        q = statistics.quantiles(samples[t.name], n=100, method="inclusive") if ok >= 2 else None
        cpu = {n: round((loadgen.cpu_seconds(pid) - cpu_before[t.name][n]) * 1e6 / ok, 1)
               if ok else None for n, pid in watch[t.name].items()}
        out[t.name] = loadgen.RunResult(
            kind="ttfb", seconds=round(elapsed, 2), requests=ok + sum(errs.values()), ok=ok,
            errors=sum(errs.values()), rps=ok / elapsed if elapsed else 0.0,
            p50_ms=q[49] if q else float("nan"), p99_ms=q[98] if q else float("nan"),
            error_detail=errs, cpu_us_per_req=cpu, settle_s=0.0)
    return out

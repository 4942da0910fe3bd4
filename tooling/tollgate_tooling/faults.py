"""Tools for the fault tests: a steady client load that remembers what it was
served, a TCP forwarder that can be cut or slowed, and the check that the
usage ledger holds exactly the request ids the client was served.

The load counts on the client's side (the request ids of the 2xx answers it
saw); the ledger counts on the sidecar's side; the fault tests compare both.
"""

from __future__ import annotations

import collections
import dataclasses
import select
import socket
import threading
import time

import requests

from tollgate_tooling.gateway import Gateway, Ledger


@dataclasses.dataclass(frozen=True)
class Answer:
    """One request of the load, as the client saw it."""

    status: int  # 0: no HTTP answer (connection refused or reset)
    request_id: str | None
    code: str | None  # the JSON error code, when there is one
    started: float  # time.monotonic()
    ended: float


class Load:
    """``workers`` clients posting through the gateway with ``key`` until stopped.

    Each worker has its own connection pool and mints a token per request,
    as independent clients would. ``pause_s`` between requests keeps the load
    steady rather than saturating the two cores the stack shares with it.
    With ``urls`` (several Envoys' gateways), worker ``i`` posts to
    ``urls[i % len(urls)]``: the load is spread over them.
    """

    def __init__(self, gateway: Gateway, key: str, *, workers: int = 4, pause_s: float = 0.01,
                 body: bytes = b'{"text": "steady load"}', urls: list[str] | None = None):
        self.gateway = gateway
        self.urls = urls or [gateway.stack.gateway]
        self.key = key
        self.body = body
        self.pause_s = pause_s
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(self.urls[i % len(self.urls)],),
                                          daemon=True, name=f"load-{i}")
                         for i in range(workers)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> "Load":
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=40)
        assert not any(t.is_alive() for t in self._threads), "a load worker hangs"
        return self

    def _run(self, gateway_url: str) -> None:
        session = requests.Session()
        url = gateway_url + "/proxy/analyze"
        while not self._stop.is_set():
            headers = {"Authorization": f"Bearer {self.key}",
                       "X-Auth-Token": self.gateway.token(self.body),
                       "Content-Type": "application/json"}
            started = time.monotonic()
            try:
                resp = session.post(url, data=self.body, headers=headers, timeout=30)
                status, request_id = resp.status_code, resp.headers.get("x-request-id")
                code = json_code(resp)
            except requests.RequestException:
                status, request_id, code = 0, None, None
                session = requests.Session()
            with self._lock:
                self.answers.append(Answer(status, request_id, code, started, time.monotonic()))
            self._stop.wait(self.pause_s)

    # -- what the client saw ----------------------------------------------
    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def wait_for(self, n: int, timeout: float = 30.0) -> None:
        """Until ``n`` more answers arrived than now."""
        target = self.count() + n
        deadline = time.monotonic() + timeout
        while self.count() < target:
            assert time.monotonic() < deadline, f"the load made no progress ({self.statuses()})"
            time.sleep(0.05)

    def served(self) -> set[str]:
        """Request ids of the 2xx answers."""
        with self._lock:
            ids = [a.request_id for a in self.answers if 200 <= a.status < 300]
        assert all(ids), "a 2xx answer without x-request-id"
        assert len(ids) == len(set(ids)), "the gateway reused a request id"
        return set(ids)

    def statuses(self) -> collections.Counter:
        with self._lock:
            return collections.Counter((a.status, a.code) for a in self.answers)

    def since(self, instant: float) -> list[Answer]:
        """Answers that arrived after ``instant`` (time.monotonic())."""
        with self._lock:
            return [a for a in self.answers if a.ended >= instant]


def json_code(resp: requests.Response) -> str | None:
    """The error code of a JSON error answer, else None."""
    if not resp.headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        body = resp.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def wait_until_metered(ledger: Ledger, key_id: int, served: set[str],
                       timeout: float = 30.0) -> dict[str, int]:
    """Waits until ``usage_log`` holds every id of ``served`` for ``key_id``,
    then asserts the ledger's request ids are exactly those: nothing missing,
    nothing extra. Returns the rows' request ids."""
    deadline = time.monotonic() + timeout
    while True:
        metered = metered_ids(ledger, key_id)
        if served <= metered or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    missing = served - metered
    assert not missing, f"{len(missing)} of {len(served)} served requests have no usage row"
    extra = metered - served
    assert not extra, f"{len(extra)} usage rows for requests the client was not served"
    return metered


def metered_ids(ledger: Ledger, key_id: int) -> set[str]:
    """The request ids of ``key_id``'s usage rows (``request_id`` is UNIQUE:
    one row each)."""
    return {r["request_id"] for r in ledger.query(
        "SELECT request_id FROM usage_log WHERE api_key_id = ?", [key_id])}


class TcpForwarder:
    """A TCP forwarder on 127.0.0.1 to ``target``, run by threads of the test.

    ``cut()`` closes every connection and makes new ones fail at once (they
    are accepted and closed: the client sees the server go away); ``stall()``
    holds new and existing traffic without closing anything (a server that
    stopped answering); ``slow(delay_s)`` forwards each chunk ``delay_s``
    late (a server that answers, slowly); ``restore()`` forwards again.
    """

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._mode = "forward"
        self._delay_s = 0.0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="forwarder").start()

    # -- control -----------------------------------------------------------
    def cut(self) -> None:
        with self._lock:
            self._mode = "cut"
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _close(sock)

    def stall(self) -> None:
        with self._lock:
            self._mode = "stall"

    def slow(self, delay_s: float) -> None:
        with self._lock:
            self._mode, self._delay_s = "slow", delay_s

    def restore(self) -> None:
        with self._lock:
            self._mode = "forward"

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)

    # -- the threads -------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._mode == "cut":
                _close(client)
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _close(client)
            return
        with self._lock:
            if self._mode == "cut":
                _close(client)
                _close(upstream)
                return
            self._sockets |= {client, upstream}
        peers = {client: upstream, upstream: client}
        try:
            while True:
                if self._mode == "stall":
                    time.sleep(0.05)
                    continue
                ready, _, _ = select.select(list(peers), [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self._mode == "slow":
                        time.sleep(self._delay_s)
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._sockets -= {client, upstream}
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()

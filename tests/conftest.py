"""Fixtures that start real stacks: Envoy running the filter, the sidecar,
the ai-server under gunicorn, and MariaDB or SQLite.

Every test runs once for each build of the filter (``filter_build``: the
release .wasm, then the native module), unless ``TOLLGATE_TEST_FILTERS``
names fewer (``wasm`` or ``native``).

Nothing here skips: a missing part (the venv, a build, MariaDB) fails the test
with a message saying what to install or run.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import pytest

from tollgate_tooling import REPO_ROOT as ROOT
from tollgate_tooling import envoy_config
from tollgate_tooling.faults import TcpForwarder
from tollgate_tooling.fleet import Fleet, FleetConfig
from tollgate_tooling.gateway import Gateway, Ledger, mysql_connect
from tollgate_tooling.leaks import find_credentials
from tollgate_tooling.log_faults import PATTERNS as LOG_FAULT_PATTERNS
from tollgate_tooling.log_faults import report as fault_report
from tollgate_tooling.stack import Stack, StackConfig, StackError

#: Short cache lifetimes so revocation and fault tests finish in seconds.
TEST_FILTER_OVERRIDES = {
    "key_cache": {"positive_ttl_s": 3, "negative_ttl_s": 1, "stale_if_error_s": 60},
    "usage": {"flush_interval_ms": 200, "max_backoff_ms": 1000},
}

#: What a filter panic or a V8 trap looks like in Envoy's log (the native
#: module logs a caught panic as "fault caught"); every process's patterns
#: are in tollgate_tooling.log_faults.
WASM_FAILURE = LOG_FAULT_PATTERNS["envoy"]

#: The builds every test runs against (``TOLLGATE_TEST_FILTERS``, comma-separated).
FILTER_BUILDS = [b for b in os.environ.get("TOLLGATE_TEST_FILTERS", "wasm,native").split(",") if b]
if not FILTER_BUILDS or set(FILTER_BUILDS) - {"wasm", "native"}:
    # An empty list would skip every end-to-end test and still pass.
    raise pytest.UsageError(
        f"TOLLGATE_TEST_FILTERS={os.environ.get('TOLLGATE_TEST_FILTERS')!r}: name the builds "
        "to test, wasm, native or both (comma-separated)")


def pytest_collection_modifyitems(config, items):
    """A module marked ``pytest.mark.filter_builds("wasm")`` is about one
    build only (the Grafana dashboard reads the wasm build's metric names):
    its runs for the other builds are deselected, not skipped."""
    kept, dropped = [], []
    for item in items:
        marker = item.get_closest_marker("filter_builds")
        callspec = getattr(item, "callspec", None)
        build = callspec.params.get("filter_build") if callspec else None
        (dropped if marker and build and build not in marker.args else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def builds_running(value) -> list[str]:
    """The filter builds the stacks in a fixture's value run."""
    if isinstance(value, Stack):
        return [value.config.filter_build]
    if isinstance(value, Gateway):
        return builds_running(value.stack)
    if isinstance(value, Fleet):
        return [build for envoy in value.envoys for build in builds_running(envoy)]
    if isinstance(value, (tuple, list)):
        return [build for part in value for build in builds_running(part)]
    return []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    """A test of one build runs only against stacks of that build: a
    module-scoped fixture that starts a stack must take ``filter_build``,
    or pytest keeps the first build's stack for the second build's tests."""
    build = item.funcargs.get("filter_build")
    for name, value in item.funcargs.items():
        wrong = [b for b in builds_running(value) if b != build]
        assert not wrong, (f"{item.nodeid}: fixture {name!r} runs the {wrong[0]} filter, "
                           f"not {build}: give the fixture a filter_build argument")


@pytest.fixture(scope="session", autouse=True, params=FILTER_BUILDS)
def filter_build(request) -> str:
    """The build of the filter the stacks of this test run (``TOLLGATE_FILTER``)."""
    previous = os.environ.get("TOLLGATE_FILTER")
    os.environ["TOLLGATE_FILTER"] = request.param
    yield request.param
    if previous is None:
        os.environ.pop("TOLLGATE_FILTER", None)
    else:
        os.environ["TOLLGATE_FILTER"] = previous


def mysql_url() -> str:
    url = os.environ.get("TOLLGATE_TEST_MYSQL_URL")
    if not url:
        pytest.fail(
            "TOLLGATE_TEST_MYSQL_URL is not set: the end-to-end tests need MariaDB/MySQL "
            "(e.g. mysql://root@127.0.0.1:3306/tollgate_test). `make test` sets it, and "
            "starts a throwaway MariaDB when none answers there (tollgate_tooling.with_mariadb; "
            "needs `apt-get install mariadb-server`)",
            pytrace=False,
        )
    return url


@pytest.fixture(scope="session")
def mysql_server() -> str:
    """The MariaDB server's URL without a database; fails when unreachable."""
    url = mysql_url()
    try:
        mysql_connect(url).close()
    except Exception as err:  # noqa: BLE001 - any failure means the server is not usable
        pytest.fail(f"MariaDB at {url} is unreachable ({err}); start it or fix "
                    "TOLLGATE_TEST_MYSQL_URL", pytrace=False)
    return url.rsplit("/", 1)[0]


#: Every stack the session started, for the credential check at its end.
STARTED: list[Stack] = []


def start_stack(state_dir: Path, database_url: str | None, **config) -> Stack:
    config.setdefault("filter_overrides", TEST_FILTER_OVERRIDES)
    stack = Stack(StackConfig.ephemeral(state_dir, database_url=database_url,
                                        ai_server_debug=True, **config))
    STARTED.append(stack)
    try:
        return stack.start()
    except StackError as err:
        faults = stack.log_faults()
        pytest.fail(f"the stack did not start: {err}"
                    + (f"\n{fault_report(faults)}" if faults else ""), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def no_credentials_in_logs(tmp_path_factory):
    """After the whole suite (every stack stopped), no API key (any created
    during the run, or any of a key's shape), token or stack secret appears,
    as written or encoded, in any log Envoy, the sidecar or the ai-server
    wrote, nor in a rendered Envoy configuration."""
    yield
    base = tmp_path_factory.getbasetemp()
    files = [*base.rglob("*.log"), *base.rglob("envoy.yaml")]
    secrets = [s for stack in STARTED for s in (
        stack.config.jwt_secret, stack.config.internal_token, stack.config.admin_token,
        stack.config.master_key) if s]
    logs = {f.name for f in files}
    assert {"envoy.log", "sidecar.log", "ai-server.log"} <= logs or not STARTED, \
        f"the stacks' logs are not under {base}: {sorted(logs)}"
    keys = [key for stack in STARTED for key in stack.created_keys]
    leaks = find_credentials(files, secrets, keys)
    if leaks:
        pytest.fail("credentials in logs:\n" + "\n".join(leaks[:30]), pytrace=False)


def stop_stack(stack: Stack) -> None:
    """Stop the stack and fail if one of its processes panicked, trapped or
    raised (``assert_no_log_faults``)."""
    stack.stop()
    assert_no_log_faults(stack)


def assert_no_log_faults(*launchers: Stack | Fleet) -> None:
    """Fail, quoting the lines and naming the logs, if the log of a process
    the stacks or fleets started shows a panic, a traceback or a filter
    fault that no test said it causes (``Stack.expect_fault``)."""
    faults = [fault for launcher in launchers for fault in launcher.log_faults()]
    if faults:
        pytest.fail(fault_report(faults), pytrace=False)


class MysqlDatabase:
    """A database of its own on the test MariaDB server, dropped afterwards."""

    def __init__(self, server_url: str, name: str):
        self.server_url = server_url
        self.name = name
        self.url = f"{server_url}/{name}"
        with mysql_connect(server_url) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}`")

    def drop(self) -> None:
        with mysql_connect(self.server_url) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")


@contextlib.contextmanager
def mysql_gateway(state_dir: Path, server_url: str, name: str,
                  route: Callable[[str], str] = lambda url: url, **config):
    """A stack on a MariaDB database of its own; ``route`` may send the
    sidecar's connections another way (e.g. through a forwarder)."""
    db = MysqlDatabase(server_url, f"{name}_{time.time_ns()}")
    try:
        stack = start_stack(state_dir, route(db.url), **config)
        try:
            yield Gateway(stack, Ledger(mysql_url=db.url))
        finally:
            stop_stack(stack)
    finally:
        db.drop()


@contextlib.contextmanager
def mysql_gateway_via_forwarder(state_dir: Path, server_url: str, name: str, **config):
    """(gateway, forwarder): a stack on a MariaDB database of its own whose
    sidecar reaches it through a TCP forwarder the test can cut, stall or
    slow."""
    server = urlparse(server_url)
    forwarder = TcpForwarder((server.hostname or "127.0.0.1", server.port or 3306))

    def via_forwarder(url: str) -> str:
        routed = url.replace(f"{server.hostname}:{server.port or 3306}",
                             f"127.0.0.1:{forwarder.port}", 1)
        assert routed != url, f"cannot route {url} through the forwarder"
        return routed

    try:
        with mysql_gateway(state_dir, server_url, name, route=via_forwarder,
                           **config) as gateway:
            yield gateway, forwarder
    finally:
        forwarder.close()


@contextlib.contextmanager
def sqlite_gateway_of_its_own(state_dir: Path, overrides: dict | None = None, **config):
    """A SQLite stack whose filter takes ``overrides`` merged one level deep
    into TEST_FILTER_OVERRIDES; a service a test left stopped is started
    again, so the stack stops cleanly (and flushes its usage)."""
    merged = envoy_config.merge_overrides(TEST_FILTER_OVERRIDES, overrides or {})
    stack = start_stack(state_dir, None, filter_overrides=merged, **config)
    try:
        yield Gateway(stack, Ledger(sqlite_path=str(state_dir / "tollgate.db")))
    finally:
        for service, start in ((stack.sidecar, stack.start_sidecar),
                               (stack.ai_server, stack.start_ai_server)):
            if not service.alive():
                start()
        stop_stack(stack)


@contextlib.contextmanager
def fleet_of_its_own(state_dir: Path, server_url: str, name: str, **config):
    """A fleet (tollgate_tooling.fleet: 3 Envoys and 2 sidecars unless ``config``
    says otherwise; its ``filter_overrides`` merged one level deep into
    TEST_FILTER_OVERRIDES) on a MariaDB database of its own, which the sidecars reach
    through a TCP forwarder the test can cut (``fleet.db_link``); its usage
    ledger is ``fleet.ledger``. Sidecars a test left stopped are started
    again first, so the Envoys' last usage is taken in at the stop; the
    teardown fails when a process exits non-zero on that graceful stop or
    an Envoy stops with usage records unflushed (``Fleet.unclean_stop``)."""
    db = MysqlDatabase(server_url, f"{name}_{time.time_ns()}")
    server = urlparse(server_url)
    link = TcpForwarder((server.hostname or "127.0.0.1", server.port or 3306))
    routed = db.url.replace(f"{server.hostname}:{server.port or 3306}",
                            f"127.0.0.1:{link.port}", 1)
    config["filter_overrides"] = envoy_config.merge_overrides(TEST_FILTER_OVERRIDES,
                                                        config.get("filter_overrides", {}))
    config.setdefault("stack_options", {"ai_server_debug": True})
    fleet = Fleet(FleetConfig(state_dir=state_dir, database_url=routed, **config))
    fleet.ledger, fleet.db_link = Ledger(mysql_url=db.url), link
    STARTED.extend(fleet.stacks)
    try:
        try:
            fleet.start()
        except StackError as err:
            pytest.fail(f"the fleet did not start: {err}", pytrace=False)
        yield fleet
    finally:
        link.restore()
        for sidecar in fleet.sidecars:
            if not sidecar.alive():
                sidecar.start()
        codes = fleet.stop()
        link.close()
        db.drop()
        assert_no_log_faults(fleet)
        problems = fleet.unclean_stop(codes)
        if problems:
            pytest.fail("the fleet did not stop cleanly: " + "; ".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, mysql_server, filter_build) -> Fleet:
    """3 Envoys (2 worker threads each) and 2 sidecars on MariaDB, for the
    module's tests."""
    with fleet_of_its_own(tmp_path_factory.mktemp("fleet"), mysql_server,
                          "tollgate_e2e_fleet") as running:
        yield running


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, mysql_server, filter_build) -> Gateway:
    """The main stack, on MariaDB like a production deployment."""
    with mysql_gateway(tmp_path_factory.mktemp("stack-mysql"), mysql_server,
                       "tollgate_e2e") as gw:
        yield gw


@pytest.fixture(scope="session")
def sqlite_gateway(tmp_path_factory, filter_build) -> Gateway:
    """The same stack on the embedded default, SQLite."""
    state_dir = tmp_path_factory.mktemp("stack-sqlite")
    stack = start_stack(state_dir, None)
    try:
        yield Gateway(stack, Ledger(sqlite_path=str(state_dir / "tollgate.db")))
    finally:
        stop_stack(stack)


@pytest.fixture(params=["mysql", "sqlite"])
def any_gateway(request) -> Gateway:
    """Each backend in turn."""
    return request.getfixturevalue("gateway" if request.param == "mysql" else "sqlite_gateway")

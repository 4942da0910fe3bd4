#!/usr/bin/env python3
"""Run a command with a MariaDB/MySQL server at ``TOLLGATE_TEST_MYSQL_URL``.

`make test` runs the Rust tests and the end-to-end tests through this, so both
use the same server:

- a MySQL server answers at the URL: the command runs as it is;
- nothing does, and MariaDB is installed (``mariadbd``, ``mariadb-install-db``):
  a throwaway ``mariadbd`` starts on a temporary data directory and a free
  port on 127.0.0.1, the command runs with the URL pointing at it, and the
  server and its directory are removed afterwards;
- otherwise it exits saying what to install, without running the command.

Usage: .venv/bin/python -m tollgate_tooling.with_mariadb COMMAND [ARG...]

Standard library only: `make test-rust` may run it before .venv exists.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

URL_VARIABLE = "TOLLGATE_TEST_MYSQL_URL"
MARIADBD = ("/usr/sbin/mariadbd", "mariadbd")
INSTALL_DB = ("mariadb-install-db", "mysql_install_db")
INSTALL_HINT = "apt-get install mariadb-server"
START_TIMEOUT_S = 60


def say(message: str) -> None:
    print(f"with_mariadb: {message}", file=sys.stderr, flush=True)


def answers_as_mysql(host: str, port: int, timeout: float = 3.0) -> bool:
    """Whether a MySQL server greets a connection to host:port (its first
    packet is a handshake, or an error such as "too many connections")."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            header = sock.recv(5)
    except OSError:
        return False
    return len(header) == 5 and header[3] == 0 and header[4] in (0x0A, 0xFF)


def find_program(candidates: tuple[str, ...]) -> str | None:
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """In the server's process: get SIGTERM if this script dies (even by
    SIGKILL), so no throwaway server outlives the tests."""
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} is missing)"


class ThrowawayMariadb:
    """A mariadbd of its own on a temporary data directory, root with no
    password, listening on 127.0.0.1 only. It reads no option file, so the
    machine's MariaDB and its configuration are left alone."""

    def __init__(self, mariadbd: str, install_db: str, database: str):
        self.mariadbd, self.install_db, self.database = mariadbd, install_db, database
        self.dir = Path(tempfile.mkdtemp(prefix="tollgate-mariadb-"))
        self.process: subprocess.Popen | None = None
        self.port = 0
        # mariadbd refuses to run as root unless told to.
        self.user = ["--user=root"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> None:
        log = self.dir / "install.log"
        with log.open("w") as out:
            installed = subprocess.run(
                [self.install_db, "--no-defaults", f"--datadir={self.dir / 'data'}",
                 "--auth-root-authentication-method=normal", "--skip-test-db", *self.user],
                stdout=out, stderr=subprocess.STDOUT)
        if installed.returncode != 0:
            raise RuntimeError(f"{self.install_db} failed:\n{tail(log)}")
        init = self.dir / "init.sql"
        name = self.database.replace("`", "``")
        init.write_text(f"CREATE DATABASE IF NOT EXISTS `{name}`;\n")
        for _ in range(3):  # another process may take the free port first
            self.port = free_port()
            if self._start_server(init):
                return
        raise RuntimeError(f"mariadbd did not start:\n{tail(self.dir / 'error.log')}\n"
                           f"{tail(self.dir / 'mariadbd.out')}")

    def _start_server(self, init: Path) -> bool:
        with (self.dir / "mariadbd.out").open("w") as out:
            self.process = subprocess.Popen(
                [self.mariadbd, "--no-defaults", f"--datadir={self.dir / 'data'}",
                 "--bind-address=127.0.0.1", f"--port={self.port}",
                 f"--socket={self.dir / 'mariadbd.sock'}",
                 f"--pid-file={self.dir / 'mariadbd.pid'}",
                 f"--log-error={self.dir / 'error.log'}", f"--init-file={init}",
                 # what the machine's MariaDB uses (Debian's defaults)
                 "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
                 *self.user],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C meant for the tests is not for it
                preexec_fn=die_with_parent)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if answers_as_mysql("127.0.0.1", self.port, timeout=1.0):
                return True
            time.sleep(0.2)
        self.stop_server()
        return False

    def stop_server(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # mariadbd shuts down cleanly on SIGTERM
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def remove(self) -> None:
        self.stop_server()
        shutil.rmtree(self.dir, ignore_errors=True)


def run(command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` to its end; its exit status (128 + N for signal N).
    SIGTERM is passed on to it; SIGINT from a terminal reaches it directly,
    and this script waits for it to finish before cleaning up."""
    child = subprocess.Popen(command, env=env)
    signal.signal(signal.SIGTERM, lambda signum, _: child.send_signal(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    status = child.wait()
    return 128 - status if status < 0 else status


def main(command: list[str]) -> int:
    if not command:
        say("usage: python -m tollgate_tooling.with_mariadb COMMAND [ARG...]")
        return 2
    url = os.environ.get(URL_VARIABLE)
    if not url:
        say(f"{URL_VARIABLE} is not set (the Makefile sets it: "
            "mysql://root@127.0.0.1:3306/tollgate_test)")
        return 2
    parts = urlparse(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 3306
    if answers_as_mysql(host, port):
        os.execvp(command[0], command)

    where = f"{host}:{port} ({URL_VARIABLE})"
    mariadbd, install_db = find_program(MARIADBD), find_program(INSTALL_DB)
    if not (mariadbd and install_db):
        say(f"no MySQL server answers at {where}, and MariaDB is not installed, so no "
            f"throwaway server can be started for the tests. Install it: `{INSTALL_HINT}` "
            f"(or point {URL_VARIABLE} at a MariaDB/MySQL server the tests may create "
            "databases on).")
        return 1

    # Until the command runs, a SIGTERM still removes the server and its directory.
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    server = ThrowawayMariadb(mariadbd, install_db, parts.path.strip("/") or "tollgate_test")
    try:
        say(f"no MySQL server answers at {where}; starting a throwaway MariaDB "
            f"in {server.dir}")
        try:
            server.start()
        except RuntimeError as err:
            say(str(err))
            return 1
        say(f"MariaDB {mariadbd} is up: {URL_VARIABLE}={server.url}")
        return run(command, {**os.environ, URL_VARIABLE: server.url})
    finally:
        server.remove()
        say(f"stopped the throwaway MariaDB and removed {server.dir}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

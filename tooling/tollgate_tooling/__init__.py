"""tollgate's development tooling: the launchers and helpers behind `make run`,
`make fleet`, `make bench`, `make soak` and the end-to-end tests.

Modules:

* ``stack``: starts and stops one local stack (sidecar, ai-server, Envoy);
  ``make run`` is ``python -m tollgate_tooling.stack run``.
* ``fleet``: N Envoys and M sidecars over one MariaDB (``make fleet``).
* ``envoy_config``: renders Envoy's configuration from envoy/envoy.template.yaml.
* ``deploy_manifests``: writes (or checks) deploy/'s generated files.
* ``with_mariadb``: runs a command with a MariaDB at TOLLGATE_TEST_MYSQL_URL.
* ``gateway``, ``faults``, ``leaks``: a client's view of a running stack, the
  fault tests' load and TCP forwarder, and the credential finder.
* ``collected``: a pytest plugin that writes down what a session collected
  (node ids, markers, fixtures), for tests/test_guarantees.py.
* ``log_faults``: what a panic, a traceback or a filter fault looks like in
  each process's log, and the scanner every stack's stop runs in the tests.

scripts/setup.sh installs it into .venv in editable mode, so ``REPO_ROOT`` is
the checkout these files live in: the tooling works on the repository's
builds (target/), templates (envoy/) and state (.tollgate/), not on copies.
"""

from __future__ import annotations

from pathlib import Path

#: The repository's root: tooling/tollgate_tooling/ is two levels below it.
REPO_ROOT = Path(__file__).resolve().parents[2]

if not (REPO_ROOT / "Cargo.toml").is_file():
    raise ImportError(
        f"tollgate_tooling must be installed in editable mode from the repository "
        f"(scripts/setup.sh does); {REPO_ROOT} is not tollgate's checkout")

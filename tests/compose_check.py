"""Checks docker-compose.yml the way `docker compose config` does, with no
Docker client: nothing here is installed beyond what `make setup` puts in
.venv, and nothing is downloaded.

The file is parsed (duplicate keys refused), its ``${...}`` variables are
interpolated with the secrets docs/OPERATING.md says to export, the result is
validated against the Compose specification's JSON schema (vendored in
PyPI's check-jsonschema as ``vendor.compose-spec``), and the references a
schema cannot see are followed: services named in ``depends_on``, named
volumes and networks, build contexts and Dockerfiles, bind-mounted files.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from tollgate_tooling.stack import VENV_BIN

#: What docs/OPERATING.md (docker-compose) tells a user to export before `docker compose up`.
EXPORTED = ("TOLLGATE_JWT_SECRET", "TOLLGATE_INTERNAL_TOKEN", "TOLLGATE_ADMIN_TOKEN")

#: One `$` construct of Compose's interpolation (no nesting): `$$`, `$NAME`,
#: `${NAME}`, `${NAME<op><arg>}` with op one of `:-` `-` `:?` `?` `:+` `+`;
#: any other `$` is an error, as in Compose.
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<plain>[A-Za-z_]\w*)"
    r"|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<invalid>))")


def compose_problems(path: Path, project_dir: Path | None = None) -> list[str]:
    """Everything wrong with the compose file at ``path``; empty when it is
    well formed. Relative paths resolve against ``project_dir`` (by default
    the file's folder, as for Compose)."""
    project_dir = project_dir or path.parent
    try:
        document = YAML(typ="safe", pure=True).load(path.read_text())
    except YAMLError as err:
        return [f"not valid YAML: {err}"]
    problems: list[str] = []
    document = interpolate(document, {name: "set-by-the-user" for name in EXPORTED}, problems)
    if problems:
        return problems
    problems += schema_problems(document)
    if not problems:  # the references below assume the schema's shapes
        problems += reference_problems(document, project_dir)
    return problems


def interpolate(value: Any, env: dict[str, str], problems: list[str]) -> Any:
    """``value`` with every string interpolated as Compose would with ``env``;
    what Compose would refuse, or leave empty, goes to ``problems``."""
    if isinstance(value, dict):
        return {key: interpolate(item, env, problems) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env, problems) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        if match["invalid"] is not None:
            problems.append(f"invalid interpolation in {value!r}")
            return ""
        name, op, arg = match["plain"] or match["braced"], match["op"], match["arg"]
        current = env.get(name)
        usable = bool(current) if op and op.startswith(":") else current is not None
        if op in (":-", "-"):
            return current if usable else arg
        if op in (":?", "?"):
            if not usable:
                problems.append(f"{name} is required ({arg!r}) but is not among the "
                                f"variables docs/OPERATING.md says to export: {', '.join(EXPORTED)}")
            return current or ""
        if op in (":+", "+"):
            return arg if usable else ""
        if current is None:
            problems.append(f"${name} has no default and is not among the variables "
                            f"docs/OPERATING.md says to export: {', '.join(EXPORTED)}")
        return current or ""

    return VARIABLE.sub(substitute, value)


def schema_problems(document: Any) -> list[str]:
    """The Compose specification's verdict on ``document`` (check-jsonschema's
    vendored copy of the schema: no download)."""
    checker = VENV_BIN / "check-jsonschema"
    if not checker.exists():
        return ["check-jsonschema is missing: run `make setup` (pip installs "
                "scripts/requirements.txt)"]
    with tempfile.TemporaryDirectory() as tmp:
        interpolated = Path(tmp) / "compose.json"
        interpolated.write_text(json.dumps(document))
        result = subprocess.run(
            [str(checker), "--builtin-schema", "vendor.compose-spec", str(interpolated)],
            capture_output=True, text=True, timeout=60)
    if result.returncode == 0:
        return []
    report = (result.stdout + result.stderr).replace(str(interpolated), "docker-compose.yml")
    return [f"the Compose schema refuses it:\n{report.strip()}"]


def reference_problems(document: dict, project_dir: Path) -> list[str]:
    """References between the file's parts and to the project's files."""
    services = document.get("services") or {}
    volumes = set(document.get("volumes") or {})
    networks = set(document.get("networks") or {}) | {"default"}
    problems = []
    for name, service in services.items():
        if "image" not in service and "build" not in service:
            problems.append(f"service {name} has neither image nor build")
        for other in service.get("depends_on") or []:
            if other not in services:
                problems.append(f"service {name} depends on undefined service {other}")
        for network in service.get("networks") or []:
            if network not in networks:
                problems.append(f"service {name} uses undefined network {network}")
        problems += build_problems(name, service.get("build"), project_dir)
        for mount in service.get("volumes") or []:
            problems += mount_problems(name, mount, volumes, project_dir)
    return problems


def build_problems(service: str, build: Any, project_dir: Path) -> list[str]:
    if build is None:
        return []
    build = {"context": build} if isinstance(build, str) else build
    context = project_dir / build.get("context", ".")
    if not context.is_dir():
        return [f"service {service}: build context {build.get('context')} is not a folder"]
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    if not dockerfile.is_file():
        return [f"service {service}: Dockerfile {dockerfile.relative_to(project_dir)} is missing"]
    return []


def mount_problems(service: str, mount: Any, volumes: set[str], project_dir: Path) -> list[str]:
    if isinstance(mount, str):
        source, _, rest = mount.partition(":")
        if not rest:
            return []  # an anonymous volume: a container path only
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    else:
        source, kind = mount.get("source"), mount.get("type")
    if kind == "volume" and source and source not in volumes:
        return [f"service {service} mounts undefined volume {source}"]
    if kind == "bind" and not (project_dir / Path(source).expanduser()).exists():
        return [f"service {service} bind-mounts {source}, which does not exist "
                "(a build output? run `make setup`)"]
    return []

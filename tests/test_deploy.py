"""deploy/ holds what a cluster needs, checked offline (no cluster runs here):
every Kubernetes manifest passes Kubernetes' own schemas and the WasmPlugin
Istio's (tests/deploy_check.py); the WasmPlugin's configuration and the
plain-Envoy example's are envoy/'s, rendered from the same source, and the
filter loads them in Envoy 1.40; the sidecar's manifests reference the
secrets it reads and probe /healthz and /readyz; and `make oci`
(scripts/oci.sh) writes an OCI image layout in the Wasm image format
Istio pulls, holding the built filter."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from deploy_check import load_documents, manifest_problems, wasm_of_oci_layout
from test_envoy_config import validate
from tollgate_tooling import REPO_ROOT as ROOT
from tollgate_tooling import deploy_manifests, envoy_config
from tollgate_tooling.stack import WASM

DEPLOY = ROOT / "deploy"

#: YAML files of deploy/kubernetes and deploy/istio that are not Kubernetes
#: resources (deploy/grafana holds Grafana's provisioning files).
NOT_MANIFESTS = {DEPLOY / "kubernetes/envoy-config.yaml"}

MANIFESTS = sorted(p for folder in ("kubernetes", "istio") for p in (DEPLOY / folder).rglob("*.yaml")
                   if p not in NOT_MANIFESTS)

#: The variables `tollgate serve` reads its secrets from (docs/OPERATING.md, Configuration).
SIDECAR_SECRETS = {"DATABASE_URL", "TOLLGATE_INTERNAL_TOKEN", "TOLLGATE_ADMIN_TOKEN",
                   "TOLLGATE_MASTER_KEY"}


def test_generated_files_are_rendered_from_envoys_configuration():
    for path, text in deploy_manifests.rendered().items():
        assert path.read_text() == text, (
            f"{path.relative_to(ROOT)} drifted from envoy_config: run "
            "`.venv/bin/python -m tollgate_tooling.deploy_manifests`")


def test_every_manifest_is_checked():
    assert {p.name for p in MANIFESTS} >= {"sidecar.yaml", "gateway.yaml", "wasmplugin.yaml",
                                           "ai-server.yaml"}, MANIFESTS


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_passes_the_schemas(path: Path):
    problems = manifest_problems(path)
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


#: Ways to break a manifest, each with what the check must then say.
BREAKAGES = {
    "a misspelled Deployment field": (
        "kubernetes/sidecar.yaml", "readinessProbe:", "readinesProbe:", "readinesProbe"),
    "a value of the wrong type": (
        "kubernetes/sidecar.yaml", "replicas: 2", "replicas: two", "is not of type 'integer'"),
    "a missing required field": (
        "kubernetes/gateway.yaml", "      containers:\n        - name: ai-server",
        "      containers:\n        - nam: ai-server", "'name' is a required property"),
    "a WasmPlugin fail strategy Istio does not have": (
        "istio/wasmplugin.yaml", '"FAIL_CLOSE"', '"FAIL_CLOSED"', "FAIL_CLOSE' or 'FAIL_OPEN"),
    "a misspelled WasmPlugin field": (
        "istio/wasmplugin.yaml", "  pluginName:", "  pluginname:", "spec.pluginname"),
    "a WasmPlugin without its url": (
        "istio/wasmplugin.yaml", '  url: "oci://', '  uri: "oci://', "spec.url"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_the_manifest_check_refuses_a_broken_file(breakage: str, tmp_path: Path):
    """The check bites: a copy with one thing broken fails it."""
    name, old, new, expected = BREAKAGES[breakage]
    text = (DEPLOY / name).read_text()
    assert old in text, f"deploy/{name} changed: update the breakage {breakage!r}"
    broken = tmp_path / Path(name).name
    broken.write_text(text.replace(old, new, 1))
    problems = manifest_problems(broken)
    assert any(expected in problem for problem in problems), problems


def resources(name: str) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in load_documents(DEPLOY / name)}


def test_the_sidecar_reads_its_secrets_from_a_secret_and_is_probed():
    deployment = resources("kubernetes/sidecar.yaml")["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    from_secret = {env["name"] for env in container["env"]
                   if "secretKeyRef" in env.get("valueFrom", {})}
    assert from_secret == SIDECAR_SECRETS, from_secret
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["limits"]["memory"]
    service = resources("kubernetes/sidecar.yaml")["Service"]
    assert service["spec"]["ports"][0]["port"] == 9000
    assert deploy_manifests.SIDECAR_CLUSTER.endswith(
        f"|{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local")


def test_the_filters_secrets_reach_the_proxy_that_runs_it():
    """The WasmPlugin reads the filter's secrets from the proxy's environment;
    the AI service's pod gives the injected istio-proxy exactly those."""
    plugin = resources("istio/wasmplugin.yaml")["WasmPlugin"]["spec"]
    assert {e["name"]: e["valueFrom"] for e in plugin["vmConfig"]["env"]} == {
        name: "HOST" for name in envoy_config.SECRET_ENV_KEYS}
    pod = resources("istio/ai-server.yaml")["Deployment"]["spec"]["template"]
    assert plugin["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    proxy = next(c for c in pod["spec"]["containers"] if c["name"] == "istio-proxy")
    assert {e["name"] for e in proxy["env"]} == set(envoy_config.SECRET_ENV_KEYS)


def test_the_wasmplugin_configures_the_filter_as_envoy_does(tmp_path: Path):
    """The pluginConfig is the filter configuration of the compose Envoy
    config but for the sidecar's address, and the filter accepts it."""
    plugin = load_documents(DEPLOY / "istio/wasmplugin.yaml")[0]["spec"]
    compose = load_documents_text(envoy_config.render("compose"))
    wasm_filter = compose["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["http_filters"][0]["typed_config"]["config"]
    filter_config = json.loads(wasm_filter["configuration"]["value"])
    address = {"sidecar_cluster", "sidecar_authority"}
    assert {k: v for k, v in plugin["pluginConfig"].items() if k not in address} == \
        {k: v for k, v in filter_config.items() if k not in address}
    assert plugin["pluginName"] == wasm_filter["root_id"]
    assert (plugin["failStrategy"], wasm_filter["failure_policy"]) == ("FAIL_CLOSE", "FAIL_CLOSED")
    # Envoy's validation loads the .wasm and runs its configuration check.
    (tmp_path / "logs").mkdir()
    text = envoy_config.render("local", {
        **os.environ, "TOLLGATE_WASM": str(WASM),
        "TOLLGATE_ACCESS_LOG": str(tmp_path / "logs/access.log"),
        "TOLLGATE_FILTER_OVERRIDES": json.dumps(plugin["pluginConfig"])})
    assert deploy_manifests.SIDECAR_CLUSTER in text
    validate(text, tmp_path)


def load_documents_text(text: str):
    from ruamel.yaml import YAML
    return YAML(typ="safe").load(text)


def test_the_plain_envoy_example_validates(tmp_path: Path):
    text = (DEPLOY / "kubernetes/envoy-config.yaml").read_text()
    assert "/etc/tollgate/filter/plugin.wasm" in text
    config_map_key = resources("kubernetes/gateway.yaml")["Deployment"]["spec"]["template"][
        "spec"]["volumes"][0]["configMap"]["items"][0]["key"]
    assert config_map_key == "envoy.yaml"
    validate(text.replace("/etc/tollgate/filter/plugin.wasm", str(WASM)), tmp_path)


def test_make_oci_writes_the_filter_as_an_oci_image_istio_pulls(tmp_path: Path):
    assert WASM.exists(), "the filter is not built: run `make setup`"
    layout = tmp_path / "tollgate-filter"
    result = subprocess.run([str(ROOT / "scripts/oci.sh"), str(layout)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    tag = deploy_manifests.IMAGE.rsplit(":", 1)[1]
    assert wasm_of_oci_layout(layout, tag) == WASM.read_bytes()
    # The manifests pull the image `make oci` builds: its tag is the filter's version.
    assert f'version = "{tag}"' in (ROOT / "filter/Cargo.toml").read_text()
    assert deploy_manifests.IMAGE in (DEPLOY / "kubernetes/gateway.yaml").read_text()

"""Checks deploy/'s manifests and the filter's OCI image layout offline, with
what `make setup` puts in .venv and nothing downloaded.

* Kubernetes resources: PyPI kubernetes-validate, which bundles Kubernetes'
  own JSON schemas (1.37 here), in strict mode: an unknown or misspelled
  field fails, as a wrong type or a missing required field does.
* Istio's WasmPlugin (a CRD, which no Kubernetes schema knows): the pydantic
  models PyPI cloudcoil-models-istio generates from Istio's CRD schemas
  (Istio 1.24): types, enums, lengths and required fields; a field the
  schema lacks fails too (the resource must read back unchanged).
* The OCI layout: ``oci-layout``, ``index.json``, the manifest, the config
  and the one layer, by the OCI image specification's media types and
  digests, and the compat variant of the Wasm image specification that
  Istio pulls (one tar+gzip layer holding ``plugin.wasm``, the manifest
  annotation ``module.wasm.image/variant: compat``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

#: Kinds checked against Istio's schema rather than Kubernetes'.
ISTIO_KINDS = {"WasmPlugin"}

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def load_documents(path: Path) -> list[Any]:
    """Every YAML document of ``path`` (duplicate keys refused)."""
    return [doc for doc in YAML(typ="safe", pure=True).load_all(path.read_text())
            if doc is not None]


def manifest_problems(path: Path) -> list[str]:
    """Everything the schemas refuse in the manifests of ``path``."""
    try:
        documents = load_documents(path)
    except YAMLError as err:
        return [f"not valid YAML: {err}"]
    if not documents:
        return ["no resource in the file"]
    problems = []
    for i, doc in enumerate(documents):
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            problems.append(f"document {i} is not a Kubernetes resource (no apiVersion/kind)")
            continue
        where = f"{doc['kind']} {(doc.get('metadata') or {}).get('name')}"
        check = istio_problems if doc["kind"] in ISTIO_KINDS else kubernetes_problems
        problems += [f"{where}: {problem}" for problem in check(doc)]
    return problems


def kubernetes_problems(doc: dict) -> list[str]:
    import kubernetes_validate
    from kubernetes_validate import utils

    try:
        kubernetes_validate.validate(doc, utils.latest_version(), strict=True)
    except utils.ValidationError as err:
        return [f"{'.'.join(map(str, err.path))}: {err.message}"]
    except (utils.SchemaNotFoundError, utils.InvalidSchemaError) as err:
        return [str(err)]
    return []


def istio_problems(doc: dict) -> list[str]:
    from pydantic import ValidationError
    from cloudcoil.models.istio.extensions.v1alpha1 import WasmPlugin

    if doc.get("apiVersion") != "extensions.istio.io/v1alpha1":
        return [f"apiVersion {doc.get('apiVersion')} is not extensions.istio.io/v1alpha1"]
    try:
        model = WasmPlugin.model_validate(doc)
    except ValidationError as err:
        return [str(err)]
    read_back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    if read_back != doc:
        return [f"fields the schema does not know: {sorted(unknown_paths(doc, read_back))}"]
    return []


def unknown_paths(given: Any, known: Any, prefix: str = "") -> list[str]:
    """The paths in ``given`` that ``known`` (its schema's reading) dropped."""
    if isinstance(given, dict) and isinstance(known, dict):
        return [p for key, value in given.items() for p in (
            [f"{prefix}{key}"] if key not in known
            else unknown_paths(value, known[key], f"{prefix}{key}."))]
    if isinstance(given, list) and isinstance(known, list):
        return [p for i, (a, b) in enumerate(zip(given, known))
                for p in unknown_paths(a, b, f"{prefix}{i}.")]
    return [] if given == known else [prefix.rstrip(".") + f" ({given!r} read as {known!r})"]


def blob(layout: Path, descriptor: dict) -> bytes:
    """The blob a descriptor names, its size and digest checked."""
    algorithm, _, digest = descriptor["digest"].partition(":")
    assert algorithm == "sha256", f"digest algorithm {algorithm}"
    data = (layout / "blobs" / "sha256" / digest).read_bytes()
    assert len(data) == descriptor["size"], f"{descriptor['digest']}: size {len(data)}"
    assert hashlib.sha256(data).hexdigest() == digest, f"{descriptor['digest']}: digest"
    return data


def wasm_of_oci_layout(layout: Path, tag: str) -> bytes:
    """The plugin.wasm of the image ``tag`` in the OCI layout ``layout``,
    after checking the layout, index, manifest, config and layer (an
    AssertionError says what is wrong)."""
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2, index
    tagged = [m for m in index["manifests"]
              if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag]
    assert len(tagged) == 1, f"index.json names no single manifest {tag}: {index}"
    assert tagged[0]["mediaType"] == OCI_MANIFEST, tagged[0]
    manifest = json.loads(blob(layout, tagged[0]))
    assert manifest["schemaVersion"] == 2, manifest
    assert manifest.get("mediaType", OCI_MANIFEST) == OCI_MANIFEST, manifest
    assert manifest["config"]["mediaType"] == OCI_CONFIG, manifest["config"]
    assert manifest.get("annotations", {}).get("module.wasm.image/variant") == "compat", manifest
    assert len(manifest["layers"]) == 1, f"the compat variant has one layer: {manifest['layers']}"
    layer = manifest["layers"][0]
    assert layer["mediaType"] == OCI_LAYER, layer
    config = json.loads(blob(layout, manifest["config"]))
    tar_bytes = gzip.decompress(blob(layout, layer))
    assert config["rootfs"] == {
        "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]}, config
    # tarfile raises on a tar cut short (no padding, no end-of-archive blocks).
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
        files = [m for m in members if m.isfile()]
        assert [m.name for m in files] == ["plugin.wasm"], [m.name for m in members]
        return tar.extractfile(files[0]).read()

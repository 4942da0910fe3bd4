#!/usr/bin/env python3
"""Render tollgate's Envoy configuration from envoy/envoy.template.yaml.

One template serves every profile, so the docker-compose configuration and the
local stack (``make run`` and the end-to-end tests) cannot drift apart:

* ``compose``: service names from docker-compose.yml, the ``.wasm`` mounted at
  /etc/tollgate; rendered into envoy/envoy.compose.yaml, which is checked in
  (a test renders it again and compares).
* ``local``: 127.0.0.1 and ports from the environment (see ``LOCAL_ENV``).
  ``TOLLGATE_SIDECAR_ADDR`` may list several sidecars, comma-separated (the
  fleet of ``tollgate_tooling.fleet``): the sidecar cluster then gets one endpoint
  each, active health checks on ``/readyz`` and outlier detection
  (``sidecar_fleet_options``). With one sidecar it renders as it always did.
  The local profile also routes the LLM APIs (``LLM_PATHS``) to the
  ``llm_upstream`` cluster, llm-upstream/ (``TOLLGATE_LLM_UPSTREAM_ADDR``):
  ``local_llm_routes`` and ``local_llm_cluster`` add them to the rendered
  template. The container profiles have no LLM upstream.
* ``kubernetes``: the plain-Envoy example of deploy/ (Envoy in the AI
  service's pod, the filter mounted from its OCI image);
  rendered into deploy/kubernetes/envoy-config.yaml, checked in like compose's.

Secrets never appear in a rendered file: the filter reads the JWT secret and
the internal token from Envoy's environment (``vm_config.environment_variables``),
so whoever starts Envoy passes them as ``TOLLGATE_JWT_SECRET`` and
``TOLLGATE_INTERNAL_TOKEN``.

Usage:
  .venv/bin/python -m tollgate_tooling.envoy_config --profile local --out .tollgate/envoy.yaml
  .venv/bin/python -m tollgate_tooling.envoy_config --profile compose --out envoy/envoy.compose.yaml
  .venv/bin/python -m tollgate_tooling.envoy_config --profile kubernetes --out deploy/kubernetes/envoy-config.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
from pathlib import Path

from tollgate_tooling import REPO_ROOT as ROOT

TEMPLATE = ROOT / "envoy/envoy.template.yaml"

#: Environment variables the filter reads its secrets from.
SECRET_ENV_KEYS = ("TOLLGATE_JWT_SECRET", "TOLLGATE_INTERNAL_TOKEN")

#: The profiles of a container deployment: everything but the addresses.
CONTAINER_VALUES = {
    # Envoy's admin interface can raise the log level to trace, which
    # logs credentials: it listens on the container's loopback only
    # (`docker compose exec envoy curl -s localhost:9901/stats`).
    "ADMIN_HOST": "127.0.0.1",
    "ADMIN_PORT": "9901",
    "LISTEN_HOST": "0.0.0.0",
    "LISTEN_PORT": "8001",
    "ACCESS_LOG": "/dev/stdout",
    "XFF_TRUSTED_HOPS": "0",
    "REQUEST_TIMEOUT": "60s",
    "ROUTE_TIMEOUT": "30s",
}

#: Where each container profile finds the sidecar, the AI service and the .wasm.
CONTAINER_ADDRESSES = {
    "compose": {
        "SIDECAR_ADDR": "sidecar:9000",
        "AI_SERVER_ADDR": "ai-server:5000",
        "WASM_PATH": "/etc/tollgate/tollgate_filter.wasm",
    },
    # deploy/kubernetes/gateway.yaml: Envoy beside the AI service in its pod,
    # the sidecar's Service (sidecar.yaml) in the `tollgate` namespace; the
    # filter's OCI image (`make oci`) mounted at /etc/tollgate/filter, its one
    # layer holding plugin.wasm.
    "kubernetes": {
        "SIDECAR_ADDR": "tollgate-sidecar.tollgate.svc.cluster.local:9000",
        "AI_SERVER_ADDR": "127.0.0.1:5000",
        "WASM_PATH": "/etc/tollgate/filter/plugin.wasm",
    },
}

#: Indentation of the filter configuration block inside the template.
CONFIG_INDENT = " " * 28

#: The builds of the filter (``TOLLGATE_FILTER``): the template holds one
#: block for each between ``# [filter <build>]`` markers; the rendered
#: configuration keeps the chosen one.
FILTER_BUILDS = ("wasm", "native")

#: The native build's module name: Envoy loads lib<name>.so from
#: ``ENVOY_DYNAMIC_MODULES_SEARCH_PATH`` (``stack`` sets it).
NATIVE_MODULE = "tollgate_native"

#: Local-profile settings and the environment variables that override them.
LOCAL_ENV = {
    "LISTEN_PORT": ("TOLLGATE_ENVOY_PORT", "8001"),
    "ADMIN_PORT": ("TOLLGATE_ENVOY_ADMIN_PORT", "9901"),
    # HOST:PORT, or several, comma-separated.
    "SIDECAR_ADDR": ("TOLLGATE_SIDECAR_ADDR", "127.0.0.1:9000"),
    # With several sidecars: how often each Envoy checks each one's /readyz.
    "SIDECAR_HEALTH_INTERVAL_MS": ("TOLLGATE_SIDECAR_HEALTH_INTERVAL_MS", "1000"),
    "AI_SERVER_ADDR": ("TOLLGATE_AI_SERVER_ADDR", "127.0.0.1:5000"),
    "WASM_PATH": (
        "TOLLGATE_WASM",
        str(ROOT / "target/wasm32-wasip1/release/tollgate_filter.wasm"),
    ),
    "ACCESS_LOG": ("TOLLGATE_ACCESS_LOG", str(ROOT / ".tollgate/logs/envoy-access.log")),
    "MAX_BODY_BYTES": ("TOLLGATE_MAX_BODY_BYTES", str(1024 * 1024)),
    "XFF_TRUSTED_HOPS": ("TOLLGATE_XFF_TRUSTED_HOPS", "0"),
    # How long a client may take to send its whole request (408 after), and
    # the AI service to answer (504 after).
    "REQUEST_TIMEOUT": ("TOLLGATE_REQUEST_TIMEOUT", "60s"),
    "ROUTE_TIMEOUT": ("TOLLGATE_ROUTE_TIMEOUT", "30s"),
}

#: The local profile's LLM upstream (llm-upstream/) and the bound on one
#: whole LLM answer, streamed or not (a stream silent for the listener's
#: ``stream_idle_timeout`` is cut sooner).
LOCAL_LLM_ENV = {
    "LLM_UPSTREAM_ADDR": ("TOLLGATE_LLM_UPSTREAM_ADDR", "127.0.0.1:5100"),
    "LLM_ROUTE_TIMEOUT": ("TOLLGATE_LLM_ROUTE_TIMEOUT", "300s"),
}

#: The LLM APIs' paths, routed to the ``llm_upstream`` cluster: (match, path).
#: Exact paths ignore the query string; the Gemini paths are prefixes
#: (``/v1beta/models/{model}:generateContent``, ``:streamGenerateContent``;
#: the google-genai SDK asks for ``/v1/models/...`` unless told ``v1beta``).
LLM_PATHS = (
    ("path", "/v1/chat/completions"),
    ("path", "/v1/responses"),
    ("path", "/v1/embeddings"),
    ("path", "/v1/messages"),
    ("prefix", "/v1beta/models/"),
    ("prefix", "/v1/models/"),
)


def filter_config(max_body_bytes: int, overrides: dict | None = None) -> dict:
    """The filter's plugin configuration (see docs/OPERATING.md, Configuration).

    ``overrides`` is merged one level deep, so a test can say
    ``{"key_cache": {"positive_ttl_s": 2}}`` without restating the rest.
    """
    config: dict = {
        "sidecar_cluster": "tollgate_sidecar",
        "sidecar_authority": "tollgate-sidecar",
        "callout_timeout_ms": 500,
        "internal_token": {"env": "TOLLGATE_INTERNAL_TOKEN"},
        "jwt": {
            "secret": {"env": "TOLLGATE_JWT_SECRET"},
            "algorithms": ["HS256"],
            "clock_skew_s": 30,
            "max_lifetime_s": 300,
        },
        "max_body_bytes": max_body_bytes,
        "key_cache": {
            "positive_ttl_s": 30,
            "negative_ttl_s": 5,
            "stale_if_error_s": 300,
            "slots": 16384,
        },
        "usage": {
            "flush_interval_ms": 1000,
            "max_batch": 500,
            "buffer_cap": 100000,
            "max_backoff_ms": 30000,
        },
    }
    return merge_overrides(config, overrides or {})


def merge_overrides(base: dict, overrides: dict) -> dict:
    """``overrides`` merged into ``base`` one level deep, as the filter's
    configuration takes them (``{"key_cache": {"positive_ttl_s": 2}}`` keeps
    the other ``key_cache`` fields); neither argument is changed."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


#: Failed /readyz checks in a row that take a sidecar out of the cluster, and
#: passed ones that bring it back.
HEALTH_UNHEALTHY_THRESHOLD = 2
HEALTH_HEALTHY_THRESHOLD = 1


def health_detection_bound_s(interval_ms: int) -> float:
    """The longest a failing sidecar stays in an Envoy's cluster under the
    active health checks: the check under way plus ``HEALTH_UNHEALTHY_THRESHOLD``
    more, each bounded by the interval (the timeout is shorter). A draining
    sidecar answers /readyz 503 at least this long (its ``--drain-period``)."""
    return (HEALTH_UNHEALTHY_THRESHOLD + 1) * interval_ms / 1000


def sidecar_fleet_options(interval_ms: int) -> str:
    """The sidecar cluster's settings for several sidecars, as YAML lines
    under the cluster (6 spaces in).

    * Active health checks on ``/readyz`` (Envoy's ``HealthCheck``): a
      sidecar whose database is unreachable, or that is draining before it
      stops (``sidecar/src/drain.rs``), answers 503 and is taken out within
      ``health_detection_bound_s``; ``no_traffic_interval`` is the same
      interval, so an idle Envoy notices as fast.
    * Outlier detection: three 5xx or connection failures in a row eject a
      host for 5 s (a SIGKILLed sidecar is out before its health checks
      fail twice); at most half the hosts, so the cluster keeps one.
    * A retry budget: the filter's callouts (verify and usage, both
      idempotent) go through Envoy's async HTTP client, which takes no
      route and so no route ``retry_policy``; Envoy's router still honours
      ``x-envoy-retry-on`` and ``x-envoy-max-retries`` on the callout's own
      headers, and this budget caps such retries at a quarter of the
      requests in flight (at least 3), so retries cannot pile onto a sick
      fleet.
    """
    interval = f"{interval_ms / 1000:g}s"
    timeout = f"{min(interval_ms, 1000) / 2000:g}s"
    return f"""
      # Several stateless sidecars: tollgate_tooling/envoy_config.py (sidecar_fleet_options).
      health_checks:
        - timeout: {timeout}
          interval: {interval}
          no_traffic_interval: {interval}
          unhealthy_threshold: {HEALTH_UNHEALTHY_THRESHOLD}
          healthy_threshold: {HEALTH_HEALTHY_THRESHOLD}
          http_health_check: {{ path: /readyz }}
      outlier_detection:
        consecutive_5xx: 3
        interval: 1s
        base_ejection_time: 5s
        max_ejection_percent: 50
      circuit_breakers:
        thresholds:
          - retry_budget: {{ budget_percent: {{ value: 25 }}, min_retry_concurrency: 3 }}"""


def sidecar_endpoints(addrs: list[str]) -> str:
    """The sidecar cluster's ``lb_endpoints`` entries, one per address."""
    lines = []
    for addr in addrs:
        host, port = _split_addr(addr)
        lines.append(f"""
              - endpoint:
                  address:
                    socket_address: {{ address: {host}, port_value: {port} }}""")
    return "".join(lines)


def _split_addr(addr: str) -> tuple[str, str]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {addr!r} is not HOST:PORT")
    return host, port


def profile_values(profile: str, env: dict | None = None) -> dict:
    """Template values for a profile; ``env`` defaults to os.environ."""
    env = dict(os.environ if env is None else env)
    if profile in CONTAINER_ADDRESSES:
        max_body = 1024 * 1024
        values = {**CONTAINER_VALUES, **CONTAINER_ADDRESSES[profile]}
        overrides = None
    elif profile == "local":
        values = {name: env.get(var, default) for name, (var, default) in LOCAL_ENV.items()}
        values["ADMIN_HOST"] = "127.0.0.1"
        values["LISTEN_HOST"] = env.get("TOLLGATE_ENVOY_HOST", "127.0.0.1")
        max_body = int(values.pop("MAX_BODY_BYTES"))
        overrides = json.loads(env.get("TOLLGATE_FILTER_OVERRIDES", "{}"))
    else:
        raise ValueError(f"unknown profile {profile!r} (local, {', '.join(CONTAINER_ADDRESSES)})")

    sidecars = [a.strip() for a in values.pop("SIDECAR_ADDR").split(",") if a.strip()]
    if not sidecars:
        raise ValueError("no sidecar address (TOLLGATE_SIDECAR_ADDR)")
    values["SIDECAR_ENDPOINTS"] = sidecar_endpoints(sidecars)
    interval_ms = int(values.pop("SIDECAR_HEALTH_INTERVAL_MS", 1000))
    values["SIDECAR_FLEET_OPTIONS"] = (
        sidecar_fleet_options(interval_ms) if len(sidecars) > 1 else "")
    values["AI_SERVER_HOST"], values["AI_SERVER_PORT"] = _split_addr(
        values.pop("AI_SERVER_ADDR")
    )
    # Envoy's buffer must hold a whole body the filter accepts plus a chunk.
    values["BUFFER_LIMIT_BYTES"] = str(max_body + 256 * 1024)
    values["HOST_ENV_KEYS"] = ", ".join(SECRET_ENV_KEYS)
    # A YAML literal block, indented under `value: |` in the template.
    pretty = json.dumps(filter_config(max_body, overrides), indent=2)
    values["FILTER_CONFIG"] = "|\n" + "\n".join(
        CONFIG_INDENT + line for line in pretty.splitlines()
    )
    return values


def filter_build(env: dict | None = None) -> str:
    """The build of the filter ``TOLLGATE_FILTER`` names (default ``wasm``)."""
    build = (os.environ if env is None else env).get("TOLLGATE_FILTER") or "wasm"
    if build not in FILTER_BUILDS:
        raise ValueError(f"TOLLGATE_FILTER={build!r}: expected one of {', '.join(FILTER_BUILDS)}")
    return build


def keep_filter_block(text: str, build: str) -> str:
    """``text`` with only the ``# [filter <build>]`` block of the template."""
    out, keep = [], True
    for line in text.splitlines(keepends=True):
        marker = line.strip()
        if marker.startswith("# [filter ") or marker == "# [end filter]":
            keep = marker in (f"# [filter {build}]", "# [end filter]")
            continue
        if keep:
            out.append(line)
    return "".join(out)


def local_llm_routes(indent: str, timeout: str) -> str:
    """The routes of ``LLM_PATHS`` to the ``llm_upstream`` cluster, as YAML
    list entries at ``indent``. No buffering is configured on them: Envoy
    passes each chunk of a streamed answer on as it comes."""
    return "".join(
        f"{indent}- match: {{ {kind}: \"{path}\" }}\n"
        f"{indent}  route: {{ cluster: llm_upstream, timeout: {timeout} }}\n"
        for kind, path in LLM_PATHS)


def local_llm_cluster(indent: str, addr: str, buffer_limit: str) -> str:
    """The ``llm_upstream`` cluster as a YAML list entry at ``indent``: the
    ai_server cluster's settings (gunicorn's gthread workers keep
    connections alive for 75 s, llm-upstream/gunicorn.conf.py; Envoy closes
    an idle one after 60 s)."""
    host, port = _split_addr(addr)
    return f"""{indent}- name: llm_upstream
{indent}  type: STRICT_DNS
{indent}  connect_timeout: 2s
{indent}  per_connection_buffer_limit_bytes: {buffer_limit}
{indent}  typed_extension_protocol_options:
{indent}    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
{indent}      "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
{indent}      common_http_protocol_options:
{indent}        idle_timeout: 60s
{indent}      explicit_http_config:
{indent}        http_protocol_options: {{}}
{indent}  load_assignment:
{indent}    cluster_name: llm_upstream
{indent}    endpoints:
{indent}      - lb_endpoints:
{indent}          - endpoint:
{indent}              address:
{indent}                socket_address: {{ address: {host}, port_value: {port} }}
"""


def insert_after(text: str, key: str, entries) -> str:
    """``text`` with ``entries(indent)`` inserted after the one line that is
    ``key:`` alone, ``indent`` being that line's indentation plus two."""
    lines = text.splitlines(keepends=True)
    found = [i for i, line in enumerate(lines) if line.strip() == f"{key}:"]
    if len(found) != 1:
        raise ValueError(f"the template has {len(found)} '{key}:' lines, expected one")
    line = lines[found[0]]
    indent = line[: len(line) - len(line.lstrip())] + "  "
    return "".join(lines[: found[0] + 1]) + entries(indent) + "".join(lines[found[0] + 1:])


def with_llm_upstream(text: str, env: dict | None, buffer_limit: str) -> str:
    """The local profile's ``text`` with the LLM routes (before the
    others) and the ``llm_upstream`` cluster."""
    env = os.environ if env is None else env
    addr, timeout = (env.get(var, default) for var, default in LOCAL_LLM_ENV.values())
    text = insert_after(text, "routes", lambda indent: local_llm_routes(indent, timeout))
    return insert_after(text, "clusters",
                        lambda indent: local_llm_cluster(indent, addr, buffer_limit))


def render(profile: str, env: dict | None = None) -> str:
    """The rendered Envoy configuration for ``profile`` (the compose profile
    is always the portable wasm build)."""
    template = string.Template(TEMPLATE.read_text())
    values = profile_values(profile, env)
    values["NATIVE_MODULE"] = NATIVE_MODULE
    build = filter_build(env) if profile == "local" else "wasm"
    text = keep_filter_block(template.substitute(values), build)
    if profile == "local":
        text = with_llm_upstream(text, env, values["BUFFER_LIMIT_BYTES"])
    return text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["local", *CONTAINER_ADDRESSES], required=True)
    parser.add_argument("--out", help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    try:
        text = render(args.profile)
    except (ValueError, KeyError, json.JSONDecodeError) as err:
        print(f"envoy_config: {err}", file=sys.stderr)
        return 2
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

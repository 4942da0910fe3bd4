#!/usr/bin/env python3
"""Render tollgate's Envoy configuration from envoy/envoy.template.yaml.

One template serves every profile, so the docker-compose configuration and the
local stack (``make run`` and the end-to-end tests) cannot drift apart:

* ``compose``: service names from docker-compose.yml, the ``.wasm`` mounted at
  /etc/tollgate; rendered into envoy/envoy.compose.yaml, which is checked in
  (a test renders it again and compares).
* ``local``: 127.0.0.1 and ports from the environment (see ``LOCAL_ENV``).

Secrets never appear in a rendered file: the filter reads the JWT secret and
the internal token from Envoy's environment (``vm_config.environment_variables``),
so whoever starts Envoy passes them as ``TOLLGATE_JWT_SECRET`` and
``TOLLGATE_INTERNAL_TOKEN``.

Usage:
  python3 envoy/render.py --profile local --out .tollgate/envoy.yaml
  python3 envoy/render.py --profile compose --out envoy/envoy.compose.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TEMPLATE = HERE / "envoy.template.yaml"

#: Environment variables the filter reads its secrets from.
SECRET_ENV_KEYS = ("TOLLGATE_JWT_SECRET", "TOLLGATE_INTERNAL_TOKEN")

#: Indentation of the filter configuration block inside the template.
CONFIG_INDENT = " " * 28

#: The builds of the filter (``TOLLGATE_FILTER``): the template holds one
#: block for each between ``# [filter <build>]`` markers; the rendered
#: configuration keeps the chosen one.
FILTER_BUILDS = ("wasm", "native")

#: The native build's module name: Envoy loads lib<name>.so from
#: ``ENVOY_DYNAMIC_MODULES_SEARCH_PATH`` (scripts/stack.py sets it).
NATIVE_MODULE = "tollgate_native"

#: Local-profile settings and the environment variables that override them.
LOCAL_ENV = {
    "LISTEN_PORT": ("TOLLGATE_ENVOY_PORT", "8001"),
    "ADMIN_PORT": ("TOLLGATE_ENVOY_ADMIN_PORT", "9901"),
    "SIDECAR_ADDR": ("TOLLGATE_SIDECAR_ADDR", "127.0.0.1:9000"),
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


def filter_config(max_body_bytes: int, overrides: dict | None = None) -> dict:
    """The filter's plugin configuration (see the README's configuration table).

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
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def _split_addr(addr: str) -> tuple[str, str]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {addr!r} is not HOST:PORT")
    return host, port


def profile_values(profile: str, env: dict | None = None) -> dict:
    """Template values for a profile; ``env`` defaults to os.environ."""
    env = dict(os.environ if env is None else env)
    if profile == "compose":
        max_body = 1024 * 1024
        values = {
            # Envoy's admin interface can raise the log level to trace, which
            # logs credentials: it listens on the container's loopback only
            # (`docker compose exec envoy curl -s localhost:9901/stats`).
            "ADMIN_HOST": "127.0.0.1",
            "ADMIN_PORT": "9901",
            "LISTEN_HOST": "0.0.0.0",
            "LISTEN_PORT": "8001",
            "SIDECAR_ADDR": "sidecar:9000",
            "AI_SERVER_ADDR": "ai-server:5000",
            "WASM_PATH": "/etc/tollgate/tollgate_filter.wasm",
            "ACCESS_LOG": "/dev/stdout",
            "XFF_TRUSTED_HOPS": "0",
            "REQUEST_TIMEOUT": "60s",
            "ROUTE_TIMEOUT": "30s",
        }
        overrides = None
    elif profile == "local":
        values = {name: env.get(var, default) for name, (var, default) in LOCAL_ENV.items()}
        values["ADMIN_HOST"] = "127.0.0.1"
        values["LISTEN_HOST"] = env.get("TOLLGATE_ENVOY_HOST", "127.0.0.1")
        max_body = int(values.pop("MAX_BODY_BYTES"))
        overrides = json.loads(env.get("TOLLGATE_FILTER_OVERRIDES", "{}"))
    else:
        raise ValueError(f"unknown profile {profile!r} (compose or local)")

    values["SIDECAR_HOST"], values["SIDECAR_PORT"] = _split_addr(values.pop("SIDECAR_ADDR"))
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


def render(profile: str, env: dict | None = None) -> str:
    """The rendered Envoy configuration for ``profile`` (the compose profile
    is always the portable wasm build)."""
    template = string.Template(TEMPLATE.read_text())
    values = profile_values(profile, env)
    values["NATIVE_MODULE"] = NATIVE_MODULE
    build = filter_build(env) if profile == "local" else "wasm"
    return keep_filter_block(template.substitute(values), build)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["local", "compose"], required=True)
    parser.add_argument("--out", help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    try:
        text = render(args.profile)
    except (ValueError, KeyError, json.JSONDecodeError) as err:
        print(f"render.py: {err}", file=sys.stderr)
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

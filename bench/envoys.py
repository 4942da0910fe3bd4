"""Envoy configurations and processes for the gateway benchmark.

Every Envoy the benchmark compares is rendered from the one template the
stack uses (``envoy/envoy.template.yaml`` through ``tollgate_tooling.envoy_config``), so
``bare`` and ``native`` differ from the gateway only in their HTTP filters:

* ``gate``: the template as rendered, tollgate filter included;
* ``bare``: the same text with the tollgate filter's block removed;
* ``native``: the tollgate block replaced by Envoy's own ``api_key_auth`` and
  ``jwt_authn`` (HS256 key in ``local_jwks``), no body check, no metering.

The template's ``ai_server`` cluster points at whatever upstream a scenario
uses: the fast upstream (a second Envoy answering a fixed JSON with
``direct_response``) or the real ai-server.

The render hook this needs (a config without the filter, or with other
filters) lives here, as post-processing of the rendered text, not in
tollgate_tooling.envoy_config: the block is located by its first line and the router
filter's, and a missing marker is an error, so a template change cannot
silently turn ``bare`` into something else.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

from tollgate_tooling import REPO_ROOT as ROOT
from tollgate_tooling import envoy_config
from tollgate_tooling.stack import VENV_BIN, WASM, Service, StackError, free_port, http_get

ENVOY = VENV_BIN / "envoy"
#: The no-op dynamic module (bench/native-probe), built by bench/run.sh.
NATIVE_PROBE_DIR = ROOT / "target/bench-native-probe/release"
NATIVE_PROBE = "tollgate_bench_native_probe"

#: The probe filters (bench/wasm-probe: root_id noop, mimic or floor), built by bench/run.sh.
PROBE_WASM = ROOT / "target/bench-wasm-probe/wasm32-wasip1/release/tollgate_bench_wasm_probe.wasm"
#: How the template names the plugin's root context.
ROOT_ID_LINE = "root_id: tollgate\n"

#: First line of the tollgate filter block and of the router filter in the template.
FILTER_BLOCK_START = "                  - name: tollgate\n"
ROUTER_START = "                  - name: envoy.filters.http.router\n"

#: The fast upstream's answer: about the size of the ai-server's JSON reply.
UPSTREAM_BODY = json.dumps(
    {"profane": False, "score": 0.0, "matches": [], "language": "en", "upstream": "bench"}
)


def native_filters(api_key: str, jwt_secret: str) -> str:
    """Envoy's own API-key and JWT filters, as YAML at the template's indentation.

    ``api_key_auth`` strips ``Bearer `` from ``Authorization`` itself; with
    ``hide_credentials`` it removes the header and forwards the client name,
    as tollgate strips credentials and adds ``x-tollgate-key-id``.
    """
    k = base64.urlsafe_b64encode(jwt_secret.encode()).rstrip(b"=").decode()
    jwks = json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "k": k}]})
    pad = " " * 18
    return (
        f"{pad}- name: envoy.filters.http.api_key_auth\n"
        f"{pad}  typed_config:\n"
        f'{pad}    "@type": type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth\n'
        f"{pad}    credentials:\n"
        f"{pad}      - {{ key: {json.dumps(api_key)}, client: bench }}\n"
        f"{pad}    key_sources:\n"
        f"{pad}      - header: authorization\n"
        f"{pad}    forwarding: {{ header: x-client-id, hide_credentials: true }}\n"
        f"{pad}- name: envoy.filters.http.jwt_authn\n"
        f"{pad}  typed_config:\n"
        f'{pad}    "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication\n'
        f"{pad}    providers:\n"
        f"{pad}      tollgate_hs256:\n"
        f"{pad}        from_headers: [{{ name: x-auth-token }}]\n"
        f"{pad}        forward: false\n"
        f"{pad}        local_jwks:\n"
        f"{pad}          inline_string: {json.dumps(jwks)}\n"
        f"{pad}    rules:\n"
        f'{pad}      - match: {{ prefix: "/" }}\n'
        f"{pad}        requires: {{ provider_name: tollgate_hs256 }}\n"
    )


def replace_filter_block(rendered: str, replacement: str) -> str:
    """``rendered`` with the tollgate filter's block replaced by ``replacement``."""
    start = rendered.find(FILTER_BLOCK_START)
    end = rendered.find(ROUTER_START)
    if start < 0 or end < start:
        raise StackError(
            "envoy.template.yaml changed shape: the tollgate filter block was not found "
            "before the router; update bench/envoys.py"
        )
    return rendered[:start] + replacement + rendered[end:]


#: What the upstreams log per request they serve: the key id and the request
#: id the filter set, the witness the usage check compares ``usage_log`` with.
SERVED_FORMAT = "%REQ(X-TOLLGATE-KEY-ID)% %REQ(X-REQUEST-ID)%\n"


def upstream_config(port: int, admin_port: int, served_log: Path) -> str:
    """The fast upstream: reads the whole body (buffer filter), answers a fixed JSON.

    JSON is YAML, so Envoy reads this file like the others. The buffer filter
    makes the answer wait for the whole request, as a real service does, so
    a large body never ends a keep-alive connection early. Every request it
    serves is written to ``served_log`` (``SERVED_FORMAT``; Envoy buffers the
    file and flushes it when it exits).
    """
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "upstream",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "upstream",
                                        "access_log": [
                                            {
                                                "name": "envoy.access_loggers.file",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                                                    "path": str(served_log),
                                                    "log_format": {
                                                        "text_format_source": {
                                                            "inline_string": SERVED_FORMAT
                                                        }
                                                    },
                                                }
                                            }
                                        ],
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "direct_response": {
                                                                "status": 200,
                                                                "body": {"inline_string": UPSTREAM_BODY},
                                                            },
                                                            "response_headers_to_add": [
                                                                {
                                                                    "header": {
                                                                        "key": "content-type",
                                                                        "value": "application/json",
                                                                    }
                                                                }
                                                            ],
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.buffer",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                                                    "max_request_bytes": 4 * 1024 * 1024,
                                                },
                                            },
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                                },
                                            },
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }
    return json.dumps(config, indent=1)


class Envoy:
    """One Envoy process of the benchmark: its config file, ports and log."""

    def __init__(self, name: str, config_text: str, workdir: Path, port: int,
                 admin_port: int, env: dict, concurrency: int):
        self.name = name
        self.port = port
        self.admin_port = admin_port
        self.config_path = workdir / f"envoy-{name}.yaml"
        self.config_path.write_text(config_text)
        self.service = Service(
            f"envoy-{name}",
            [str(ENVOY), "-c", str(self.config_path), "--concurrency", str(concurrency),
             "--disable-hot-restart", "--log-level", "warn"],
            env,
            workdir / "logs" / f"envoy-{name}.log",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def validate(self) -> None:
        """``envoy --mode validate`` on the config; StackError with its output if refused."""
        result = subprocess.run(
            [str(ENVOY), "--mode", "validate", "-c", str(self.config_path)],
            env=self.service.env, capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise StackError(f"envoy {self.name} config invalid:\n{result.stdout}{result.stderr}")

    def start(self, timeout: float = 30.0) -> "Envoy":
        self.service.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.service.alive():
                raise StackError(f"envoy {self.name} exited:\n{self.service.log_text()[-3000:]}")
            status, _ = http_get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1.0)
            if status == 200:
                return self
            time.sleep(0.1)
        raise StackError(f"envoy {self.name} not ready after {timeout}s; see {self.service.log}")

    def stop(self) -> None:
        self.service.stop()

    def rss_mb(self) -> float:
        """Resident memory (VmRSS) of the Envoy process, in MiB."""
        if self.service.proc is None:
            return 0.0
        for line in Path(f"/proc/{self.service.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        return 0.0

    def rss_breakdown_mb(self) -> dict:
        """Where the RSS lives, from /proc/<pid>/smaps, in MiB.

        ``wasm_memory``: wasm linear memories (V8 makes each a read-write
        mapping directly followed by a reservation of 1 GiB or more without
        access); ``code_file``: file-backed pages (Envoy's binary, V8
        included); ``code_jit``: anonymous executable pages (compiled wasm);
        ``anon``: the rest (Envoy's heap, V8's heaps).
        """
        if self.service.proc is None:
            return {}
        maps = []  # [start, end, perms, file-backed, rss_kb]
        for line in Path(f"/proc/{self.service.proc.pid}/smaps").read_text().splitlines():
            head = line.split()
            if not head:
                continue
            if not head[0].endswith(":"):  # range perms offset dev inode [path]
                start, end = (int(x, 16) for x in head[0].split("-"))
                maps.append([start, end, head[1], len(head) > 5 and head[5].startswith("/"), 0])
            elif head[0] == "Rss:" and maps:
                maps[-1][4] = int(head[1])
        out = {"wasm_memory": 0, "code_file": 0, "code_jit": 0, "anon": 0}
        for i, (start, end, perms, file_backed, rss) in enumerate(maps):
            nxt = maps[i + 1] if i + 1 < len(maps) else None
            if file_backed:
                out["code_file"] += rss
            elif "x" in perms:
                out["code_jit"] += rss
            elif (perms.startswith("rw") and nxt is not None and nxt[0] == end
                  and nxt[2].startswith("---") and nxt[1] - nxt[0] >= 1 << 30):
                out["wasm_memory"] += rss
            else:
                out["anon"] += rss
        return {k: round(v / 1024, 1) for k, v in out.items()}

    def stats(self, prefix: str = "") -> dict:
        """Counters and gauges from the admin endpoint whose names start with ``prefix``.

        Envoy filters them itself (``filter``), so a poll between runs costs
        the process little CPU.
        """
        query = urlencode({"format": "json", "filter": "^" + re.escape(prefix)})
        status, body = http_get(f"http://127.0.0.1:{self.admin_port}/stats?{query}")
        if status != 200:
            return {}
        return {s["name"]: s.get("value") for s in json.loads(body).get("stats", [])
                if "name" in s and s["name"].startswith(prefix)}


def gateway_config(kind: str, workdir: Path, upstream_addr: str, sidecar_addr: str,
                   port: int, admin_port: int, filter_overrides: dict | None = None,
                   native: tuple[str, str] | None = None, wasm: Path = WASM,
                   root_id: str | None = None, build: str = "wasm",
                   module: str | None = None, llm_upstream_addr: str | None = None) -> str:
    """The rendered stack config for ``kind`` (gate, bare or native) on these ports.

    ``wasm`` and ``root_id`` replace the filter's module and root context
    (the probe filters of bench/wasm-probe); ``build`` picks the filter's
    build (``TOLLGATE_FILTER``), and ``module`` the native build's module
    (the no-op probe of bench/native-probe); ``llm_upstream_addr`` is where
    the LLM routes go (sse-upstream, for the LLM stream rows).
    """
    env = {
        "TOLLGATE_ENVOY_PORT": str(port),
        "TOLLGATE_ENVOY_ADMIN_PORT": str(admin_port),
        "TOLLGATE_SIDECAR_ADDR": sidecar_addr,
        "TOLLGATE_AI_SERVER_ADDR": upstream_addr,
        "TOLLGATE_WASM": str(wasm),
        "TOLLGATE_ACCESS_LOG": str(workdir / "logs" / f"access-{port}.log"),
        "TOLLGATE_FILTER_OVERRIDES": json.dumps(filter_overrides or {}),
        "TOLLGATE_FILTER": build,
    }
    if llm_upstream_addr is not None:
        env["TOLLGATE_LLM_UPSTREAM_ADDR"] = llm_upstream_addr
    text = envoy_config.render("local", env)
    if module is not None:
        line = f"name: {envoy_config.NATIVE_MODULE}\n"
        if build != "native" or text.count(line) != 1:
            raise StackError("envoy.template.yaml changed shape: no single native module name")
        text = text.replace(line, f"name: {module}\n")
    if root_id is not None:
        if text.count(ROOT_ID_LINE) != 1:
            raise StackError("envoy.template.yaml changed shape: no single `root_id: tollgate`")
        text = text.replace(ROOT_ID_LINE, f"root_id: {root_id}\n")
    if kind == "gate":
        return text
    if kind == "bare":
        return replace_filter_block(text, "")
    if kind == "native":
        if native is None:
            raise ValueError("native needs (api_key, jwt_secret)")
        return replace_filter_block(text, native_filters(*native))
    raise ValueError(f"unknown gateway kind {kind!r}")


def new_ports() -> tuple[int, int]:
    """A listener port and an admin port, both free now."""
    return free_port(), free_port()

"""Fixtures of llm-upstream's tests: a real upstream (gunicorn on a free
port, as the stack starts it), the official SDKs pointed straight at it,
and ``Rule``, the README's deterministic rules written out again so that
the tests check the documented rules, not the code's idea of them.

A missing SDK fails the test with what to install; nothing is skipped.
"""

from __future__ import annotations

import importlib
import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent.parent  # llm-upstream/
GUNICORN = Path(sys.executable).parent / "gunicorn"

#: What each module the tests need is installed by.
PACKAGES = {"openai": "openai", "anthropic": "anthropic", "google.genai": "google-genai",
            "httpx2": "google-genai (its HTTP client, httpx2)",
            "tollgate_tooling.stack": "the tooling package (tooling/)",
            "tollgate_tooling.log_faults": "the tooling package (tooling/)"}


def need(module: str):
    """``module`` imported, or the test fails saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        pytest.fail(f"{module} is missing ({err}): install {PACKAGES.get(module, module)} "
                    "with `make setup` (scripts/requirements.txt pins it)", pytrace=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def upstream(tmp_path_factory) -> str:
    """The base URL of a running llm-upstream."""
    if not GUNICORN.exists():
        pytest.fail(f"{GUNICORN} is missing: run `make setup` (installs gunicorn into .venv)",
                    pytrace=False)
    port = free_port()
    log = tmp_path_factory.mktemp("llm-upstream") / "llm-upstream.log"
    env = {**os.environ, "LLM_UPSTREAM_BIND": f"127.0.0.1:{port}", "LLM_UPSTREAM_WORKERS": "1"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(GUNICORN), "-c", "gunicorn.conf.py", "llm_upstream.app:app"],
            cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llm-upstream exited at start:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llm-upstream did not answer /health:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    # Its log shows no traceback or lost worker but those the fault
    # switches' tests ask for (tollgate_tooling.log_faults).
    log_faults = need("tollgate_tooling.log_faults")
    aborts = log_faults.ExpectedFault("llm-upstream", log_faults.LLM_UPSTREAM_ABORT,
                                      "the abort fault switch's tests raise it mid-stream")
    faults = log_faults.scan(log, "llm-upstream", [aborts])
    if faults:
        pytest.fail(log_faults.report(faults), pytrace=False)


class Rule:
    """llm-upstream/README.md's rules, restated."""

    DEFAULT_REPLY = 12

    @staticmethod
    def reply(last_message: str, tokens: int = DEFAULT_REPLY) -> str:
        words = last_message.split() or ["ok"]
        return " ".join(itertools.islice(itertools.cycle(words), tokens))

    @staticmethod
    def input_tokens(*messages: str) -> int:
        return sum(len(m.split()) + 1 for m in messages)


@pytest.fixture(scope="session")
def rule() -> type[Rule]:
    return Rule


@pytest.fixture(name="need", scope="session")
def need_fixture():
    """``need``, for a test that imports a module of its own."""
    return need


@pytest.fixture(scope="session")
def openai_sdk():
    return need("openai")


@pytest.fixture(scope="session")
def anthropic_sdk():
    return need("anthropic")


@pytest.fixture(scope="session")
def genai():
    """(google.genai, its types, its errors)."""
    module = need("google.genai")
    return module, importlib.import_module("google.genai.types"), importlib.import_module(
        "google.genai.errors")


@pytest.fixture()
def openai_client(upstream, openai_sdk):
    return openai_sdk.OpenAI(base_url=f"{upstream}/v1", api_key="x", max_retries=0, timeout=20)


@pytest.fixture()
def anthropic_client(upstream, anthropic_sdk):
    return anthropic_sdk.Anthropic(base_url=upstream, api_key="x", max_retries=0, timeout=20)


@pytest.fixture()
def gemini_client(upstream, genai):
    """A function: a google-genai client sending ``headers`` to the upstream,
    on the ``v1beta`` paths (the SDK's default is ``v1``; both are served).
    The clients live as long as the test: a stream needs its client open."""
    module, types, _ = genai
    made = []

    def make(headers: dict | None = None, api_version: str = "v1beta"):
        made.append(module.Client(api_key="x", http_options=types.HttpOptions(
            base_url=upstream, api_version=api_version, headers=headers or {}, timeout=20_000,
            retry_options=types.HttpRetryOptions(attempts=1))))
        return made[-1]

    yield make
    for client in made:
        client.close()


def until_cut(stream, error, match: str | None = None) -> list:
    """What ``stream`` yields before it raises ``error`` (it must)."""
    seen = []
    with pytest.raises(error, match=match):
        for item in stream:
            seen.append(item)
    return seen


@pytest.fixture(name="until_cut", scope="session")
def until_cut_fixture():
    return until_cut


def knob(**values) -> dict:
    """``x-llm-upstream-*`` headers: ``knob(reply_tokens=3)``."""
    return {f"x-llm-upstream-{k.replace('_', '-')}": str(v) for k, v in values.items()}


@pytest.fixture(scope="session")
def knobs():
    return knob

"""The log check every stack's stop runs (``conftest.stop_stack``, with
``tollgate_tooling.log_faults``) finds a panic in the sidecar's log and a
traceback in a Python service's, says where, lets a clean log pass, and
lets pass only the faults a test said it causes. No stack is started: the
logs are written here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tollgate_tooling.log_faults import find_faults, report
from tollgate_tooling.stack import Stack, StackConfig

SIDECAR_CLEAN = """\
2025-12-07T02:29:00.100000Z  INFO sidecar::cli::serve: listening addr=127.0.0.1:9000
2025-12-07T02:29:01.200000Z  WARN sidecar::http::feed: the database is unreachable; retrying
2025-12-07T02:29:09.300000Z  INFO sidecar::cli::serve: drained; stopping
"""

#: The sidecar's hook, its purge guard, and Rust's default hook (the CLI's).
SIDECAR_PANICS = [
    '2025-12-07T02:29:02.000000Z ERROR sidecar::http::panics: panic '
    'location=sidecar/src/http/feed.rs:170:13 thread="tokio-runtime-worker" message="planted"',
    "2025-12-07T02:29:02.000100Z ERROR sidecar::http::feed: a purge round panicked; "
    "the next round runs as usual",
    "thread 'main' panicked at sidecar/src/main.rs:10:5:",
]

GUNICORN_CLEAN = """\
[2025-12-07 02:29:00 +0000] [100] [INFO] Starting gunicorn 27.0.1
[2025-12-07 02:29:00 +0000] [100] [INFO] Listening at: http://127.0.0.1:5100 (100)
[2025-12-07 02:29:00 +0000] [101] [INFO] Booting worker with pid: 101
127.0.0.1 - - [07/Dec/2025:02:29:01 +0000] "POST /v1/chat/completions HTTP/1.1" 200 512 "-" "x"
[2025-12-07 02:29:09 +0000] [100] [INFO] Handling signal: term
[2025-12-07 02:29:09 +0000] [101] [INFO] Worker exiting (pid: 101)
[2025-12-07 02:29:09 +0000] [100] [INFO] Worker (pid:101) was sent SIGTERM!
[2025-12-07 02:29:09 +0000] [100] [INFO] Shutting down: Master
"""

ABORTED = """\
[2025-12-07 02:29:03 +0000] [101] [ERROR] Error handling request
Traceback (most recent call last):
  File "/x/gunicorn/workers/gthread.py", line 780, in handle_request
    for item in respiter:
  File "/x/llm-upstream/llm_upstream/delivery.py", line 71, in _paced
    raise AbortedOnPurpose("x-llm-upstream-fault: abort")
    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
llm_upstream.delivery.AbortedOnPurpose: x-llm-upstream-fault: abort
"""

KEY_ERROR = """\
Traceback (most recent call last):
  File "/x/llm-upstream/llm_upstream/app.py", line 90, in chat
    model = body["model"]
KeyError: 'model'
"""

ENVOY_CLEAN = """\
[2025-12-07 02:29:00.100][12][info][main] [source/server/server.cc:430] initializing epoch 0
[2025-12-07 02:29:05.100][14][info][wasm] [source/extensions/common/wasm/context.cc:1195] \
wasm log tollgate: callout failed; serving from the cache
"""


def test_a_panic_is_found_with_its_line_number():
    text = SIDECAR_CLEAN + "\n".join(SIDECAR_PANICS) + "\n"
    faults = find_faults(text, "sidecar", Path("sidecar.log"))
    assert [(f.line, f.lines) for f in faults] == [
        (4 + i, (line,)) for i, line in enumerate(SIDECAR_PANICS)]
    said = report(faults)
    assert "sidecar.log:4:" in said and SIDECAR_PANICS[0] in said, said


def test_a_traceback_is_one_fault_through_its_exception_line():
    text = GUNICORN_CLEAN + ABORTED + GUNICORN_CLEAN
    for service in ("ai-server", "llm-upstream"):
        [fault] = find_faults(text, service)
        assert fault.line == GUNICORN_CLEAN.count("\n") + 2
        assert fault.lines == tuple(ABORTED.splitlines()[1:]), fault.lines


@pytest.mark.parametrize("line", [
    "[2025-12-07 02:29:40 +0000] [100] [CRITICAL] WORKER TIMEOUT (pid:101)",
    "[2025-12-07 02:29:40 +0000] [100] [ERROR] Worker (pid:101) was sent SIGKILL! "
    "Perhaps out of memory?",
    "[2025-12-07 02:29:40 +0000] [101] [ERROR] Exception in worker process",
])
def test_a_lost_gunicorn_worker_is_a_fault(line: str):
    assert len(find_faults(GUNICORN_CLEAN + line + "\n", "ai-server")) == 1


def test_clean_logs_pass():
    assert find_faults(SIDECAR_CLEAN, "sidecar") == []
    assert find_faults(GUNICORN_CLEAN, "ai-server") == []
    assert find_faults(GUNICORN_CLEAN, "llm-upstream") == []
    assert find_faults(ENVOY_CLEAN, "envoy") == []
    assert len(find_faults(ENVOY_CLEAN + "wasm trap: unreachable\n", "envoy")) == 1


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """A stack's log directory, removed afterwards: its planted faults and
    its names must not pass for a real stack's logs in the session's checks."""
    logs = tmp_path / "logs"
    logs.mkdir()
    yield logs
    shutil.rmtree(logs)


def test_a_stack_checks_every_log_and_lets_pass_only_what_a_test_expects(logs: Path):
    stack = Stack(StackConfig.ephemeral(logs.parent))
    (logs / "envoy.log").write_text(ENVOY_CLEAN)
    (logs / "ai-server.log").write_text(GUNICORN_CLEAN)
    (logs / "sidecar.log").write_text(SIDECAR_CLEAN + SIDECAR_PANICS[0] + "\n")
    (logs / "llm-upstream.log").write_text(GUNICORN_CLEAN + ABORTED + KEY_ERROR)

    found = {(f.log.name, f.lines[-1]) for f in stack.log_faults()}
    assert found == {("sidecar.log", SIDECAR_PANICS[0]),
                     ("llm-upstream.log", ABORTED.splitlines()[-1]),
                     ("llm-upstream.log", "KeyError: 'model'")}, found

    stack.expect_fault("llm-upstream", r"AbortedOnPurpose: x-llm-upstream-fault: abort",
                       "the test asked for the abort fault")
    stack.expect_fault("ai-server", r"KeyError", "in another service's log: allows nothing here")
    found = {(f.log.name, f.lines[-1]) for f in stack.log_faults()}
    assert found == {("sidecar.log", SIDECAR_PANICS[0]),
                     ("llm-upstream.log", "KeyError: 'model'")}, found

    with pytest.raises(ValueError, match="why"):
        stack.expect_fault("sidecar", "panic", " ")

"""What a fault looks like in the log of each process of the stack, and a
scanner that finds them: a Rust panic, a Python traceback, a gunicorn worker
lost, a filter panic or trap in Envoy.

The end-to-end tests scan the log of every process they started when it
stops (``Stack.log_faults``, ``Fleet.log_faults``); a fault fails the test or
fixture that started it, unless that test said it causes it on purpose
(``Stack.expect_fault``: a pattern of the fault's last line, and why).

A fault is one line, or a whole Python traceback: from its ``Traceback (most
recent call last):`` line through its exception line (the first line that
is not indented), so that an expected traceback is recognised by the
exception it ends with.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterable

#: A Rust process that panicked (the default hook: "thread 'x' panicked at
#: src/..."; tokio: "task 7 panicked") or aborted.
RUST = (r"panicked|fatal runtime error|has overflowed its stack"
        r"|memory allocation of \d+ bytes failed")

#: A Python traceback, and gunicorn's word for a worker lost or stuck.
PYTHON = (r"Traceback \(most recent call last\)|WORKER TIMEOUT|Exception in worker process"
          r"|Worker \(pid:\d+\) (was sent SIGKILL|exited with code)|Worker failed to boot"
          r"|App failed to load|Unhandled exception in main loop")

#: What each process's log shows when it fails, by ``Service.name``.
PATTERNS: dict[str, re.Pattern] = {
    # The filter panicked or trapped (the native module logs a caught panic
    # as "fault caught"), or Envoy itself crashed (its backtrace handler).
    "envoy": re.compile(r"panicked at|wasm trap|Function: .* failed|RuntimeError|unreachable"
                        r"|tollgate: fault caught|\[critical\]\[backtrace\]", re.I),
    # The sidecar's hook logs every panic as "panic" with its location
    # (sidecar/src/http/panics.rs); its guards log "the handler panicked"
    # and "a purge round panicked".
    "sidecar": re.compile(rf"{RUST}|\bpanic location="),
    "ai-server": re.compile(PYTHON),
    "llm-upstream": re.compile(PYTHON),
}

#: The exception llm-upstream raises for its ``abort`` fault switch
#: (llm-upstream/llm_upstream/delivery.py), the last line of the traceback
#: gunicorn logs for it: for ``Stack.expect_fault`` by a test that asks for it.
LLM_UPSTREAM_ABORT = r"\.AbortedOnPurpose: x-llm-upstream-fault: abort$"

TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
#: Faults quoted in a report, and lines quoted of each.
REPORT_FAULTS, REPORT_LINES = 10, 12


@dataclasses.dataclass(frozen=True)
class ExpectedFault:
    """A fault a test causes on purpose in ``service``'s log: one whose last
    line (a traceback's exception line) matches ``pattern``, for ``reason``."""

    service: str
    pattern: str
    reason: str

    def __post_init__(self):
        if self.service not in PATTERNS:
            raise ValueError(f"no such service {self.service!r}: one of {sorted(PATTERNS)}")
        if not self.reason.strip():
            raise ValueError("say why the fault is expected")
        re.compile(self.pattern)

    def allows(self, service: str, fault: "Fault") -> bool:
        return service == self.service and re.search(self.pattern, fault.lines[-1]) is not None


@dataclasses.dataclass(frozen=True)
class Fault:
    """Lines of ``log`` from line number ``line`` on that show a fault."""

    log: Path
    line: int
    lines: tuple[str, ...]


def find_faults(text: str, service: str, log: Path = Path("-")) -> list[Fault]:
    """Every fault in ``text``, the log of ``service``."""
    pattern = PATTERNS[service]
    lines = text.splitlines()
    faults, i = [], 0
    while i < len(lines):
        if not pattern.search(lines[i]):
            i += 1
            continue
        end = i + 1
        if TRACEBACK.search(lines[i]):
            while end < len(lines) and lines[end][:1].isspace():
                end += 1
            end = min(end + 1, len(lines))  # the exception line
        faults.append(Fault(log, i + 1, tuple(lines[i:end])))
        i = end
    return faults


def scan(log: Path, service: str, expected: Iterable[ExpectedFault] = ()) -> list[Fault]:
    """The faults in ``log`` (``service``'s) that none of ``expected`` allows."""
    if not log.exists():
        return []
    expected = list(expected)
    return [fault for fault in find_faults(log.read_text(errors="replace"), service, log)
            if not any(e.allows(service, fault) for e in expected)]


def report(faults: list[Fault]) -> str:
    """The faults, quoted with their log files and line numbers."""
    logs = sorted({str(f.log) for f in faults})
    out = [f"{len(faults)} panic(s), traceback(s) or fault(s) in {', '.join(logs)}:"]
    for fault in faults[:REPORT_FAULTS]:
        quoted = list(fault.lines)
        if len(quoted) > REPORT_LINES:
            quoted = [*quoted[:3], f"... ({len(quoted) - REPORT_LINES + 1} lines)",
                      *quoted[-(REPORT_LINES - 4):]]
        out.append(f"{fault.log}:{fault.line}:")
        out.extend(f"    {line}" for line in quoted)
    if len(faults) > REPORT_FAULTS:
        out.append(f"... and {len(faults) - REPORT_FAULTS} more")
    return "\n".join(out)

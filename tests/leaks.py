"""Finds credentials in log files: the check behind the suite's promise that
no API key, token or secret is ever logged.

Two nets: the exact secrets of every stack the suite started (JWT secret,
internal and admin tokens), and the shapes of credentials whatever their
origin: a full API key (``tg_`` and more hex than the 6-digit prefix shown to
people) and a compact JWS (``eyJ...``, base64url JSON, then a dot).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

#: A full API key or a compact JWS, as bytes in a log.
CREDENTIAL_SHAPES = re.compile(rb"tg_[0-9a-f]{12,}|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


def find_credentials(paths: Iterable[Path], secrets: Iterable[str]) -> list[str]:
    """``path:line: what`` for every credential found in ``paths``."""
    exact = [s.encode() for s in set(secrets) if s]
    found = []
    for path in paths:
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            what = [m.group()[:24] + b"..." for m in CREDENTIAL_SHAPES.finditer(line)]
            what += [b"a stack secret " + s[:4] + b"..." for s in exact if s in line]
            if what:
                found.append(f"{path}:{number}: {b', '.join(what).decode(errors='replace')}")
    return found

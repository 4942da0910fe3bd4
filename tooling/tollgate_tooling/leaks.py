"""Finds credentials in log files: the check behind the suite's promise that
no API key, token or secret is ever logged.

Two nets, each cast over the text as written and over what it decodes to
(base64, standard or url-safe, with or without padding, at any alignment;
hex, either case, at either nibble; URL percent-encoding):

* the exact values the suite knows: the secrets of every stack it started
  (JWT secret, internal and admin tokens) and every API key created during
  the run, whatever its shape;
* the shapes of credentials whatever their origin: a full API key (``tg_``
  and more hex than the 6-digit prefix shown to people), a compact JWS
  (``eyJ...``, base64url JSON, then a dot) and one of its segments alone
  (a token's payload without its header or signature: base64url JSON).

Multi-MB logs stay cheap: runs of an alphabet are found by translating the
log to one letter and searching for a literal (linear in C), the runs of one
encoding are decoded by one call, and known values are set look-ups of whole
runs, not one substring search per value.
"""

from __future__ import annotations

import binascii
import bisect
import itertools
import re
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import unquote_to_bytes

#: A full API key; a compact JWS, or a base64url JSON object alone (a JWS
#: segment: ``{"`` encodes to ``eyJ``). Each starts with a literal, which
#: ``re`` searches for fast.
CREDENTIAL_SHAPES = [
    re.compile(rb"tg_[0-9a-f]{12,}"),
    re.compile(rb"eyJ(?:[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*|[A-Za-z0-9_-]{16,})"),
]

URLSAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
BASE64 = URLSAFE + b"+/"
HEX = b"0123456789ABCDEFabcdef"
PERCENT = URLSAFE + b".~+%"

#: Base64url's two letters as standard base64's.
URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")

#: Shortest encoded run that can hold a credential shape (15 bytes: ``tg_``
#: and 12 hex digits).
MIN_ENCODED = {"base64": 20, "hex": 30, "url-encoded": 15}


def runs(data: bytes, alphabet: bytes, shortest: int) -> list[tuple[int, int]]:
    """(start, end) of every maximal run of ``alphabet`` at least ``shortest``
    long: ``data`` translated to ``a`` (in the alphabet) and `` `` (not), then
    searched for a literal of ``shortest`` a's, which ``re`` does in one pass."""
    table = bytes(ord("a") if i in alphabet else ord(" ") for i in range(256))
    pattern = re.compile(b"a" * shortest + b"a*")
    return [m.span() for m in pattern.finditer(data.translate(table))]


def decoded(data: bytes) -> Iterator[tuple[str, bytes, list[int], list[int]]]:
    """Every run of ``data`` that may be base64, hex or percent-encoded text,
    decoded: (encoding, text, where each run's decoding starts in it, the
    run's offset in ``data``). The runs of one encoding and alignment are
    decoded by one call, joined by an encoded newline."""
    found = runs(data, BASE64, MIN_ENCODED["base64"])
    texts = [data[a:b].translate(URLSAFE_TO_STANDARD) for a, b in found]
    offsets = [a for a, _ in found]
    for skip in range(4):  # a run may start mid-group
        # Zero bits ("A") complete the last group: its bytes are decoded too.
        parts = [t[skip:] + b"A" * (-(len(t) - skip) % 4) for t in texts]
        yield ("base64", binascii.a2b_base64(b"CgoK".join(parts)),
               piece_starts([len(p) // 4 * 3 for p in parts], 3), offsets)
    found = runs(data, HEX, MIN_ENCODED["hex"])
    texts = [data[a:b] for a, b in found]
    offsets = [a for a, _ in found]
    for skip in range(2):  # a run may start mid-byte
        parts = [t[skip:] + b"0" * ((len(t) - skip) % 2) for t in texts]
        yield ("hex", binascii.unhexlify(b"0a".join(parts)),
               piece_starts([len(p) // 2 for p in parts], 1), offsets)
    found = [(a, b) for a, b in runs(data, PERCENT, MIN_ENCODED["url-encoded"])
             if b"%" in data[a:b]]
    texts = [unquote_to_bytes(data[a:b]) for a, b in found]
    yield ("url-encoded", b"\n".join(texts), piece_starts([len(t) for t in texts], 1),
           [a for a, _ in found])


def piece_starts(lengths: list[int], separator: int) -> list[int]:
    """Where each piece starts in pieces of ``lengths`` joined by ``separator`` bytes."""
    return [0, *itertools.accumulate(n + separator for n in lengths)][:len(lengths)]


class Finder:
    """What a text holds: credential shapes, known values as whole runs of
    the url-safe alphabet (how a key or a secret stands in text), and stack
    secrets anywhere in the text as written."""

    def __init__(self, secrets: Iterable[str], keys: Iterable[str]):
        self.secrets = sorted({s.encode() for s in secrets if s})
        self.exact = set(self.secrets) | {k.encode() for k in keys if k}
        self.shortest = min((len(v) for v in self.exact), default=8)

    def find(self, text: bytes, anywhere: bool = True) -> Iterator[tuple[int, bytes]]:
        """(offset, what) for each credential in ``text``; ``anywhere``: the
        stack secrets also inside longer runs."""
        for shape in CREDENTIAL_SHAPES:
            for m in shape.finditer(text):
                yield m.start(), m.group()[:24] + b"..."
        for start, end in runs(text, URLSAFE, self.shortest):
            if text[start:end] in self.exact:
                yield start, b"a known value " + text[start:start + 6] + b"..."
        for secret in self.secrets if anywhere else ():
            at = text.find(secret)
            while at >= 0:
                yield at, b"a stack secret " + secret[:4] + b"..."
                at = text.find(secret, at + 1)


def find_credentials(paths: Iterable[Path], secrets: Iterable[str],
                     keys: Iterable[str] = ()) -> list[str]:
    """``path:line: what`` for every credential found in ``paths``: the
    stack ``secrets`` and the API ``keys`` created during the run exactly,
    and credential shapes, as written or encoded."""
    finder = Finder(secrets, keys)
    found = []
    for path in paths:
        data = path.read_bytes()
        hits: dict[int, list[bytes]] = {}
        for offset, what in finder.find(data):
            hits.setdefault(data.count(b"\n", 0, offset) + 1, []).append(what)
        for encoding, text, starts, origins in decoded(data):
            for offset, what in finder.find(text, anywhere=False):
                origin = origins[bisect.bisect_right(starts, offset) - 1]
                hits.setdefault(data.count(b"\n", 0, origin) + 1, []).append(
                    encoding.encode() + b" of " + what)
        for number in sorted(hits):
            what = b", ".join(dict.fromkeys(hits[number]))
            found.append(f"{path}:{number}: {what.decode(errors='replace')}")
    return found

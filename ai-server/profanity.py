"""Profanity analyser of the reference AI server: Korean and English, pure Python.

`analyse(text)` answers whether a text is profane, which terms it contains,
where (character offsets into the *original* text), and a score. The word
lists live in ``wordlist.json`` beside this file; nothing is downloaded.

How a text is read
------------------
1. **Normalisation** (`normalise`) turns the text into a stream of
   "normalised units" and keeps, for every unit, the range of original
   characters it came from (the index map), so offsets survive every step:

   * NFKC per grapheme-ish cluster (a character plus the combining marks and
     Hangul vowel/final jamo that follow it): fullwidth ``ｆｕｃｋ`` becomes
     ``fuck``, decomposed Hangul is composed;
   * case folding, and accents stripped from Latin letters (``fück``);
   * leetspeak: ``0→o 1→i 3→e 4→a 5→s @→a $→s``;
   * every other character becomes a letter, a *hard* separator (whitespace,
     written ``" "``) or a *soft* separator (punctuation and symbols, written
     ``"."``); format characters such as zero-width spaces vanish.

2. **Matching** reads the letters in runs (``fuuuuck`` is ``f u+ c k``) and
   looks the run sequence up in a trie of the word-list forms. A form's run
   of n letters matches a text run of at least n of the same letter, so
   ``fuuuck`` matches ``fuck`` while ``as`` does not match ``ass``.

   * A match may step over a soft separator (``f.u.c.k``, ``sh-it``) and
     over whitespace only between one-letter pieces (``f u c k``, ``시 발``),
     so two ordinary words never join into a term.
   * Latin forms match whole words only: the match starts and ends at a word
     edge (a separator, the text's edge or a change of script), which keeps
     ``class``, ``assessment`` and ``Scunthorpe`` clean. Hangul forms match
     anywhere, as Korean glues endings to stems; ``allow`` words that cover a
     match (``시발점``, "starting point") cancel it.
   * A match must contain at least one real letter of the original text, so
     ``455`` is a number, not ``ass``.
   * Overlapping matches: the leftmost wins, then the longest.

3. **Speed**: a 900 KiB text is read in linear time. A prefilter regex with
   possessive quantifiers (no backtracking) runs over the letters alone; only
   the stretches around its hits are examined by the exact matcher above.
   Nothing scans a stretch more than a bounded number of times.

The result is deterministic: the same text always gives the same dict.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field

__all__ = ["Analyser", "analyse", "default_analyser", "normalise"]

WORDLIST_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wordlist.json")

HARD = " "  # whitespace: a word edge that a match crosses only between one-letter pieces
SOFT = "."  # punctuation/symbols: a word edge that a match may cross

LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "@": "a", "$": "s"}


def _ascii_table() -> dict[int, str]:
    table = {}
    for code in range(128):
        ch = chr(code)
        if ch in LEET:
            table[code] = LEET[ch]
        elif ch.isalnum():
            table[code] = ch.lower()
        elif ch.isspace():
            table[code] = HARD
        else:
            table[code] = SOFT
    return table


_ASCII = _ascii_table()


def _is_hangul(ch: str) -> bool:
    o = ord(ch)
    return (0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F or 0xA960 <= o <= 0xA97F
            or 0xAC00 <= o <= 0xD7FF or 0xFFA0 <= o <= 0xFFDC)


_attach_cache: dict[str, bool] = {}


def _attaches(ch: str) -> bool:
    """Does ``ch`` belong to the cluster of the character before it?"""
    hit = _attach_cache.get(ch)
    if hit is None:
        o = ord(ch)
        hit = (unicodedata.category(ch).startswith("M")
               or 0x1160 <= o <= 0x11FF or 0xD7B0 <= o <= 0xD7FF)  # Hangul vowel/final jamo
        _attach_cache[ch] = hit
    return hit


@functools.lru_cache(maxsize=65536)
def _normalise_cluster(cluster: str) -> str:
    """The normalised units of one non-ASCII cluster (may be empty or several)."""
    out = []
    for ch in unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", cluster).casefold()):
        o = ord(ch)
        if o < 128:
            out.append(_ASCII[o])
        elif _is_hangul(ch):
            out.append(ch)
        else:
            cat = unicodedata.category(ch)
            if cat == "Cf" or cat[0] == "M":
                continue  # zero-width characters, stray marks
            if cat[0] in "LN":
                for base in unicodedata.normalize("NFD", ch):
                    if not unicodedata.combining(base):
                        out.append(_ASCII[ord(base)] if ord(base) < 128 else base)
            elif cat[0] == "Z" or ch.isspace():
                out.append(HARD)
            else:
                out.append(SOFT)
    return "".join(out)


_CHUNKS = re.compile(r"[\x00-\x7f]+|[^\x00-\x7f]+")


def normalise(text: str) -> tuple[str, list[int] | None, list[int] | None]:
    """Normalise ``text``; return ``(norm, starts, ends)``.

    ``norm[k]`` came from ``text[starts[k]:ends[k]]``. For pure-ASCII text the
    map is the identity and both lists are ``None``.
    """
    if text.isascii():
        return text.translate(_ASCII), None, None
    parts: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for m in _CHUNKS.finditer(text):
        s, e = m.span()
        chunk = m.group()
        if chunk[0] < "\x80":
            parts.append(chunk.translate(_ASCII))
            starts.extend(range(s, e))
            ends.extend(range(s + 1, e + 1))
            continue
        j = s
        while j < e:
            k = j + 1
            while k < e and _attaches(text[k]):
                k += 1
            units = _normalise_cluster(text[j:k])
            if units:
                parts.append(units)
                starts.extend([j] * len(units))
                ends.extend([k] * len(units))
            j = k
    return "".join(parts), starts, ends


_script_cache: dict[str, str] = {}


def _script(ch: str) -> str:
    """'L' (Latin letters and digits), 'H' (Hangul) or 'O' (anything else)."""
    s = _script_cache.get(ch)
    if s is None:
        if ch < "\x80":
            s = "L"
        elif _is_hangul(ch):
            s = "H"
        elif unicodedata.name(ch, "").startswith("LATIN"):
            s = "L"
        else:
            s = "O"
        _script_cache[ch] = s
    return s


def _is_letter(ch: str) -> bool:
    return ch != HARD and ch != SOFT


@dataclass(frozen=True)
class Entry:
    """What a form stands for."""

    term: str | None  # canonical term; None for an allowed (non-profane) word
    weight: float
    whole_word: bool  # Latin: whole words only; Hangul: anywhere


@dataclass
class _Node:
    next: dict[str, dict[int, "_Node"]] = field(default_factory=dict)
    ends: list[Entry] = field(default_factory=list)


_PIECES = re.compile(r"[^ .]+")
_REPEATS = re.compile(r"(.)\1+")
_RUNS = re.compile(r"(.)\1*")
_SEP_RUNS = re.compile(r"[ .]+")
_REAL_LETTER = re.compile(r"[^\W\d_]")
_LATIN_TEXT = re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff\uff21-\uff3a\uff41-\uff5a]")
_HANGUL_TEXT = re.compile(r"[\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7ff\uffa0-\uffdc]")


class Analyser:
    """A profanity analyser built from word lists (see ``wordlist.json``)."""

    def __init__(self, wordlist: dict):
        self.root = _Node()
        # Whole-word forms by their letters without repeats: [(run lengths, entry)],
        # the most demanding first.
        self.whole_words: dict[str, list[tuple[tuple[int, ...], Entry]]] = {}
        self.languages = []
        seqs: set[str] = set()
        seen: dict[tuple, Entry] = {}
        for lang in ("en", "ko"):
            for item in wordlist.get(lang, []):
                entry_weight = float(item["weight"])
                if not 0.0 < entry_weight <= 1.0:
                    raise ValueError(f"weight of {item['term']!r} must be in (0, 1]")
                for form in item["forms"]:
                    self._add(form, item["term"], entry_weight, seen, seqs)
        for form in wordlist.get("allow", []):
            self._add(form, None, 0.0, seen, seqs, prefilter=False)
        self.prefilter = re.compile(self._prefilter_pattern(seqs))
        self.first_letter = re.compile(
            "[" + "".join(re.escape(c) for c in sorted(self.root.next)) + "]" if self.root.next else "(?!)")

    @classmethod
    def from_file(cls, path: str = WORDLIST_PATH) -> "Analyser":
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))

    # -- building -------------------------------------------------------------

    def _add(self, form: str, term: str | None, weight: float, seen: dict, seqs: set[tuple],
             prefilter: bool = True) -> None:
        norm, _, _ = normalise(form)
        if not norm or not all(_is_letter(c) for c in norm):
            raise ValueError(f"form {form!r} must be letters only")
        runs = tuple((c, len(list(g))) for c, g in itertools.groupby(norm))
        if runs in seen:
            if seen[runs].term != term:
                raise ValueError(f"form {form!r} is listed for two terms")
            return
        entry = Entry(term, weight, whole_word=_script(norm[0]) != "H")
        seen[runs] = entry
        node = self.root
        for c, n in runs:
            node = node.next.setdefault(c, {}).setdefault(n, _Node())
        node.ends.append(entry)
        if entry.whole_word:
            forms = self.whole_words.setdefault("".join(c for c, _ in runs), [])
            forms.append((tuple(n for _, n in runs), entry))
            forms.sort(key=lambda f: f[0], reverse=True)
        if prefilter:
            seqs.add(runs)

    @staticmethod
    def _prefilter_pattern(seqs: set[tuple]) -> str:
        """A regex over the letters alone that finds a superset of the matches.

        A form's run of n letters is ``c{n,}+``. A try starts only at the
        first letter of a run (``c(?<!cc)``) and every run is eaten
        possessively, so nothing backtracks and each run is read a bounded
        number of times. A try stops at the shortest form: the stretch around
        a hit is then examined in full by the exact matcher.
        """
        trie: dict = {}
        for runs in seqs:
            node = trie
            for run in runs:
                node = node.setdefault(run, {})
            node[None] = {}

        def quant(n: int) -> str:
            return "++" if n == 1 else "{%d,}+" % n

        def rest(node: dict) -> str:
            if None in node:
                return ""
            alts = [re.escape(c) + quant(n) + rest(node[(c, n)]) for c, n in sorted(node)]
            return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

        by_first: dict[str, list[str]] = {}
        for c, n in sorted(trie):  # the first letter is eaten by the try's start
            more = "*+" if n == 1 else ("++" if n == 2 else "{%d,}+" % (n - 1))
            by_first.setdefault(c, []).append(re.escape(c) + more + rest(trie[(c, n)]))
        tops = []
        for c, alts in by_first.items():
            e = re.escape(c)
            body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
            tops.append(f"{e}(?<!{e}{e}){body}")
        return "|".join(tops) if tops else r"(?!)"

    # -- analysing ------------------------------------------------------------

    def analyse(self, text: str) -> dict:
        """The verdict on ``text`` (see the module docstring)."""
        norm, starts, ends = normalise(text)
        found = self._find(text, norm, starts, ends)
        score = 1.0
        for _, _, entry in found:
            score *= 1.0 - entry.weight
        language = []
        if _LATIN_TEXT.search(text):
            language.append("en")
        if _HANGUL_TEXT.search(text):
            language.append("ko")
        return {
            "profane": bool(found),
            "score": round(1.0 - score, 4) if found else 0.0,
            "matches": [{"term": entry.term, "match": text[s:e], "start": s, "end": e}
                        for s, e, entry in found],
            "language": language,
            "length": len(text),
        }

    def _find(self, text, norm, starts, ends) -> list[tuple[int, int, Entry]]:
        skel = norm.replace(HARD, "").replace(SOFT, "")
        hits = [m.span() for m in self.prefilter.finditer(skel)]
        if not hits:
            return []
        # Map letter indexes (skel) back to normalised indexes (norm).
        after: list[int] = []  # skel index of the first letter after each separator run
        cum: list[int] = []  # separator units up to and including that run
        total = 0
        for m in _SEP_RUNS.finditer(norm):
            s, e = m.span()
            total += e - s
            cum.append(total)
            after.append(e - total)

        def to_norm(h: int) -> int:
            r = bisect.bisect_right(after, h)
            return h + (cum[r - 1] if r else 0)

        found: list[tuple[int, int, Entry]] = []  # (norm start, norm end, entry)
        done = 0  # norm[:done] is examined; always the end of a segment
        for h0, h1 in hits:
            a, b = to_norm(h0), to_norm(h1 - 1) + 1
            if b <= done:
                continue
            if a >= done and norm.find(HARD, a, b) == -1 and norm.find(SOFT, a, b) == -1:
                # The hit lies inside one piece (a maximal run of letters).
                before = norm[a - 1] if a else HARD
                if _script(norm[a]) == "L" and _is_letter(before) and _script(before) == "L":
                    continue  # no word edge inside the hit: it cannot hold a Latin match
                piece = self._isolated_piece(norm, a, done)
                if piece is not None:
                    ps, pe = piece
                    word = norm[ps:pe]
                    if word.isascii():  # Latin only: the whole word is a form or nothing
                        entry = self._whole_word(word)
                        if entry is not None:
                            found.append((ps, pe, entry))
                    else:
                        found.extend((ps + i, ps + e, entry)
                                     for i, e, entry in self._match(word, None, None))
                    done = pe
                    continue
            ws = max(self._segment_start(norm, a), done)
            we = self._segment_end(norm, max(b, ws))
            found.extend(self._scan(norm, ws, we))
            done = we

        out = []
        for i, e, entry in found:
            if entry.term is None:
                continue
            s = starts[i] if starts is not None else i
            end = ends[e - 1] if ends is not None else e
            if _REAL_LETTER.search(text, s, end):
                out.append((s, end, entry))
        return out

    def _whole_word(self, word: str) -> Entry | None:
        """The entry whose form is all of ``word`` (ASCII letters), if any."""
        forms = self.whole_words.get(_REPEATS.sub(r"\1", word))
        if not forms:
            return None
        counts = [m.end() - m.start() for m in _RUNS.finditer(word)]
        for need, entry in forms:
            if all(have >= n for have, n in zip(counts, need)):
                return entry
        return None

    def _isolated_piece(self, norm: str, a: int, done: int) -> tuple[int, int] | None:
        """The piece around letter ``a`` if no match can cross out of it, else None.

        That is a piece of two or more different letters with whitespace (or
        the text's edge) on both sides. ``done`` bounds the look to the left.
        """
        ps = max(norm.rfind(HARD, done, a), norm.rfind(SOFT, done, a)) + 1
        if ps == done and ps > 0 and _is_letter(norm[ps - 1]):
            return None  # cannot tell where the piece starts: let the general path decide
        pe = _PIECES.match(norm, a).end()
        if self._single(norm, ps, pe):
            return None
        j = ps
        while j > 0 and not _is_letter(norm[j - 1]):
            j -= 1
        if j > 0 and norm.find(HARD, j, ps) == -1:
            return None
        n = len(norm)
        j = pe
        while j < n and not _is_letter(norm[j]):
            j += 1
        if j < n and norm.find(HARD, pe, j) == -1:
            return None
        return ps, pe

    # A *segment* is a stretch that no match can cross out of: its edges are
    # whitespace runs not both of whose neighbouring pieces are one letter long
    # (a piece is a maximal run of letters).

    @staticmethod
    def _single(norm: str, s: int, e: int) -> bool:
        return norm.count(norm[s], s, e) == e - s

    def _segment_start(self, norm: str, x: int) -> int:
        i = x
        while i > 0 and _is_letter(norm[i - 1]):
            i -= 1
        right_single = None
        while i > 0:
            j, hard = i, False
            while j > 0 and not _is_letter(norm[j - 1]):
                j -= 1
                hard = hard or norm[j] == HARD
            if j == 0:
                return i
            k = j
            while k > 0 and _is_letter(norm[k - 1]):
                k -= 1
            left_single = self._single(norm, k, j)
            if hard:
                if right_single is None:
                    r = _PIECES.match(norm, i)
                    right_single = r is None or self._single(norm, i, r.end())
                if not (left_single and right_single):
                    return i
            i, right_single = k, left_single
        return 0

    def _segment_end(self, norm: str, y: int) -> int:
        n = len(norm)
        i = y
        while i < n and _is_letter(norm[i]):
            i += 1
        left_single = None
        while i < n:
            j, hard = i, False
            while j < n and not _is_letter(norm[j]):
                hard = hard or norm[j] == HARD
                j += 1
            if j == n:
                return i
            k = j
            while k < n and _is_letter(norm[k]):
                k += 1
            right_single = self._single(norm, j, k)
            if hard:
                if left_single is None:
                    r = i
                    while r > 0 and _is_letter(norm[r - 1]):
                        r -= 1
                    left_single = r == i or self._single(norm, r, i)
                if not (left_single and right_single):
                    return i
            i, left_single = k, right_single
        return n

    def _scan(self, norm: str, ws: int, we: int) -> list[tuple[int, int, Entry]]:
        """Exact matches inside the segments ``norm[ws:we]`` (norm offsets)."""
        chunks: list[str] = []
        pos: list[int] = []  # norm index of each letter
        cross: list[bool] = []  # may a match step from the previous letter to this one?
        edge: list[bool] = []  # is there a separator (or the window's edge) before it?
        prev_end, prev_single = None, False
        for m in _PIECES.finditer(norm, ws, we):
            s, e = m.span()
            single = self._single(norm, s, e)
            if prev_end is None:
                first_cross = False
            else:
                first_cross = norm.find(HARD, prev_end, s) == -1 or (prev_single and single)
            chunks.append(m.group())
            pos.extend(range(s, e))
            cross.append(first_cross)
            cross.extend(itertools.repeat(True, e - s - 1))
            edge.append(True)
            edge.extend(itertools.repeat(False, e - s - 1))
            prev_end, prev_single = e, single
        return [(pos[i], pos[e - 1] + 1, entry)
                for i, e, entry in self._match("".join(chunks), cross, edge)]

    def _match(self, letters: str, cross: list[bool] | None,
               edge: list[bool] | None) -> list[tuple[int, int, Entry]]:
        """Exact matches in a string of letters, as letter offsets.

        ``cross[k]``: may a match step from letter k-1 to letter k (None: always).
        ``edge[k]``: is there a separator before letter k (None: only before 0).
        The letters start and end at segment edges.
        """
        n = len(letters)
        starts = [m.start() for m in self.first_letter.finditer(letters)]
        if not starts:
            return []
        if cross is None:
            run_end = None
        else:
            run_end = [0] * n
            run_end[n - 1] = n
            for k in range(n - 2, -1, -1):
                run_end[k] = run_end[k + 1] if letters[k + 1] == letters[k] and cross[k + 1] else k + 1

        def end_of_run(k: int) -> int:
            if run_end is not None:
                return run_end[k]
            c, e = letters[k], k + 1
            while e < n and letters[e] == c:
                e += 1
            return e

        def word_edge(k: int) -> bool:  # is there a word edge between letters k-1 and k?
            if k == 0 or k == n or (edge is not None and edge[k]):
                return True
            a, b = letters[k - 1], letters[k]
            if a < "\x80" and b < "\x80":
                return False
            return _script(a) != _script(b)

        found: list[tuple[int, int, Entry]] = []
        for i in starts:
            c = letters[i]
            if c >= "\x80" and _script(c) == "H":
                at_word = False
                if i and letters[i - 1] == c and (cross is None or cross[i]):
                    continue  # Hangul forms: walk from the first letter of a run only
            else:
                at_word = word_edge(i)
                if not at_word:
                    continue  # Latin forms: whole words only
            stack = [(self.root, i)]
            while stack:
                node, k = stack.pop()
                by_count = node.next.get(letters[k])
                if by_count is None:
                    continue
                e = end_of_run(k)
                for need, child in by_count.items():
                    if need > e - k:
                        continue
                    for entry in child.ends:
                        if not entry.whole_word or (at_word and word_edge(e)):
                            found.append((i, e, entry))
                    if child.next and e < n and (cross is None or cross[e]):
                        stack.append((child, e))

        # Leftmost, then longest, then allowed words first; no overlaps.
        found.sort(key=lambda f: (f[0], -f[1], f[2].term is not None))
        chosen, last = [], 0
        for i, e, entry in found:
            if i >= last:
                chosen.append((i, e, entry))
                last = e
        return chosen


@functools.lru_cache(maxsize=1)
def default_analyser() -> Analyser:
    """The analyser of the built-in word lists (built once per process)."""
    return Analyser.from_file()


def analyse(text: str) -> dict:
    """Analyse ``text`` with the built-in word lists."""
    return default_analyser().analyse(text)


if __name__ == "__main__":  # python profanity.py "some text"
    import sys

    print(json.dumps(analyse(" ".join(sys.argv[1:])), ensure_ascii=False, indent=2))

"""Shell globs as :mod:`fnmatch` reads them, rewritten for SQL: ``LIKE``, SQLite ``GLOB``, PostgreSQL regexes.

copick matches URI parts with :func:`fnmatch.fnmatch` (case-sensitive on Linux), so a glob in SQL
must select exactly the names ``fnmatch.fnmatchcase`` accepts. :func:`parse_glob` reads a pattern
into tokens the way :func:`fnmatch.translate` of Python 3.11 does (an unclosed ``[`` is a literal,
``[!...]`` negates, ``]`` first in a set is a member, empty ranges such as ``b-a`` are dropped), and
each renderer writes the tokens in one SQL dialect:

* :func:`like_pattern`: ``LIKE ... ESCAPE '\\'`` with ``%``, ``_`` and ``\\`` escaped (PostgreSQL's
  ``LIKE`` is case-sensitive, like fnmatch; SQLite's is not, so SQLite gets ``GLOB`` instead);
* :func:`sqlite_glob`: SQLite's case-sensitive ``GLOB`` (a literal ``[`` written ``[[]``);
* :func:`postgres_regex`: an anchored PostgreSQL regular expression, for sets (``[abc]``), which
  ``LIKE`` cannot say.

Only sets need a regular expression; ``*`` and ``?`` stay ``LIKE``/``GLOB``, which can use an index
for a literal prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Literal:
    text: str


@dataclass(frozen=True)
class AnyString:
    """``*``: any run of characters, the empty one included."""


@dataclass(frozen=True)
class AnyChar:
    """``?``: exactly one character (also a negated empty set, ``[!b-a]``)."""


@dataclass(frozen=True)
class CharSet:
    """``[...]``: one character in (or, ``negated``, not in) the inclusive code point ranges."""

    negated: bool
    ranges: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Never:
    """An empty set (``[b-a]``): the glob matches nothing."""


Token = Literal | AnyString | AnyChar | CharSet | Never


class GlobError(ValueError):
    """A set whose ranges Python's ``re`` refuses (so ``fnmatch`` itself would raise)."""


def _set_body(pat: str, i: int, j: int) -> str:
    """The body of the regex class fnmatch writes for ``pat[i:j]`` (the text between ``[`` and ``]``).

    Kept in fnmatch's own terms (chunks split at range dashes, empty ranges merged away, then
    backslashes and literal dashes escaped) because its corner cases are what copick matches with.
    """
    if "-" not in pat[i:j]:
        body = pat[i:j].replace("\\", r"\\")
    else:
        chunks = []
        k = i + 2 if pat[i] == "!" else i + 1
        while True:
            k = pat.find("-", k, j)
            if k < 0:
                break
            chunks.append(pat[i:k])
            i = k + 1
            k = k + 3
        tail = pat[i:j]
        if tail:
            chunks.append(tail)
        else:
            chunks[-1] += "-"
        for k in range(len(chunks) - 1, 0, -1):
            if chunks[k - 1][-1] > chunks[k][0]:
                chunks[k - 1] = chunks[k - 1][:-1] + chunks[k][1:]
                del chunks[k]
        body = "-".join(s.replace("\\", r"\\").replace("-", r"\-") for s in chunks)
    return re.sub(r"([&~|])", r"\\\1", body)


def _class_ranges(body: str) -> tuple[tuple[str, str], ...]:
    """Read a regex class body (escapes and ``a-z`` ranges) as ``re`` does into code point ranges."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(body)

    def char() -> str:
        nonlocal i
        c = body[i]
        if c == "\\":
            c = body[i + 1]
            i += 2
        else:
            i += 1
        return c

    while i < n:
        lo = char()
        if i < n - 1 and body[i] == "-":  # a dash with something after it makes a range
            i += 1
            hi = char()
            if hi < lo:
                raise GlobError(f"bad character range {lo}-{hi}")
            out.append((lo, hi))
        else:
            out.append((lo, lo))
    return tuple(out)


def parse_glob(pat: str) -> list[Token]:
    """The tokens of ``pat`` as :func:`fnmatch.fnmatchcase` reads it (consecutive ``*`` collapse)."""
    tokens: list[Token] = []
    text: list[str] = []

    def add(token: Token) -> None:
        if text:
            tokens.append(Literal("".join(text)))
            text.clear()
        if not (isinstance(token, AnyString) and tokens and isinstance(tokens[-1], AnyString)):
            tokens.append(token)

    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        i += 1
        if c == "*":
            add(AnyString())
        elif c == "?":
            add(AnyChar())
        elif c == "[":
            j = i
            if j < n and pat[j] == "!":
                j += 1
            if j < n and pat[j] == "]":
                j += 1
            while j < n and pat[j] != "]":
                j += 1
            if j >= n:
                text.append("[")
                continue
            body = _set_body(pat, i, j)
            i = j + 1
            if not body:
                add(Never())
            elif body == "!":
                add(AnyChar())
            elif body[0] == "!":
                add(CharSet(True, _class_ranges(body[1:])))
            else:
                add(CharSet(False, _class_ranges(body)))
        else:
            text.append(c)
    if text:
        tokens.append(Literal("".join(text)))
    return tokens


def literal_text(tokens: list[Token]) -> str | None:
    """The name a glob without wildcards stands for (None when it has any)."""
    if all(isinstance(t, Literal) for t in tokens):
        return "".join(t.text for t in tokens if isinstance(t, Literal))
    return None


def has_sets(tokens: list[Token]) -> bool:
    return any(isinstance(t, CharSet | Never) for t in tokens)


#: The escape character of :func:`like_pattern` (pass it as ``ESCAPE``).
LIKE_ESCAPE = "\\"


def like_pattern(tokens: list[Token]) -> str:
    """``LIKE`` text for a glob without sets: ``%``/``_`` for the wildcards, literal ``%``, ``_``, ``\\`` escaped."""
    out = []
    for t in tokens:
        if isinstance(t, Literal):
            out.append(re.sub(r"([%_\\])", r"\\\1", t.text))
        elif isinstance(t, AnyString):
            out.append("%")
        elif isinstance(t, AnyChar):
            out.append("_")
        else:
            raise ValueError("LIKE cannot express a character set")
    return "".join(out)


def sqlite_glob(tokens: list[Token]) -> str:
    """SQLite ``GLOB`` text for a glob without sets (``*``, ``?``; a literal ``[`` as ``[[]``)."""
    out = []
    for t in tokens:
        if isinstance(t, Literal):
            out.append(t.text.replace("[", "[[]"))  # a literal * or ? cannot occur outside a set
        elif isinstance(t, AnyString):
            out.append("*")
        elif isinstance(t, AnyChar):
            out.append("?")
        else:
            raise ValueError("sqlite_glob renders sets through the regexp function instead")
    return "".join(out)


def _re_char(c: str) -> str:
    """One character as a literal in both Python's and PostgreSQL's regex syntax (in and out of sets)."""
    return "\\" + c if c.isascii() and not c.isalnum() else c


def postgres_regex(tokens: list[Token]) -> str:
    """An anchored PostgreSQL (ARE) regular expression for the glob: what ``~`` needs for sets.

    ``.`` matches a newline in PostgreSQL by default, as it does in fnmatch's ``(?s:...)``.
    """
    out = []
    for t in tokens:
        if isinstance(t, Literal):
            out.append("".join(_re_char(c) for c in t.text))
        elif isinstance(t, AnyString):
            out.append(".*")
        elif isinstance(t, AnyChar):
            out.append(".")
        elif isinstance(t, CharSet):
            members = "".join(_re_char(lo) if lo == hi else f"{_re_char(lo)}-{_re_char(hi)}" for lo, hi in t.ranges)
            out.append(f"[{'^' if t.negated else ''}{members}]")
        else:  # an empty set: no character is in it
            out.append(r"[^\s\S]")
    return "^(?:" + "".join(out) + ")$"


def python_regex(tokens: list[Token]) -> str:
    """The same glob as a Python regular expression for :func:`re.match` (tests compare it with fnmatch)."""
    body = postgres_regex(tokens)[4:-2]
    return f"(?s:{body})\\Z"


__all__ = [
    "LIKE_ESCAPE",
    "AnyChar",
    "AnyString",
    "CharSet",
    "GlobError",
    "Literal",
    "Never",
    "Token",
    "has_sets",
    "like_pattern",
    "literal_text",
    "parse_glob",
    "postgres_regex",
    "python_regex",
    "sqlite_glob",
]

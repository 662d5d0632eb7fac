"""Reading a very large pick file in windows, so memory stays bounded by a batch, not by the file.

A pick file of a million points is 70-800 MB of JSON; parsed whole it costs gigabytes. Here the file
is read in windows of :data:`WINDOW` bytes and its structure is followed with numpy over each window
(which bytes are inside strings, honouring backslash escapes, and at which nesting depth), which is
enough to cut it into the top-level fields and the elements of its ``points`` array without building
any Python object per byte. The top-level fields are decoded on their own (the file's text with the
body of ``points`` left out), and the points in batches of :data:`BATCH_POINTS`, both through
:mod:`.pickrows`, so the rules and error messages are those of every other pick file: a file is valid
streamed exactly when it is valid read whole (``tests/test_fuzz.py`` holds the two to that).

:func:`scan` validates a file and counts its points; :class:`PointStream` reads it again and yields the
point rows batch by batch while the catalog inserts them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

import msgspec
import numpy as np

from ..errors import PayloadError
from .pickrows import PickHeader, PointRow, decode_header, decode_points, describe, top_level_values

#: Files at least this big are streamed instead of parsed whole.
STREAM_BYTES = 16 * 1024**2
#: Bytes read at a time.
WINDOW = 4 * 1024**2
#: Points decoded (and handed to the writer) at a time.
BATCH_POINTS = 20_000
#: The fields besides ``points`` are a few hundred bytes in any pick file; this much more is not a pick file.
MAX_HEADER_BYTES = STREAM_BYTES

_QUOTE, _BACKSLASH, _COMMA = 34, 92, 44


class _Structure:
    """JSON structure across windows: inside a string or not, the open backslash run, the depth."""

    def __init__(self) -> None:
        self.in_string = False
        self.backslashes = 0
        self.depth = 0

    def feed(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each byte of ``w``: whether it is structural (outside strings), and the depth before it."""
        quote = w == _QUOTE
        backslash = w == _BACKSLASH
        if self.backslashes or backslash.any():  # rare in pick files: only then count escapes
            n = len(w)
            idx = np.arange(n, dtype=np.int64)
            last_other = np.maximum.accumulate(np.where(backslash, -1, idx))
            before = np.empty(n, dtype=np.int64)
            before[0] = -1
            before[1:] = last_other[:-1]
            run = np.where(before >= 0, idx - 1 - before, idx + self.backslashes)  # backslashes before each byte
            quote &= run % 2 == 0  # an escaped quote neither opens nor closes a string
            self.backslashes = int(n + self.backslashes if last_other[-1] < 0 else n - 1 - last_other[-1])
        toggles = np.cumsum(quote, dtype=np.int32) + np.int32(self.in_string)
        outside = ((toggles - quote) & 1) == 0  # not inside a string (quotes themselves count as outside)
        opens = outside & ((w == 123) | (w == 91))  # { [
        closes = outside & ((w == 125) | (w == 93))  # } ]
        step = opens.view(np.int8) - closes.view(np.int8)
        after = np.cumsum(step, dtype=np.int32) + np.int32(self.depth)
        self.in_string = bool(toggles[-1] & 1)
        self.depth = int(after[-1])
        return outside, after - step


class _Invalid(Exception):
    pass


@dataclass(slots=True)
class _Layout:
    header: PickHeader
    n_points: int
    #: which ``points`` array holds the file's points (JSON readers keep the last of a repeated key), or None
    occurrence: int | None = 0


_WHITESPACE = np.array([32, 9, 10, 13], dtype=np.uint8)


class _Reader:
    """One pass over a file: keeps its top-level text, hands each batch of points to ``on_batch``.

    The kept text is the file's own bytes with the body of its ``points`` array left out, so the top-level
    fields are decoded from exactly what a whole-file read would see (every unknown field included, for
    the same syntax and UTF-8 checks). :meth:`windows` reads the file window by window (a generator, so
    a consumer can take the batches a window produced before the next is read); :meth:`finish` checks and
    decodes the top-level fields.
    """

    def __init__(self, on_batch: Callable[[bytes, int, int], int]) -> None:
        self.on_batch = on_batch  # (batch text, index of its first point, which points array) -> points in it
        self.structure = _Structure()
        self.header = bytearray()
        self.in_points = False  # inside the elements of a top-level "points" array
        self.arrays = 0  # top-level "points" arrays begun (a key may repeat: the last one counts)
        self.counts: list[int] = []  # points in each
        self.body = bytearray()  # the points' text since the last cut
        self.commas = 0  # top-level commas in it
        self.after_cut = False
        self.started = False

    def windows(self, fh: IO[bytes]) -> Iterator[None]:
        while chunk := fh.read(WINDOW):
            w = np.frombuffer(chunk, dtype=np.uint8)
            outside, depth = self.structure.feed(w)
            if not self.started:
                first = np.flatnonzero(~np.isin(w, _WHITESPACE))
                if first.size:
                    if w[first[0]] != 123:
                        raise _Invalid("a pick file must be a JSON object")
                    self.started = True
            top = depth <= 1
            edges = np.flatnonzero(top[1:] != top[:-1]) + 1
            for a, b in zip([0, *edges.tolist()], [*edges.tolist(), len(w)], strict=True):
                if top[a]:
                    self._top(chunk, w, outside, depth, a, b)
                else:
                    self._inner(chunk, w, outside, depth, a, b)
            yield

    def finish(self) -> _Layout:
        if self.structure.in_string or self.structure.depth != 0 or not self.started:
            raise _Invalid("not valid JSON (the file ends inside a value: half-written or truncated?)")
        header = bytes(self.header)
        fields = decode_header(header)
        occurrence = _last_points_array(header, self.arrays)
        return _Layout(fields, 0 if occurrence is None else self.counts[occurrence], occurrence)

    def _top(self, chunk: bytes, w: np.ndarray, outside: np.ndarray, depth: np.ndarray, a: int, b: int) -> None:
        """Bytes of the root object itself: kept; an array opening under the key ``points`` starts the points."""
        pos = a
        for o in (np.flatnonzero(outside[a:b] & (w[a:b] == 91)) + a).tolist():  # [ at depth 1
            if depth[o] != 1:
                continue
            self._keep(chunk[pos:o])
            pos = o + 1
            if _last_key(self.header) == "points":
                self.in_points = True
                self.arrays += 1
                self.counts.append(0)
                self._keep(b"[]")  # its body goes to the batches, its closing bracket is left out
            else:
                self._keep(b"[")
        self._keep(chunk[pos:b])

    def _inner(self, chunk: bytes, w: np.ndarray, outside: np.ndarray, depth: np.ndarray, a: int, b: int) -> None:
        """Bytes inside a top-level container: for ``points``, its body, cut into batches at its own commas;
        for any other, kept with the top-level text.

        A batch is the text between two cuts, which is a valid array body exactly when the points are
        valid JSON: a stray or trailing comma makes msgspec refuse the batch, so no element is examined here.
        """
        if not self.in_points:
            self._keep(chunk[a:b])
            return
        at2 = outside[a:b] & (depth[a:b] == 2)
        ends = np.flatnonzero(at2 & ((w[a:b] == 125) | (w[a:b] == 93))) + a
        stop = int(ends[0]) if ends.size else b
        commas = (np.flatnonzero(at2[: stop - a] & (w[a:stop] == _COMMA)) + a).tolist()
        pos = a
        need = BATCH_POINTS - self.commas  # commas to the next cut (a batch of BATCH_POINTS elements)
        while len(commas) >= need:
            cut = commas[need - 1]
            self.body += chunk[pos:cut]
            self._flush_batch()
            self.after_cut = True  # a cut is at a comma: another point must follow
            pos, commas, need = cut + 1, commas[need:], BATCH_POINTS
        self.body += chunk[pos:stop]
        self.commas = BATCH_POINTS - need + len(commas)
        if ends.size:  # the array closed (its bracket is left out: the kept text has "[]"); the rest is kept
            self._flush_batch()
            self.in_points = False
            if w[stop] != 93:
                raise _Invalid("not valid JSON (the points array is closed by '}')")
            self._keep(chunk[stop + 1 : b])

    def _flush_batch(self) -> None:
        if bytes(self.body).strip():
            k = self.arrays - 1
            self.counts[k] += self.on_batch(b"[" + bytes(self.body) + b"]", self.counts[k], k)
            self.after_cut = False
        elif self.commas or self.after_cut:
            raise _Invalid("not valid JSON (a comma with no point after it in points)")
        self.body.clear()
        self.commas = 0

    def _keep(self, data: bytes) -> None:
        self.header += data
        if len(self.header) > MAX_HEADER_BYTES:
            raise _Invalid(f"the fields besides points exceed {MAX_HEADER_BYTES:,} bytes: not a pick file")


def _last_points_array(header: bytes, arrays: int) -> int | None:
    """Which of the ``points`` arrays a JSON reader keeps (the last ``points`` key wins), None if that key's
    value is not an array (e.g. a later ``"points": null``) or there is none."""
    if arrays <= 1 and (arrays == 0 or not _may_repeat(header)):
        return arrays - 1 if arrays else None
    keys = top_level_values(header)
    kinds = [isinstance(v, list) for k, v in keys if k == "points"]  # each array is the placeholder []
    if not kinds or not kinds[-1]:
        return None
    return sum(kinds) - 1


def _may_repeat(header: bytes) -> bool:
    return header.count(b'"points"') > 1 or b"\\" in header


def _last_key(header: bytearray) -> str | None:
    """The key whose value starts at the end of ``header`` (``... "key" :``), escapes decoded; None if none.

    Walking back from the closing quote, the first quote not escaped (preceded by an even run of
    backslashes) opens the string: inside a JSON string every quote is escaped.
    """
    end = len(header)
    while end and header[end - 1] in b" \t\n\r":
        end -= 1
    if not end or header[end - 1] != 58:  # ':'
        return None
    end -= 1
    while end and header[end - 1] in b" \t\n\r":
        end -= 1
    if not end or header[end - 1] != _QUOTE:
        return None
    i = end - 2
    while i >= 0:
        if header[i] == _QUOTE:
            run = 0
            while i - 1 - run >= 0 and header[i - 1 - run] == _BACKSLASH:
                run += 1
            if run % 2 == 0:
                break
        i -= 1
    if i < 0:
        return None
    try:
        key = msgspec.json.decode(bytes(header[i:end]))
    except msgspec.DecodeError:
        raise _Invalid("not valid JSON (a key with a bad escape)") from None
    return key if isinstance(key, str) else None


def _failed(path: str, exc: Exception) -> PayloadError:
    reason = str(exc) if isinstance(exc, _Invalid) else describe(exc)
    return PayloadError(path, f"invalid pick file: {reason}; fix or remove the file, then reindex")


def scan(fh: IO[bytes], path: str) -> _Layout:
    """Validate the whole file (every point) and count its points, holding one batch at a time."""
    reader = _Reader(lambda data, offset, _k: len(decode_points(data, offset)))
    try:
        for _ in reader.windows(fh):
            pass
        return reader.finish()
    except (_Invalid, ValueError, msgspec.DecodeError) as exc:
        raise _failed(path, exc) from None


class PointStream:
    """The points of a streamed pick file, read again in batches when the catalog writes them.

    ``n_points`` is what :func:`scan` counted; a file that changed in between yields a different count,
    which the writer refuses (the file is then indexed on the next run).
    """

    def __init__(self, opener: Callable[[], IO[bytes]], path: str, n_points: int, occurrence: int | None = 0) -> None:
        self.opener = opener
        self.path = path
        self.n_points = n_points
        self.occurrence = occurrence  # the points array :func:`scan` found to hold the points

    def batches(self) -> Iterator[list[PointRow]]:
        ready: list[list[PointRow]] = []

        def take(data: bytes, offset: int, k: int) -> int:
            if k != self.occurrence:  # a repeated key's earlier array: validated by scan, not the points
                return data.count(b",") + 1  # (only its own counter moves; never read back)
            ready.append(decode_points(data, offset))
            return len(ready[-1])

        reader = _Reader(take)
        try:
            with self.opener() as fh:
                for _ in reader.windows(fh):
                    while ready:
                        yield ready.pop(0)
                reader.finish()
        except (_Invalid, ValueError, msgspec.DecodeError) as exc:
            raise _failed(self.path, exc) from None
        while ready:
            yield ready.pop(0)


__all__ = ["BATCH_POINTS", "STREAM_BYTES", "WINDOW", "PointStream", "scan"]

"""The indexer's bulk writes on PostgreSQL, through ``COPY``.

A full index of 100,000 runs inserts a million pick rows and tens of millions of points. The generic
paths cost the client more than the server: SQLAlchemy's multi-row ``INSERT … RETURNING`` makes
psycopg rewrite a statement of thousands of placeholders for every batch (over a third of the
indexer's CPU at 5,000 runs), and ``write_row`` spends microseconds of Python on each point. Here
points go as one binary ``COPY`` buffer built by numpy, and new file rows are copied into a
temporary table and moved with one ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING``, which
keeps the guarded upsert's meaning for a path another writer took meanwhile.
"""

from __future__ import annotations

import itertools
import struct
from operator import itemgetter
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..formats.pickrows import PointColumns

#: One point as a row of PostgreSQL's binary COPY format: a field count, then (length, value) per column
#: in the order of POINTS_COPY_COLUMNS, big-endian; the transform is NULL (length -1): the identity.
_POINT_ROW = np.dtype(
    [
        ("fields", ">i2"),
        *[
            item
            for name, kind in (
                ("pick_id", ">i4"),
                ("idx", ">i4"),
                ("x", ">f8"),
                ("y", ">f8"),
                ("z", ">f8"),
                ("instance_id", ">i8"),
                ("score", ">f8"),
            )
            for item in ((f"{name}_len", ">i4"), (name, kind))
        ],
        ("transform_len", ">i4"),
    ]
)
POINTS_COPY_COLUMNS = ("pick_id", "idx", "x", "y", "z", "instance_id", "score", "transform")
_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # signature, flags, no extension
_TRAILER = b"\xff\xff"
_fresh_tables = itertools.count()


def copy_points(conn: Connection, cols: PointColumns) -> None:
    """Insert a batch of points: one binary COPY for those with the identity transform (nearly all),
    a text COPY row by row for the others."""
    plain = np.ones(len(cols), dtype=bool)
    if cols.transforms:
        plain[list(cols.transforms)] = False
    rows = np.empty(int(plain.sum()), dtype=_POINT_ROW)
    rows["fields"] = len(POINTS_COPY_COLUMNS)
    for name, size in (("pick_id", 4), ("idx", 4), ("x", 8), ("y", 8), ("z", 8), ("instance_id", 8), ("score", 8)):
        rows[f"{name}_len"] = size
    rows["pick_id"] = cols.pick_ids[plain]
    rows["idx"] = cols.idx[plain]
    values = cols.values[plain]
    rows["x"], rows["y"], rows["z"], rows["score"] = values[:, 0], values[:, 1], values[:, 2], values[:, 4]
    rows["instance_id"] = values[:, 3].astype(np.int64)
    rows["transform_len"] = -1
    if len(rows):
        _copy_binary(conn, f"points ({', '.join(POINTS_COPY_COLUMNS)})", rows.tobytes())
    if cols.transforms:
        turned = []
        for i, text in cols.transforms.items():
            x, y, z, iid, score = cols.values[i].tolist()
            turned.append((int(cols.pick_ids[i]), int(cols.idx[i]), x, y, z, int(iid), score, text))
        copy_rows(conn, "points", list(POINTS_COPY_COLUMNS), turned)


def _copy_binary(conn: Connection, target: str, body: bytes) -> None:
    """``COPY target FROM STDIN`` in PostgreSQL's binary format: ``body`` is the rows, already encoded."""
    dbapi: Any = conn.connection.driver_connection
    with dbapi.cursor() as cur, cur.copy(f"COPY {target} FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(_HEADER + body + _TRAILER)


def copy_rows(conn: Connection, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    """``COPY`` plain rows (numbers, text, booleans, bytes, NULLs) into ``table``."""
    dbapi: Any = conn.connection.driver_connection
    with dbapi.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


#: A (pick_id, data) row of binary COPY up to the blob: two fields, the id (4 bytes), then the blob's length.
_PACKED_ROW = struct.Struct(">hiii")


def copy_packed(conn: Connection, rows: list[tuple[int, bytes]]) -> None:
    """``COPY`` packed point blobs into ``packed_points`` in the binary format: as text each blob would be
    hex-encoded by the client and decoded by the server (1.6 s of server time for a 5,000-run full index)."""
    if not rows:
        return
    pack = _PACKED_ROW.pack
    body = b"".join(pack(2, 4, pick_id, len(data)) + data for pick_id, data in rows)
    _copy_binary(conn, "packed_points (pick_id, data)", body)


def insert_fresh_rows(
    conn: Connection, table: sa.Table, rows: list[dict[str, Any]], key: list[str]
) -> list[tuple[int, str, str]]:
    """Insert rows for files the catalog did not hold; ``(id, layer, path)`` of those inserted.

    A row whose ``key`` another writer inserted meanwhile is skipped (and not returned); a clash with
    any other unique constraint raises IntegrityError, refusing the batch as an insert would.
    """
    cols = list(rows[0])
    names = ", ".join(cols)
    temp = f"fresh_{table.name}_{next(_fresh_tables)}"
    conn.exec_driver_sql(f"CREATE TEMP TABLE {temp} ON COMMIT DROP AS SELECT {names} FROM {table.name} WITH NO DATA")
    values = itemgetter(*cols)
    copy_rows(conn, temp, cols, [values(r) for r in rows])
    result = conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {temp} "
        f"ON CONFLICT ({', '.join(key)}) DO NOTHING RETURNING id, layer, path"
    )
    inserted = [(int(i), layer, path) for i, layer, path in result]
    conn.exec_driver_sql(f"DROP TABLE {temp}")
    return inserted


__all__ = ["POINTS_COPY_COLUMNS", "copy_packed", "copy_points", "copy_rows", "insert_fresh_rows"]

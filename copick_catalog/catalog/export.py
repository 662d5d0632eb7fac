"""Points out of the catalog: the picks a copick URI selects, streamed to Parquet or CSV in batches.

A URI over a large project can select millions of points, so nothing here holds them all: the
selected picks are listed first (one small row each: id, names, point count), then their packed
points (table ``packed_points``, one float64 blob per pick) are read a few hundred picks at a time
inside one read transaction, and each batch is written before the next is read. Memory stays that
of one batch (``batch_points`` points, ~60 bytes each in Arrow) plus the pick list.

The descriptive columns (run, object_name, user_id, session_id, layer) are Arrow dictionary
columns: each distinct name is stored once, and the dictionaries are fixed before the first batch
(from the pick list), so every batch and row group shares them. The STAR, EM, Dynamo and copick CSV
formats go through copick's own exporters instead (:mod:`copick_catalog.copick.export`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from ..errors import CatalogError, NotFoundError
from ..formats.exports import BATCH_POINTS, COPICK_FORMATS, FORMATS, POINT_FORMATS
from ..formats.picks import PACKED_POINT_FIELDS
from .db import read_snapshot
from .queries import pack_from_points
from .schema import PackedPoints, Pick

if TYPE_CHECKING:
    from .catalog import Catalog

#: The descriptive columns, from the pick each point belongs to (dictionary-encoded).
LABEL_COLUMNS = ("run", "object_name", "user_id", "session_id", "layer")
#: Every column of the exported table, in order.
COLUMNS = (*LABEL_COLUMNS, *PACKED_POINT_FIELDS)

_PICK_LABELS = (Pick.run_name, Pick.object_name, Pick.user_id, Pick.session_id, Pick.layer)


class ExportError(CatalogError):
    """An export that cannot be done as asked (unknown format, missing option, missing library)."""


@dataclass
class ExportReport:
    """What an export wrote: the files, and how many pick files and points went into them."""

    format: str
    files: list[str] = field(default_factory=list)
    picks: int = 0
    points: int = 0
    batches: int = 0


def check_format(format: str) -> str:
    """``format`` if it is one we write, else an :class:`ExportError` listing those."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; use one of: {', '.join(FORMATS)}")
    return format


def require_pyarrow(format: str) -> None:
    """A clear error when pyarrow (the ``export`` extra) is missing."""
    if importlib.util.find_spec("pyarrow") is None:
        raise ExportError(f"--format {format} needs pyarrow: pip install 'copick-catalog[export]'")


def _picks_query(cat: Catalog, uri: str, run: Any) -> Any:
    """(id, run, object, user, session, layer, n_points) of every pick file the URI selects, in ``resolve`` order."""
    stmt = cat._filters(  # the same conditions as cat.resolve("picks", uri, run=run)
        sa.select(Pick.id, *_PICK_LABELS, Pick.n_points).where(Pick.project_id == cat.project_id),
        Pick,
        {"uri": uri, "run": run},
    )
    return stmt.order_by(*_PICK_LABELS)


def _check_run(cat: Catalog, run: Any) -> None:
    if isinstance(run, str) and not cat.runs(run):
        raise NotFoundError(f"run {run!r} not found; `copick-catalog query runs CONFIG` lists the project's runs")


def _groups(meta: Sequence[Any], batch_points: int) -> Iterator[list[int]]:
    """Indices into ``meta`` in consecutive groups of at most ``batch_points`` points (one pick at least)."""
    group: list[int] = []
    total = 0
    for i, row in enumerate(meta):
        n = max(int(row.n_points or 0), 0)
        if group and (total + n > batch_points or len(group) >= 500):
            yield group
            group, total = [], 0
        group.append(i)
        total += n
    if group:
        yield group


def _blobs(conn: Any, ids: Sequence[int]) -> dict[int, bytes]:
    """Each pick's packed points; picks without a packed copy are packed from the ``points`` rows."""
    found = {
        pid: bytes(data)
        for pid, data in conn.execute(
            sa.select(PackedPoints.pick_id, PackedPoints.data).where(PackedPoints.pick_id.in_(ids))
        )
    }
    missing = [i for i in ids if i not in found]
    if missing:
        found.update(pack_from_points(conn, missing))
    return found


def iter_point_batches(
    cat: Catalog, uri: str, *, run: Any = None, batch_points: int = BATCH_POINTS, report: ExportReport | None = None
) -> Iterator[Any]:
    """The points of the picks ``uri`` selects, as Arrow record batches of at most ``batch_points`` rows.

    Columns: :data:`COLUMNS` (Å, file order within each pick; picks in ``resolve`` order). The pick
    list and every batch come from one read transaction, so they describe one state of the catalog.
    ``report`` (if given) is told the number of picks before the first batch.
    """
    import pyarrow as pa

    if batch_points < 1:
        raise ExportError(f"batch_points must be a positive number of points, not {batch_points!r}")
    schema = batch_schema()
    width = len(PACKED_POINT_FIELDS)
    with read_snapshot(cat.engine) as conn:
        meta = conn.execute(_picks_query(cat, uri, run)).all()
        if not meta:
            _check_run(cat, run)
        if report is not None:
            report.picks = len(meta)
        dictionaries, codes = [], []
        for i in range(1, len(LABEL_COLUMNS) + 1):
            values, inverse = np.unique(np.array([str(m[i]) for m in meta], dtype=object), return_inverse=True)
            dictionaries.append(pa.array(values.tolist(), pa.string()))
            codes.append(inverse.reshape(-1).astype(np.int32))
        for group in _groups(meta, batch_points):
            blobs = _blobs(conn, [meta[i][0] for i in group])
            arrays = [np.frombuffer(blobs.get(meta[i][0], b""), dtype="<f8").reshape(-1, width) for i in group]
            counts = np.array([len(a) for a in arrays], dtype=np.int64)
            if not counts.sum():
                continue
            values = np.concatenate(arrays)
            del arrays, blobs
            owner = np.repeat(np.asarray(group, dtype=np.int64), counts)
            for start in range(0, len(values), batch_points):
                part, who = values[start : start + batch_points], owner[start : start + batch_points]
                labels = [
                    pa.DictionaryArray.from_arrays(pa.array(code[who], pa.int32()), dictionary)
                    for code, dictionary in zip(codes, dictionaries, strict=True)
                ]
                numbers = [pa.array(part[:, k]) for k in range(width)]
                numbers[3] = pa.array(part[:, 3].astype(np.int64))  # instance_id
                yield pa.RecordBatch.from_arrays([*labels, *numbers], schema=schema)


def batch_schema() -> Any:
    """The Arrow schema of the exported points (names dictionary-encoded, numbers float64, ids int64)."""
    import pyarrow as pa

    names = [pa.field(c, pa.dictionary(pa.int32(), pa.string())) for c in LABEL_COLUMNS]
    numbers = [pa.field(c, pa.int64() if c == "instance_id" else pa.float64()) for c in PACKED_POINT_FIELDS]
    return pa.schema([*names, *numbers])


def export_points(
    cat: Catalog,
    uri: str,
    out: str | os.PathLike[str],
    format: str = "parquet",
    *,
    run: Any = None,
    batch_points: int = BATCH_POINTS,
) -> ExportReport:
    """Write the points of the picks ``uri`` selects to ``out`` as Parquet or CSV, one batch at a time."""
    require_pyarrow(format)
    import pyarrow as pa

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = ExportReport(format, [str(path)])
    schema = batch_schema()
    tmp = path.with_name(f".{path.name}.partial")
    try:
        if format == "parquet":
            import pyarrow.parquet as pq

            with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                for batch in iter_point_batches(cat, uri, run=run, batch_points=batch_points, report=report):
                    writer.write_batch(batch)
                    report.points += batch.num_rows
                    report.batches += 1
        elif format == "csv":
            import pyarrow.csv as pcsv

            plain = pa.schema(
                [pa.field(f.name, pa.string() if pa.types.is_dictionary(f.type) else f.type) for f in schema]
            )
            with pcsv.CSVWriter(tmp, plain) as writer:
                for batch in iter_point_batches(cat, uri, run=run, batch_points=batch_points, report=report):
                    columns = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns]
                    writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=plain))
                    report.points += batch.num_rows
                    report.batches += 1
        else:
            raise ExportError(f"export_points writes parquet or csv, not {format!r}")
        os.replace(tmp, path)  # a reader never sees half a file
    finally:
        if tmp.exists():
            tmp.unlink()
    return report


__all__ = [
    "BATCH_POINTS",
    "COLUMNS",
    "COPICK_FORMATS",
    "FORMATS",
    "POINT_FORMATS",
    "ExportError",
    "ExportReport",
    "batch_schema",
    "check_format",
    "export_points",
    "iter_point_batches",
]

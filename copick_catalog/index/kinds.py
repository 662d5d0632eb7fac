"""The registry of entity kinds: for each, how it is read, which columns its key fills, how it opens.

Everything that differs between a pick, a mesh and a tomogram is written once, in its
:class:`KindSpec`: the indexer reads headers and fills rows through it, ``row.open()`` opens the
payload through it, and status counts and the object API iterate it. The table of each kind is the
ORM model whose ``__kind__`` names it (:data:`copick_catalog.catalog.schema.FILE_MODELS`). A new kind
is one spec here, one grammar key, one model and one migration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import PayloadError
from . import grammar
from .grammar import Kind
from .limits import Limits
from .roots import Entry, Root

if TYPE_CHECKING:  # the format modules (numpy, msgspec, pydantic) load when a payload is read or opened
    from ..formats import pickrows, picks, pickstream
    from ..formats import zarr as zarr_meta


@dataclass(slots=True)
class Header:
    """What reading one entity's header produced: column values, and for picks the points."""

    values: dict[str, Any]
    points: pickrows.PointBlock | pickstream.PointStream | None = None


@dataclass(frozen=True)
class KindSpec:
    """One entity kind: its grammar key, whether it is a zarr group, and its reader, columns and opener.

    ``parents`` says which parent ids a row needs (``run_id``, ``voxel_spacing_id``); ``columns`` gives
    the identity columns a key fills; ``read`` turns a listed entry into column values; ``open`` returns
    the payload behind a row (a validated model, a ``trimesh.Scene``, a zarr group, an array).
    """

    kind: Kind
    key_type: type
    read: Callable[[Root, Entry, Limits], Header]
    columns: Callable[[Any], dict[str, Any]]
    open: Callable[[Root, str, bool], Any]
    parents: tuple[str, ...] = ("run",)
    group: bool = False
    group_of: Callable[[Any], bool] | None = field(default=None)

    def is_group(self, key: Any) -> bool:
        """Whether this key's payload is a zarr group (a directory) rather than one file."""
        return self.group_of(key) if self.group_of is not None else self.group


# ----------------------------------------------------------------------------------------------
# readers


def _read_picks(root: Root, entry: Entry, limits: Limits) -> Header:
    import msgspec

    from ..formats import pickrows, pickstream

    if entry.size is not None and entry.size >= pickstream.STREAM_BYTES:
        return _stream_picks(root, entry, limits)
    data = root.read_bytes(entry.path, limits.pick)
    if len(data) >= pickstream.STREAM_BYTES:  # grew since it was listed
        return _stream_picks(root, entry, limits)
    try:
        head, rows = pickrows.decode_block(data)
    except (ValueError, msgspec.DecodeError) as exc:
        raise PayloadError(
            root.url_of(entry.path),
            f"invalid pick file: {pickrows.describe(exc)}; fix or remove the file, then reindex",
        ) from None
    values = {
        "n_points": len(rows),
        "unit": head.unit,
        "trust_orientation": head.trust_orientation,
        "voxel_spacing": head.voxel_spacing,
    }
    return Header(values, rows)


def _stream_picks(root: Root, entry: Entry, limits: Limits) -> Header:
    """A very large pick file: validated and counted in one streaming pass, its points read again on write."""
    from ..formats import pickstream

    url = root.url_of(entry.path)
    if entry.size is not None and entry.size > limits.pick:
        raise PayloadError(
            url,
            f"is {entry.size:,} bytes, over the {limits.pick:,}-byte limit for pick files; split "
            "it, or raise the limit",
        )
    with root.open_read(entry.path) as fh:
        layout = pickstream.scan(fh, url)
    head = layout.header
    values = {
        "n_points": layout.n_points,
        "unit": head.unit,
        "trust_orientation": head.trust_orientation,
        "voxel_spacing": head.voxel_spacing,
    }
    stream = pickstream.PointStream(lambda: root.open_read(entry.path), url, layout.n_points, layout.occurrence)
    return Header(values, stream)


def _read_filaments(root: Root, entry: Entry, limits: Limits) -> Header:
    from ..formats import picks

    ff = picks.parse_filaments(root.read_bytes(entry.path, limits.filament), root.url_of(entry.path))
    return Header({"n_filaments": len(ff.filaments or []), "n_points": ff.n_points})


def _read_mesh(root: Root, entry: Entry, limits: Limits) -> Header:
    from ..formats import glb

    nv, nf = glb.read_glb_counts(root.read_bytes(entry.path, limits.mesh), root.url_of(entry.path))
    return Header({"n_vertices": nv, "n_faces": nf})


def _zarr_info(root: Root, entry: Entry, limits: Limits) -> zarr_meta.ArrayInfo:
    """Summarise a group from just its metadata files."""
    from ..formats import zarr as zarr_meta

    path = entry.path
    files = root.read_many([f"{path}/{m}" for m in entry.meta], limits.zarr_meta)
    raw: dict[str, bytes] = {}
    for m in entry.meta:
        got = files.get(f"{path}/{m}")
        if isinstance(got, PayloadError):
            raise got
        if isinstance(got, Exception):
            raise PayloadError(root.url_of(f"{path}/{m}"), f"cannot read zarr metadata ({got})")
        if got is not None:
            raw[m] = got
    return zarr_meta.read_zarr_info(raw, root.url_of(path))


def _read_volume(root: Root, entry: Entry, limits: Limits) -> Header:
    info = _zarr_info(root, entry, limits)
    return Header(
        {"shape": info.shape, "dtype": info.dtype, "n_levels": info.n_levels, "zarr_format": info.zarr_format}
    )


def _read_density_map(root: Root, entry: Entry, limits: Limits) -> Header:
    if entry.is_dir:
        info = _zarr_info(root, entry, limits)
    else:
        from ..formats import mrc

        info = mrc.read_mrc_info(root.read_head(entry.path, limits.mrc_header), root.url_of(entry.path))
    return Header({"shape": info.shape, "dtype": info.dtype, "voxel_size": info.voxel_size})


# ----------------------------------------------------------------------------------------------
# openers


def _open_picks(root: Root, path: str, read_only: bool) -> picks.PickFile:
    from ..formats import picks

    return picks.parse_picks(root.read_bytes(path), root.url_of(path))


def _open_filaments(root: Root, path: str, read_only: bool) -> picks.FilamentFile:
    from ..formats import picks

    return picks.parse_filaments(root.read_bytes(path), root.url_of(path))


def _open_mesh(root: Root, path: str, read_only: bool) -> Any:
    from ..formats import glb

    return glb.load_scene(root.read_bytes(path))


def _open_group(root: Root, path: str, read_only: bool) -> Any:
    from ..formats import zarrio

    return zarrio.open_group(root.zarr_store(path, read_only=read_only), read_only=read_only)


def _open_density_map(root: Root, path: str, read_only: bool) -> Any:
    if path.endswith(".mrc"):
        from ..formats import mrc

        return mrc.read_mrc_array(root.read_bytes(path), root.url_of(path))
    return _open_group(root, path, read_only)


# ----------------------------------------------------------------------------------------------
# the registry


def _annotation_columns(key: Any) -> dict[str, Any]:
    return {"run_name": key.run, "object_name": key.object_name, "user_id": key.user_id, "session_id": key.session_id}


SPECS: dict[Kind, KindSpec] = {
    spec.kind: spec
    for spec in (
        KindSpec(
            Kind.TOMOGRAM,
            grammar.TomogramKey,
            _read_volume,
            lambda k: {"tomo_type": k.tomo_type},
            _open_group,
            parents=("run", "voxel_spacing"),
            group=True,
        ),
        KindSpec(
            Kind.FEATURE,
            grammar.FeatureKey,
            _read_volume,
            lambda k: {"tomo_type": k.tomo_type, "feature_type": k.feature_type},
            _open_group,
            parents=("run", "voxel_spacing"),
            group=True,
        ),
        KindSpec(Kind.PICK, grammar.PickKey, _read_picks, _annotation_columns, _open_picks),
        KindSpec(Kind.MESH, grammar.MeshKey, _read_mesh, _annotation_columns, _open_mesh),
        KindSpec(Kind.FILAMENT, grammar.FilamentKey, _read_filaments, _annotation_columns, _open_filaments),
        KindSpec(
            Kind.SEGMENTATION,
            grammar.SegmentationKey,
            _read_volume,
            lambda k: {
                "run_name": k.run,
                "voxel_size": k.voxel_size,
                "name": k.name,
                "user_id": k.user_id,
                "session_id": k.session_id,
                "is_multilabel": k.is_multilabel,
                "kind": k.seg_kind.value,
            },
            _open_group,
            group=True,
        ),
        KindSpec(
            Kind.DENSITY_MAP,
            grammar.DensityMapKey,
            _read_density_map,
            lambda k: {"object_name": k.object_name, "fmt": k.fmt},
            _open_density_map,
            parents=(),
            group_of=lambda k: k.fmt == "zarr",
        ),
    )
}


def spec_of(kind: Kind | str) -> KindSpec:
    return SPECS[Kind(kind)]


__all__ = ["SPECS", "Header", "KindSpec", "Limits", "spec_of"]

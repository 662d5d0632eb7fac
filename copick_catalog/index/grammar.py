"""The copick path grammar: every entity kind <-> its relative path, in both directions.

This is the only module that knows how copick names files. The indexer parses listings with
:func:`parse`, writers build paths with :func:`path_of`, and the walker asks :func:`descend` which
directories are worth listing. Keeping both directions here is what lets a property test prove
that every name a writer accepts parses back to itself.

copick splits file names on ``_`` (``spec/format.md`` §1.3), so names with extra underscores are
ambiguous to it. :func:`parse` resolves them against the project's pickable objects where it can
(the object is the longest known name that ends the stem) and returns a :class:`Malformed` result,
never an exception, where it cannot.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from ..errors import InvalidNameError

RUNS_DIR = "ExperimentRuns"
OBJECTS_DIR = "Objects"
PARTICLE_MRCS_DIR = "ParticleMrcs"
VS_PREFIX = "VoxelSpacing"
PICKS_DIR = "Picks"
MESHES_DIR = "Meshes"
FILAMENTS_DIR = "Filaments"
META_MARKER = ".meta"
MULTILABEL_SUFFIX = "-multilabel"  # what copick writes
SEED_MULTILABEL_SUFFIX = "_multilabel"  # what the original seed spec describes; read only
FEATURES_SUFFIX = "_features"
MAX_COMPONENT_BYTES = 255

#: Characters copick replaces with ``-`` when it sanitises a name (``copick.util.escape``).
FORBIDDEN_NAME_CHARS = re.compile(r'[<>:"/\\|?*\x00-\x1F\x7F\s_]')


class SegKind(StrEnum):
    """Which segmentation directory a mask lives in (copick 1.31 added the last two)."""

    SEMANTIC = "semantic"
    INSTANCE = "instance"
    PANOPTIC = "panoptic"


SEGMENTATION_DIRS: dict[str, SegKind] = {
    "Segmentations": SegKind.SEMANTIC,
    "InstanceSegmentations": SegKind.INSTANCE,
    "PanopticSegmentations": SegKind.PANOPTIC,
}
_SEG_DIR_OF = {kind: d for d, kind in SEGMENTATION_DIRS.items()}
RUN_CHILD_DIRS = frozenset({PICKS_DIR, MESHES_DIR, FILAMENTS_DIR, *SEGMENTATION_DIRS})


class Kind(StrEnum):
    RUN = "run"
    VOXEL_SPACING = "voxel_spacing"
    TOMOGRAM = "tomogram"
    FEATURE = "feature"
    PICK = "pick"
    MESH = "mesh"
    FILAMENT = "filament"
    SEGMENTATION = "segmentation"
    DENSITY_MAP = "density_map"


# --------------------------------------------------------------------------------------------
# Keys: the identity of each entity, independent of which root (layer) holds it.


@dataclass(frozen=True, slots=True)
class RunKey:
    kind: ClassVar[Kind] = Kind.RUN
    run: str


@dataclass(frozen=True, slots=True)
class VoxelSpacingKey:
    kind: ClassVar[Kind] = Kind.VOXEL_SPACING
    run: str
    voxel_size: float


@dataclass(frozen=True, slots=True)
class TomogramKey:
    kind: ClassVar[Kind] = Kind.TOMOGRAM
    run: str
    voxel_size: float
    tomo_type: str


@dataclass(frozen=True, slots=True)
class FeatureKey:
    kind: ClassVar[Kind] = Kind.FEATURE
    run: str
    voxel_size: float
    tomo_type: str
    feature_type: str


@dataclass(frozen=True, slots=True)
class PickKey:
    kind: ClassVar[Kind] = Kind.PICK
    run: str
    user_id: str
    session_id: str
    object_name: str


@dataclass(frozen=True, slots=True)
class MeshKey:
    kind: ClassVar[Kind] = Kind.MESH
    run: str
    user_id: str
    session_id: str
    object_name: str


@dataclass(frozen=True, slots=True)
class FilamentKey:
    kind: ClassVar[Kind] = Kind.FILAMENT
    run: str
    user_id: str
    session_id: str
    object_name: str


@dataclass(frozen=True, slots=True)
class SegmentationKey:
    kind: ClassVar[Kind] = Kind.SEGMENTATION
    run: str
    voxel_size: float
    user_id: str
    session_id: str
    name: str
    is_multilabel: bool = False
    seg_kind: SegKind = SegKind.SEMANTIC


@dataclass(frozen=True, slots=True)
class DensityMapKey:
    """A per-object density map: copick's ``Objects/<name>.zarr`` or the seed's ``ParticleMrcs``."""

    kind: ClassVar[Kind] = Kind.DENSITY_MAP
    object_name: str
    fmt: str = "zarr"  # "zarr" or "mrc"
    object_id: str | None = None  # the seed's numeric prefix for .mrc files


Key = (
    RunKey
    | VoxelSpacingKey
    | TomogramKey
    | FeatureKey
    | PickKey
    | MeshKey
    | FilamentKey
    | SegmentationKey
    | DensityMapKey
)
#: Kinds whose entities sit inside a voxel spacing directory, so that each one proves the spacing exists.
IN_VOXEL_SPACING = frozenset({Kind.TOMOGRAM, Kind.FEATURE})
#: Keys whose payload is a zarr group (fingerprinted by its metadata files).
ZARR_KINDS = frozenset({Kind.TOMOGRAM, Kind.FEATURE, Kind.SEGMENTATION})


@dataclass(frozen=True, slots=True)
class Parsed:
    """A path that names an entity; ``note`` is set when the name needed resolving."""

    key: Key
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Malformed:
    """A path inside the copick layout whose name cannot be read; ``reason`` says how to fix it."""

    reason: str


# --------------------------------------------------------------------------------------------
# Names


def normalize_voxel_size(voxel_size: float) -> float:
    """The voxel size as it reads back from a path (three decimals, like copick's ``.3f``)."""
    return float(f"{float(voxel_size):.3f}")


def format_voxel_size(voxel_size: float) -> str:
    return f"{float(voxel_size):.3f}"


def sanitize_name(name: str, *, warn: bool = True) -> str:
    """Make ``name`` safe as a copick name component, exactly as copick does.

    Each forbidden character (``_``, whitespace, control characters, ``<>:"/\\|?*``) becomes one
    ``-``; leading and trailing dashes are stripped. Warns when the name changed, because the
    caller will find the object under a different name than the one they passed.
    """
    cleaned = FORBIDDEN_NAME_CHARS.sub("-", name).strip("-")
    if not cleaned:
        raise InvalidNameError(f"name {name!r} is empty after sanitising; choose a name with letters or digits")
    if warn and cleaned != name:
        warnings.warn(f"name {name!r} was sanitised to {cleaned!r} (copick naming rules)", UserWarning, stacklevel=2)
    return cleaned


def _check_component(value: str, what: str, *, allow_underscore: bool) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidNameError(f"{what} cannot be empty")
    if value in (".", "..") or "/" in value or "\\" in value or "\x00" in value:
        raise InvalidNameError(f"{what} {value!r} would leave the project root; use a plain name")
    if value.startswith("."):
        raise InvalidNameError(f"{what} {value!r} starts with '.', and copick hides such names; rename it")
    if not allow_underscore and FORBIDDEN_NAME_CHARS.search(value):
        raise InvalidNameError(
            f"{what} {value!r} contains '_', whitespace or a reserved character, so copick could not read "
            "it back; sanitise it first (copick_catalog.layout.sanitize_name)"
        )
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise InvalidNameError(f"{what} {value!r} contains control characters")
    if len(value.encode("utf-8")) > MAX_COMPONENT_BYTES - 32:
        raise InvalidNameError(f"{what} is too long for a file name ({len(value.encode())} bytes)")


def check_run_name(run: str) -> None:
    """Run names are used verbatim as directory names; underscores are fine, path tricks are not."""
    _check_component(run, "run name", allow_underscore=True)
    if run != run.strip():
        raise InvalidNameError(f"run name {run!r} has leading or trailing whitespace")


def check_name(value: str, what: str) -> None:
    """A user, session, object, tomo_type, feature_type or segmentation name that must read back."""
    _check_component(value, what, allow_underscore=False)


# --------------------------------------------------------------------------------------------
# Key -> path


def run_dir(run: str) -> str:
    check_run_name(run)
    return f"{RUNS_DIR}/{run}"


def run_dir_unchecked(run: str) -> str:
    """The run directory for a name already read from disk (no validation: it exists)."""
    return f"{RUNS_DIR}/{run}"


def voxel_spacing_dir(run: str, voxel_size: float) -> str:
    if not float(voxel_size) > 0:
        raise InvalidNameError(f"voxel size must be positive, got {voxel_size!r}")
    return f"{run_dir(run)}/{VS_PREFIX}{format_voxel_size(voxel_size)}"


def path_of(key: Key) -> str:
    """The relative path of ``key``'s file or directory (POSIX separators, no leading slash).

    Raises :class:`InvalidNameError` for names that copick could not read back.
    """
    match key:
        case RunKey(run=run):
            return run_dir(run)
        case VoxelSpacingKey(run=run, voxel_size=vs):
            return voxel_spacing_dir(run, vs)
        case TomogramKey(run=run, voxel_size=vs, tomo_type=tt):
            check_name(tt, "tomo_type")
            if "features" in tt:
                raise InvalidNameError(f"tomo_type {tt!r} contains 'features'; copick never lists such tomograms")
            return f"{voxel_spacing_dir(run, vs)}/{tt}.zarr"
        case FeatureKey(run=run, voxel_size=vs, tomo_type=tt, feature_type=ft):
            check_name(tt, "tomo_type")
            check_name(ft, "feature_type")
            return f"{voxel_spacing_dir(run, vs)}/{tt}_{ft}{FEATURES_SUFFIX}.zarr"
        case PickKey() | MeshKey() | FilamentKey():
            check_name(key.user_id, "user_id")
            check_name(key.session_id, "session_id")
            check_name(key.object_name, "object name")
            folder, ext = _FLAT_KINDS[key.kind]
            return f"{run_dir(key.run)}/{folder}/{key.user_id}_{key.session_id}_{key.object_name}{ext}"
        case SegmentationKey():
            check_name(key.user_id, "user_id")
            check_name(key.session_id, "session_id")
            check_name(key.name, "segmentation name")
            if not float(key.voxel_size) > 0:
                raise InvalidNameError(f"voxel size must be positive, got {key.voxel_size!r}")
            if key.name.endswith("multilabel"):
                raise InvalidNameError(
                    f"segmentation name {key.name!r} ends with 'multilabel', which copick reads as a flag"
                )
            suffix = MULTILABEL_SUFFIX if key.is_multilabel else ""
            folder = _SEG_DIR_OF[SegKind(key.seg_kind)]
            stem = f"{format_voxel_size(key.voxel_size)}_{key.user_id}_{key.session_id}_{key.name}{suffix}"
            return f"{run_dir(key.run)}/{folder}/{stem}.zarr"
        case DensityMapKey(object_name=name, fmt=fmt, object_id=oid):
            if fmt == "mrc":
                _check_component(name, "object name", allow_underscore=True)
                return f"{PARTICLE_MRCS_DIR}/{oid}_{name}.mrc"
            check_name(name, "object name")
            return f"{OBJECTS_DIR}/{name}.zarr"
    raise TypeError(f"not an entity key: {key!r}")


_FLAT_KINDS: dict[Kind, tuple[str, str]] = {
    Kind.PICK: (PICKS_DIR, ".json"),
    Kind.MESH: (MESHES_DIR, ".glb"),
    Kind.FILAMENT: (FILAMENTS_DIR, ".json"),
}
_FLAT_DIRS = {folder: (kind, ext) for kind, (folder, ext) in _FLAT_KINDS.items()}


# --------------------------------------------------------------------------------------------
# Path -> key


def _resolve_user_session_object(
    stem: str, objects: Sequence[str], what: str
) -> tuple[str, str, str, str | None] | Malformed:
    """Split ``<user>_<session>_<object>``; resolve extra underscores against known objects."""
    parts = stem.split("_")
    if len(parts) == 3 and all(parts):
        return parts[0], parts[1], parts[2], None
    if len(parts) < 3:
        return Malformed(
            f"{what} name {stem!r} is not <user>_<session>_<object>; copick cannot list it. "
            "Rename it (for example alice_1_ribosome) or move it out of the project"
        )
    matches = [o for o in objects if stem.endswith("_" + o) and len(stem) > len(o) + 1]
    for obj in sorted(matches, key=len, reverse=True):
        prefix = stem[: -len(obj) - 1]
        pp = prefix.split("_")
        if len(pp) < 2 or not all(pp):
            continue
        user, session = "_".join(pp[:-1]), pp[-1]
        note = None
        if len(pp) > 2:
            note = (
                f"{what} name {stem!r} has extra underscores; read as user {user!r}, session {session!r}, "
                f"object {obj!r}. copick itself misreads it; rename with dashes instead of underscores"
            )
        elif "_" in obj:
            note = f"object name {obj!r} contains '_'; copick itself cannot read this file name"
        return user, session, obj, note
    return Malformed(
        f"{what} name {stem!r} has extra underscores and no pickable object of the project ends it, so "
        "user, session and object cannot be told apart; rename it to <user>_<session>_<object> "
        "with dashes inside names"
    )


def _parse_voxel_dir(name: str) -> float | Malformed:
    text = name[len(VS_PREFIX) :]
    try:
        value = float(text)
    except ValueError:
        return Malformed(
            f"voxel spacing directory {name!r} has no number after 'VoxelSpacing' (copick fails to list "
            "this run); rename it like VoxelSpacing10.000"
        )
    if not value > 0 or value != value or value == float("inf"):
        return Malformed(f"voxel spacing directory {name!r} must hold a positive number")
    return value


def _parse_segmentation(stem: str, run: str, seg_kind: SegKind, objects: Sequence[str]) -> Parsed | Malformed:
    multilabel = False
    for suffix in (MULTILABEL_SUFFIX, SEED_MULTILABEL_SUFFIX):
        if stem.endswith(suffix) and len(stem) > len(suffix):
            stem, multilabel = stem[: -len(suffix)], True
            break
    head, sep, rest = stem.partition("_")
    try:
        voxel_size = float(head) if sep else None
    except ValueError:
        voxel_size = None
    if voxel_size is None or not voxel_size > 0:
        return Malformed(f"segmentation {stem!r} does not start with a voxel size like 10.000_; copick cannot list it")
    resolved = _resolve_user_session_object(rest, objects, "segmentation")
    if isinstance(resolved, Malformed):
        return resolved
    user, session, name, note = resolved
    key = SegmentationKey(run, voxel_size, user, session, name, multilabel, seg_kind)
    return Parsed(key, note)


def parse(path: str, objects: Sequence[str] = (), *, is_dir: bool | None = None) -> Parsed | Malformed | None:
    """Read the entity named by a relative path.

    Returns None for paths outside the copick layout (they are ignored, never errors), a
    :class:`Malformed` for names inside it that cannot be read, and a :class:`Parsed` otherwise.
    ``objects`` (the project's pickable object names) disambiguates names with extra underscores.
    Files inside a run or voxel spacing directory that are not entities (``.meta``) parse as the
    directory they mark. ``is_dir`` distinguishes a ``*.zarr`` group from a stray file of that name.
    """
    parts = path.strip("/").split("/")
    n = len(parts)
    if "" in parts or "." in parts or ".." in parts:
        return None
    top = parts[0]
    if top == OBJECTS_DIR and n == 2 and parts[1].endswith(".zarr") and is_dir is not False:
        name = parts[1][: -len(".zarr")]
        return Parsed(DensityMapKey(name)) if name and not name.startswith(".") else None
    if top == PARTICLE_MRCS_DIR and n == 2 and parts[1].endswith(".mrc"):
        stem = parts[1][: -len(".mrc")]
        oid, sep, name = stem.partition("_")
        if not sep or not name:
            return Malformed(f"density map {parts[1]!r} is not <object_id>_<object_name>.mrc")
        return Parsed(DensityMapKey(name, "mrc", oid))
    if top != RUNS_DIR or n < 2:
        return None
    run = parts[1]
    if run.startswith("."):
        return None
    if n == 2 or (n == 3 and parts[2] == META_MARKER):
        return Parsed(RunKey(run))
    sub = parts[2]
    if sub.startswith(VS_PREFIX) and not sub.startswith("."):
        vs = _parse_voxel_dir(sub)
        if isinstance(vs, Malformed):
            return vs if n == 3 else None  # reported once, for the directory itself
        if n == 3 or (n == 4 and parts[3] == META_MARKER):
            return Parsed(VoxelSpacingKey(run, vs))
        if n == 4 and parts[3].endswith(".zarr") and not parts[3].startswith(".") and is_dir is not False:
            stem = parts[3][: -len(".zarr")]
            if stem.endswith(FEATURES_SUFFIX):
                body = stem[: -len(FEATURES_SUFFIX)]
                tomo_type, sep, feature_type = body.rpartition("_")
                if not sep or not tomo_type or not feature_type:
                    return Malformed(f"feature group {parts[3]!r} is not <tomo_type>_<feature_type>_features.zarr")
                note = None
                if "_" in tomo_type:
                    note = f"feature group {parts[3]!r}: tomo_type {tomo_type!r} contains '_'"
                return Parsed(FeatureKey(run, vs, tomo_type, feature_type), note)
            if not stem:
                return None
            return Parsed(TomogramKey(run, vs, stem))
        return None
    if n != 4 or parts[3].startswith("."):
        return None
    fname = parts[3]
    if sub in _FLAT_DIRS:
        kind, ext = _FLAT_DIRS[sub]
        if not fname.endswith(ext) or is_dir:
            return None
        resolved = _resolve_user_session_object(fname[: -len(ext)], objects, kind.value)
        if isinstance(resolved, Malformed):
            return resolved
        user, session, obj, note = resolved
        flat_keys: dict[Kind, type[PickKey | MeshKey | FilamentKey]] = {
            Kind.PICK: PickKey,
            Kind.MESH: MeshKey,
            Kind.FILAMENT: FilamentKey,
        }
        cls = flat_keys[kind]
        return Parsed(cls(run, user, session, obj), note)
    if sub in SEGMENTATION_DIRS and fname.endswith(".zarr") and is_dir is not False:
        return _parse_segmentation(fname[: -len(".zarr")], run, SEGMENTATION_DIRS[sub], objects)
    return None


def descend(parts: Sequence[str]) -> bool:
    """Whether a walker should list the directory at ``parts`` (relative to a root).

    Prunes everything the grammar cannot match, so a walk never wanders into unrelated trees
    or into zarr chunk directories (``*.zarr`` groups are read through their metadata instead).
    """
    n = len(parts)
    if n == 0:
        return True
    if n == 1:
        return parts[0] in (RUNS_DIR, OBJECTS_DIR, PARTICLE_MRCS_DIR)
    if parts[0] != RUNS_DIR or parts[-1].endswith(".zarr"):
        return False
    if n == 2:
        return not parts[1].startswith(".")
    if n == 3:
        return parts[2] in RUN_CHILD_DIRS or parts[2].startswith(VS_PREFIX)
    return False


def is_container_dir(parts: Sequence[str]) -> bool:
    """Whether ``parts`` is a directory that only holds entities (``ExperimentRuns``, ``<run>/Picks``, …).

    :func:`parse` reads such a directory as nothing, so a walker need not report it at all: on a
    5,000-run project that is 20,000 fewer entries for a reindex to look at.
    """
    n = len(parts)
    if n == 1:
        return parts[0] in (RUNS_DIR, OBJECTS_DIR, PARTICLE_MRCS_DIR)
    return n == 3 and parts[0] == RUNS_DIR and parts[2] in RUN_CHILD_DIRS


def is_zarr_group_dir(parts: Sequence[str]) -> bool:
    """Whether ``parts`` is a directory where copick keeps a zarr group."""
    if not parts or not parts[-1].endswith(".zarr"):
        return False
    n = len(parts)
    if n == 2:
        return parts[0] == OBJECTS_DIR
    return n == 4 and parts[0] == RUNS_DIR and (parts[2].startswith(VS_PREFIX) or parts[2] in SEGMENTATION_DIRS)


#: How deep copick's zarr groups sit: ``Objects/<name>.zarr`` (2) and ``ExperimentRuns/<run>/<dir>/<x>.zarr`` (4).
GROUP_DEPTHS = (2, 4)


def group_depth(parts: Sequence[str]) -> int | None:
    """If ``parts`` names a path inside (or at) a copick zarr group, how many leading parts name the group."""
    for depth in GROUP_DEPTHS:
        if len(parts) >= depth and is_zarr_group_dir(parts[:depth]):
            return depth
    return None


def run_of(key: Key) -> str | None:
    return getattr(key, "run", None)


def iter_ancestors(key: Key) -> Iterable[Key]:
    """The run and voxel-spacing keys an entity implies (an S3 tree has no directory objects)."""
    run = run_of(key)
    if run is None or isinstance(key, RunKey):
        return ()
    out: list[Key] = [RunKey(run)]
    if key.kind in IN_VOXEL_SPACING:
        out.append(VoxelSpacingKey(run, key.voxel_size))  # type: ignore[union-attr]
    return out

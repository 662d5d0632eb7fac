"""The path grammar: every name a writer accepts parses back to itself; odd names are resolved or reported."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from copick_catalog.errors import InvalidNameError
from copick_catalog.index import grammar as layout
from copick_catalog.index.grammar import (
    DensityMapKey,
    FeatureKey,
    FilamentKey,
    Malformed,
    MeshKey,
    Parsed,
    PickKey,
    RunKey,
    SegKind,
    SegmentationKey,
    TomogramKey,
    VoxelSpacingKey,
)

OBJECTS = ("ribosome", "proteasome", "thyroglobulin-x.1", "apo-ferritin")

# Raw names as people type them: dots, dashes, unicode, whitespace, underscores, very long ones.
raw_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=80
) | st.sampled_from(["test.user", "mitochondria-üéêë", "my_user", "a b", "ribosome_v2", "x" * 200, "ÄÖÜ.42"])
run_names = st.text(
    alphabet=st.characters(whitelist_categories=("L", "N"), whitelist_characters="_-."), min_size=1, max_size=60
).filter(lambda s: not s.startswith(".") and s not in (".", ".."))
voxel_sizes = st.floats(min_value=0.1, max_value=1000, allow_nan=False).map(layout.normalize_voxel_size)


def writer_name(raw: str) -> str:
    """What a writer does with a raw name: sanitise (like copick) and check it reads back."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        name = layout.sanitize_name(raw)
    layout.check_name(name, "name")
    return name


def roundtrip(key: layout.Key) -> layout.Key:
    parsed = layout.parse(
        layout.path_of(key), OBJECTS, is_dir=key.kind in layout.ZARR_KINDS or (isinstance(key, DensityMapKey))
    )
    assert isinstance(parsed, Parsed), parsed
    return parsed.key


def _accepted(raw: str) -> str:
    try:
        return writer_name(raw)
    except InvalidNameError:
        assume(False)
        raise


@settings(max_examples=300, deadline=None)
@given(run=run_names, user=raw_names, session=raw_names, obj=raw_names)
def test_flat_annotations_roundtrip(run: str, user: str, session: str, obj: str) -> None:
    u, s, o = _accepted(user), _accepted(session), _accepted(obj)
    for cls in (PickKey, MeshKey, FilamentKey):
        key = cls(run, u, s, o)
        assert roundtrip(key) == key


@settings(max_examples=200, deadline=None)
@given(
    run=run_names,
    vs=voxel_sizes,
    user=raw_names,
    session=raw_names,
    name=raw_names,
    multilabel=st.booleans(),
    kind=st.sampled_from(list(SegKind)),
)
def test_segmentations_roundtrip(
    run: str, vs: float, user: str, session: str, name: str, multilabel: bool, kind: SegKind
) -> None:
    n = _accepted(name)
    assume(not n.endswith("multilabel"))
    key = SegmentationKey(run, vs, _accepted(user), _accepted(session), n, multilabel, kind)
    assert roundtrip(key) == key


@settings(max_examples=200, deadline=None)
@given(run=run_names, vs=voxel_sizes, tomo=raw_names, feature=raw_names)
def test_volumes_roundtrip(run: str, vs: float, tomo: str, feature: str) -> None:
    t, f = _accepted(tomo), _accepted(feature)
    assume("features" not in t)
    assert roundtrip(TomogramKey(run, vs, t)) == TomogramKey(run, vs, t)
    assert roundtrip(FeatureKey(run, vs, t, f)) == FeatureKey(run, vs, t, f)
    assert roundtrip(VoxelSpacingKey(run, vs)) == VoxelSpacingKey(run, vs)
    assert roundtrip(RunKey(run)) == RunKey(run)


def test_voxel_size_uses_three_decimals() -> None:
    assert layout.path_of(VoxelSpacingKey("TS_1", 7.84)) == "ExperimentRuns/TS_1/VoxelSpacing7.840"
    key = SegmentationKey("TS_1", 10, "u", "1", "membrane")
    assert layout.path_of(key) == "ExperimentRuns/TS_1/Segmentations/10.000_u_1_membrane.zarr"
    ml = SegmentationKey("TS_1", 10, "u", "1", "pred", True)
    assert layout.path_of(ml).endswith("10.000_u_1_pred-multilabel.zarr")  # copick's dash form


def test_sanitize_matches_copick_rules() -> None:
    with pytest.warns(UserWarning, match="sanitised"):
        assert layout.sanitize_name("my_user 7") == "my-user-7"
    assert layout.sanitize_name("__x__") == "x"
    assert layout.sanitize_name("test.user") == "test.user"
    with pytest.raises(InvalidNameError, match="empty"):
        layout.sanitize_name("___")


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "../x", "/abs", "", ".hidden", "a\\b", "x\x00y"])
def test_names_that_leave_the_root_are_refused(bad: str) -> None:
    with pytest.raises(InvalidNameError):
        layout.path_of(RunKey(bad))
    with pytest.raises(InvalidNameError):
        layout.path_of(PickKey("TS_1", bad, "1", "ribosome"))


def test_names_that_would_not_read_back_are_refused() -> None:
    with pytest.raises(InvalidNameError, match=r"contains '_'"):
        layout.path_of(PickKey("TS_1", "my_user", "1", "ribosome"))
    with pytest.raises(InvalidNameError, match="features"):
        layout.path_of(TomogramKey("TS_1", 10, "myfeatures"))
    with pytest.raises(InvalidNameError, match="too long"):
        layout.path_of(PickKey("TS_1", "u" * 300, "1", "ribosome"))


def test_copick_paths_parse() -> None:
    p = layout.parse("ExperimentRuns/TS_001/Picks/gapstop_0_ribosome.json", OBJECTS)
    assert p == Parsed(PickKey("TS_001", "gapstop", "0", "ribosome"))
    p = layout.parse("ExperimentRuns/TS_001/Segmentations/10.000_cellcanvas_0_prediction-multilabel.zarr", is_dir=True)
    assert p == Parsed(SegmentationKey("TS_001", 10.0, "cellcanvas", "0", "prediction", True))
    seed = layout.parse("ExperimentRuns/TS_001/Segmentations/10.000_u_1_pred_multilabel.zarr", is_dir=True)
    assert isinstance(seed, Parsed) and seed.key.is_multilabel and seed.key.name == "pred"  # type: ignore[union-attr]
    p = layout.parse("ExperimentRuns/TS_001/VoxelSpacing10.000/wbp_sobel_features.zarr", is_dir=True)
    assert p == Parsed(FeatureKey("TS_001", 10.0, "wbp", "sobel"))
    p = layout.parse("ExperimentRuns/TS_001/InstanceSegmentations/10.000_u_1_ribosome.zarr", is_dir=True)
    assert isinstance(p, Parsed) and p.key.seg_kind is SegKind.INSTANCE  # type: ignore[union-attr]
    assert layout.parse("Objects/proteasome.zarr", is_dir=True) == Parsed(DensityMapKey("proteasome"))
    assert layout.parse("ParticleMrcs/3_proteasome.mrc") == Parsed(DensityMapKey("proteasome", "mrc", "3"))
    assert layout.parse("ExperimentRuns/TS_001/.meta") == Parsed(RunKey("TS_001"))
    assert layout.parse("Croissant/metadata.json") is None
    assert layout.parse("ExperimentRuns/TS_001/Notes/readme.txt") is None


def test_odd_names_resolved_against_objects_or_reported() -> None:
    # extra underscore in the user id: the known object ends the stem, the session is the part before it
    p = layout.parse("ExperimentRuns/r/Picks/my_user_7_ribosome.json", OBJECTS)
    assert isinstance(p, Parsed) and p.key == PickKey("r", "my_user", "7", "ribosome") and p.note
    # an object with an underscore in the config still resolves
    p = layout.parse("ExperimentRuns/r/Picks/alice_1_ribo_v2.json", ("ribo_v2",))
    assert isinstance(p, Parsed) and p.key == PickKey("r", "alice", "1", "ribo_v2")
    # no known object ends it: reported, with the fix in the message
    m = layout.parse("ExperimentRuns/r/Picks/a_b_c_d.json", OBJECTS)
    assert isinstance(m, Malformed) and "rename" in m.reason
    m = layout.parse("ExperimentRuns/r/Picks/foo.json", OBJECTS)
    assert isinstance(m, Malformed)
    m = layout.parse("ExperimentRuns/r/Picks/a__ribosome.json", OBJECTS)
    assert isinstance(m, Malformed)
    m = layout.parse("ExperimentRuns/r/VoxelSpacingabc", OBJECTS)
    assert isinstance(m, Malformed) and "VoxelSpacing10.000" in m.reason
    m = layout.parse("ExperimentRuns/r/Segmentations/x_u_1_n.zarr", OBJECTS, is_dir=True)
    assert isinstance(m, Malformed)


@settings(max_examples=300, deadline=None)
@given(path=st.lists(st.text(min_size=0, max_size=20), min_size=1, max_size=6).map("/".join), is_dir=st.booleans())
def test_parse_never_raises(path: str, is_dir: bool) -> None:
    result = layout.parse(path, OBJECTS, is_dir=is_dir)
    assert result is None or isinstance(result, Parsed | Malformed)


def test_every_kind_spec_has_a_table_and_every_table_a_spec() -> None:
    from copick_catalog.catalog.schema import FILE_MODELS
    from copick_catalog.index.kinds import SPECS

    assert set(FILE_MODELS) == set(SPECS)
    assert all(model.__kind__ is kind for kind, model in FILE_MODELS.items())

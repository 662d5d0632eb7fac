"""Config models: copick's configs load unchanged; bad ones fail naming the field and the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from copick_catalog.catalog.catalog import build_roots
from copick_catalog.config import load_config, parse_config, save_config
from copick_catalog.errors import ConfigError, RootError

BASE = {
    "config_type": "filesystem",
    "name": "test",
    "pickable_objects": [
        {
            "name": "proteasome",
            "is_particle": True,
            "label": 1,
            "color": [255, 0, 0, 255],
            "go_id": "GO:0000502",
            "radius": 60,
            "map_threshold": 0.0418,
            "metadata": None,
        },
        {"name": "membrane", "is_particle": False, "label": 3},
    ],
    "overlay_root": "local:///data/overlay",
    "static_root": "s3://bucket/static/",
    "static_fs_args": {"key": "AKIA-SECRET", "secret": "hunter2", "endpoint_url": "http://127.0.0.1:9"},
    "some_future_key": {"kept": True},
}


def test_copick_config_loads_with_every_field(tmp_path: Path) -> None:
    cfg = parse_config(json.dumps(BASE))
    p = cfg.get_object("proteasome")
    assert p is not None and p.identifier == "GO:0000502" and p.metadata == {} and p.radius == 60
    assert cfg.get_object("membrane").color == (100, 100, 100, 255)  # type: ignore[union-attr]
    assert cfg.model_extra == {"some_future_key": {"kept": True}}
    # round-trips through save/load with the unknown key intact
    save_config(cfg, tmp_path / "c.json")
    again = load_config(tmp_path / "c.json")
    assert again.model_dump() == cfg.model_dump()


def test_credentials_are_redacted() -> None:
    red = parse_config(BASE).redacted()
    text = json.dumps(red)
    assert "hunter2" not in text and "AKIA-SECRET" not in text
    assert red["static_fs_args"]["endpoint_url"] == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"pickable_objects": [{"name": "x", "is_particle": True, "color": [1, 2, 3]}]}, "pickable_objects.0.color"),
        ({"pickable_objects": [{"name": "x", "is_particle": True, "label": 0}]}, "pickable_objects.0.label"),
        ({"pickable_objects": [{"is_particle": True}]}, "pickable_objects.0.name"),
        ({"config_type": "cryoet_data_portal"}, "config_type"),
        ({"overlay_root": None}, "overlay_root"),
    ],
)
def test_bad_config_names_the_field_and_file(tmp_path: Path, change: dict, field: str) -> None:
    path = tmp_path / "copick_config.json"
    path.write_text(json.dumps({**BASE, **change}))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value) and f"field '{field}" in str(exc.value)


def test_unreadable_and_malformed_configs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ nope")
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON .*line 1"):
        load_config(bad)


def test_root_kinds(tmp_path: Path) -> None:
    for url in ("local:///data/x", "file:///data/x", "/data/x"):
        roots = build_roots(parse_config({**BASE, "static_root": None, "overlay_root": url}), tmp_path)
        assert list(roots) == ["overlay"] and roots["overlay"].local_path == Path("/data/x")
    rel = build_roots(parse_config({**BASE, "static_root": None, "overlay_root": "proj/overlay"}), tmp_path)
    assert rel["overlay"].local_path == tmp_path / "proj/overlay"  # relative to the config's folder
    same = build_roots(parse_config({**BASE, "static_root": "/data/x", "overlay_root": "local:///data/x"}), tmp_path)
    assert list(same) == ["overlay"]  # static == overlay is one layer, as in copick
    with pytest.raises(RootError, match="unsupported URL scheme 'nosuch'"):
        build_roots(parse_config({**BASE, "static_root": None, "overlay_root": "nosuch://x/y"}), tmp_path)


def test_object_names_copick_refuses_load_with_warning() -> None:
    with pytest.warns(UserWarning, match="copick itself will refuse"):
        cfg = parse_config({**BASE, "pickable_objects": [{"name": "ribo_v2", "is_particle": True}]})
    assert cfg.object_names == ["ribo_v2"]

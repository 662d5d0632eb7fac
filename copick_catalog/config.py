"""Pydantic models of ``copick_config.json``, compatible with what the copick package writes.

The catalog must index any project copick can open, so reading is lenient where copick is
lenient (unknown keys are kept, not dropped) and strict only where a bad value would make the
project unusable (no overlay root, a malformed colour). Object names that copick's own validator
would refuse are accepted with a warning: refusing them would make the whole project unindexable
over one odd entry, and the path grammar can still resolve them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, field_validator

from .errors import ConfigError
from .index.grammar import FORBIDDEN_NAME_CHARS
from .secrets import redact

#: A config is a few KB; anything much bigger is not one (and would be read into memory whole).
MAX_CONFIG_BYTES = 64 * 1024**2
#: Labels are stored as 32-bit integers (and are mask values, where 65,535 is already generous).
MAX_LABEL = 2**31 - 1


class PickableObject(BaseModel):
    """One entry of ``pickable_objects``: a particle or segmentation target."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str
    is_particle: bool
    label: int | None = 1
    color: tuple[int, int, int, int] | None = (100, 100, 100, 255)
    emdb_id: str | None = None
    pdb_id: str | None = None
    identifier: str | None = Field(default=None, validation_alias=AliasChoices("identifier", "go_id"))
    map_threshold: FiniteFloat | None = None
    radius: FiniteFloat | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("pickable object name cannot be empty")
        if FORBIDDEN_NAME_CHARS.search(value):
            warnings.warn(
                f"pickable object name {value!r} contains characters copick does not allow "
                '(underscore, whitespace or one of <>:"/\\|?*); copick itself will refuse this config',
                UserWarning,
                stacklevel=2,
            )
        return value

    @field_validator("label")
    @classmethod
    def _label(cls, value: int | None) -> int | None:
        if value == 0:
            raise ValueError("label 0 is reserved for background; use 1 or higher")
        if value is not None and not 1 <= value <= MAX_LABEL:
            raise ValueError(f"label must be between 1 and {MAX_LABEL}")
        return value

    @field_validator("color")
    @classmethod
    def _color(cls, value: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if value is not None and not all(0 <= c <= 255 for c in value):
            raise ValueError("color components must be integers in 0..255 (RGBA)")
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: Any) -> Any:
        return {} if value is None else value


class CopickConfig(BaseModel):
    """A filesystem copick project config (``config_type: filesystem``).

    Unknown keys are kept (``extra="allow"``) so a config round-trips unchanged through us.
    """

    model_config = ConfigDict(extra="allow")

    config_type: str = "filesystem"
    name: str = "CoPick"
    description: str = "Let's CoPick!"
    version: str = "0.2.0"
    pickable_objects: list[PickableObject]
    user_id: str | None = None
    session_id: str | None = None
    overlay_root: str
    static_root: str | None = None
    overlay_fs_args: dict[str, Any] = Field(default_factory=dict)
    static_fs_args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("config_type")
    @classmethod
    def _config_type(cls, value: str) -> str:
        if value != "filesystem":
            raise ValueError(
                f"config_type {value!r} is not supported; copick-catalog indexes filesystem projects "
                "(static_root/overlay_root)"
            )
        return value

    @field_validator("overlay_fs_args", "static_fs_args", mode="before")
    @classmethod
    def _fs_args(cls, value: Any) -> Any:
        return {} if value is None else value

    def get_object(self, name: str) -> PickableObject | None:
        """The pickable object called ``name``, or None."""
        for obj in self.pickable_objects:
            if obj.name == name:
                return obj
        return None

    @property
    def object_names(self) -> list[str]:
        return [o.name for o in self.pickable_objects]

    def redacted(self) -> dict[str, Any]:
        """The config as JSON-able data with credentials (by key name, and URL user info) masked."""
        return redact(self.model_dump(mode="json", by_alias=False))  # type: ignore[no-any-return]


def _format_validation_error(path: str, exc: ValidationError) -> str:
    fields = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        fields.append(f"field '{where}': {err['msg']}")
    more = f" (and {len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
    return f"{path}: invalid copick config: {'; '.join(fields)}{more}; fix these fields and try again"


def parse_config(data: str | bytes | dict[str, Any], source: str = "<string>") -> CopickConfig:
    """Validate config data; errors name the source file and each bad field."""
    if not isinstance(data, dict):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                "fix the syntax and try again"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"{source}: not UTF-8 text; save the config as UTF-8 JSON") from None
        except RecursionError:
            raise ConfigError(f"{source}: JSON nested too deeply to be a copick config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a copick config must be a JSON object, got {type(data).__name__}")
    if "overlay_root" not in data and "static_root" in data:
        raise ConfigError(f"{source}: field 'overlay_root' is required (the writable root of the project)")
    try:
        return CopickConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from None


def load_config(path: str | Path) -> CopickConfig:
    """Read and validate a config file from local disk."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a directory; pass the path of its copick_config.json")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes is too big for a copick config")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; pass the path of a copick_config.json") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror}); check its permissions") from None
    return parse_config(data, source=str(path))


def save_config(config: CopickConfig, path: str | Path) -> None:
    """Write a config the way copick does (indent 4, every field), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(config.model_dump(mode="json"), indent=4), encoding="utf-8")
    tmp.replace(path)

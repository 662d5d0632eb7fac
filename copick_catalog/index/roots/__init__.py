"""Project roots behind one interface: :class:`LocalRoot`, :class:`FsspecRoot`, :class:`S3Root`.

:func:`open_root` turns a config URL into the right one; everything else uses the :class:`Root`
interface and never asks which storage it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .base import Backup, Entry, ListingStats, Root
from .local import LocalRoot
from .remote import STRATEGIES, FsspecRoot, WalkSettings

LOCAL_PROTOCOLS = ("", "file", "local")


def split_protocol(url: str) -> tuple[str, str]:
    """``("s3", "bucket/p")`` for ``s3://bucket/p``; ``("", path)`` for a plain path."""
    if "://" in url:
        proto, rest = url.split("://", 1)
        return proto.lower(), rest
    return "", url


def open_root(
    url: str,
    layer: str,
    fs_args: dict[str, Any] | None = None,
    base_dir: Path | None = None,
    settings: WalkSettings | None = None,
) -> Root:
    """The root for a config URL; relative local paths are taken relative to ``base_dir`` (the config's folder)."""
    proto, rest = split_protocol(url.strip())
    if proto in LOCAL_PROTOCOLS:
        path = Path(rest)
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return LocalRoot(Path(os.path.normpath(path)), layer, fs_args)
    if proto in ("s3", "s3a"):
        from .s3 import S3Root

        return S3Root(url.strip(), layer, fs_args, settings)
    return FsspecRoot(url.strip(), proto, layer, fs_args, settings)


__all__ = [
    "STRATEGIES",
    "Backup",
    "Entry",
    "FsspecRoot",
    "ListingStats",
    "LocalRoot",
    "Root",
    "WalkSettings",
    "open_root",
    "split_protocol",
]

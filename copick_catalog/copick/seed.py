"""The seed specification's spellings of ``new_*``, on top of copick's own.

The original copick seed (``spec/copick-seed.md``) spells three constructors differently from the
copick package, and people have code written against both:

* ``new_pick(user_id, session_id, object_name)`` (seed) next to copick's
  ``new_picks(object_name, session_id, user_id=None, exist_ok=False)``: different names, no clash.
* ``new_mesh``: the seed's ``(user_id, session_id, object_name)`` against copick's
  ``(object_name, session_id, user_id=None, exist_ok=False)``. Keywords always work. Three positional
  arguments are read in whichever order puts a known pickable object in the object slot (the seed's if
  the *last* one is an object, copick's if the *first* one is; ambiguous calls are refused with a message
  asking for keywords); one or two positional arguments are copick's ``(object_name, session_id)``;
  ``new_mesh(user, session, object_name=...)`` is the seed's.
* ``new_segmentation``: copick's ``(voxel_size, name, session_id, is_multilabel=False, user_id=None,
  exist_ok=False)`` when the first argument is a number; the seed's ``(user_id, session_id, voxel_size,
  name, is_multilabel=False)`` when it is a string.

Everything then goes to copick's own methods, so the checks, the sanitising and the files are copick's.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

from ..index.grammar import FORBIDDEN_NAME_CHARS


class SeedRunMixin:
    """Mixed into the catalog's run class, in front of copick's ``CopickRunFSSpec``."""

    root: Any

    def new_pick(
        self,
        user_id: str | None = None,
        session_id: str | None = None,
        object_name: str | None = None,
        exist_ok: bool = False,
    ) -> Any:
        """The seed's spelling: ``new_pick(user_id, session_id, object_name)``; copick's is ``new_picks``."""
        if object_name is None:
            raise TypeError("new_pick(user_id, session_id, object_name): object_name is required")
        return self.new_picks(object_name, session_id, user_id=user_id, exist_ok=exist_ok)  # type: ignore[attr-defined]

    def new_mesh(
        self,
        *args: Any,
        object_name: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        exist_ok: bool = False,
        **kwargs: Any,
    ) -> Any:
        """copick's ``new_mesh(object_name, session_id, user_id=None)`` or the seed's ``(user_id, session_id,
        object_name)`` (see the module docstring for how a positional call is told apart)."""
        obj, sid, uid = self._mesh_args(args, object_name, session_id, user_id)
        self._before_new("meshes", obj, sid, uid)
        return super().new_mesh(obj, sid, user_id=uid, exist_ok=exist_ok, **kwargs)  # type: ignore[misc]

    def _before_new(self, kind: str, object_name: Any, session_id: Any, user_id: Any) -> None:
        """Called before copick creates a file of ``kind``; the catalog's run checks for a file already there."""

    def _is_object(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        names = [o.name for o in self.root.config.pickable_objects]
        return value in names or FORBIDDEN_NAME_CHARS.sub("-", value).strip("-") in names

    def _mesh_args(
        self, args: tuple[Any, ...], object_name: Any, session_id: Any, user_id: Any
    ) -> tuple[Any, Any, Any]:
        """Map positional arguments of either spelling onto (object_name, session_id, user_id)."""
        if len(args) > 3:
            raise TypeError(f"new_mesh takes at most 3 positional arguments ({len(args)} given)")
        if object_name is not None:
            order: tuple[str, ...] = ("user_id", "session_id")  # new_mesh(user, session, object_name=...)
            if len(args) > 2:
                raise TypeError("new_mesh: object_name given twice (positionally and by keyword)")
        elif len(args) == 3:
            first, last = self._is_object(args[0]), self._is_object(args[2])
            if last and not first:
                order = ("user_id", "session_id", "object_name")  # the seed's
            elif first and (not last or args[0] == args[2]):
                order = ("object_name", "session_id", "user_id")  # copick's
            else:
                what = "both" if first else "neither"
                raise TypeError(
                    f"new_mesh{args!r}: {what} of the first and last arguments is a pickable object, so the "
                    "argument order is ambiguous; call it with keywords, e.g. "
                    "new_mesh(object_name=..., session_id=..., user_id=...)"
                )
        else:
            order = ("object_name", "session_id", "user_id")[: len(args)]  # copick's
        got: dict[str, Any] = {"object_name": object_name, "session_id": session_id, "user_id": user_id}
        for key, value in zip(order, args, strict=False):
            if got[key] is not None:
                raise TypeError(f"new_mesh: {key} given twice (positionally and by keyword)")
            got[key] = value
        if got["object_name"] is None:
            raise TypeError("new_mesh: object_name is required")
        if got["session_id"] is None:
            raise TypeError("new_mesh: session_id is required (use '0' for tool output)")
        return got["object_name"], got["session_id"], got["user_id"]

    def _segmentation_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """copick's or the seed's positional order for ``new_segmentation``, as copick's keyword arguments."""
        got: dict[str, Any] = {
            "voxel_size": None,
            "name": None,
            "session_id": None,
            "is_multilabel": False,
            "user_id": None,
            "exist_ok": False,
            "is_instance": False,
            "is_panoptic": False,
        }
        if args and isinstance(args[0], Real) and not isinstance(args[0], bool):
            order: tuple[str, ...] = ("voxel_size", "name", "session_id", "is_multilabel", "user_id", "exist_ok")
        else:
            order = ("user_id", "session_id", "voxel_size", "name", "is_multilabel", "exist_ok")
        if len(args) > len(order):
            raise TypeError(f"new_segmentation takes at most {len(order)} positional arguments")
        given = set()
        for key, value in zip(order, args, strict=False):
            got[key] = value
            given.add(key)
        for key, value in kwargs.items():
            if key in given:
                raise TypeError(f"new_segmentation: {key} given twice (positionally and by keyword)")
            if key not in got:
                raise TypeError(f"new_segmentation() got an unexpected keyword argument {key!r}")
            got[key] = value
        if got["voxel_size"] is None or got["name"] is None or got["session_id"] is None:
            raise TypeError(
                "new_segmentation needs voxel_size, name and session_id (copick: new_segmentation("
                "voxel_size, name, session_id, is_multilabel=False, user_id=None))"
            )
        got["voxel_size"] = float(got["voxel_size"])
        got["is_multilabel"] = bool(got["is_multilabel"])
        return got


__all__ = ["SeedRunMixin"]

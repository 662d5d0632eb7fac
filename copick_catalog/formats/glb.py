"""GLB (binary glTF) meshes: vertex and face counts from the header, and trimesh scenes.

copick stores meshes as GLB with vertices in Å and loads them as a ``trimesh.Scene``. The indexer
needs only the counts, which the JSON chunk at the start of the file states, so it never decodes
the vertex buffers.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

from ..errors import PayloadError

#: Largest vertex or index count believed from a header (the catalog stores counts as 32-bit integers).
MAX_COUNT = 2**31 - 1
_FIX = "re-export the mesh as .glb, or remove the file, then index again"


def _bad(path: str, what: str) -> PayloadError:
    return PayloadError(path, f"{what}; {_FIX}")


def _count(accessors: list[Any], index: Any, path: str) -> int:
    """``accessors[index].count``, checked: an index must be an integer in range, a count a sane integer."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(accessors):
        raise _bad(path, f"GLB accessor index {index!r:.40} is not one of the {len(accessors)} accessors")
    accessor = accessors[index]
    if not isinstance(accessor, dict):
        raise _bad(path, f"GLB accessor {index} is not a JSON object")
    count = accessor.get("count", 0)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
        raise _bad(path, f"GLB accessor {index} has count {count!r:.40}, not a plausible number of elements")
    return count


def read_glb_counts(data: bytes, path: str) -> tuple[int, int]:
    """Vertex and triangle counts from a GLB's JSON chunk, without decoding the buffers."""
    if len(data) < 20 or data[:4] != b"glTF":
        raise PayloadError(path, "not a binary glTF (GLB) file; export meshes as .glb")
    _magic, version, length = struct.unpack_from("<4sII", data, 0)
    if version != 2:
        raise _bad(path, f"GLB container version {version}; only glTF 2.0 (version 2) is read by trimesh and copick")
    chunk_len, chunk_type = struct.unpack_from("<II", data, 12)
    if chunk_type != 0x4E4F534A or 20 + chunk_len > len(data) or length > len(data):
        raise PayloadError(path, "truncated GLB file (header says more bytes than the file has)")
    try:
        gltf = json.loads(data[20 : 20 + chunk_len])
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise _bad(path, f"GLB JSON chunk is invalid ({reason})") from None
    if not isinstance(gltf, dict):
        raise _bad(path, f"GLB JSON chunk must be a JSON object, not {type(gltf).__name__}")
    accessors = gltf.get("accessors", [])
    meshes = gltf.get("meshes", [])
    if not isinstance(accessors, list) or not isinstance(meshes, list):
        raise _bad(path, "GLB 'accessors' and 'meshes' must be lists")
    n_vertices = n_faces = 0
    for mesh in meshes:
        prims = mesh.get("primitives") if isinstance(mesh, dict) else None
        if not isinstance(prims, list):
            continue
        for prim in prims:
            if not isinstance(prim, dict):
                continue
            attrs = prim.get("attributes") or {}
            pos = attrs.get("POSITION") if isinstance(attrs, dict) else None
            n_pos = _count(accessors, pos, path) if pos is not None else 0
            n_vertices += n_pos
            if prim.get("mode", 4) == 4:
                idx = prim.get("indices")
                n_faces += (_count(accessors, idx, path) if idx is not None else n_pos) // 3
    if n_vertices > MAX_COUNT or n_faces > MAX_COUNT:
        raise _bad(path, f"GLB totals ({n_vertices} vertices, {n_faces} faces) are not plausible")
    return n_vertices, n_faces


def load_scene(data: bytes) -> Any:
    import trimesh

    return trimesh.load(io.BytesIO(data), file_type="glb", force="scene")


def scene_to_glb(scene_or_mesh: Any) -> bytes:
    import trimesh

    scene = scene_or_mesh if isinstance(scene_or_mesh, trimesh.Scene) else trimesh.Scene(scene_or_mesh)
    return scene.export(file_type="glb")


# ------------------------------------------------------------------------------------------

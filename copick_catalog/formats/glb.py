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


def read_glb_counts(data: bytes, path: str) -> tuple[int, int]:
    """Vertex and triangle counts from a GLB's JSON chunk, without decoding the buffers."""
    if len(data) < 20 or data[:4] != b"glTF":
        raise PayloadError(path, "not a binary glTF (GLB) file; export meshes as .glb")
    _magic, _version, length = struct.unpack_from("<4sII", data, 0)
    chunk_len, chunk_type = struct.unpack_from("<II", data, 12)
    if chunk_type != 0x4E4F534A or 20 + chunk_len > len(data) or length > len(data):
        raise PayloadError(path, "truncated GLB file (header says more bytes than the file has)")
    try:
        gltf = json.loads(data[20 : 20 + chunk_len])
    except json.JSONDecodeError as exc:
        raise PayloadError(path, f"GLB JSON chunk is invalid ({exc})") from None
    accessors = gltf.get("accessors") or []
    n_vertices = n_faces = 0
    for mesh in gltf.get("meshes") or []:
        for prim in mesh.get("primitives") or []:
            pos = (prim.get("attributes") or {}).get("POSITION")
            if pos is not None and pos < len(accessors):
                n_vertices += int(accessors[pos].get("count", 0))
            idx = prim.get("indices")
            if prim.get("mode", 4) == 4:
                if idx is not None and idx < len(accessors):
                    n_faces += int(accessors[idx].get("count", 0)) // 3
                elif pos is not None and pos < len(accessors):
                    n_faces += int(accessors[pos].get("count", 0)) // 3
    return n_vertices, n_faces


def load_scene(data: bytes) -> Any:
    import trimesh

    return trimesh.load(io.BytesIO(data), file_type="glb", force="scene")


def scene_to_glb(scene_or_mesh: Any) -> bytes:
    import trimesh

    scene = scene_or_mesh if isinstance(scene_or_mesh, trimesh.Scene) else trimesh.Scene(scene_or_mesh)
    return scene.export(file_type="glb")


# ------------------------------------------------------------------------------------------

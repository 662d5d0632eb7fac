"""MRC density maps (the seed's ``ParticleMrcs/<id>_<name>.mrc``): the 1024-byte header and the volume."""

from __future__ import annotations

import math
import struct

import numpy as np

from ..errors import PayloadError
from .zarr import ArrayInfo

_MRC_MODES = {0: "int8", 1: "int16", 2: "float32", 4: "complex64", 6: "uint16", 12: "float16"}


def read_mrc_info(header: bytes, path: str) -> ArrayInfo:
    if len(header) < 1024:
        raise PayloadError(path, "MRC file shorter than its 1024-byte header")
    nx, ny, nz, mode = struct.unpack_from("<4i", header, 0)
    if header[208:211] != b"MAP" or mode not in _MRC_MODES or min(nx, ny, nz) <= 0:
        raise PayloadError(path, "not a valid MRC2014 file (bad MAP tag, mode or dimensions)")
    mx = struct.unpack_from("<i", header, 28)[0]
    xlen = struct.unpack_from("<f", header, 40)[0]
    vs = float(xlen / mx) if mx else None
    if vs is not None and not (math.isfinite(vs) and vs > 0):
        vs = None  # a header without a usable pixel size: the map is still indexed, without one
    return ArrayInfo([nz, ny, nx], _MRC_MODES[mode], 1, None, vs)


# ------------------------------------------------------------------------------------------


def read_mrc_array(data: bytes, path: str) -> np.ndarray:
    """The volume of an MRC file as a ``(z, y, x)`` array (for the seed's ParticleMrcs maps)."""
    info = read_mrc_info(data[:1024], path)
    ext = struct.unpack_from("<i", data, 92)[0]
    offset = 1024 + max(ext, 0)
    assert info.shape is not None
    count = int(np.prod(info.shape))
    arr = np.frombuffer(data, dtype=np.dtype(info.dtype).newbyteorder("<"), count=count, offset=offset)
    return arr.reshape(info.shape)

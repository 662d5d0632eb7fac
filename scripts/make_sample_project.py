"""Write a generated copick sample project: ``python scripts/make_sample_project.py --runs N --out DIR``.

A thin wrapper over :func:`copick_catalog.sample.make_sample_project` (also ``copick-catalog sample``):
static tomograms as OME-NGFF multiscale zarr, features, picks for several users/sessions/objects,
GLB meshes and segmentations, fast enough for 5,000 runs (tomograms on a few runs only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from copick_catalog.sample import make_sample_project


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--picks-per-run", type=int, default=12)
    ap.add_argument("--tomogram-runs", type=int, default=3, help="runs that get tomograms, meshes, segmentations")
    ap.add_argument("--size", type=int, default=64, help="tomogram edge length in voxels")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t = time.perf_counter()
    s = make_sample_project(
        args.out,
        runs=args.runs,
        picks_per_run=args.picks_per_run,
        tomogram_runs=args.tomogram_runs,
        size=args.size,
        seed=args.seed,
    )
    print(
        f"{s.runs} runs, {s.pick_files} pick files ({s.points} points), {s.tomograms} tomograms "
        f"in {time.perf_counter() - t:.1f} s; config: {s.config}"
    )


if __name__ == "__main__":
    main()

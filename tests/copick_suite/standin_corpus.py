"""Build an offline stand-in for copick's Zenodo test corpus (``sample_project.zip``).

Usage:  <venv>/bin/python make_standin_corpus.py OUT_DIR [--minimal]

Writes ``OUT_DIR/sample_project.zip`` and prints ``md5:<hex>`` on the last line. Point copick's test suite at it with
``COPICK_TEST_DATA_CACHE=OUT_DIR COPICK_TEST_DATA_DIGEST=md5:<hex>`` (see tests/corpus_registry.py and
tests/conftest.py::ensure_test_data); pooch then finds a file whose hash matches and never goes to the network.

The archive holds what ensure_test_data() requires (sample_project/, sample_overlay/, filesystem.json,
filesystem_overlay_only.json, and with zarr>=3 also the *_v3 twins) and a synthetic project written with the venv's
own copick whose names, counts, shapes and array sums follow the assertions of copick's tests/test_filesystem.py
(the real corpus is not reachable from here). Array values are synthetic: a few voxels carry the values that make
the sums the tests check come out right. Stores are written in the venv's native Zarr format (v2 with copick 1.x,
v3 with copick 2.x), so in copick 2's "v2" mode the legacy tree nevertheless holds v3 stores.
"""

import hashlib
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import copick
import numpy as np

ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
PLACEHOLDER = "local:///PATH/TO/EXTRACTED"

OBJECTS = [
    {
        "name": "proteasome",
        "is_particle": True,
        "pdb_id": "3J9I",
        "label": 1,
        "color": [255, 0, 0, 255],
        "radius": 60,
        "map_threshold": 0.0418,
    },
    {
        "name": "ribosome",
        "is_particle": True,
        "pdb_id": "7P6Z",
        "label": 2,
        "color": [0, 255, 0, 255],
        "radius": 150,
        "map_threshold": 0.037,
    },
    {"name": "membrane", "is_particle": False, "label": 3, "color": [0, 0, 0, 255]},
]

# tests/test_filesystem.py fixtures ts_001_ribosome_gapstop_points / _transformations
GAPSTOP_POINTS = np.array(
    [
        [13.109512186388912, 74.71185201921038, 202.47507943202584],
        [631.4709314294199, 216.35459177569777, 153.51979459358296],
        [13.269106483949642, 493.1507625056122, 191.96928603555477],
        [295.3857864878723, 48.00127558957804, 12.379751870875282],
        [204.07695344548807, 363.70538811345045, 421.5631049171766],
        [341.5641484136662, 583.1178654724652, 265.92234830389776],
        [595.6901903739324, 152.54150479358174, 269.050095901217],
        [414.749742830462, 33.87702343343186, 149.04501288274474],
        [230.77112217392795, 158.07881774104047, 33.889195589406285],
        [205.03836780107628, 191.17304087417068, 17.748902885347206],
    ],
)
GAPSTOP_TRANSFORMS = np.array(
    [
        [
            [0.91082157, 0.41183225, 0.02825357, 2.04080334],
            [0.39883888, -0.86030307, -0.31749989, -1.22192711],
            [-0.10645006, 0.30045437, -0.9478373, -4.95620327],
            [0.0, 0.0, 0.0, 1.0],
        ],
        [
            [0.25494658, -0.930823, 0.26186024, -4.15673036],
            [0.07354863, 0.28869173, 0.95459294, 1.73078736],
            [-0.96415395, -0.22411074, 0.14206172, -0.88387753],
            [0.0, 0.0, 0.0, 1.0],
        ],
        [
            [0.97406863, -0.12313085, -0.18981335, -1.54048992],
            [0.10487541, 0.98909245, -0.10342766, -4.39372889],
            [0.20047809, 0.08083889, 0.97635732, -1.8710075],
            [0.0, 0.0, 0.0, 1.0],
        ],
        [
            [0.63125354, 0.05558002, -0.77358247, -0.27267958],
            [0.26806113, 0.92032357, 0.28486444, 1.45023474],
            [0.72777895, -0.38718908, 0.56605867, -1.47745371],
            [0.0, 0.0, 0.0, 1.0],
        ],
        [
            [-0.16909497, -0.31483618, -0.93396203, 3.25622553],
            [0.98550232, -0.04068504, -0.16471158, 3.51267799],
            [0.01385888, -0.94827365, 0.31715142, -0.50734273],
            [0.0, 0.0, 0.0, 1.0],
        ],
        [
            [-0.46587729, 0.80999162, 0.35619085, 2.20399113],
            [0.87365849, 0.48488946, 0.04003821, -4.95970857],
            [-0.14028257, 0.32984205, -0.93355504, 2.89001954],
            [0.0, 0.0, 0.0, 1.0],
        ],
        [
            [-0.12243006, 0.91735533, 0.37877445, 2.32553322],
            [-0.77156017, -0.32802754, 0.54506223, 3.06393629],
            [0.62426419, -0.22551528, 0.74795526, -2.55255873],
            [0.0, 0.0, 0.0, 1.0],
        ],
        [
            [0.704833, -0.70612128, -0.06784677, -1.28122836],
            [0.70160862, 0.70803464, -0.08020155, -1.33420528],
            [0.10466989, 0.00892682, 0.99446696, -2.85401946],
            [0.0, 0.0, 0.0, 1.0],
        ],
        [
            [0.19161049, 0.75988339, -0.62117843, -4.11172068],
            [-0.57053738, -0.42874731, -0.7004733, -2.50187213],
            [-0.79860661, 0.48862355, 0.3513894, 3.90473263],
            [0.0, 0.0, 0.0, 1.0],
        ],
        [
            [0.40646443, 0.88858526, 0.21260974, 2.53815537],
            [-0.66079699, 0.44660241, -0.60323597, 4.90033419],
            [-0.63097861, 0.10470209, 0.76870246, -4.43535779],
            [0.0, 0.0, 0.0, 1.0],
        ],
    ],
)


def _config(**roots):
    return {
        "config_type": "filesystem",
        "name": "test",
        "description": "A test project.",
        "version": "1.0.0",
        "pickable_objects": OBJECTS,
        **roots,
    }


def _sphere(shape, center, radius):
    zz, yy, xx = np.indices(shape)
    return (zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2 <= radius**2


def _write_features(feat, data):
    """copick 2.x has CopickFeatures.from_numpy; copick 1.x writes the OME-Zarr pyramid with copick.util.ome."""
    if hasattr(feat, "from_numpy"):
        feat.from_numpy(data)
    else:
        from copick.util.ome import volume_pyramid, write_ome_zarr_3d

        write_ome_zarr_3d(feat.zarr(), volume_pyramid(data, feat.tomogram.voxel_spacing.voxel_size, 1))


def _rng_points(rng, n, extent=630.0):
    return rng.uniform(5.0, extent, size=(n, 3))


def build_project(data_dir: Path) -> None:
    cfg = _config(overlay_root="local://" + str(data_dir), overlay_fs_args={"auto_mkdir": True})
    cfg_path = data_dir.parent / "_build.json"
    cfg_path.write_text(json.dumps(cfg))
    root = copick.from_file(str(cfg_path))
    rng = np.random.default_rng(1234)

    # Objects/proteasome.zarr: (42, 36, 36); total 1029.2904052734375, [10:20]^3 = 168.116912842
    dens = np.zeros((42, 36, 36), dtype=np.float32)
    dens[15, 15, 15] = np.float32(168.116912842)
    dens[0, 0, 0] = np.float32(1029.2904052734375 - float(np.float32(168.116912842)))
    root.get_object("proteasome").from_numpy(dens, voxel_size=10.0)
    ribo = np.zeros((40, 40, 40), dtype=np.float32)
    ribo[_sphere(ribo.shape, (20, 20, 20), 12)] = 1.0
    root.get_object("ribosome").from_numpy(ribo, voxel_size=10.0)

    for name in ("TS_001", "TS_002", "TS_003"):
        run = root.new_run(name)
        vs10 = run.new_voxel_spacing(10.0)
        wbp = vs10.new_tomogram("wbp")
        wbp.from_numpy(rng.normal(size=(64, 64, 64)).astype(np.float32), levels=3)
        if name == "TS_001":
            # denoised: total 8192.0, [z10:40, y50:60, x0:30] = 30.0 (30 ones inside, 8162 outside)
            den = np.zeros((64, 64, 64), dtype=np.float32)
            region = np.zeros_like(den, dtype=bool)
            region[10:40, 50:60, 0:30] = True
            inside = np.argwhere(region)[:30]
            den[tuple(inside.T)] = 1.0
            outside = np.argwhere(~region)[:8162]
            den[tuple(outside.T)] = 1.0
            vs10.new_tomogram("denoised").from_numpy(den, levels=3)
            # wbp_sobel_features.zarr: total 20619.8125, [20:40]^3 = 563.36730957
            sob = np.zeros((64, 64, 64), dtype=np.float32)
            sob[30, 30, 30] = np.float32(563.36730957)
            sob[0, 0, 0] = np.float32(20000.0)
            sob[63, 63, 63] = np.float32(56.4451904296875)
            _write_features(wbp.new_features("sobel"), sob)
            _write_features(wbp.new_features("edge"), np.abs(rng.normal(size=(64, 64, 64))).astype(np.float32))
            vs20 = run.new_voxel_spacing(20.0)
            vs20.new_tomogram("wbp").from_numpy(rng.normal(size=(32, 32, 32)).astype(np.float32), levels=2)

            # Picks (static tree): tool = pytom/0, gapstop/0; user = test.user/1234 x2, ArtiaX/19
            run.new_picks("ribosome", "0", "gapstop").from_numpy(GAPSTOP_POINTS, GAPSTOP_TRANSFORMS)
            run.new_picks("proteasome", "0", "pytom").from_numpy(_rng_points(rng, 8))
            run.new_picks("ribosome", "1234", "test.user").from_numpy(_rng_points(rng, 4))
            run.new_picks("proteasome", "1234", "test.user").from_numpy(_rng_points(rng, 3))
            run.new_picks("proteasome", "19", "ArtiaX").from_numpy(_rng_points(rng, 5))

            # Meshes: membrain/0 membrane, user.test/321 proteasome, gapstop/0 ribosome
            import trimesh

            for obj, sess, user, r in (
                ("membrane", "0", "membrain", 200.0),
                ("proteasome", "321", "user.test", 60.0),
                ("ribosome", "0", "gapstop", 150.0),
            ):
                m = run.new_mesh(obj, sess, user)
                m.mesh = trimesh.creation.icosphere(subdivisions=2, radius=r).scene()
                m.store()

            # Segmentations: prediction/painting multilabel @10, membrane binary @20 (64^3, total 24576, [20:40]^3 426)
            lab = np.zeros((64, 64, 64), dtype=np.uint8)
            lab[_sphere(lab.shape, (20, 20, 20), 8)] = 1
            lab[_sphere(lab.shape, (44, 44, 44), 10)] = 2
            lab[0:4, :, :] = 3
            run.new_segmentation(10.0, "prediction", "0", True, user_id="cellcanvas").from_numpy(lab, levels=3)
            run.new_segmentation(10.0, "painting", "123", True, user_id="test.user").from_numpy(
                lab[::-1].copy(), levels=3
            )
            mem = np.zeros((64, 64, 64), dtype=np.uint8)
            sub = np.zeros_like(mem, dtype=bool)
            sub[20:40, 20:40, 20:40] = True
            mem[tuple(np.argwhere(sub)[:426].T)] = 1
            mem[tuple(np.argwhere(~sub)[: 24576 - 426].T)] = 1
            run.new_segmentation(20.0, "membrane", "0", False, user_id="membrain").from_numpy(mem, levels=3)
        else:
            run.new_picks("ribosome", "0", "gapstop").from_numpy(_rng_points(rng, 6))
            run.new_picks("proteasome", "0", "pytom").from_numpy(_rng_points(rng, 4))
            m = run.new_mesh("membrane", "0", "membrain")
            import trimesh

            m.mesh = trimesh.creation.icosphere(subdivisions=1, radius=100.0).scene()
            m.store()
            lab = np.zeros((64, 64, 64), dtype=np.uint8)
            lab[_sphere(lab.shape, (32, 32, 32), 9)] = 2
            run.new_segmentation(10.0, "prediction", "0", True, user_id="cellcanvas").from_numpy(lab, levels=3)

        if name == "TS_002":
            # tests/scripts/regenerate_sample_zip.py::add_segmentation_type_fixtures
            shape = (64, 64, 64)
            ribosomes = np.zeros(shape, dtype=np.uint16)
            for iid, center in enumerate([(16, 16, 16), (16, 44, 40), (40, 20, 44)], start=1):
                ribosomes[_sphere(shape, center, 7)] = iid
            labels = np.zeros(shape, dtype=np.uint16)
            instances = np.zeros(shape, dtype=np.uint16)
            labels[52:58, :, :] = root.get_object("membrane").label
            labels[ribosomes > 0] = root.get_object("ribosome").label
            instances[ribosomes > 0] = ribosomes[ribosomes > 0]
            prot = _sphere(shape, (40, 48, 16), 5)
            labels[prot] = root.get_object("proteasome").label
            instances[prot] = 1
            run.new_segmentation(10.0, "ribosome", "1", user_id="annotator", is_instance=True).from_numpy(
                ribosomes, levels=3
            )
            run.new_segmentation(10.0, "cell", "1", user_id="annotator", is_panoptic=True).from_numpy(
                np.stack([labels, instances]), levels=3
            )

    try:
        from copick.ops.croissant import export_croissant

        export_croissant(
            root,
            project_root=str(data_dir),
            base_url="",
            dataset_name="test",
            description="Stand-in sample project.",
            force=True,
        )
    except Exception as exc:
        print(f"(no Croissant export: {type(exc).__name__}: {exc})")
    cfg_path.unlink()


def pack(source: Path, output: Path) -> None:
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source).as_posix()
            info = zipfile.ZipInfo(rel + ("/" if path.is_dir() else ""), ZIP_TIMESTAMP)
            info.create_system = 3
            info.compress_type = zipfile.ZIP_DEFLATED
            if path.is_dir():
                info.external_attr = (0o40755 << 16) | 0x10
                archive.writestr(info, b"")
            else:
                info.external_attr = 0o100644 << 16
                archive.writestr(info, path.read_bytes())


def main(out: Path, minimal: bool = False) -> str:
    """``minimal``: only what ensure_test_data() checks (empty sample_project/ and sample_overlay/ plus the two
    configs): enough for the ~530 tests that do not read the corpus (``-m "not corpus_parity"`` on 2.0.0a6)."""
    import zarr

    out.mkdir(parents=True, exist_ok=True)
    top = Path(tempfile.mkdtemp(prefix="standin-corpus-"))
    try:
        if minimal:
            (top / "sample_project").mkdir()
        else:
            build_project(top / "sample_project")
        (top / "sample_overlay").mkdir()
        suffixes = [""] + (["_v3"] if int(zarr.__version__.split(".")[0]) >= 3 else [])
        for sfx in suffixes:
            if sfx:
                shutil.copytree(top / "sample_project", top / f"sample_project{sfx}")
                (top / f"sample_overlay{sfx}").mkdir()
            (top / f"filesystem{sfx}.json").write_text(
                json.dumps(
                    _config(
                        overlay_root=f"{PLACEHOLDER}/sample_overlay",
                        overlay_fs_args={"auto_mkdir": True},
                        static_root=f"{PLACEHOLDER}/sample_project",
                        static_fs_args={"auto_mkdir": False},
                    ),
                    indent=4,
                )
            )
            (top / f"filesystem_overlay_only{sfx}.json").write_text(
                json.dumps(
                    _config(overlay_root=f"{PLACEHOLDER}/sample_project", overlay_fs_args={"auto_mkdir": True}),
                    indent=4,
                )
            )
        zip_path = out / "sample_project.zip"
        if zip_path.exists():
            zip_path.unlink()
        pack(top, zip_path)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return "md5:" + hashlib.md5(zip_path.read_bytes()).hexdigest()


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), minimal="--minimal" in sys.argv[2:]))

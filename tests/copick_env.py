"""Drive the REAL copick package (a pinned PyPI release) from the test suite, as a subprocess.

Why a subprocess: copick 1.x pins ``zarr<3`` while copick-catalog needs zarr 3, so the two cannot share an
interpreter (``pip install copick 'zarr>=3'`` silently resolves to the ancient copick 0.8.0). The tests
therefore keep copick in its own virtual environment and talk to it through small scripts in
``tests/copick_scripts/``: ``write_project.py`` writes fixture projects exactly as copick writes them, and
``dump_listing.py`` prints what copick's own API lists, which is the reference the catalog is compared with.

The venv lives at ``$COPICK_VENV`` or ``~/.cache/copick-catalog/copick-<version>`` and is created on first use
(about 35 s, needs network access to PyPI). Creation is serialised with an OS file lock so parallel
pytest-xdist workers build it once, and it is built in a temporary directory then renamed into place, so a
killed build never leaves a half-installed venv that looks valid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: The copick release the fixtures and reference listings are produced with.
COPICK_VERSION = "1.31.0"

#: Directory holding the scripts that run inside the copick venv.
SCRIPTS_DIR = Path(__file__).resolve().parent / "copick_scripts"

#: Seconds allowed for ``pip install copick==...`` (normally ~35 s).
_INSTALL_TIMEOUT = 900.0

# Venvs already validated by this process (validation spawns an interpreter that imports copick: ~1 s).
_validated: set[Path] = set()


def venv_dir() -> Path:
    """Location of the copick venv: ``$COPICK_VENV`` if set, else a per-user cache directory.

    An environment variable lets CI (or a developer with an existing venv) point the tests at a prepared
    environment instead of building one."""
    env = os.environ.get("COPICK_VENV")
    if env:
        return Path(env).expanduser().absolute()
    return Path.home() / ".cache" / "copick-catalog" / f"copick-{COPICK_VERSION}"


def _child_env() -> dict[str, str]:
    """Environment for processes run with the venv's python.

    PYTHONPATH/PYTHONHOME from the test process would put this project's packages (zarr 3 ...) in front of the
    venv's and break copick, so they are dropped."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _venv_python(venv: Path) -> Path:
    """The interpreter inside a venv (POSIX layout; the project runs on Linux/macOS)."""
    return venv / "bin" / "python"


def _is_valid(venv: Path) -> bool:
    """True if ``venv`` has a working interpreter that imports exactly the pinned copick version.

    Checking by actually importing copick (not just the presence of files) catches venvs whose base
    interpreter was removed, half-installed packages, and a different copick version."""
    python = _venv_python(venv)
    if not python.exists():
        return False
    check = f"import copick; assert copick.__version__ == {COPICK_VERSION!r}, copick.__version__"
    try:
        proc = subprocess.run(
            [str(python), "-c", check],
            capture_output=True,
            text=True,
            timeout=120,
            env=_child_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


@contextlib.contextmanager
def _file_lock(lock_path: Path) -> Iterator[None]:
    """Exclusive ``flock`` on a sidecar file, so only one process (e.g. one xdist worker) builds the venv.

    flock locks are released by the kernel when the holder dies, so a killed build never leaves the lock
    stuck."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _manual_instructions(venv: Path) -> str:
    return (
        f"Create it by hand (needs network access to PyPI):\n"
        f"    {sys.executable} -m venv {venv}\n"
        f"    {venv}/bin/python -m pip install copick=={COPICK_VERSION}\n"
        f"or point COPICK_VENV at an existing venv that has copick=={COPICK_VERSION}."
    )


def _build_venv(venv: Path) -> None:
    """Build the venv in a sibling temp directory and rename it into place (caller holds the lock).

    Only ``bin/python`` of the venv is used by the tests; it keeps working after the rename because a venv
    interpreter finds its environment through ``pyvenv.cfg`` next to it. (Console-script shebangs such as
    ``bin/pip`` still name the temp path, which is why we always call ``python -m pip``.)"""
    if venv.exists() and not venv.is_symlink() and not (venv / "pyvenv.cfg").is_file():
        # Never delete something that is not a venv (e.g. a mistyped COPICK_VENV).
        raise RuntimeError(
            f"{venv} exists but is not a venv with copick=={COPICK_VERSION}; refusing to replace it. "
            "Remove it or point COPICK_VENV elsewhere.",
        )
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of builds that were killed: safe to remove, since builds only run under the lock.
    for stale in venv.parent.glob(f".{venv.name}.build-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{venv.name}.build-", dir=venv.parent))
    try:
        steps = [
            [sys.executable, "-m", "venv", str(tmp)],
            [
                str(_venv_python(tmp)),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"copick=={COPICK_VERSION}",
            ],
        ]
        for cmd in steps:
            try:
                proc = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    timeout=_INSTALL_TIMEOUT,
                    env=_child_env(),
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise RuntimeError(
                    f"Could not create the copick venv at {venv}: {' '.join(cmd)} failed: {exc}\n"
                    + _manual_instructions(venv),
                ) from exc
            if proc.returncode != 0:
                raise RuntimeError(
                    f"Could not create the copick venv at {venv} (no network access?).\n"
                    f"Command: {' '.join(cmd)}\nexit code {proc.returncode}\nstderr:\n{proc.stderr.strip()}\n"
                    + _manual_instructions(venv),
                )
        if not _is_valid(tmp):
            raise RuntimeError(
                f"The freshly built venv does not import copick=={COPICK_VERSION}.\n" + _manual_instructions(venv),
            )
        if venv.exists() or venv.is_symlink():
            # Present but broken (it failed validation under the lock): replace it -- but only if it is a
            # venv, so that a mistyped COPICK_VENV never deletes someone's directory.
            if venv.is_symlink():
                venv.unlink()
            else:
                shutil.rmtree(venv)
        tmp.chmod(0o755)  # mkdtemp makes it private; a venv is normally world-readable
        os.rename(tmp, venv)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def copick_python() -> Path:
    """Return the python executable of a venv with ``copick==COPICK_VERSION``, creating the venv if needed.

    Safe to call from many processes at once: the fast path only validates; the slow path takes the file lock,
    re-validates (another worker may have just built it) and builds only if still needed.

    Raises:
        RuntimeError: if the venv is missing or broken and cannot be created (e.g. no network); the message
            says how to create it by hand.
    """
    venv = venv_dir()
    if venv in _validated:
        return _venv_python(venv)
    if not _is_valid(venv):
        with _file_lock(venv.parent / f".{venv.name}.lock"):
            if not _is_valid(venv):
                _build_venv(venv)
    _validated.add(venv)
    return _venv_python(venv)


def run_copick(script: str, *args: str, timeout: float = 300) -> str:
    """Run ``tests/copick_scripts/<script>`` with the copick venv's python and return its stdout.

    The scripts are the only code that imports copick; they print their result (a path, or a JSON document)
    on stdout. A failure surfaces as RuntimeError carrying copick's stderr, so the traceback from inside the
    venv shows up in the pytest report.

    Raises:
        FileNotFoundError: if the script does not exist.
        RuntimeError: on a non-zero exit status or a timeout.
    """
    path = SCRIPTS_DIR / script
    if not path.is_file():
        raise FileNotFoundError(f"No copick script {path}")
    cmd = [str(copick_python()), str(path), *map(str, args)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_child_env())
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{script} timed out after {timeout} s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"{script} failed with exit code {proc.returncode}: {' '.join(cmd)}\nstderr:\n{proc.stderr}",
        )
    return proc.stdout

"""pytest plugin: make copick's own test suite run against another root class.

Load with ``-p copick_root_swap`` (this directory on PYTHONPATH) and set
``COPICK_ROOT_FACTORY=package.module:callable``. The callable gets the parsed config dict of every
``config_type == "filesystem"`` project the tests open and returns the root to use instead of
``CopickRootFSSpec(CopickConfigFSSpec(**data))``; other config types go to copick as before.

Why this catches (nearly) every root the tests build: ``copick.from_file`` (bound in ``copick/__init__.py``) and every
``from copick.ops.open import from_file`` copy are the same function, copick/ops/open.py ``from_file``, which reads the
file and calls the *module global* ``from_string``. Replacing ``copick.ops.open.from_string`` therefore redirects
every ``from_file`` call, including the ones the CLI commands make under click's CliRunner; ``copick.from_string`` is a
separate binding and is replaced too. Tests that construct ``CopickRootFSSpec(...)`` directly (test_manage_zarr.py,
test_object_store_contracts.py) are not redirected; set ``COPICK_ROOT_SWAP_CLASS=module:Class`` as well to also rebind
the name ``copick.impl.filesystem.CopickRootFSSpec`` (done at plugin load, before the test modules import it).
"""

import importlib
import json
import os


def _load(spec):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


_FACTORY = os.environ.get("COPICK_ROOT_FACTORY")
_CLASS = os.environ.get("COPICK_ROOT_SWAP_CLASS")
_LOG = os.environ.get("COPICK_ROOT_SWAP_LOG")  # optional file that every process appends built root types to
built = []  # roots built through the swap, for the summary line

if _FACTORY:
    import copick
    import copick.ops.open as _open

    _factory = _load(_FACTORY)
    _original_from_string = _open.from_string

    def from_string(data: str):
        cfg = json.loads(data)
        if cfg.get("config_type", "filesystem") == "filesystem":
            cfg.setdefault("config_type", "filesystem")
            root = _factory(cfg)
            built.append(type(root).__name__)
            if _LOG:  # xdist workers are other processes: count through a file
                with open(_LOG, "a") as log:
                    log.write(type(root).__name__ + "\n")
            return root
        return _original_from_string(data)

    _open.from_string = from_string
    copick.from_string = from_string

if _CLASS:
    import copick.impl.filesystem as _fs

    _fs.CopickRootFSSpec = _load(_CLASS)


def pytest_terminal_summary(terminalreporter):
    if not _FACTORY:
        return
    names = built
    if _LOG and os.path.exists(_LOG):
        with open(_LOG) as log:
            names = log.read().split()
    terminalreporter.write_line(
        f"copick_root_swap: {_FACTORY} built {len(names)} roots ({', '.join(sorted(set(names))) or 'none'})",
    )

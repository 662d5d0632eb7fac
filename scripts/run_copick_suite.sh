#!/usr/bin/env bash
# Run copick's own test suite (the part that works offline) against copick_catalog's CatalogRoot.
#
#   scripts/run_copick_suite.sh PYTHON [pytest args...]      (default: the files in $FILES)
#
# copick's tests ship in its source distribution; their conftest fetches a sample project from Zenodo,
# which is out of reach here, so a stand-in with the same names, counts and array sums is written with the
# copick under test (tests/copick_suite/standin_corpus.py) and handed to pooch by its digest. Every
# filesystem project the tests open through copick.from_file then becomes a CatalogRoot (the pytest plugin
# tests/copick_suite/copick_root_swap.py with the factory tests/copick_suite/catalog_factory.py), and so do
# the roots two test files build as CopickRootFSSpec(config).
#
# Knobs: FILES (test files to run), WORKERS (2), CACHE (~/.cache/copick-catalog/copick-suite: sdists and
# corpora, kept between runs), JUNIT (where the junit XML goes).
set -euo pipefail

PY=${1:?usage: run_copick_suite.sh PYTHON [pytest args...]}
shift || true
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=$("$PY" -c 'import importlib.metadata as m; from packaging.version import Version; print(Version(m.version("copick")))')
CACHE=${CACHE:-$HOME/.cache/copick-catalog/copick-suite}
SRC=$CACHE/copick-$VERSION
CORPUS=$CACHE/corpus-$VERSION
WORKERS=${WORKERS:-2}
JUNIT=${JUNIT:-$CACHE/junit-$VERSION.xml}
FILES=${FILES:-"tests/test_filesystem.py tests/test_uri.py tests/test_escape.py tests/test_object_models.py tests/test_delete_overwrite.py"}

mkdir -p "$CACHE"
if [ ! -d "$SRC/tests" ]; then
    "$PY" -m pip download -q --no-input --no-binary :all: --no-deps "copick==$VERSION" -d "$CACHE"
    tar -xzf "$CACHE/copick-$VERSION.tar.gz" -C "$CACHE"
fi
if [ ! -f "$CORPUS/sample_project.zip" ]; then
    mkdir -p "$CORPUS"
    "$PY" -W ignore "$REPO/tests/copick_suite/standin_corpus.py" "$CORPUS" > "$CORPUS/build.log" 2>&1 \
        || { cat "$CORPUS/build.log"; exit 1; }
fi
export COPICK_TEST_DATA_CACHE=$CORPUS
export COPICK_TEST_DATA_DIGEST="md5:$(md5sum "$CORPUS/sample_project.zip" | cut -d' ' -f1)"
export RUN_ALL=0 BACKEND=local   # the local and mlcroissant cases; s3/ssh need their servers
export PYTHONPATH="$REPO:$REPO/tests/copick_suite${PYTHONPATH:+:$PYTHONPATH}"
export COPICK_ROOT_FACTORY=tests.copick_suite.catalog_factory:make_root
export COPICK_ROOT_SWAP_CLASS=tests.copick_suite.catalog_factory:SwapRoot
export COPICK_ROOT_SWAP_LOG=$CACHE/roots-$$.log
export COPICK_SUITE_WORK=$(mktemp -d)
trap 'rm -rf "$COPICK_SUITE_WORK" "$COPICK_ROOT_SWAP_LOG"' EXIT
[ $# -eq 0 ] && set -- $FILES

# 1.31 does not mark its one test that needs the live data portal; 2.x deselects it with -m 'not portal'.
DESELECT=()
grep -q "def test_config_dataportal" "$SRC/tests/test_cli.py" 2>/dev/null \
    && DESELECT=(--deselect tests/test_cli.py::TestCLIConfig::test_config_dataportal)

cd "$SRC"
echo "copick $VERSION's own tests on CatalogRoot: $*"
"$PY" -m pytest "$@" -p no:cacheprovider -p copick_root_swap "${DESELECT[@]}" -n "$WORKERS" --timeout 300 -q \
    -rfE --junitxml "$JUNIT"

#!/usr/bin/env bash
# The test command: venv + install (first time), ruff, then the default pytest run.
# Extra arguments go to pytest, e.g. scripts/test.sh -k mqtt  or  scripts/test.sh -m slow
source "$(dirname "$0")/_venv.sh"
cd "$REPO"
echo "==> ruff check"
"$VENV/bin/ruff" check edge tests benchmarks
echo "==> pytest (assets: $EDGE_ASSETS)"
exec "$VENV/bin/python" -m pytest "$@"

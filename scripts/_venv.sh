# Sourced by demo.sh and test.sh: make (or reuse) the project venv and install the project.
# VENV (default .venv) picks the folder; a Pi venv needs --system-site-packages for picamera2.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS="${EXTRAS:-dev}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating venv $VENV"
  site=""
  [ -e /proc/device-tree/model ] && grep -qi raspberry /proc/device-tree/model && site="--system-site-packages"
  "$PYTHON" -m venv $site "$VENV"
fi
stamp="$VENV/.edge-installed"
if [ ! -f "$stamp" ] || [ "$REPO/pyproject.toml" -nt "$stamp" ]; then
  echo "==> installing edge[$EXTRAS] into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "$REPO[$EXTRAS]"
  touch "$stamp"
fi
export EDGE_ASSETS="${EDGE_ASSETS:-$REPO/../shared/assets}"

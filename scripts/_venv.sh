# Sourced by demo.sh and test.sh: make (or reuse) the project venv and install the project.
# VENV (default .venv) picks the folder; a Pi venv needs --system-site-packages for picamera2.
# EXTRAS picks the extras (test.sh: dev; demo.sh: none); each set is installed once.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS="${EXTRAS-dev}"
PIP_FLAGS="${EDGE_PIP_FLAGS--q}"  # (PIP_* names are pip's own settings)
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating venv $VENV"
  site=""
  [ -e /proc/device-tree/model ] && grep -qi raspberry /proc/device-tree/model && site="--system-site-packages"
  "$PYTHON" -m venv $site "$VENV"
fi
stamp="$VENV/.edge-installed${EXTRAS:+-$EXTRAS}"
if [ ! -f "$stamp" ] || [ "$REPO/pyproject.toml" -nt "$stamp" ]; then
  echo "==> installing edge${EXTRAS:+[$EXTRAS]} into $VENV (the first time takes a minute or two)"
  "$VENV/bin/python" -m pip install $PIP_FLAGS --upgrade pip
  "$VENV/bin/python" -m pip install $PIP_FLAGS -e "$REPO${EXTRAS:+[$EXTRAS]}"
  touch "$stamp"
fi
export EDGE_ASSETS="${EDGE_ASSETS:-$REPO/../shared/assets}"

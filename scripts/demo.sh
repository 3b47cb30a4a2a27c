#!/usr/bin/env bash
# The main job on a machine without a camera: install, fetch the default model from the local
# asset mirror, then `edge run` on a demo clip made from the asset photos, with the web page.
#   DEMO_SECONDS=0 scripts/demo.sh   runs until Ctrl-C (default: 60 s)
# only what the demo needs (test.sh adds the dev extras), with pip's progress shown
export EXTRAS="${EXTRAS-}" EDGE_PIP_FLAGS="${EDGE_PIP_FLAGS---progress-bar=on}"
source "$(dirname "$0")/_venv.sh"
# into the model directory every edge command uses (`edge models list` shows it), so the
# README's next commands find the model too
echo "==> edge models fetch mobilenet_v2_int8 (from the asset mirror $EDGE_ASSETS/models)"
"$VENV/bin/edge" models fetch mobilenet_v2_int8 --from "$EDGE_ASSETS/models"
seconds="${DEMO_SECONDS:-60}"
duration=()
[ "$seconds" != 0 ] && duration=(--duration "$seconds")
echo "==> edge run --demo (web page: http://127.0.0.1:8080/, Ctrl-C to stop)"
exec "$VENV/bin/edge" run --demo --config "$REPO/configs/demo.yaml" "${duration[@]}" "$@"

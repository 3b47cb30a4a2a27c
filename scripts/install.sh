#!/usr/bin/env bash
# Install or upgrade edge as a systemd service on Raspberry Pi OS / Debian (docs/service.md).
#
#   sudo scripts/install.sh                      # from a checkout of the repository
#   sudo scripts/install.sh --model-from DIR     # offline: take the model from a folder
#
# Re-running upgrades in place: the venv and the unit are refreshed, the service restarted;
# an existing /etc/edge/edge.yaml and everything in /var/lib/edge are kept.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: install.sh [options]
  --root DIR         install under DIR (DIR/opt/edge, DIR/etc/edge, DIR/var/lib/edge,
                     DIR/etc/systemd/system) for tests and image staging; implies --no-apt
                     and --no-user, and systemctl only enables the unit offline (--root)
  --no-systemctl     do not call systemctl at all (no daemon-reload, enable, start, wait)
  --no-apt           do not apt-get install python3-venv (and python3-picamera2 on a Pi)
  --no-user          do not create the system user edge
  --no-model         do not fetch the default model
  --model-from DIR   take the model from DIR (edge models fetch mobilenet_v2_int8 --from DIR)
  --python PY        interpreter for the venv (default /usr/bin/python3: the one apt's
                     picamera2 and libcamera are built for)
  --pip-args ARGS    extra arguments for pip install (e.g. "--no-index --find-links DIR")
  --wait SEC         how long to wait for the service to report READY (default 150)
  --force            install on an OS or architecture that is not checked here
EOF
}

die() { echo "install.sh: error: $*" >&2; exit 1; }
step() { echo "==> $*"; }

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT="" SYSTEMCTL=1 APT=1 MKUSER=1 MODEL=1 MODEL_FROM="" PYTHON=/usr/bin/python3
PIP_ARGS="" WAIT=150 FORCE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=${2:?--root needs a directory}; shift ;;
        --no-systemctl) SYSTEMCTL=0 ;;
        --no-apt) APT=0 ;;
        --no-user) MKUSER=0 ;;
        --no-model) MODEL=0 ;;
        --model-from) MODEL_FROM=${2:?--model-from needs a directory}; shift ;;
        --python) PYTHON=${2:?--python needs an interpreter}; shift ;;
        --pip-args) PIP_ARGS=${2?--pip-args needs a value}; shift ;;
        --wait) WAIT=${2:?--wait needs seconds}; shift ;;
        --force) FORCE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift
done

if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
    [ "$ROOT" != / ] || ROOT=""
fi
if [ -n "$ROOT" ]; then
    APT=0 MKUSER=0  # both act on the host, not on DIR
fi
VENV=$ROOT/opt/edge
ETC=$ROOT/etc/edge
CONFIG=$ETC/edge.yaml
STATE=$ROOT/var/lib/edge
UNITDIR=$ROOT/etc/systemd/system
UNIT=edge.service

# --- checks -----------------------------------------------------------------------------
check_platform() {
    local id="" like="" arch
    if [ -r /etc/os-release ]; then
        id=$(. /etc/os-release && echo "${ID:-}")
        like=$(. /etc/os-release && echo "${ID_LIKE:-}")
    fi
    case " $id $like " in
        *" debian "*|*" raspbian "*) ;;
        *) [ "$FORCE" = 1 ] || die "unsupported OS '${id:-unknown}': Raspberry Pi OS or Debian needed (--force to try anyway)" ;;
    esac
    arch=$(uname -m)
    case "$arch" in
        aarch64|x86_64) ;;
        armv7l) echo "warning: 32-bit ARM: check that ai-edge-litert has a wheel for it" >&2 ;;
        *) [ "$FORCE" = 1 ] || die "unsupported architecture $arch: aarch64 (64-bit Raspberry Pi OS) or x86_64 needed (--force to try anyway)" ;;
    esac
    if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
        die "run as root (sudo), or use --root DIR for a staging install"
    fi
}

is_pi() { grep -qs "Raspberry Pi" /proc/device-tree/model; }

check_python() {
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (--python PY)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "$PYTHON is older than Python 3.10"
}

# --- steps ------------------------------------------------------------------------------
apt_packages() {
    local pkgs=(python3-venv)
    # picamera2 and libcamera come from apt (built for the system python), not from pip.
    is_pi && pkgs+=(python3-picamera2)
    step "apt-get install ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${pkgs[@]}" \
        || { apt-get update && apt-get install -y --no-install-recommends "${pkgs[@]}"; }
}

make_user() {
    # /dev/video*, /dev/media*, /dev/dma_heap/* are group video; /dev/dri/renderD* is render.
    getent group render >/dev/null || groupadd --system render
    if id edge >/dev/null 2>&1; then
        usermod --append --groups video,render edge
    else
        step "creating system user edge"
        useradd --system --user-group --groups video,render --home-dir /var/lib/edge \
            --no-create-home --shell /usr/sbin/nologin --comment "edge camera runtime" edge
    fi
}

make_venv() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        step "upgrading the venv $VENV"
    else
        step "creating the venv $VENV (--system-site-packages: apt's picamera2 stays visible)"
        rm -rf "$VENV"
        "$PYTHON" -m venv --system-site-packages "$VENV"
    fi
    # Build from a copy of just the package sources: an in-tree build would leave root-owned
    # build/ and *.egg-info in the user's checkout.
    local tmp f
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    for f in pyproject.toml setup.cfg setup.py MANIFEST.in README.md LICENSE edge; do
        [ ! -e "$SRC/$f" ] || cp -r "$SRC/$f" "$tmp/"
    done
    find "$tmp" -name __pycache__ -prune -exec rm -rf {} +
    step "pip install edge from $SRC"
    # shellcheck disable=SC2086  # PIP_ARGS is a list of words
    "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade $PIP_ARGS "$tmp"
    rm -rf "$tmp"
    trap - EXIT
    mkdir -p "$VENV/share/doc/edge"
    install -m 0644 "$SRC/docs/service.md" "$VENV/share/doc/edge/service.md"
}

install_files() {
    local group=root
    [ -n "$ROOT" ] || ! getent group edge >/dev/null || group=edge
    step "installing $UNITDIR/$UNIT"
    mkdir -p "$UNITDIR"
    install -m 0644 "$SRC/systemd/edge.service" "$UNITDIR/$UNIT"
    mkdir -p "$ETC"
    if [ -e "$CONFIG" ]; then
        echo "    keeping the existing $CONFIG"
    else
        [ -f "$SRC/configs/default.yaml" ] || die "$SRC/configs/default.yaml is missing"
        step "installing the default config $CONFIG"
        # May hold MQTT/webhook secrets: readable by root and the service only.
        install -m 0640 "$SRC/configs/default.yaml" "$CONFIG"
        [ -n "$ROOT" ] || chgrp "$group" "$CONFIG"
    fi
    chmod 0750 "$ETC"
    [ -n "$ROOT" ] || chgrp "$group" "$ETC"
    mkdir -p "$STATE/models"
}

fetch_model() {
    # The service's StateDirectory is $STATE: edge's own rule (edge/paths.py) puts models in
    # $STATE/models, the folder the service will read them from.
    local args=(models fetch mobilenet_v2_int8)
    [ -z "$MODEL_FROM" ] || args+=(--from "$MODEL_FROM")
    step "STATE_DIRECTORY=$STATE edge ${args[*]}"
    STATE_DIRECTORY="$STATE" "$VENV/bin/edge" "${args[@]}"
}

own_state() {
    [ -z "$ROOT" ] && id edge >/dev/null 2>&1 || return 0
    chown -R edge:edge "$STATE"
    chmod 0750 "$STATE"
}

start_service() {
    if [ -n "$ROOT" ]; then
        step "enabling $UNIT offline in $ROOT"
        systemctl --root="$ROOT" enable "$UNIT"
        return
    fi
    step "systemctl daemon-reload, enable and (re)start $UNIT"
    systemctl daemon-reload
    systemctl enable "$UNIT"
    # restart, not start: an upgrade must load the new code. --no-block: we wait below.
    systemctl reset-failed "$UNIT" 2>/dev/null || true
    systemctl restart --no-block "$UNIT"
    wait_ready
}

wait_ready() {
    # Type=notify: ActiveState becomes "active" only when edge sends READY=1, i.e. after the
    # first frame was classified (camera and model work).
    local deadline=$((SECONDS + WAIT)) state
    echo -n "    waiting for READY (up to ${WAIT}s)"
    while :; do
        state=$(systemctl show -p ActiveState --value "$UNIT")
        [ "$state" = active ] && break
        if [ "$state" = failed ] || [ $SECONDS -ge $deadline ]; then
            echo
            systemctl --no-pager --lines=0 status "$UNIT" || true
            journalctl --no-pager -u "$UNIT" -n 30 || true
            die "$UNIT did not become ready (state $state); see the log above"
        fi
        echo -n .
        sleep 1
    done
    echo " ready"
    systemctl --no-pager --lines=5 status "$UNIT" || true
}

summary() {
    cat <<EOF

edge is installed.
  config:      $CONFIG   (edit, then: sudo systemctl reload edge)
  data:        $STATE   (models, events, snapshots)
  program:     $VENV
EOF
    if [ "$SYSTEMCTL" = 1 ] && [ -z "$ROOT" ]; then
        cat <<EOF
  follow logs: journalctl -u edge -f
  status:      systemctl status edge
EOF
    fi
}

check_platform
[ "$APT" = 0 ] || apt_packages
check_python
[ "$MKUSER" = 0 ] || make_user
make_venv
install_files
[ "$MODEL" = 0 ] || fetch_model
own_state
[ "$SYSTEMCTL" = 0 ] || start_service
summary

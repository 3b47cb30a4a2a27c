#!/usr/bin/env bash
# Remove the edge service and program. Config (/etc/edge) and data (/var/lib/edge: models,
# events, snapshots) are kept unless --purge, so a later install.sh picks them up again.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: uninstall.sh [options]
  --purge            also delete /etc/edge, /var/lib/edge and the system user edge
  --root DIR         uninstall from a tree made by install.sh --root DIR (implies --no-user)
  --no-systemctl     do not call systemctl (no stop, disable, daemon-reload)
  --no-user          keep the user edge even with --purge
EOF
}

die() { echo "uninstall.sh: error: $*" >&2; exit 1; }
step() { echo "==> $*"; }

ROOT="" SYSTEMCTL=1 PURGE=0 RMUSER=1
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=${2:?--root needs a directory}; shift ;;
        --no-systemctl) SYSTEMCTL=0 ;;
        --purge) PURGE=1 ;;
        --no-user) RMUSER=0 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift
done

if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || die "$ROOT is not a directory"
    ROOT=$(cd "$ROOT" && pwd)
    [ "$ROOT" != / ] || ROOT=""
fi
[ -z "$ROOT" ] || RMUSER=0  # the user lives on the host, not in DIR
if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo), or use --root DIR"
fi
VENV=$ROOT/opt/edge
ETC=$ROOT/etc/edge
STATE=$ROOT/var/lib/edge
UNITDIR=$ROOT/etc/systemd/system
UNIT=edge.service

if [ "$SYSTEMCTL" = 1 ]; then
    if [ -n "$ROOT" ]; then
        step "disabling $UNIT offline in $ROOT"
        systemctl --root="$ROOT" disable "$UNIT" 2>/dev/null || true
    else
        step "stopping and disabling $UNIT"
        systemctl disable --now "$UNIT" 2>/dev/null || true
    fi
fi

step "removing the unit and the program ($VENV)"
rm -f "$UNITDIR/$UNIT"
rm -rf "$UNITDIR/$UNIT.d"  # drop-ins made by `systemctl edit edge`
rm -rf "$VENV"

if [ "$SYSTEMCTL" = 1 ] && [ -z "$ROOT" ]; then
    systemctl daemon-reload
    systemctl reset-failed "$UNIT" 2>/dev/null || true
fi

if [ "$PURGE" = 1 ]; then
    step "purging config $ETC and data $STATE"
    rm -rf "$ETC" "$STATE"
    if [ "$RMUSER" = 1 ] && id edge >/dev/null 2>&1; then
        step "removing the system user edge"
        userdel edge
    fi
else
    for d in "$ETC" "$STATE"; do
        [ ! -e "$d" ] || echo "    kept $d (--purge deletes it)"
    done
fi
echo "edge is uninstalled."

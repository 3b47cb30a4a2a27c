"""scripts/install.sh and uninstall.sh into a temporary root: layout, upgrade, keep, purge.

The package is really built and pip-installed from the checkout into DIR/opt/edge, offline:
`--pip-args "--no-index --no-deps --no-build-isolation"` builds with the setuptools of the
test's own environment and PYTHONPATH lends the test environment's dependencies (numpy, ...)
to the new venv, so nothing is downloaded. On a Pi, install.sh pip-installs the dependencies.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import DEFAULT_MODEL, MODELS, REPO

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

MODEL_FILE = "tf2_mobilenet_v2_1.0_224_ptq.tflite"


@pytest.fixture
def src(tmp_path) -> Path:
    """A copy of the files install.sh uses, so the checkout itself is never touched."""
    out = tmp_path / "src"
    for name in ("scripts", "systemd", "docs", "configs", "edge"):
        shutil.copytree(REPO / name, out / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, out / name)
    default = out / "configs" / "default.yaml"
    if not default.exists():  # written by the config work; a stand-in until it lands
        default.write_text("# placeholder default config\ndevice: edge\n")
    return out


def run(script: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (sysconfig.get_paths()["purelib"], env.get("PYTHONPATH")) if p
    )
    r = subprocess.run(
        ["bash", str(script), *args],
        capture_output=True, text=True, env=env, timeout=300, cwd=script.parents[2],
    )  # fmt: skip
    if check:
        assert r.returncode == 0, f"{script.name} {args}\n{r.stdout}\n{r.stderr}"
    return r


def install(src: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    return run(
        src / "scripts" / "install.sh",
        "--root", str(root),
        "--python", base_python,
        "--pip-args", "--no-index --no-deps --no-build-isolation",
        "--model-from", str(MODELS),
        *extra,
    )  # fmt: skip


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_upgrade_uninstall_purge(src, tmp_path, assets):
    root = tmp_path / "root"
    venv, etc, state = root / "opt/edge", root / "etc/edge", root / "var/lib/edge"
    unit = root / "etc/systemd/system/edge.service"
    wants = root / "etc/systemd/system/multi-user.target.wants/edge.service"

    # 1. Fresh install, no systemctl: the whole tree is laid out.
    r = install(src, root, "--no-systemctl")
    assert "systemctl" not in r.stdout.lower().replace("systemctl reload", "")
    assert (venv / "bin/python").exists() and os.access(venv / "bin/edge", os.X_OK)
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    assert unit.read_text() == (REPO / "systemd/edge.service").read_text()
    assert (etc / "edge.yaml").read_text() == (src / "configs/default.yaml").read_text()
    assert mode(etc / "edge.yaml") == 0o640 and mode(etc) == 0o750
    model = state / "models" / MODEL_FILE
    assert sha256(model) == sha256(DEFAULT_MODEL)
    assert (venv / "share/doc/edge/service.md").exists()
    assert not wants.exists()
    # The installed `edge` is this checkout's package, inside the new venv.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    where = subprocess.run(
        [venv / "bin/python", "-c", "import edge; print(edge.__file__)"],
        capture_output=True, text=True, env=env, check=True, cwd=tmp_path,
    ).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(venv)
    version = subprocess.run(
        [venv / "bin/edge", "--version"], capture_output=True, text=True, env=env, check=True
    )
    assert version.stdout.startswith("edge ")

    # 2. Re-run after an edit to the config and to the code: config kept, code upgraded,
    #    model untouched; with systemctl available the unit is enabled offline.
    (etc / "edge.yaml").write_text((etc / "edge.yaml").read_text() + "# edited by the owner\n")
    edited = (etc / "edge.yaml").read_text()
    init = src / "edge/__init__.py"
    init.write_text(init.read_text() + "# upgrade marker\n")
    model_mtime = model.stat().st_mtime_ns
    extra = () if shutil.which("systemctl") else ("--no-systemctl",)
    r = install(src, root, *extra)
    assert "keeping the existing" in r.stdout
    assert (etc / "edge.yaml").read_text() == edited
    assert "# upgrade marker" in Path(where).read_text()
    assert model.stat().st_mtime_ns == model_mtime
    if not extra:
        assert wants.is_symlink() and os.readlink(wants) == "/etc/systemd/system/edge.service"

    # 3. Uninstall keeps config and data, removes the program and the unit.
    r = run(src / "scripts/uninstall.sh", "--root", str(root), *extra)
    assert not venv.exists() and not unit.exists() and not wants.is_symlink()
    assert (etc / "edge.yaml").read_text() == edited
    assert sha256(model) == sha256(DEFAULT_MODEL)
    assert "kept" in r.stdout

    # 4. --purge removes config and data too.
    run(src / "scripts/uninstall.sh", "--root", str(root), "--purge", "--no-systemctl")
    assert not etc.exists() and not state.exists()


def test_bad_option_is_a_clear_error(src):
    r = run(src / "scripts/install.sh", "--bogus", check=False)
    assert r.returncode != 0 and "unknown option --bogus" in r.stderr
    r = run(src / "scripts/uninstall.sh", "--root", str(src / "missing"), check=False)
    assert r.returncode != 0 and "not a directory" in r.stderr

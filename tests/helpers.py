"""Small test utilities shared by several test files."""

from __future__ import annotations

import os
import resource
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from edge.metadata import _Table

REPO = Path(__file__).resolve().parents[1]


def run_edge(*args: str, env: dict | None = None, timeout: float = 120, cwd=None):
    """Run `python -m edge ARGS` in this interpreter; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edge", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd or REPO,
    )


AS_LIMIT = 3 * 1024**3


def run_edge_measured(path, *args: str, timeout: float = 60) -> tuple[int, str, float, int]:
    """(exit code, stderr, seconds, peak RSS in KB) of `edge config validate PATH` (or of
    `edge ARGS`) under a 3 GB address-space limit (an unbounded child fails rather than eats
    the machine), reaping the child ourselves so that its own rusage is known."""
    t0 = time.monotonic()
    argv = args or ("config", "validate", str(path))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: limit, redirect, exec
        os.close(r)
        os.dup2(w, 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "edge", *argv])
    os.close(w)
    killer = threading.Timer(timeout, os.kill, (pid, signal.SIGKILL))
    killer.start()
    try:
        with os.fdopen(r, "rb") as f:
            err = f.read().decode()  # EOF when the child exits
        _, status, ru = os.wait4(pid, 0)
    finally:
        killer.cancel()
    seconds = time.monotonic() - t0
    assert seconds < timeout, f"edge {' '.join(argv)} killed after {timeout} s"
    return os.waitstatus_to_exitcode(status), err, seconds, ru.ru_maxrss


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def avi_jpegs(path: Path) -> list[bytes]:
    """The JPEG of every frame of an MJPG .avi, read from its RIFF '00dc' chunks (not OpenCV)."""
    data = Path(path).read_bytes()
    movi = data.index(b"movi")
    frames, i = [], movi + 4
    while (i := data.find(b"00dc", i)) != -1:
        size = struct.unpack_from("<I", data, i + 4)[0]
        chunk = data[i + 8 : i + 8 + size]
        if chunk[:2] == b"\xff\xd8":
            frames.append(chunk)
        i += 8 + size + (size & 1)
    return frames


def patch_input_channels(model: Path, out: Path, channels: int) -> Path:
    """Copy a real model with its input tensor's last dimension rewritten (e.g. to 1)."""
    buf = bytearray(model.read_bytes())
    root = _Table.root(bytes(buf))
    sub = root.tables(2)[0]
    tensors = sub.tables(0)
    start, n = sub._vector(1)
    first_input = struct.unpack_from("<i", buf, start)[0]
    shape_start, dims = tensors[first_input]._vector(0)
    struct.pack_into("<i", buf, shape_start + 4 * (dims - 1), channels)
    out.write_bytes(bytes(buf))
    return out


def backend_name() -> str:
    from edge.model import select_backend

    return select_backend("auto")[0]


def wait_for(pred, timeout: float = 5.0, every: float = 0.01) -> bool:
    """Poll `pred` until it is true (True) or `timeout` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(every)
    return False


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM a child and wait for it; SIGKILL it if it does not stop within `timeout`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

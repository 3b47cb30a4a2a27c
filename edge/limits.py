"""Reading a user-named file without letting it take the memory: regular files only, capped.

A config, labels or token file is small; `/dev/zero`, a FIFO or a 5 GB file named by mistake
(or on purpose) must be a one-line error, not an out-of-memory kill.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MB = 1024 * 1024
MAX_CONFIG_BYTES = 1 * MB  # a real config is a few KB; 1000 per-label thresholds ~ 40 KB
MAX_LABELS_BYTES = 4 * MB  # 21k ImageNet labels are ~ 300 KB
MAX_SECRET_BYTES = 64 * 1024


def human(n: int) -> str:
    return f"{n // MB} MB" if n >= MB and n % MB == 0 else f"{n // 1024} KB"


class FileLimitError(OSError):
    """Not a regular file, or larger than the limit (the message says which)."""


def read_capped(path: str | Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; FileLimitError otherwise.

    The size is checked on the open file and at most limit+1 bytes are read, so a file that
    grows meanwhile (or lies about its size, as /proc files do) is still bounded.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO must not hang open()
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileLimitError("not a regular file")
        if st.st_size > limit:
            raise FileLimitError(f"{st.st_size} bytes, more than the {human(limit)} limit")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileLimitError(f"more than the {human(limit)} limit")
    return data

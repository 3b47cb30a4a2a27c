"""Events appended to a JSON-lines file, rotated by size; readers never meet a torn line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from edge.errors import ConfigError
from edge.sinks.base import SINKS, EventSinkParams, Item, Sink
from edge.sinks.files import MAX_DISK_MB, MB, LineFile, make_dir


class JsonlParams(EventSinkParams):
    path: str = Field("/var/lib/edge/events.jsonl", description="the events file")
    max_mb: float = Field(
        50.0, ge=0, le=MAX_DISK_MB,
        description="rotate when the file would grow past this; 0: never rotate",
    )
    keep: int = Field(5, ge=0, le=1000, description="rotated files kept (path.1 is the newest)")
    fsync: Literal["always", "interval", "never"] = Field(
        "interval",
        description="always: fsync after every event (survives a power cut, slow on SD cards); "
        "interval: at most every fsync_every_s; never: leave it to the kernel",
    )
    fsync_every_s: float = Field(
        1.0, ge=0.001, le=3600, description="fsync period for fsync: interval"
    )


def rotate(path: Path, keep: int) -> None:
    """path -> path.1 -> path.2 ... -> path.keep (the oldest is overwritten)."""
    for i in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
    if keep:
        os.replace(path, path.with_name(f"{path.name}.1"))
    else:
        path.unlink(missing_ok=True)


@SINKS.register("jsonl")
class JsonlSink(Sink):
    """Append events to a JSON-lines file with size-based rotation."""

    Params = JsonlParams

    def __init__(self, params: JsonlParams, ctx) -> None:
        super().__init__(params, ctx)
        self.path = Path(params.path).expanduser()
        make_dir(self.path.parent, "outputs.jsonl.path")
        try:
            self.file = LineFile(self.path, params.fsync, params.fsync_every_s)
        except OSError as e:
            raise ConfigError(
                f"outputs.jsonl.path: cannot open {self.path} ({e.strerror})"
            ) from None
        self.max_bytes = int(params.max_mb * MB)
        self.rotations = 0
        self.state = "ok"

    def handle(self, item: Item) -> None:
        for e in item.events:
            line = (json.dumps(e, separators=(",", ":")) + "\n").encode()
            f = self.file
            if self.max_bytes and f.size and f.size + len(line) > self.max_bytes:
                f.close()
                rotate(self.path, self.params.keep)
                f.open()
                self.rotations += 1
            f.write(line)
            self.sent += 1
        self.state = "ok"

    def tick(self) -> None:
        if self.params.fsync == "interval":
            self.file.sync()

    def close(self) -> None:
        self.file.close()

    def extra(self) -> dict:
        return {"rotations": self.rotations, "repaired_bytes": self.file.repaired}

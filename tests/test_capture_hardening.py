"""Capture under faults (issue 20): the supervisor survives failed thread starts; file sources
that cannot be read end `edge run` with a clear error and exit 2; live sources keep retrying."""

from __future__ import annotations

import threading

from helpers import wait_for
from test_capture import MODEL_SIZE, collect, fast

from edge.capture import CaptureThread, LatestFrame, open_source
from edge.stats import Stats


def test_supervisor_survives_failed_reader_thread_starts(images, monkeypatch):
    """At a thread limit Thread.start raises RuntimeError("can't start new thread"); the
    supervisor used to die of it and the state stayed 'reconnecting' for good."""
    real_start = threading.Thread.start
    failures = {"left": 3}

    def start(self):
        if self.name.endswith("-reader") and failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("can't start new thread")
        return real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    cfg = fast(kind="files", path=str(images / "cat.bmp"), loop=True, realtime=True, fps=50)
    stats = Stats()
    slot = LatestFrame(stats)
    cap = CaptureThread(lambda: open_source(cfg, MODEL_SIZE), slot, stats, cfg).start()
    try:
        assert wait_for(lambda: "can't start new thread" in (cap.error or ""), 5)
        assert wait_for(lambda: cap.state == "running", 10), (cap.state, cap.error)
        assert failures["left"] == 0 and cap.is_alive()
        assert len(collect(slot, 3)) == 3  # frames flow again
    finally:
        cap.stop()

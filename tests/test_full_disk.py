"""A full disk, for real (issue 20): a 64 KB tmpfs holds the MQTT spool and the snapshots.

Every event that cannot reach the spool is counted in `lost` (spooled + lost == events), no
partial temp file stays behind, and stale ones are removed at start. Needs root to mount a
tmpfs; skipped (with the reason) where mount is not permitted.
"""

from __future__ import annotations

import subprocess
import uuid

import pytest
from test_mqtt import free_port, publish
from test_sinks import photo, wait_for

from edge.atomic import temp_path
from edge.sinks.outbox import Outbox


@pytest.fixture
def full_disk(tmp_path):
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="module")
def img(assets):
    return photo("bird.bmp")


def test_full_disk_counts_every_lost_event_and_leaves_no_temp_files(full_disk, img):
    snaps = full_disk / "snaps"
    snaps.mkdir()
    stale_snap = temp_path(snaps / "old.jpg")  # left by a crash before
    stale_spool = temp_path(full_disk / "spool.jsonl")
    stale_snap.write_bytes(b"x" * 1000)
    stale_spool.write_bytes(b"y" * 1000)
    # most of the 64 KB taken: the spool and the snapshots soon find the disk full
    (full_disk / "filler").write_bytes(b"\0" * 40 * 1024)
    spec = {"port": free_port(), "spool": str(full_disk / "spool.jsonl"), "spool_mb": 1,
            "backoff_min_s": 0.1}  # no broker: every event goes to the spool
    ob = Outbox([("mqtt", spec), ("snapshot", {"dir": str(snaps), "events": ["enter"]})],
                "porch", "m")
    assert not stale_snap.exists()
    assert not stale_spool.exists()
    ob.start()
    n = 300
    for seq in range(n):
        publish(ob, seq, img=img)
        if seq % 20 == 0:  # give the workers a chance to keep up: nothing dropped for a full queue
            wait_for(lambda: ob.sink_stats()["mqtt"]["queued"] == 0, 10, "the mqtt queue")
    wait_for(lambda: ob.sink_stats()["mqtt"]["queued"] == 0, 10, "the mqtt queue")
    wait_for(lambda: ob.sink_stats()["snapshot"]["queued"] == 0, 10, "the snapshot queue")
    s = ob.sink_stats()["mqtt"]
    assert s["dropped"] == 0
    assert s["lost"] > 0 and s["spooled"] > 0  # the disk filled up part way
    assert s["spooled"] + s["lost"] == n, s  # every event is either on disk or counted lost
    err = s["spool_error"]
    assert "No space left on device" in err or "short write" in err, err
    snap = ob.sink_stats()["snapshot"]
    assert snap["errors"] > 0  # snapshots failed for lack of space too
    ob.close(timeout=2)
    leftovers = [p.name for p in full_disk.rglob("*") if ".tmp" in p.name]
    assert leftovers == []
    spooled = (full_disk / "spool.jsonl").read_text().splitlines()
    assert len(spooled) == s["spooled"]  # whole lines only, as many as counted

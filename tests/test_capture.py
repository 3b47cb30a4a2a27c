"""Sources and the capture thread, on real videos and photos (the Pi camera via a stand-in)."""

from __future__ import annotations

import functools
import http.server
import logging
import shutil
import sys
import threading
import time
import types
from pathlib import Path

import cv2
import fake_picamera2
import numpy as np
import pytest
from helpers import avi_jpegs, wait_for

from edge.capture.auto import detect
from edge.capture.base import Frame, SourceError
from edge.capture.files import FilesSource
from edge.capture.opencv import OpenCVSource
from edge.capture.picamera2 import Picamera2Source, yuv420_to_rgb
from edge.capture.runner import CaptureThread, LatestFrame
from edge.capture.spec import apply_source, open_source, parse_source
from edge.config import SourceConfig
from edge.demo import make_clip
from edge.errors import EdgeError
from edge.stats import Stats

MODEL_SIZE = (224, 224)


def rgb_of(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def video_cfg(path, **kw) -> SourceConfig:
    return SourceConfig(kind="opencv", device=str(path), **{"realtime": False, **kw})


def fast(**kw) -> SourceConfig:
    """Short timeouts and backoff so failure tests run in well under a second each."""
    base = {"stall_timeout_s": 0.3, "backoff_initial_s": 0.05, "backoff_max_s": 0.4}
    return SourceConfig(**{**base, **kw})


def collect(slot: LatestFrame, n: int | None = None, timeout: float = 10.0) -> list[Frame]:
    """Frames from the slot until it closes (or n frames, or the timeout)."""
    frames: list[Frame] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end and (n is None or len(frames) < n):
        f = slot.get(0.1)
        if f is not None:
            frames.append(f)
        elif slot.closed:
            break
    return frames


class Wrapped:
    """A live source around a real one, misbehaving on cue (raise or block after k frames)."""

    def __init__(self, inner, fail_after=None, block_after=None, gate=None, log=None):
        self.inner, self.fail_after, self.block_after = inner, fail_after, block_after
        self.gate = gate or threading.Event()
        self.log = log if log is not None else []
        self.name, self.live, self.n = "wrapped", True, 0

    def open(self):
        self.log.append(("open", time.monotonic(), self))
        self.inner.open()

    def read(self):
        self.n += 1
        if self.fail_after is not None and self.n > self.fail_after:
            raise SourceError("device went away")
        if self.block_after is not None and self.n > self.block_after:
            self.gate.wait()  # a driver call that does not return
        return self.inner.read()

    def close(self):
        self.log.append(("close", time.monotonic(), self))
        self.inner.close()


# ------------------------------------------------------------------ files


@pytest.mark.arm64
def test_files_folder_glob_and_single_image(images):
    src = FilesSource(str(images))
    src.open()
    got = []
    while (out := src.read()) is not None:
        got.append(out)
    names = sorted(p.name for p in images.iterdir() if p.suffix in (".bmp", ".jpg"))
    assert [p.name for p in src.files] == names
    assert len(got) == len(names) >= 7  # every photo the assets hold, whatever their number
    first_rgb, full = got[0]
    assert full is None and first_rgb.shape[2] == 3
    assert np.array_equal(first_rgb, rgb_of(images / names[0]))  # RGB, not BGR

    g = FilesSource(str(images / "*.bmp"))
    g.open()
    assert [p.name for p in g.files] == sorted(p.name for p in images.glob("*.bmp"))

    one = FilesSource(str(images / "owl.jpg"), loop=True)
    one.open()
    assert all(np.array_equal(one.read()[0], rgb_of(images / "owl.jpg")) for _ in range(3))


def test_files_errors_name_the_file(images, tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        FilesSource(str(tmp_path / "nope")).open()
    with pytest.raises(SourceError, match="matches no files"):
        FilesSource(str(tmp_path / "*.png")).open()
    (tmp_path / "a.bmp").symlink_to(images / "cat.bmp")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg at all")
    src = FilesSource(str(tmp_path))
    src.open()
    assert src.read() is not None
    with pytest.raises(SourceError, match=r"b\.jpg: cannot read"):
        src.read()


def test_files_read_error_fails_capture_after_good_frames(images, tmp_path):
    (tmp_path / "a.bmp").symlink_to(images / "cat.bmp")
    (tmp_path / "b.jpg").write_bytes(b"garbage")
    cfg = fast(kind="files", path=str(tmp_path), realtime=False)
    stats = Stats()
    slot = LatestFrame(stats, no_drop=True)
    cap = CaptureThread(lambda: open_source(cfg, MODEL_SIZE), slot, stats, cfg).start()
    frames = collect(slot)
    cap.join(2)
    assert [f.seq for f in frames] == [0]
    assert slot.closed and cap.state == "failed" and "b.jpg" in cap.error
    assert stats.reconnects == 0  # a broken file is not retried forever


# ------------------------------------------------------------------ opencv video files


def test_video_file_frames_then_end(demo_clip):
    src = OpenCVSource(video_cfg(demo_clip))
    assert not src.live and not src.check_stale
    src.open()
    frames = []
    while (out := src.read()) is not None:
        frames.append(out[0])
    src.close()
    assert len(frames) == 60
    assert src.raw  # MJPG: packets decoded by libjpeg, straight to RGB
    jpegs = avi_jpegs(demo_clip)
    assert len(jpegs) == 60
    for frame, jpeg in zip(frames, jpegs, strict=True):
        bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(frame, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    assert frames[0].shape == (480, 640, 3)


@pytest.mark.parametrize("frame, scale", [((640, 480), 2), ((1280, 720), 2),
                                          ((1920, 1080), 4), ((448, 447), 1), ((224, 224), 1)])
def test_decode_scale_is_the_box_resizes_halvings_on_both_axes(frame, scale):
    from edge.decode import decode_scale

    assert decode_scale(frame, MODEL_SIZE) == scale
    assert decode_scale(frame, None) == 1  # no box resize: always full


def test_mjpg_frames_decode_scaled_unless_the_full_image_is_wanted(demo_clip):
    """The reduced decode is libjpeg's own 1/2 scale of each packet, switched per frame by
    `wants_full` (a snapshot or the preview starting needs no reopen)."""
    wants = [False]
    src = OpenCVSource(video_cfg(demo_clip), decode_to=MODEL_SIZE, wants_full=lambda: wants[0])
    src.open()
    assert src.raw and src.size == (640, 480)
    jpegs = avi_jpegs(demo_clip)
    for i, jpeg in enumerate(jpegs[:6]):
        wants[0] = i % 3 == 2
        rgb, full = src.read()
        want = cv2.imdecode(np.frombuffer(jpeg, np.uint8),
                            cv2.IMREAD_COLOR if wants[0] else cv2.IMREAD_REDUCED_COLOR_2)
        assert full is None and np.array_equal(rgb, cv2.cvtColor(want, cv2.COLOR_BGR2RGB))
        assert rgb.shape == ((480, 640, 3) if wants[0] else (240, 320, 3))
    src.close()
    plain = OpenCVSource(video_cfg(demo_clip), decode_to=MODEL_SIZE)  # no wants_full: full
    plain.open()
    assert plain.read()[0].shape == (480, 640, 3)
    plain.close()


@pytest.mark.parametrize("fourcc", ["mp4v", "FFV1"])
def test_video_file_of_other_codecs_is_decoded_by_ffmpeg(tmp_path, images, fourcc):
    """Frames of codecs other than MJPG go through FFmpeg's grab/retrieve, equal to cap.read()."""
    clip = tmp_path / "c.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*fourcc), 30, (160, 120))
    for i in range(12):
        w.write(cv2.resize(cv2.imread(str(images / "cat.bmp")), (160, 120)) // (1 + i % 3))
    w.release()
    src = OpenCVSource(video_cfg(clip))
    src.open()
    assert not src.raw
    got = []
    while (out := src.read()) is not None:
        got.append(out[0])
    src.close()
    cap = cv2.VideoCapture(str(clip))
    want = []
    while (r := cap.read())[0]:
        want.append(cv2.cvtColor(r[1], cv2.COLOR_BGR2RGB))
    assert len(got) == len(want) == 12
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_video_loop_and_realtime_pacing(demo_clip, monkeypatch):
    src = OpenCVSource(video_cfg(demo_clip, loop=True))
    src.open()
    assert all(src.read() is not None for _ in range(130))  # past the end twice
    src.close()

    paced = OpenCVSource(video_cfg(demo_clip, realtime=True))
    paced.open()
    # the pacer's clock moves only by its own sleeps (decoding takes no time on it), so the
    # figure is exact instead of depending on the load on the machine
    clock = [100.0]
    monkeypatch.setattr("edge.capture.base.time", types.SimpleNamespace(
        monotonic=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s)))
    for _ in range(16):
        paced.read()
        paced.pacer.wait()  # what the capture thread does after each read
    paced.close()
    assert clock[0] - 100.0 == pytest.approx(15 / 30)  # 15 frame periods at the clip's 30 fps


def test_stale_frames_are_a_stall(tmp_path, images, demo_clip):
    still = make_clip(tmp_path / "still.avi", images, names=("cat.bmp",), frames_per_image=40)
    src = OpenCVSource(video_cfg(still, stale_frames=20), check_stale=True)
    src.open()
    with pytest.raises(SourceError, match="20 identical frames") as err:
        for n in range(1, 41):  # noqa: B007
            src.read()
    src.close()
    assert err and n in (20, 21)  # FFmpeg decodes the very first frame slightly differently
    # 10 identical frames per photo stay under the limit: no false alarm
    ok = OpenCVSource(video_cfg(demo_clip, stale_frames=20), check_stale=True)
    ok.open()
    assert sum(1 for _ in iter(ok.read, None)) == 60


def test_stale_frames_count_the_frames_passed_over_undecoded(tmp_path, images):
    """A slow model decodes one frame in 5: the limit is still in camera frames."""
    still = make_clip(tmp_path / "still.avi", images, names=("cat.bmp",), frames_per_image=40)
    src = OpenCVSource(video_cfg(still, stale_frames=20), check_stale=True)
    src.open()
    decoded = 0
    with pytest.raises(SourceError, match="identical frames"):
        while decoded < 8:
            for _ in range(5):
                assert src.grab()
            src.retrieve()
            decoded += 1
    src.close()
    assert decoded == 4  # 1 + 5 + 5 + 5 >= 20 camera frames: at the 5th decode, not the 20th


def test_frames_stay_fresh_while_inference_is_away(demo_clip):
    """Before the first take, and when the loop is held up (a reload), frames keep coming."""
    cfg = video_cfg(demo_clip, realtime=True, loop=True)
    stats = Stats()
    slot = LatestFrame(stats)
    cap = CaptureThread(lambda: open_source(cfg, MODEL_SIZE), slot, stats, cfg).start()
    for _ in range(3):
        time.sleep(0.6)  # away: not inside get()
        newest = stats.captured - 1  # the reader may be decoding this one
        f = slot.get(1)
        assert f is not None and f.seq >= newest - 1, ("a stale frame was kept", f.seq, newest)
        time.sleep(0.05)
        slot.get(1)
    cap.stop()


def test_a_frame_that_fails_to_decode_is_counted_as_dropped(tmp_path, demo_clip):
    data = bytearray(demo_clip.read_bytes())
    jpegs = avi_jpegs(demo_clip)
    bad = jpegs[10]  # the first frame of the second photo (frames 0-9 show the first)
    assert bad != jpegs[9]
    at = data.index(bad)
    data[at + 2 : at + len(bad)] = b"\x00" * (len(bad) - 2)  # SOI kept, the rest zeroed
    broken = tmp_path / "broken.avi"
    broken.write_bytes(bytes(data))
    cfg = video_cfg(broken)
    stats = Stats()
    slot = LatestFrame(stats, no_drop=True)
    cap = CaptureThread(lambda: open_source(cfg, MODEL_SIZE), slot, stats, cfg).start()
    frames = collect(slot)
    cap.join(2)
    assert [f.seq for f in frames] == list(range(10)) and cap.state == "failed"
    assert "cannot decode frame 11" in cap.error  # (counted from 1)
    assert stats.captured == len(frames) + stats.dropped  # the broken frame: dropped


@pytest.fixture
def http_dir(tmp_path):
    """A local HTTP server over tmp_path: (base URL, server)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", srv
    srv.shutdown()
    srv.server_close()


def test_http_stream_end_reconnects_and_dead_server_times_out(demo_clip, http_dir, tmp_path):
    base, srv = http_dir
    shutil.copy(demo_clip, tmp_path / "live.avi")
    cfg = fast(kind="opencv", device=f"{base}/live.avi", stall_timeout_s=0.5)
    stats = Stats()
    slot = LatestFrame(stats, no_drop=True)
    cap = CaptureThread(lambda: open_source(cfg, MODEL_SIZE), slot, stats, cfg).start()
    frames = collect(slot, n=90)  # the stream ends after 60: reconnect, numbering continues
    assert [f.seq for f in frames] == list(range(90)) and stats.reconnects >= 1
    cap.stop()
    srv.shutdown()  # still listening, never answering: the open must time out, not hang
    src = OpenCVSource(cfg)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="cannot open"):
        src.open()
    assert time.monotonic() - t0 < 3.0


# ------------------------------------------------------------------ latest-frame slot


def frame(seq: int) -> Frame:
    return Frame(seq, time.time(), time.monotonic(), np.zeros((2, 2, 3), np.uint8))


def test_slot_replaces_unread_frames_and_counts_drops():
    stats = Stats()
    slot = LatestFrame(stats)
    for i in range(3):
        assert slot.put(frame(i))
    assert slot.get(0).seq == 2 and stats.dropped == 2
    t0 = time.monotonic()
    assert slot.get(0.2) is None and 0.15 < time.monotonic() - t0 < 1.0
    waiter = threading.Thread(target=lambda: slot.get(5))
    waiter.start()
    assert wait_for(lambda: slot._waiting, 10)  # blocked inside get(): close must wake it
    slot.close()
    waiter.join(1)
    assert not waiter.is_alive() and slot.closed and not slot.put(frame(3))


def test_slot_no_drop_waits_for_the_consumer():
    stats = Stats()
    slot = LatestFrame(stats, no_drop=True)
    got = []
    producer = threading.Thread(target=lambda: [slot.put(frame(i)) for i in range(20)])
    producer.start()
    assert wait_for(lambda: slot.full, 10)
    producer.join(0.05)
    assert producer.is_alive()  # blocked: frame 1 waits for frame 0 to be taken
    while len(got) < 20:
        got.append(slot.get(1).seq)
    producer.join(1)
    assert got == list(range(20)) and stats.dropped == 0


@pytest.mark.slow  # asserts release times to 50 ms on the wall clock: not on a loaded box
def test_slot_times_the_next_read_to_the_consumer():
    """No-drop reads just in time: when the consumer is expected, or at once when it asks."""
    slot = LatestFrame(Stats(), no_drop=True)

    def cycle(busy: float) -> float:
        """Take a frame, work `busy` s; returns how long after the take a producer was let go."""
        slot.put(frame(0))
        slot.get(1)
        t0 = time.monotonic()
        released = []
        producer = threading.Thread(
            target=lambda: released.append(slot.wait_wanted(0.05) and time.monotonic() - t0))
        producer.start()
        time.sleep(busy)
        producer.join(0.01)
        if producer.is_alive():  # the consumer asks before the producer expected it
            slot.get(0)  # (the slot is empty: this returns None at once, after notifying)
            producer.join(1)
        return released[0]

    cycle(0.2)
    cycle(0.2)  # the slot has learnt that the consumer works ~0.2 s on a frame
    assert 0.1 < slot.busy_s < 0.35
    assert 0.1 < cycle(0.3) < 0.2  # released 0.05 s before the expected ~0.2 s, not at 0
    assert cycle(0.05) < 0.15  # an early consumer is not kept waiting for the estimate
    slot.close()
    assert not slot.wait_wanted(0.05)


# ------------------------------------------------------------------ capture thread


def test_capture_no_drop_delivers_every_frame_in_order(demo_clip):
    cfg = video_cfg(demo_clip)
    stats = Stats()
    slot = LatestFrame(stats, no_drop=True)
    cap = CaptureThread(lambda: open_source(cfg, MODEL_SIZE), slot, stats, cfg).start()
    frames = []
    for f in iter(lambda: slot.get(2), None):
        time.sleep(0.002)  # a consumer slower than decoding
        frames.append(f)
    cap.join(2)
    assert [f.seq for f in frames] == list(range(60))
    assert all(b.mono >= a.mono for a, b in zip(frames, frames[1:], strict=False))
    assert slot.closed and cap.state == "ended" and not cap.is_alive()
    assert stats.captured == 60 and stats.dropped == 0
    direct = OpenCVSource(cfg)
    direct.open()
    for f in frames[:12]:
        assert np.array_equal(f.rgb, direct.read()[0])


def test_capture_counts_drops_for_a_slow_consumer(demo_clip):
    cfg = video_cfg(demo_clip, realtime=True)  # 30 fps, like a camera
    stats = Stats()
    slot = LatestFrame(stats)
    cap = CaptureThread(lambda: open_source(cfg, MODEL_SIZE), slot, stats, cfg).start()
    got, newest = [], []
    for f in iter(lambda: slot.get(2), None):
        got.append(f.seq)
        newest.append(stats.captured - 1)  # grabbed last (the reader may be decoding it)
        time.sleep(0.1)  # inference at 10 fps
    cap.stop()
    assert stats.captured == 60 and stats.dropped >= 30
    assert len(got) + stats.dropped == 60  # every frame either classified or counted
    # in order, and fresh: each frame taken is one of the two newest when it is taken (the
    # last frames of a file may be passed over when inference is busy as the file ends)
    assert got == sorted(got) and got[-1] >= 57
    assert all(seq >= top - 1 for seq, top in zip(got, newest, strict=True)), (got, newest)


class CountingSource(OpenCVSource):
    decoded = 0

    def retrieve(self):
        CountingSource.decoded += 1
        return super().retrieve()


def test_drop_mode_decodes_only_the_frames_inference_takes(demo_clip):
    """A 30 fps source and 10 fps inference: frames grabbed while it is busy are not decoded."""
    cfg = video_cfg(demo_clip, realtime=True)
    stats = Stats()
    slot = LatestFrame(stats)
    CountingSource.decoded = 0
    cap = CaptureThread(lambda: CountingSource(cfg), slot, stats, cfg).start()
    got = []
    for f in iter(lambda: slot.get(2), None):
        got.append(f.seq)
        time.sleep(0.1)
    cap.stop()
    assert stats.captured == 60 and len(got) >= 15
    # a decode-everything loop makes 60; a few extra where the two clocks meet are allowed
    assert CountingSource.decoded <= 1.4 * len(got) and CountingSource.decoded < 30


def test_a_live_camera_that_cannot_open_is_retried_with_backoff(caplog):
    # (was: until a missing video file appears; a missing video file is now an error at
    # start, see test_capture_hardening.py: only live sources are retried)
    caplog.set_level(logging.INFO, logger="edge.capture.runner")
    cfg = fast(kind="opencv", device="/dev/video99", realtime=False)
    log: list = []
    stats = Stats()
    slot = LatestFrame(stats, no_drop=True)

    def make():
        log.append(time.monotonic())
        return open_source(cfg, MODEL_SIZE)

    cap = CaptureThread(make, slot, stats, cfg).start()
    assert wait_for(lambda: len(log) >= 6)
    # at the 0.4 s cap the state turns "failed" (since then); every attempt keeps retrying
    assert cap.state == "failed" and "/dev/video99: cannot open" in cap.error
    assert cap.is_alive() and not slot.closed
    cap.stop()
    states = [r.getMessage().split(":")[0] for r in caplog.records]
    assert states[:2] == ["source reconnecting", "source failed"]
    gaps = np.diff(log[:5])  # 0.05, 0.1, 0.2, 0.4 (then capped; "failed" at the cap)
    want = [0.05, 0.1, 0.2, 0.4]
    assert all(0.8 * w <= g <= w + 0.25 for g, w in zip(gaps, want, strict=True)), gaps


def test_read_errors_reconnect_and_seq_continues(demo_clip):
    cfg = fast(kind="opencv", device=str(demo_clip), realtime=False, loop=True,
               backoff_initial_s=0.2, backoff_max_s=1.6)  # fmt: skip
    opens: list = []
    count = {"n": 0}
    stats = Stats()
    slot = LatestFrame(stats, no_drop=True)

    def make():
        count["n"] += 1
        fail = 10 if count["n"] <= 2 else None  # the first two connections die after 10 frames
        return Wrapped(OpenCVSource(cfg), fail_after=fail, log=opens)

    cap = CaptureThread(make, slot, stats, cfg).start()
    frames = collect(slot, n=35)
    cap.stop()
    assert [f.seq for f in frames] == list(range(35))
    assert stats.reconnects == 2 and cap.state == "stopped"
    assert [what for what, *_ in opens] == ["open", "close"] * 3  # every source closed
    # a connection that delivered frames resets the backoff: 0.2 s each time, not 0.2 then 0.4
    waits = [opens[i + 1][1] - opens[i][1] for i in (1, 3)]
    assert all(0.19 <= w < 0.35 for w in waits), waits


def test_watchdog_abandons_a_read_that_never_returns(demo_clip):
    cfg = fast(kind="opencv", device=str(demo_clip), realtime=False, loop=True)
    gate = threading.Event()
    log: list = []
    count = {"n": 0}
    stats = Stats()
    slot = LatestFrame(stats)

    def make():
        count["n"] += 1
        block = 5 if count["n"] == 1 else None
        return Wrapped(OpenCVSource(cfg), block_after=block, gate=gate, log=log)

    cap = CaptureThread(make, slot, stats, cfg).start()
    assert wait_for(lambda: stats.source_state == "reconnecting", 2.0)
    assert "stall" in stats.source_error and "read did not return" in stats.source_error
    assert wait_for(lambda: count["n"] == 2 and stats.source_state == "running", 2.0)
    first = collect(slot, n=3)
    assert first and first[0].seq >= 5  # numbering continues on the new connection
    stuck = log[0][2]
    assert ("close", stuck) not in [(w, s) for w, _, s in log]
    gate.set()  # the driver call finally returns: the abandoned reader closes its source
    assert wait_for(lambda: ("close", stuck) in [(w, s) for w, _, s in log], 2.0)
    cap.stop()


def test_stop_is_prompt_even_with_a_read_stuck(demo_clip):
    cfg = fast(kind="opencv", device=str(demo_clip), realtime=False, stall_timeout_s=30)
    gate = threading.Event()
    stats = Stats()
    slot = LatestFrame(stats)
    cap = CaptureThread(
        lambda: Wrapped(OpenCVSource(cfg), block_after=2, gate=gate), slot, stats, cfg
    ).start()
    assert wait_for(lambda: stats.captured == 2)
    t0 = time.monotonic()
    cap.stop(timeout=0.5)
    assert time.monotonic() - t0 < 1.0 and not cap.is_alive() and slot.closed
    gate.set()


# ------------------------------------------------------------------ picamera2 (stand-in)


@pytest.fixture
def picam(monkeypatch, images):
    """Install the picamera2 stand-in; returns a function making a module per platform."""

    def install(platform="VC4", cameras=None):
        mod = fake_picamera2.make_module(
            [images / n for n in ("cat.bmp", "bird.bmp", "grace_hopper.bmp")], platform, cameras
        )
        monkeypatch.setitem(sys.modules, "picamera2", mod)
        return mod

    return install


def expected(images, i, size=MODEL_SIZE) -> np.ndarray:
    name = ("cat.bmp", "bird.bmp", "grace_hopper.bmp")[i % 3]
    return cv2.resize(rgb_of(images / name), size, interpolation=cv2.INTER_AREA)


@pytest.mark.arm64
def test_picamera2_pi4_lores_yuv420_at_model_size(picam, images):
    mod = picam("VC4")
    cfg = SourceConfig(kind="picamera2", stall_timeout_s=2.0, fps=60)
    src = open_source(cfg, MODEL_SIZE)
    assert isinstance(src, Picamera2Source)
    src.open()
    cam = mod.Picamera2.fake_instances[0]
    conf = cam.camera_configuration()
    assert conf["lores"]["format"] == "YUV420" and conf["lores"]["size"] == MODEL_SIZE
    assert conf["lores"]["stride"] > MODEL_SIZE[0]  # padded rows: exercises the crop
    assert conf["main"]["format"] == "BGR888" and conf["main"]["size"] == (640, 480)
    assert conf["controls"]["FrameRate"] == 60 and conf["buffer_count"] >= 2
    frames = [src.read() for _ in range(12)]  # more frames than buffers: all released
    assert cam.fake_outstanding() == 0 and cam.fake_delivered == cam.fake_released == 12
    assert cam.fake_waits == [2.0] * 12
    for rgb, full in frames[:6]:
        assert rgb.shape == (224, 224, 3) and rgb.flags.c_contiguous
        assert full.shape == (480, 640, 3)
    # the photo behind each frame, after the ISP's scaling and 4:2:0 chroma, is what we get
    seq = [min(range(3), key=lambda i: np.abs(rgb.astype(int) - expected(images, i)).mean())
           for rgb, _ in frames[:3]]  # fmt: skip
    for (rgb, _), i in zip(frames[:3], seq, strict=True):
        assert np.abs(rgb.astype(int) - expected(images, i)).mean() < 3.0
    src.close()
    assert cam.fake_calls[-3:] == ["stop", "close", "stop"]  # stop, then close (which stops)
    src.open()  # the camera was released: it opens again
    src.close()


@pytest.mark.arm64
def test_yuv420_conversion_is_i420_not_yv12(images):
    rgb = expected(images, 2)
    stride = 256
    yuv = fake_picamera2.encode(rgb, "YUV420", MODEL_SIZE, 32)
    arr = np.frombuffer(yuv, np.uint8).reshape(224 * 3 // 2, stride)
    ours = np.abs(yuv420_to_rgb(arr, 224).astype(int) - rgb).mean()
    yv12 = cv2.cvtColor(arr, cv2.COLOR_YUV420p2RGB)[:, :224]  # the tempting wrong one
    assert ours < 3.0 < np.abs(yv12.astype(int) - rgb).mean()


def test_picamera2_pi5_lores_rgb(picam, images):
    mod = picam("PISP")
    src = open_source(SourceConfig(kind="picamera2"), MODEL_SIZE)
    src.open()
    cam = mod.Picamera2.fake_instances[0]
    # picamera2's "BGR888" has bytes R,G,B: an RGB array with no conversion at all
    assert cam.camera_configuration()["lores"]["format"] == "BGR888"
    rgb, _ = src.read()
    assert any(np.array_equal(rgb, expected(images, i)) for i in range(3))
    src.close()
    picam("VC4")
    with pytest.raises(SourceError, match="needs a Pi 5"):
        open_source(SourceConfig(kind="picamera2", lores_format="RGB888"), MODEL_SIZE).open()


def test_picamera2_stall_times_out_and_reconnects(picam):
    mod = picam("VC4")
    cfg = fast(kind="picamera2", fps=60)
    stats = Stats()
    slot = LatestFrame(stats)
    cap = CaptureThread(lambda: open_source(cfg, MODEL_SIZE), slot, stats, cfg).start()
    assert collect(slot, n=3)
    cam = mod.Picamera2.fake_instances[0]
    cam.fake_stalled = True  # the ribbon cable comes loose
    assert wait_for(lambda: stats.source_state in ("reconnecting", "failed"), 2.0)
    assert "no frame within 0.3 s" in stats.source_error  # capture_request(wait=) raised
    assert "cancel_all_and_flush" in cam.fake_calls and cam.fake_calls[-1] == "stop"
    assert cam.fake_outstanding() == 0 and not cam._job_list
    # reconnect: the stalled instance was stopped and closed, a new one delivers frames
    assert wait_for(lambda: stats.source_state == "running", 3.0)
    assert collect(slot, n=3)
    cap.stop()
    assert all(not c.is_open and c.fake_outstanding() == 0 for c in mod.Picamera2.fake_instances)


def test_auto_prefers_the_pi_camera(picam, monkeypatch, tmp_path):
    picam("VC4")
    assert detect(tmp_path / "video0") == ("picamera2", 0)
    auto_src = open_source(SourceConfig(), MODEL_SIZE)  # detects when the capture opens it
    auto_src.open()
    assert isinstance(auto_src.inner, Picamera2Source)
    auto_src.close()
    usb_only = [{"Model": "uvc", "Id": "/base/axi/pcie@120000/rp1/usb@480000-1:1.0-046d:0825",
                 "Num": 0}]  # fmt: skip
    picam("VC4", cameras=usb_only)
    (tmp_path / "video0").touch()
    assert detect(tmp_path / "video0") == ("opencv", str(tmp_path / "video0"))
    monkeypatch.setitem(sys.modules, "picamera2", None)  # not installed
    with pytest.raises(EdgeError, match="--source"):
        detect(tmp_path / "missing")
    with pytest.raises(EdgeError, match="apt install python3-picamera2"):
        open_source(SourceConfig(kind="picamera2"), MODEL_SIZE)


# ------------------------------------------------------------------ --source strings


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("0", {"kind": "opencv", "device": 0}),
        ("/dev/video2", {"kind": "opencv", "device": "/dev/video2"}),
        ("rtsp://cam:554/s", {"kind": "opencv", "device": "rtsp://cam:554/s"}),
        ("http://127.0.0.1:8081/video.mjpg", {"kind": "opencv"}),
        ("clips/porch.MP4", {"kind": "opencv", "device": "clips/porch.MP4"}),
        ("photos/*.jpg", {"kind": "files", "path": "photos/*.jpg"}),
        ("cat.bmp", {"kind": "files", "path": "cat.bmp"}),
        ("picamera2", {"kind": "picamera2", "device": 0}),
        ("picamera2:1", {"kind": "picamera2", "device": 1}),
        ("auto", {"kind": "auto"}),
    ],
)
def test_parse_source(text, want):
    assert parse_source(text).items() >= want.items()


def test_parse_source_folder_and_errors(tmp_path):
    assert parse_source(str(tmp_path)) == {"kind": "files", "path": str(tmp_path)}
    cfg = apply_source(SourceConfig(width=320, height=240), str(tmp_path))
    assert cfg.kind == "files" and cfg.width == 320
    with pytest.raises(EdgeError, match="no such file or folder"):
        parse_source(str(tmp_path / "nothing"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(EdgeError, match="cannot tell"):
        parse_source(str(tmp_path / "notes.txt"))
    with pytest.raises(EdgeError, match="source.path"):
        open_source(SourceConfig(kind="files"), MODEL_SIZE)


def test_a_slow_pace_is_not_a_stall(images):
    """Photos shown every 0.6 s with a 0.2 s stall timeout: the pause is pacing, not a hang."""
    cfg = SourceConfig(kind="files", path=str(images), loop=True, fps=1 / 0.6, realtime=True,
                       stall_timeout_s=0.2, backoff_initial_s=0.05)
    stats = Stats()
    slot = LatestFrame(stats)
    cap = CaptureThread(lambda: open_source(cfg, MODEL_SIZE), slot, stats, cfg).start()
    try:
        frames = collect(slot, 3, timeout=5)
    finally:
        cap.stop()
    assert stats.reconnects == 0 and stats.source_state != "reconnecting"
    first, second = (rgb_of(p) for p in sorted(images.iterdir())[:2])  # the folder advances
    assert np.array_equal(frames[0].rgb, first) and np.array_equal(frames[1].rgb, second)


def test_picamera2_frames_inference_will_not_take_are_released_uncopied(picam):
    """30 fps camera, 10 fps inference: most requests go back to the camera without a copy."""
    mod = picam("VC4")
    cfg = SourceConfig(kind="picamera2", fps=30, stall_timeout_s=2.0)
    stats = Stats()
    slot = LatestFrame(stats)
    cap = CaptureThread(lambda: open_source(cfg, MODEL_SIZE), slot, stats, cfg).start()
    got = []
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        f = slot.get(1)
        if f is not None:
            got.append(f)
            time.sleep(0.2)  # inference at 5 fps: it takes one frame in six
    cap.stop()
    cam = mod.Picamera2.fake_instances[0]
    assert cam.fake_outstanding() == 0 and cam.fake_delivered == cam.fake_released
    assert cam.fake_delivered >= 35 and 5 <= len(got) <= 9
    # two copies (lores, main) per frame copied out: far fewer than the frames delivered,
    # where copying every frame would make twice as many (a margin for a loaded machine)
    assert cam.fake_copies <= cam.fake_delivered
    assert all(f.rgb.shape == (224, 224, 3) and f.full.shape == (480, 640, 3) for f in got)


def test_auto_waits_for_a_camera_plugged_in_later(monkeypatch, tmp_path, images):
    """`source: auto` with no camera retries with backoff (reported), and takes the camera
    that appears: a service started before its USB camera does not fail."""
    import edge.capture.auto as auto

    clip = make_clip(tmp_path / "cam.avi", images, frames_per_image=5, size=(320, 240))
    plugged = threading.Event()
    tries = []

    def detect():
        tries.append(1)
        if not plugged.is_set():
            raise EdgeError("no camera found (no Pi camera via picamera2, no /dev/video0)")
        return "opencv", str(clip)

    monkeypatch.setattr(auto, "detect", detect)
    cfg = SourceConfig(kind="auto", backoff_initial_s=0.05, backoff_max_s=0.2, realtime=False)
    stats = Stats()
    slot = LatestFrame(stats)
    cap = CaptureThread(lambda: open_source(cfg, MODEL_SIZE), slot, stats, cfg).start()
    try:
        assert wait_for(lambda: len(tries) >= 3, 10)  # retried with backoff, not given up
        assert cap.state in ("reconnecting", "failed") and "no camera found" in cap.error
        plugged.set()
        assert wait_for(lambda: stats.captured > 0, 10)
        assert slot.get(timeout=5) is not None
    finally:
        cap.stop()

"""A stand-in for the `picamera2` package, for machines without a Pi camera.

It follows picamera2's real API and behaviour where our code depends on it (checked against
raspberrypi/picamera2's picamera2.py, request.py, job.py and platform.py):
- `Picamera2(camera_num=0, verbose_console=None, tuning=None, allocator=None)`; a camera that
  is already open elsewhere cannot be opened again (libcamera's acquire fails);
- `Picamera2.platform` (a Platform enum, VC4 or PISP) and `Picamera2.global_camera_info()`;
- `create_video_configuration(main=, lores=, raw=, transform=, colour_space=, buffer_count=,
  controls=, display=, encode=, queue=, sensor=, use_case=)` returning the same dict shape,
  with the same key checks; `configure()` applies picamera2's checks (lores no larger than
  main, lores must be YUV on VC4, even sizes, known formats) and, like libcamera, pads strides;
- `start()`, `stop()`, `close()`, `camera_configuration()`, `stream_configuration()`,
  `cancel_all_and_flush()`;
- `capture_request(wait=None, signal_function=None, flush=None)`: a job waited on through a
  concurrent.futures.Future, so `wait=<seconds>` raises concurrent.futures.TimeoutError and
  leaves the job queued (it would take the next frame) until `cancel_all_and_flush()`;
- CompletedRequest `make_array(name)` (a copy; YUV420 as h*3/2 rows of `stride` bytes, I420
  plane order; "RGB888" bytes B,G,R and "BGR888" bytes R,G,B), `make_buffer`, `get_metadata`,
  `acquire`, `release` (reference counted; a negative count raises RuntimeError).
Frames come from real photos, "scaled by the ISP" with OpenCV, at the configured frame rate,
into `buffer_count` buffers: requests the application never releases run the camera dry, as
on a Pi. Test hooks are named `fake_*`.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import types
from enum import Enum
from pathlib import Path

import cv2
import numpy as np


class Platform(Enum):
    VC4 = 0
    PISP = 1


RGB_FORMATS = ("RGB888", "BGR888", "XBGR8888", "XRGB8888")
YUV_FORMATS = ("YUV420", "YVU420")


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def stride_for(fmt: str, width: int, align: int) -> int:
    """Bytes per row as the ISP pads them (YUV: the Y rows; chroma rows are half that)."""
    if fmt in YUV_FORMATS:
        return _align(width, align * 2)  # chroma rows (stride/2) stay aligned too
    return _align(width * (3 if fmt in ("RGB888", "BGR888") else 4), align)


def encode(rgb: np.ndarray, fmt: str, size: tuple[int, int], align: int) -> bytes:
    """The bytes libcamera would write for `rgb` scaled to `size` in `fmt`."""
    w, h = size
    img = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    stride = stride_for(fmt, w, align)
    if fmt in YUV_FORMATS:
        flat = cv2.cvtColor(img, cv2.COLOR_RGB2YUV_I420).ravel()
        y = flat[: w * h].reshape(h, w)
        u = flat[w * h : w * h * 5 // 4].reshape(h // 2, w // 2)
        v = flat[w * h * 5 // 4 :].reshape(h // 2, w // 2)
        if fmt == "YVU420":
            u, v = v, u
        planes = [np.pad(y, ((0, 0), (0, stride - w)))]
        planes += [np.pad(p, ((0, 0), (0, (stride - w) // 2))) for p in (u, v)]
        return b"".join(p.tobytes() for p in planes)
    px = {
        "BGR888": img,
        "RGB888": img[:, :, ::-1],
        "XBGR8888": np.dstack([img, np.full((h, w), 255, np.uint8)]),
        "XRGB8888": np.dstack([img[:, :, ::-1], np.full((h, w), 255, np.uint8)]),
    }[fmt]
    row = w * px.shape[2]
    return np.pad(px.reshape(h, row), ((0, 0), (0, stride - row))).tobytes()


class Job:
    """picamera2.job.Job: functions run by the camera loop, result through a Future."""

    def __init__(self, functions, signal_function=None):
        self._functions = functions
        self._future = concurrent.futures.Future()
        self._future.set_running_or_notify_cancel()
        self._signal_function = signal_function

    def execute(self) -> bool:
        try:
            done, result = self._functions[0]()
        except Exception as e:
            self._future.set_exception(e)
            return True
        if done:
            self._future.set_result(result)
            if self._signal_function:
                self._signal_function(self)
        return done

    def get_result(self, timeout=None):
        return self._future.result(timeout=timeout)

    def cancel(self):
        self._future.set_exception(concurrent.futures.CancelledError)


class CompletedRequest:
    def __init__(self, picam2, buffers: dict[str, bytes], seq: int):
        self.picam2 = picam2
        self.ref_count = 1
        self.lock = picam2.request_lock
        self.stop_count = picam2.stop_count
        self.config = dict(picam2.camera_config)
        self.buffers = buffers
        self.seq = seq

    def acquire(self):
        with self.lock:
            if self.ref_count == 0:
                raise RuntimeError("CompletedRequest: acquiring lock with ref_count 0")
            self.ref_count += 1

    def release(self):
        with self.lock:
            self.ref_count -= 1
            if self.ref_count < 0:
                raise RuntimeError("CompletedRequest: lock now has negative ref_count")
            if self.ref_count == 0:
                self.picam2._recycle(self)
                self.buffers = None

    def make_buffer(self, name):
        if self.buffers is None:
            raise RuntimeError("request used after release")
        self.picam2.fake_copies += 1
        if self.config.get(name) is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        return np.frombuffer(self.buffers[name], np.uint8).copy()

    def make_array(self, name):
        buf = self.make_buffer(name)
        cfg = self.config[name]
        fmt, (w, h), stride = cfg["format"], cfg["size"], cfg["stride"]
        if fmt in YUV_FORMATS:
            return buf.reshape((h * 3 // 2, stride))
        ch = 3 if fmt in ("RGB888", "BGR888") else 4
        arr = buf.reshape((h, stride))
        if stride != w * ch:
            arr = np.asarray(arr[:, : w * ch], order="C")
        return arr.reshape((h, w, ch))

    def get_metadata(self):
        return {"SensorTimestamp": time.monotonic_ns(), "ExposureTime": 10000, "Seq": self.seq}


class Picamera2:
    platform = Platform.VC4
    sensor_resolution = (4608, 2592)
    _cameras: list[dict] = []
    _images: list[np.ndarray] = []
    _open: set[int] = set()
    fake_instances: list[Picamera2] = []

    @classmethod
    def global_camera_info(cls) -> list:  # a staticmethod upstream; called the same way
        return [dict(c) for c in cls._cameras]

    def __init__(self, camera_num=0, verbose_console=None, tuning=None, allocator=None):
        num = self.global_camera_info()[camera_num]["Num"]  # IndexError, as in picamera2
        if num in self._open:
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self._open.add(num)
        self.fake_instances.append(self)
        self.camera_idx = num
        self.is_open = True
        self.started = False
        self.stop_count = 0
        self.camera_config = None
        self.request_lock = threading.Lock()
        self.lock = threading.Lock()
        self._job_list: list[Job] = []
        self.completed_requests: list[CompletedRequest] = []
        self._held: set[int] = set()  # ids of requests the application holds
        self._free = 0
        self._cond = threading.Condition(self.lock)
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.fake_waits: list = []
        self.fake_calls: list[str] = []
        self.fake_stalled = False
        self.fake_delivered = 0
        self.fake_copies = 0  # make_array/make_buffer calls: copies out of DMA buffers
        self.fake_released = 0

    # ---------------------------------------------------------------- configuration

    def _is_rpi_camera(self):
        return True

    @staticmethod
    def _stream(defaults: dict, updates: dict | None, ignore=()) -> dict | None:
        if updates is None:
            return None
        valid = ("format", "size", "stride", "preserve_ar")
        for key, value in updates.items():
            if key in valid:
                defaults[key] = value
            elif key not in ignore:
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are {valid}")
        w, h = defaults["size"]
        defaults["size"] = (w - w % 2, h - h % 2)  # align_stream(optimal=False)
        return defaults

    def create_video_configuration(
        self, main={}, lores=None, raw={}, transform=None, colour_space=None,  # noqa: B006
        buffer_count=6, controls={}, display="main", encode="main", queue=True,  # noqa: B006
        sensor={}, use_case="video",  # noqa: B006
    ) -> dict:  # fmt: skip
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        main = self._stream({"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}, main)
        lores = self._stream(
            {"format": "YUV420", "size": main["size"], "preserve_ar": False}, lores
        )
        raw = self._stream({"format": "SBGGR10_CSI2P", "size": main["size"]}, raw, ("fps",))
        controls = {"NoiseReductionMode": 1, "FrameDurationLimits": (33333, 33333)} | controls
        config = {
            "use_case": use_case, "transform": transform, "colour_space": colour_space,
            "buffer_count": buffer_count, "queue": queue, "main": main, "lores": lores,
            "raw": raw, "controls": controls, "sensor": sensor,
        }  # fmt: skip
        for role, name in (("Display", display), ("Encode", encode)):
            if name is not None and config.get(name) is None:
                raise RuntimeError(f"{role} stream {name} was not defined")
        config["display"], config["encode"] = display, encode
        return config

    def _check(self, config: dict) -> None:
        for name in ("main", "lores"):
            s = config.get(name)
            if s is None:
                continue
            if s["format"] not in RGB_FORMATS + YUV_FORMATS:
                raise RuntimeError(f"Bad format {s['format']} in stream {name}")
            if not isinstance(s["size"], tuple) or len(s["size"]) != 2:
                raise RuntimeError(f"size in {name} stream should be (width, height)")
            if s["size"][0] % 2 or s["size"][1] % 2:
                raise RuntimeError("width and height should be even")
        lores = config.get("lores")
        if lores is not None:
            (mw, mh), (lw, lh) = config["main"]["size"], lores["size"]
            if lw > mw or lh > mh:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if self.platform == Platform.VC4 and lores["format"] not in YUV_FORMATS:
                raise RuntimeError("lores stream must be YUV")

    def configure(self, camera_config=None) -> None:
        self.fake_calls.append("configure")
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        config = dict(camera_config)
        self._check(config)
        align = 32 if self.platform == Platform.VC4 else 64
        for name in ("main", "lores"):
            if config.get(name) is not None:
                config[name] = dict(config[name])
                s = config[name]
                s["stride"] = stride_for(s["format"], s["size"][0], align)
        self.camera_config = config
        self._align = align
        self._encoded: dict[int, dict[str, bytes]] = {}

    def camera_configuration(self) -> dict:
        return self.camera_config

    def stream_configuration(self, name="main") -> dict:
        return self.camera_config[name]

    # ---------------------------------------------------------------- running

    def _frame_period(self) -> float:
        c = self.camera_config["controls"]
        if "FrameRate" in c:
            return 1.0 / c["FrameRate"]
        return c["FrameDurationLimits"][0] / 1e6

    def start(self, config=None, show_preview=False) -> None:
        self.fake_calls.append("start")
        if config is not None:
            self.configure(config)
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        if self.started:
            return
        self.started = True
        self._free = self.camera_config["buffer_count"]
        self._thread = threading.Thread(target=self._camera_loop, daemon=True)
        self._thread.start()

    def _buffers(self, n: int) -> dict[str, bytes]:
        i = n % len(self._images)
        if i not in self._encoded:
            out = {}
            for name in ("main", "lores"):
                s = self.camera_config.get(name)
                if s is not None:
                    out[name] = encode(self._images[i], s["format"], s["size"], self._align)
            self._encoded[i] = out
        return self._encoded[i]

    def _camera_loop(self) -> None:
        """The sensor and ISP: fill a free buffer per frame period, then run queued jobs."""
        period = self._frame_period()
        cfg = self.camera_config
        max_queue = 1 if cfg["queue"] and cfg["buffer_count"] > 1 else 0
        next_t = time.monotonic()
        with self._cond:
            while self.started:
                self._cond.wait(max(0.0, next_t - time.monotonic()))
                if not self.started:
                    break
                if time.monotonic() < next_t:
                    continue
                next_t += period
                if self.fake_stalled or self._free == 0:
                    continue  # no frame this period (stalled sensor, or no buffer to fill)
                self._free -= 1
                request = CompletedRequest(self, self._buffers(self._seq), self._seq)
                self.completed_requests.append(request)
                self._seq += 1
                while self._job_list and self.completed_requests:
                    if self._job_list[0].execute():
                        self._job_list.pop(0)
                while len(self.completed_requests) > max_queue:
                    old = self.completed_requests.pop(0)
                    old.ref_count = 0
                    self._free += 1

    def _recycle(self, request: CompletedRequest) -> None:
        with self._cond:
            self._held.discard(id(request))
            self.fake_released += 1
            if self.started and request.stop_count == self.stop_count:
                self._free += 1

    def capture_request_(self):
        if not self.completed_requests:
            return (False, None)
        request = self.completed_requests.pop(0)
        self._held.add(id(request))
        self.fake_delivered += 1
        return (True, request)

    def capture_request(self, wait=None, signal_function=None, flush=None):
        self.fake_waits.append(wait)
        if wait is None:
            wait = signal_function is None
        with self._cond:
            job = Job([self.capture_request_], signal_function)
            if not self._job_list and self.completed_requests:
                job.execute()
            else:
                self._job_list.append(job)
        timeout = None if wait is True else wait
        return job.get_result(timeout=timeout) if wait is not False else job

    def cancel_all_and_flush(self) -> None:
        self.fake_calls.append("cancel_all_and_flush")
        with self._cond:
            for job in self._job_list:
                job.cancel()
            self._job_list = []

    def stop(self) -> None:
        self.fake_calls.append("stop")
        if not self.started:
            return
        with self._cond:
            self.started = False
            self.stop_count += 1
            self.completed_requests = []
            self._cond.notify_all()
        self._thread.join()

    def close(self) -> None:
        self.fake_calls.append("close")
        if not self.is_open:
            return
        self.stop()
        self.is_open = False
        self._open.discard(self.camera_idx)

    # ---------------------------------------------------------------- test hooks

    def fake_outstanding(self) -> int:
        """Requests handed to the application and not yet released."""
        return len(self._held)


def make_module(
    image_paths: list[Path],
    platform: str = "VC4",
    cameras: list[dict] | None = None,
) -> types.ModuleType:
    """A fresh `picamera2` module serving `image_paths` (RGB) as camera frames."""
    images = []
    for p in image_paths:
        bgr = cv2.imread(str(p))
        if bgr is None:
            raise FileNotFoundError(p)
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if cameras is None:
        cameras = [
            {"Model": "imx708", "Location": 2, "Rotation": 180, "Num": 0,
             "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a"},
        ]  # fmt: skip
    cls = type(
        "Picamera2",
        (Picamera2,),
        {
            "platform": Platform[platform], "_cameras": cameras, "_images": images,
            "_open": set(), "fake_instances": [],
        },
    )  # fmt: skip
    mod = types.ModuleType("picamera2")
    mod.Picamera2 = cls
    mod.Platform = Platform
    mod.__fake__ = True
    return mod

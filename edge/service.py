"""systemd integration: sd_notify, a watchdog tied to frame progress, signals, pidfile, reload.

The notify protocol is one datagram per message on the AF_UNIX socket named by $NOTIFY_SOCKET
(a path, or an abstract name written with a leading "@"), holding newline-separated
``KEY=VALUE`` fields. It is small enough to implement here instead of adding a dependency,
and everything is a no-op when NOTIFY_SOCKET is unset (running in a shell, in tests).

How ``edge run`` uses it (edge/app.py, ``run_from_args``, and ``Pipeline.run``):

    with PidFile(pidfile_for_run(pidfile)):   # refused first if another instance runs
        hooks = ServiceHooks(Notifier.from_env(), status_every_s)  # no-op unless NOTIFY_SOCKET
        signals = install_signal_handlers(on_reload=pipe.reload_event.set,
                                          on_stop=pipe.stop_event.set)
        pipe.run()   # per classified frame: hooks.on_frame_classified(pipe.status_text);
                     # per reload (built beside the loop): hooks.on_reload(), then the swap;
                     # at the end: hooks.on_stop(), flush the outputs, close the camera
        signals.restore()

Contract: READY=1 is sent with the first classified frame (not when the process starts), so
``systemctl start`` and ``install.sh`` return only once the camera and model really work.
WATCHDOG=1 is sent from ``on_frame_classified`` only, at most every half WatchdogSec: a hung
camera or a wedged invoke stops the pings and systemd kills and restarts the service.

``edge reload`` outside systemd: ``send_reload(pidfile)`` reads the pidfile ($RUNTIME_DIRECTORY/
edge.pid under systemd, /run/edge/edge.pid otherwise, or --pidfile) and sends SIGHUP.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edge.atomic import write_atomic
from edge.errors import EdgeError

log = logging.getLogger(__name__)

DEFAULT_PIDFILE = Path("/run/edge/edge.pid")
PIDFILE_NAME = "edge.pid"


class ServiceError(EdgeError):
    """A service operation failed (no running instance, stale pidfile, already running)."""


def notify_address(value: str | None) -> str | bytes | None:
    """The socket address for a NOTIFY_SOCKET value: a path, or b"\\0name" for "@name".

    Returns None when unset or of a kind we do not speak (e.g. newer systemd's vsock:).
    """
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd expects in MONOTONIC_USEC."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _one_line(text: str) -> str:
    # A newline would start a new KEY=VALUE field, so STATUS must stay on one line.
    return " ".join(str(text).split())


def format_status(snapshot: str | Mapping[str, object]) -> str:
    """A one-line STATUS text: a str as is, a mapping as ``key=value`` pairs.

    Floats get one decimal, lists/tuples/sets are joined with commas (empty: "-").
    """
    if isinstance(snapshot, str):
        return _one_line(snapshot)
    parts = []
    for key, value in snapshot.items():
        if isinstance(value, float):
            text = f"{value:.1f}"
        elif isinstance(value, list | tuple | set | frozenset):
            text = ",".join(str(v) for v in value) or "-"
        else:
            text = str(value)
        parts.append(f"{key}={text}")
    return _one_line(" ".join(parts))


class Notifier:
    """Sends sd_notify messages; every method is a no-op when there is no NOTIFY_SOCKET.

    The socket is non-blocking: if systemd does not drain it, a message is dropped (and
    counted in ``dropped``) instead of stalling the frame loop.
    """

    def __init__(
        self,
        address: str | bytes | None,
        watchdog_usec: int | None = None,
    ) -> None:
        self.address = address
        self.watchdog_interval: float | None = (
            watchdog_usec / 2e6 if address is not None and watchdog_usec else None
        )
        self.sent = 0
        self.dropped = 0
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID like sd_watchdog_enabled(3).

        The watchdog is off if WATCHDOG_PID names another process (the variables were
        inherited by a child), or if WATCHDOG_USEC is missing or not a positive integer.
        """
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET")
        address = notify_address(raw)
        if raw and address is None:
            log.warning("NOTIFY_SOCKET=%r is not a path or @abstract name; not notifying", raw)
        usec: int | None = None
        try:
            usec = int(env.get("WATCHDOG_USEC", "")) or None
        except ValueError:
            usec = None
        if usec is not None and usec < 0:
            usec = None
        pid = env.get("WATCHDOG_PID")
        if usec and pid and pid.strip() != str(os.getpid()):
            usec = None
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: object) -> bool:
        """Send one datagram of KEY=VALUE fields; True if it was handed to the socket."""
        if self.address is None or not fields:
            return False
        payload = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                    self._sock.setblocking(False)
                self._sock.sendto(payload, self.address)
            except OSError as e:
                self.dropped += 1
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK) and self.dropped == 1:
                    log.warning("sd_notify to %r failed: %s", self.address, e)
                return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send(READY=1, **({"STATUS": _one_line(status)} if status else {}))

    def status(self, text: str) -> bool:
        return self.send(STATUS=_one_line(text))

    def watchdog(self) -> bool:
        """WATCHDOG=1 if systemd asked for a watchdog (WATCHDOG_USEC for this pid)."""
        return self.send(WATCHDOG=1) if self.watchdog_interval else False

    def reloading(self) -> bool:
        return self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec())

    def stopping(self) -> bool:
        return self.send(STOPPING=1)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class ServiceHooks:
    """What the frame loop calls; turns frame progress into READY, WATCHDOG and STATUS.

    ``on_frame_classified`` is the only source of watchdog pings, so pings stop exactly when
    frames stop reaching the classifier.
    """

    def __init__(
        self,
        notifier: Notifier,
        status_every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.status_every_s = status_every_s
        self._clock = clock
        self._ready = False
        self._last_ping = float("-inf")
        self._last_status = float("-inf")

    @property
    def ready_sent(self) -> bool:
        return self._ready

    def on_frame_classified(
        self, snapshot: str | Mapping[str, object] | Callable[[], str] = ""
    ) -> None:
        """Called once per classified frame; `snapshot` may be a callable, so the status text
        is only computed when a STATUS= or READY=1 is actually due."""
        if not self.notifier.enabled:
            return
        now = self._clock()
        interval = self.notifier.watchdog_interval
        if interval and now - self._last_ping >= interval:
            self.notifier.watchdog()
            self._last_ping = now
        if not self._ready:
            text = snapshot() if callable(snapshot) else snapshot
            self.notifier.ready(format_status(text) or "running")
            self._ready = True
            self._last_status = now
        elif snapshot and now - self._last_status >= self.status_every_s:
            text = snapshot() if callable(snapshot) else snapshot
            self.notifier.status(format_status(text))
            self._last_status = now

    def on_status(self, text: str) -> None:
        """A STATUS= outside the frame path, e.g. "waiting for camera" while reconnecting."""
        self.notifier.status(text)

    def on_reload(self) -> None:
        """RELOADING=1 now; READY=1 follows with the next classified frame."""
        self.notifier.reloading()
        self._ready = False

    def on_stop(self) -> None:
        self.notifier.stopping()


@dataclass
class SignalHandlers:
    """The handlers edge installed, and what they replaced (for `restore`)."""

    previous: dict[int, object] = field(default_factory=dict)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self.previous.clear()


def install_signal_handlers(
    on_reload: Callable[[], None], on_stop: Callable[[], None]
) -> SignalHandlers:
    """SIGHUP calls `on_reload`; SIGTERM and SIGINT call `on_stop`. Call from the main thread.

    The callbacks run inside the handler: keep them tiny (set an event); the loop does the rest.
    """
    handlers = SignalHandlers()
    for signum, fn in (
        (signal.SIGHUP, on_reload),
        (signal.SIGTERM, on_stop),
        (signal.SIGINT, on_stop),
    ):
        handlers.previous[signum] = signal.signal(signum, lambda _s, _f, fn=fn: fn())
    return handlers


def default_pidfile(environ: Mapping[str, str] | None = None) -> Path:
    """$RUNTIME_DIRECTORY/edge.pid under systemd (RuntimeDirectory=), else /run/edge/edge.pid."""
    env = os.environ if environ is None else environ
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(runtime) / PIDFILE_NAME if runtime else DEFAULT_PIDFILE


def pidfile_for_run(
    explicit: str | os.PathLike | None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The pidfile ``edge run`` writes: --pidfile, or $RUNTIME_DIRECTORY/edge.pid, else none.

    A plain ``edge run`` from a shell writes no pidfile, so test and dev runs never collide.
    """
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    return default_pidfile(env) if env.get("RUNTIME_DIRECTORY") else None


def read_pid(path: Path) -> int | None:
    """The pid in a pidfile, or None if the file is missing or does not hold a number."""
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _looks_like_edge(pid: int) -> bool:
    # Guards against pid reuse after a crash left the pidfile behind.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pidfile
    return b"edge" in cmdline


class PidFile:
    """Writes our pid on enter and removes the file on exit (only if it still holds our pid).

    ``PidFile(None)`` does nothing. Refuses to start over a live edge process's pidfile.
    """

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path else None

    def __enter__(self) -> PidFile:
        if self.path is None:
            return self
        other = read_pid(self.path)
        if other and other != os.getpid() and _alive(other) and _looks_like_edge(other):
            raise ServiceError(f"edge is already running as pid {other} (pidfile {self.path})")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, f"{os.getpid()}\n".encode())  # never a half-written pid
        return self

    def __exit__(self, *exc) -> None:
        if self.path is not None and read_pid(self.path) == os.getpid():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def find_running(pidfile: str | os.PathLike | None = None) -> int:
    """The pid of the running edge instance, from --pidfile or the default pidfile."""
    path = Path(pidfile) if pidfile else default_pidfile()
    pid = read_pid(path)
    if pid is None:
        raise ServiceError(
            f"no running edge instance: {path} is missing or empty "
            "(under systemd use `systemctl reload edge`, or pass --pidfile)"
        )
    if not _alive(pid) or not _looks_like_edge(pid):
        raise ServiceError(f"stale pidfile {path}: pid {pid} is not a running edge process")
    return pid


def send_reload(pidfile: str | os.PathLike | None = None) -> int:
    """Send SIGHUP to the running instance (what ``edge reload`` does); returns its pid."""
    pid = find_running(pidfile)
    try:
        os.kill(pid, signal.SIGHUP)
    except PermissionError as e:
        raise ServiceError(f"not allowed to signal pid {pid}: run as root or as user edge") from e
    return pid

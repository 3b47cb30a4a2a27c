"""The status page, JSON API, Prometheus /metrics and /healthz, served from their own thread.

Standard-library HTTP plus prometheus-client's text format: nothing to build and nothing from
a CDN, so the page works on an offline device. Handlers only read what the pipeline shares
(stats, the latest frame, results and events); only the Teach API (edge.teach: POST, same
origin, its own header) changes files and sets the reload event. The preview is
JPEG-encoded in the handler threads, only while someone watches, at most `preview_fps` times a
second however many viewers there are, from a frame reference taken under the lock and encoded
outside it: the frame loop never waits for a viewer. Any bind address other than loopback
needs a token, checked on every request (the page, the stream, the API, the snapshots).
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import cv2
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from edge import config as configmod
from edge.errors import EdgeError
from edge.netaddr import lan_urls
from edge.overlay import draw_text
from edge.segment import blend, legend
from edge.sinks.files import jpeg, scale_to_width
from edge.stats import THROTTLE_BITS, Histogram
from edge.webserver import GatedHandler, GatedHTTPServer

log = logging.getLogger(__name__)

PREVIEW_WIDTH = 960  # wider frames are scaled down for the preview
MAX_VIEWERS = 8  # concurrent preview streams; each extra one only costs socket writes
SOURCE_STATES = ("starting", "running", "reconnecting", "failed", "ended", "stopped")
TOKEN_QUERY = re.compile(r"([?&]token=)[^&\s]*")  # kept out of the log
SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.jpe?g$")


# ------------------------------------------------------------------ access


@dataclass(frozen=True)
class Access:
    host: str
    port: int
    token: str | None
    hosts: tuple[str, ...] = ()  # web.hosts: more names the page may be reached by


def parse_bind(bind: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port); port 0 picks a free port."""
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise EdgeError(f"web.bind {bind!r}: give HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def access_from_config(web) -> Access:
    """Where to listen and the token; refuses a non-loopback address without a token."""
    host, port = parse_bind(web.bind)
    token = configmod.read_secret(web.token, web.token_file, "web.token_file")
    if token is not None and not token.strip():
        raise EdgeError("web.token / web.token_file: the token is empty")
    if not is_loopback(host) and not token:
        raise EdgeError(
            f"web.bind {web.bind}: serving on a non-loopback address needs a token: set "
            "web.token (or web.token_file) in the config, or bind to 127.0.0.1"
        )
    return Access(host, port, token.strip() if token else None,
                  tuple(h.lower().rstrip(".") for h in web.hosts))


WILDCARD = ("0.0.0.0", "::", "")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(header: str) -> str:
    """The host part of a Host header: 'a.b:8080' -> 'a.b', '[::1]:80' -> '::1'."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return (h.rsplit(":", 1)[0] if h.count(":") == 1 else h).rstrip(".")


def host_ok(access: Access, header: str | None) -> bool:
    """DNS rebinding guard: a browser sends the name it resolved, so only this server's own
    names pass: the bound address, localhost names on loopback (or on every address), an IP
    address of this machine when bound to every address, and web.hosts. No Host (HTTP/1.0
    tools) passes: browsers always send one."""
    if header is None:
        return True
    name = host_name(header)
    bound = access.host.lower()
    if name == bound or name in access.hosts:
        return True
    if (is_loopback(bound) or bound in WILDCARD) and name in LOOPBACK_NAMES:
        return True
    if bound in WILDCARD:
        try:
            ipaddress.ip_address(name)
            return True  # an address literal cannot be rebound to another machine
        except ValueError:
            return False
    return False


def token_ok(expected: str | None, header: str | None, query: list[str] | None) -> bool:
    """`Authorization: Bearer T` or `?token=T`, compared in constant time."""
    if expected is None:
        return True
    given = ""
    if header and header.lower().startswith("bearer "):
        given = header[7:].strip()
    elif query:
        given = query[0]
    return hmac.compare_digest(given.encode(), expected.encode())


# ------------------------------------------------------------------ shared readings


def health(pipe, snap: dict | None = None) -> tuple[bool, str]:
    """(ok, reason): ok while the source runs and a frame was classified recently."""
    s = snap or pipe.stats.summary()
    cfg = pipe.view.cfg
    max_fps = cfg.inference.max_fps
    limit = max(5.0, 3 * cfg.source.stall_timeout_s, 3 / max_fps if max_fps else 0.0,
                3 * min((r.every_s or 0.0 for r in pipe.view.regions), default=0.0))
    state = s["source_state"]
    if state != "running":
        err = f": {s['source_error']}" if s.get("source_error") else ""
        return False, f"source {state}{err}"
    age = s["last_result_age_s"]
    if age is None:
        return False, "no frame classified yet"
    if age > limit:
        return False, f"no frame classified for {age:.1f} s (limit {limit:g} s)"
    return True, f"ok: {s['frames_classified']} frames classified, last {age:.2f} s ago"


def snapshot_url(path: str | None, dirs: tuple[Path, ...]) -> str | None:
    if not path:
        return None
    p = Path(path)
    if p.parent in dirs and SNAPSHOT_NAME.match(p.name):
        return f"snapshots/{p.name}"
    return None


def find_snapshot(name: str, dirs: tuple[Path, ...]) -> Path | None:
    """The file `name` in a served directory; None for anything else (no path traversal)."""
    if not SNAPSHOT_NAME.match(name):
        return None
    for d in dirs:
        base = d.resolve()
        p = (base / name).resolve()
        if p.parent == base and p.is_file():
            return p
    return None


def events_since(pipe, since: int, limit: int = 100) -> dict:
    """Recent events newer than id `since`, oldest first, with their snapshot URLs."""
    live = pipe.live
    with live.lock:
        items = [(i, e) for i, e in live.events if i > since][-limit:]
        last = live.event_seq
    dirs = pipe.view.served_dirs
    out = []
    for i, e in items:
        d = dict(e)  # the JSON shape every sink saw, snapshot path included
        d["id"] = i
        d["snapshot_url"] = snapshot_url(d.get("snapshot"), dirs)
        out.append(d)
    return {"events": out, "last": last}


def _rounded(levels: dict[str, dict]) -> dict[str, dict]:
    """float32 in the chain: 0.6 would read 0.6000000238."""
    return {
        label: {k: None if v is None else round(v, 6) for k, v in lv.items()}
        for label, lv in levels.items()
    }


def regions_now(pipe) -> list[dict]:
    """Per ROI: box, current top labels, active set, watched scores and their thresholds."""
    with pipe.live.lock:
        results = dict(pipe.live.results)
    out = []
    for region in pipe.view.regions:
        r = results.get(region.name)
        out.append({
            "name": region.name,
            "box": list(region.box) if region.box else None,
            "model": region.model,
            "rate": region.rate,
            "every_s": region.every_s,
            "seq": r.seq if r else None,
            "top": [[label, round(float(s), 4)] for label, s in r.top] if r else [],
            "active": list(r.active) if r else [],
            "scores": {k: round(float(v), 4) for k, v in r.scores.items()} if r else {},
            "watched": _rounded(region.watched),
            # levels for the top labels, for a chain that names no label (hysteresis on all)
            "top_levels": _rounded(region.levels_of([lb for lb, _ in r.top] if r else [])),
        })
    return out


def source_info(pipe) -> dict:
    """What the page's header names: the configured source (credentials masked) and the size
    of the frames actually arriving (None before the first one)."""
    src = pipe.view.source
    with pipe.live.lock:
        frame = pipe.live.frame
    h, w = frame.image.shape[:2] if frame is not None else (None, None)
    return {"kind": src["kind"], "device": src["device"], "path": src["path"],
            "width": w, "height": h}


def status(app: App) -> dict:
    pipe = app.pipe
    snap = pipe.stats.summary()
    ok, reason = health(pipe, snap)
    return {
        "device": pipe.view.cfg.device,
        "time": time.time(),
        "health": {"ok": ok, "reason": reason},
        "stats": snap,
        "model": pipe.view.model,
        "system": app.system.read(),
        "sinks": pipe.view.sink_stats(),
        "regions": regions_now(pipe),
        "source": source_info(pipe),
        "last_event": pipe.live.event_seq,
        "web": {"viewers": app.viewers, "preview_fps": app.preview.fps},
    }


# ------------------------------------------------------------------ preview


def text_scale(width: int) -> float:
    """Font scale of the preview's text: ~19 px tall at 640 px wide, so still ~11 CSS px
    when a phone shows the preview 370 px wide."""
    return max(0.4, width / 740)


def render(frame, regions: list, results: dict, quality: int = 80, mask=None,
           labels: list[str] | None = None) -> bytes:
    """JPEG of the frame with each ROI's box and its current label drawn on it (and a
    segmenter's class map tinted over it, with a legend at the bottom left)."""
    # the full-resolution image (a Pi camera's rgb is the model-size lores), scaled down for a
    # 1080p camera: a smaller preview is cheaper to encode
    rgb = scale_to_width(frame.image, PREVIEW_WIDTH, cv2.INTER_LINEAR)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # a copy: the frame itself stays untouched
    h, w = bgr.shape[:2]
    scale = text_scale(w)
    if mask is not None:
        blend(bgr, mask)  # legend below the whole-frame line at the top left
        legend(bgr, mask, labels or [], 0, round(36 * scale))
    for region in regions:
        r = results.get(region.name)
        x0, y0, x1, y1 = region.box or (0.0, 0.0, 1.0, 1.0)
        p0, p1 = (round(x0 * w), round(y0 * h)), (round(x1 * w) - 1, round(y1 * h) - 1)
        color = (80, 220, 80) if r and r.active else (0, 200, 255)
        if region.box:
            cv2.rectangle(bgr, p0, p1, color, max(1, round(scale * 3)))
        text = f"{region.name}: " if region.name else ""
        if r and r.top:
            text += f"{r.top[0][0][:32]} {r.top[0][1]:.2f}"
        if r and r.active:
            text += "  IN: " + ", ".join(r.active)
        if text:
            draw_text(bgr, text, p0[0], p0[1], color, scale)
    stamp = time.strftime("%H:%M:%S", time.localtime(frame.ts)) + f"  #{frame.seq}"
    draw_text(bgr, stamp, 0, h, (230, 230, 230), scale)
    return jpeg(bgr, quality)


class Preview:
    """The latest frame as an annotated JPEG, shared by all viewers and encoded only on demand."""

    def __init__(self, pipe, fps: float) -> None:
        self.pipe, self.fps = pipe, fps
        self.lock = threading.Lock()
        self.seq = -1
        self.data: bytes | None = None
        self.at = -1e9
        self.encoded = 0

    def latest(self) -> tuple[int, bytes] | None:
        with self.lock:
            now = time.monotonic()
            if self.data is not None and now - self.at < 0.9 / self.fps:
                return self.seq, self.data  # another viewer just encoded: share it
            live = self.pipe.live
            with live.lock:  # only take references; encode after letting go
                frame, results, mask = live.frame, dict(live.results), live.mask
            if frame is None:
                return None
            if frame.seq != self.seq:
                seg = mask[1] if mask is not None and mask[0] == frame.seq else None
                self.data = render(frame, self.pipe.view.regions, results, mask=seg,
                                   labels=self.pipe.view.labels)
                self.seq = frame.seq
                self.encoded += 1
            self.at = now
            return self.seq, self.data


# ------------------------------------------------------------------ metrics


def _histogram(name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
    buckets, total = [], 0
    for bound, n in zip((*h.bounds, float("inf")), h.counts, strict=True):
        total += n
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h.sum)


class Metrics:
    """A prometheus-client collector that reads the pipeline's stats when scraped."""

    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self):
        pipe = self.app.pipe
        s = pipe.stats.summary()
        for key, doc in (
            ("frames_captured", "frames read from the source"),
            ("frames_classified", "frames classified"),
            ("frames_dropped", "frames replaced by a newer one before being classified"),
            ("frames_skipped", "unchanged frames the motion gate did not classify"),
        ):
            yield CounterMetricFamily(f"edge_{key}", doc, value=s[key])
        yield CounterMetricFamily("edge_source_reconnects", "source reconnects",
                                  value=s["reconnects"])
        hists = pipe.stats.histograms()
        yield _histogram("edge_invoke_seconds", "model invoke time per frame (all ROIs)",
                         hists["invoke"])
        yield _histogram("edge_latency_seconds", "end-to-end latency: capture to result",
                         hists["latency"])
        for key in ("capture_fps", "classify_fps"):
            yield GaugeMetricFamily(f"edge_{key}", f"{key.split('_')[0]} rate, last 5 s",
                                    value=s[key])
        if s["last_result_age_s"] is not None:
            yield GaugeMetricFamily("edge_last_result_age_seconds",
                                    "seconds since the last frame was classified",
                                    value=s["last_result_age_s"])
        state = GaugeMetricFamily("edge_source_state", "1 for the source's current state",
                                  labels=["state"])
        for name in dict.fromkeys((*SOURCE_STATES, s["source_state"])):
            state.add_metric([name], 1.0 if name == s["source_state"] else 0.0)
        yield state
        ok, _ = health(pipe, s)
        yield GaugeMetricFamily("edge_healthy", "1 while /healthz answers 200", value=float(ok))
        invokes = CounterMetricFamily("edge_model_invokes", "model invokes, by model",
                                      labels=["model"])
        for model, n in sorted(s["invokes"].items()):
            invokes.add_metric([model], n)
        yield invokes
        events = CounterMetricFamily("edge_events", "events by type and label",
                                     labels=["type", "label"])
        for key, n in sorted(s["events"].items()):
            kind, _, label = key.partition(":")
            events.add_metric([kind, label], n)
        yield events
        yield from self._regions(pipe)
        yield from self._sinks(pipe)
        yield from self._system()
        yield from self._model(pipe)
        yield GaugeMetricFamily("edge_web_viewers", "preview streams open",
                                value=self.app.viewers)
        yield CounterMetricFamily("edge_web_preview_frames", "preview frames JPEG-encoded",
                                  value=self.app.preview.encoded)

    @staticmethod
    def _regions(pipe):
        score = GaugeMetricFamily("edge_score", "watched label's score after the chain",
                                  labels=["roi", "label"])
        active = GaugeMetricFamily("edge_label_active", "1 while a watched label is active",
                                   labels=["roi", "label"])
        for r in regions_now(pipe):
            roi = r["name"] or ""
            for label, v in r["scores"].items():
                score.add_metric([roi, label], v)
                active.add_metric([roi, label], float(label in r["active"]))
        yield score
        yield active

    @staticmethod
    def _sinks(pipe):
        sinks = pipe.view.sink_stats()
        fams = {
            "queued": GaugeMetricFamily("edge_sink_queue_depth", "items waiting", labels=["sink"]),
            "capacity": GaugeMetricFamily("edge_sink_queue_capacity", "queue size",
                                          labels=["sink"]),
            "sent": CounterMetricFamily("edge_sink_sent", "items delivered", labels=["sink"]),
            "dropped": CounterMetricFamily("edge_sink_dropped", "items dropped (queue full)",
                                           labels=["sink"]),
            "errors": CounterMetricFamily("edge_sink_errors", "delivery errors", labels=["sink"]),
        }
        for name, st in sinks.items():
            for key, fam in fams.items():
                if isinstance(st.get(key), (int, float)):
                    fam.add_metric([name], st[key])
        yield from fams.values()

    def _system(self):
        sysinfo = self.app.system.read()
        if sysinfo.get("cpu_temperature_c") is not None:
            yield GaugeMetricFamily("edge_cpu_temperature_celsius", "SoC temperature",
                                    value=sysinfo["cpu_temperature_c"])
        thr = sysinfo.get("throttled")
        if thr is not None:
            fam = GaugeMetricFamily("edge_throttled", "Raspberry Pi throttling flags "
                                    "(vcgencmd get_throttled)", labels=["flag"])
            for name in THROTTLE_BITS.values():
                fam.add_metric([name], float(name in thr["flags"]))
            yield fam

    @staticmethod
    def _model(pipe):
        m = pipe.view.model
        info = GaugeMetricFamily("edge_model_info", "the model and backend in use",
                                 labels=["model", "backend", "backend_version", "threads"])
        info.add_metric([str(m.get(k, "")) for k in ("model", "backend", "backend_version",
                                                     "threads")], 1.0)
        yield info
        if isinstance(m.get("xnnpack_partitions"), int):
            yield GaugeMetricFamily("edge_xnnpack_partitions",
                                    "subgraphs delegated to XNNPACK", value=m["xnnpack_partitions"])


# ------------------------------------------------------------------ HTTP


def page_html(page: str = "index.html", script: str = "app.js") -> str:
    """index.html with the stylesheet and script inlined: one request, nothing external."""
    files = resources.files("edge") / "web_static"
    html = (files / page).read_text(encoding="utf-8")
    return html.replace("/*STYLE*/", (files / "style.css").read_text(encoding="utf-8")).replace(
        "/*SCRIPT*/", (files / script).read_text(encoding="utf-8")
    )


TEACH_HEADER = "X-Edge-Teach"  # the Teach page sets it; a form or another site cannot
MAX_BODY = 64 * 1024


def cross_origin(headers) -> str | None:
    """Why a state-changing request is not from this page's own origin, or None. A browser
    sends Origin on every POST (and Sec-Fetch-Site): it must name the Host asked for."""
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site {site[:30]!r}"
    origin = headers.get("Origin")
    if origin is None:
        return None  # curl and scripts; the custom header is still required
    o = urlsplit(origin)
    host = (headers.get("Host") or "").lower()
    if o.scheme not in ("http", "https") or not host or o.netloc.lower() != host:
        return f"Origin {origin[:100]!r} is not this page ({host[:100]!r})"
    return None


SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
CSP = ("default-src 'none'; img-src 'self' data:; connect-src 'self'; "
       "style-src 'unsafe-inline'; script-src 'unsafe-inline'")


FORM_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"


def token_form(path: str, tried: bool) -> bytes:
    """A form that GETs the same path with ?token=: the page then passes the token on."""
    action = html.escape(path if path.startswith("/") else "/", quote=True)
    note = '<p class="bad">wrong token</p>' if tried else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>edge: token</title>
<style>body{{font:16px system-ui,sans-serif;background:#15181c;color:#e6e8eb;margin:0;
display:flex;justify-content:center;padding-top:15vh}}form{{display:flex;flex-direction:column;
gap:10px;width:min(320px,90vw)}}input,button{{font:inherit;padding:8px}}.bad{{color:#f85149}}
p{{margin:0}}</style></head><body><form method="get" action="{action}">
<h1 style="font-size:20px;margin:0">edge</h1><p>This page needs the access token
(<code>web.token</code> or the file named by <code>web.token_file</code>).</p>{note}
<input name="token" type="password" autocomplete="current-password" placeholder="token"
aria-label="token" required autofocus><button type="submit">Open</button></form></body></html>
""".encode()


class App:
    """What the handlers share: the pipeline, the access rules, the preview and the registry."""

    def __init__(self, pipe, access: Access, preview_fps: float, teach=None) -> None:
        self.pipe, self.access = pipe, access
        self.teach = teach  # edge.teach.Teach, or None (then /api/teach is 404)
        self.teach_page = page_html("teach.html", "teach.js").encode()
        self.preview = Preview(pipe, preview_fps)
        self.system = pipe.stats.system
        self.page = page_html().encode()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Metrics(self))
        self.stopping = threading.Event()
        self.viewers = 0
        self.viewers_lock = threading.Lock()


class Handler(GatedHandler, BaseHTTPRequestHandler):
    server_version = "edge"
    app: App  # set on the subclass made per server

    # -------------------------------------------------------- plumbing
    def log_message(self, fmt, *args) -> None:
        log.debug("%s %s", self.address_string(), TOKEN_QUERY.sub(r"\1***", fmt % args))

    def _send(self, code: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data, code: int = 200) -> None:
        self._send(code, json.dumps(data, default=str).encode(), "application/json")

    def _text(self, code: int, text: str, extra: dict | None = None) -> None:
        self._send(code, (text + "\n").encode(), "text/plain; charset=utf-8", extra)

    def _unauthorized(self, path: str, tried: bool) -> None:
        """401: a token form for a browser (it asks for text/html), the plain text for others."""
        extra = {"WWW-Authenticate": 'Bearer realm="edge"'}
        if "text/html" in self.headers.get("Accept", ""):
            self._send(401, token_form(path, tried), "text/html; charset=utf-8",
                       {**extra, "Content-Security-Policy": FORM_CSP})
            return
        self._text(401, "unauthorized: send Authorization: Bearer <web.token> or ?token=", extra)

    def _refuse(self) -> None:
        self._text(405, "method not allowed: only /api/teach/... takes POST (docs/web.md); "
                   "everything else is GET", {"Allow": "GET"})

    do_PUT = do_DELETE = do_PATCH = _refuse

    def _admitted(self, url, query) -> bool:
        """The Host and token checks every request passes first."""
        app = self.app
        if not host_ok(app.access, self.headers.get("Host")):
            host = (self.headers.get("Host") or "")[:100]
            self._text(421, f"misdirected request: Host {host!r} is not a name of this page "
                       "(add it to web.hosts in the config)")
            return False
        if not token_ok(app.access.token, self.headers.get("Authorization"), query.get("token")):
            self._unauthorized(url.path, "token" in query)
            return False
        return True

    def do_POST(self) -> None:
        """Only the Teach API changes state: same origin, its header, a small JSON body."""
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._admitted(url, query):
            return
        why = cross_origin(self.headers)
        if why is not None:  # before routing: no cross-origin POST reaches any handler
            self._json({"error": f"forbidden: cross-origin request ({why})"}, 403)
            return
        if not (url.path == "/api/teach" or url.path.startswith("/api/teach/")):
            self._refuse()
            return
        if self.headers.get(TEACH_HEADER) != "1":
            self._json({"error": f"forbidden: state-changing requests need the header "
                        f"{TEACH_HEADER}: 1 (the Teach page sets it)"}, 403)
            return
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            self._json({"error": "the body must be JSON (Content-Type: application/json)"}, 415)
            return
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            self._json({"error": "Content-Length required"}, 411)
            return
        if not 0 <= length <= MAX_BODY:
            self._json({"error": f"body larger than {MAX_BODY} bytes"}, 413)
            return
        try:
            body = self.rfile.read(length)
            self._teach("POST", url.path, query, body)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass

    def _teach(self, method: str, path: str, query: dict, body: bytes | None) -> None:
        teach = self.app.teach
        if teach is None:
            self._json({"error": "teach is not available here"}, 404)
            return
        r = teach.handle(method, path, query, body)
        self._send(r.code, r.body, r.ctype)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._admitted(url, query):
            return
        path = url.path
        try:
            if path == "/api/teach" or path.startswith("/api/teach/"):
                self._teach("GET", path, query, None)
                return
            if path.startswith("/snapshots/"):
                self._snapshot_file(path[len("/snapshots/"):])
                return
            route = ROUTES.get(path)
            if route is None:
                self._text(404, f"not found: {path}")
                return
            route(self, query)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client went away

    # -------------------------------------------------------- endpoints
    def page(self, query) -> None:
        self._send(200, self.app.page, "text/html; charset=utf-8",
                   {"Content-Security-Policy": CSP})

    def teach_page(self, query) -> None:
        self._send(200, self.app.teach_page, "text/html; charset=utf-8",
                   {"Content-Security-Policy": CSP})

    def api_status(self, query) -> None:
        self._json(status(self.app))

    def api_events(self, query) -> None:
        try:
            since = int(query.get("since", ["0"])[0])
        except ValueError:
            self._text(400, "since: give an event id (an integer)")
            return
        self._json(events_since(self.app.pipe, since))

    def api_config(self, query) -> None:
        self._json(configmod.masked(self.app.pipe.view.cfg))

    def metrics(self, query) -> None:
        self._send(200, generate_latest(self.app.registry), CONTENT_TYPE_LATEST)

    def healthz(self, query) -> None:
        ok, reason = health(self.app.pipe)
        self._text(200 if ok else 503, reason)

    def snapshot_jpg(self, query) -> None:
        got = self.app.preview.latest()
        if got is None:
            self._text(503, "no frame yet")
            return
        self._send(200, got[1], "image/jpeg")

    def _snapshot_file(self, name: str) -> None:
        p = find_snapshot(name, self.app.pipe.view.served_dirs)
        if p is None:
            self._text(404, "no such snapshot")
            return
        self._send(200, p.read_bytes(), "image/jpeg")

    def stream(self, query) -> None:
        """MJPEG (multipart/x-mixed-replace) at preview_fps until the viewer leaves."""
        app = self.app
        with app.viewers_lock:
            if app.viewers >= MAX_VIEWERS:
                self._text(503, f"too many preview viewers (max {MAX_VIEWERS})")
                return
            app.viewers += 1
            app.pipe.full_demand.viewers = app.viewers  # the preview wants full frames
        try:
            self.connection.settimeout(10)  # a stalled viewer frees its thread
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            for k, v in SECURITY_HEADERS.items():
                self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"--frame\r\n")
            period, last = 1.0 / app.preview.fps, -1
            while not app.stopping.is_set():
                t0 = time.monotonic()
                got = app.preview.latest()
                if got is not None and got[0] != last:
                    last, data = got
                    head = b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data)
                    self.wfile.write(head + data + b"\r\n--frame\r\n")
                app.stopping.wait(max(0.0, period - (time.monotonic() - t0)))
        except OSError:
            pass  # the viewer closed the page
        finally:
            with app.viewers_lock:
                app.viewers -= 1
                app.pipe.full_demand.viewers = app.viewers


ROUTES = {
    "/": Handler.page,
    "/index.html": Handler.page,
    "/teach": Handler.teach_page,
    "/api/status": Handler.api_status,
    "/api/events": Handler.api_events,
    "/api/config": Handler.api_config,
    "/metrics": Handler.metrics,
    "/healthz": Handler.healthz,
    "/snapshot.jpg": Handler.snapshot_jpg,
    "/stream.mjpg": Handler.stream,
}


class WebServer:
    """The HTTP server thread; `stop()` ends it and every open preview stream."""

    def __init__(self, web_cfg, pipe, teach=None) -> None:
        self.access = access_from_config(web_cfg)
        self.app = App(pipe, self.access, web_cfg.preview_fps, teach)
        handler = type("BoundHandler", (Handler,), {"app": self.app})
        server = GatedHTTPServer  # bounded threads, request heads collected without a thread
        if ":" in self.access.host:
            server = type("Server6", (GatedHTTPServer,), {"address_family": socket.AF_INET6})
        self.httpd = server((self.access.host, self.access.port), handler)  # OSError: in use
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="web", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def start(self) -> WebServer:
        self.thread.start()
        auth = "token required" if self.access.token else "no token: loopback only"
        log.info("web: serving %s (%s)", self.url, auth)
        lan = lan_urls(*self.httpd.server_address[:2])
        if lan:
            log.info("web: from another device: %s", " or ".join(lan))
        return self

    def stop(self) -> None:
        self.app.stopping.set()
        if self.app.teach is not None:
            self.app.teach.stop()  # a training child does not outlive the service
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(2)


def start_web(web_cfg, pipe, teach=None) -> WebServer | None:
    """Start the page, API, /metrics and /healthz; EdgeError for an unsafe bind.

    A port that is taken only costs the page, not the camera: classification is the job, so
    that is a warning (and None) rather than a reason to stop.
    """
    try:
        return WebServer(web_cfg, pipe, teach).start()
    except OSError as e:
        log.warning("web: cannot listen on %s (%s): running without the web page; set "
                    "web.bind to a free port, or web.enabled: false", web_cfg.bind,
                    e.strerror or e)
        return None

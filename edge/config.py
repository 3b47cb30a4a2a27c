"""The configuration schema: the single source of truth for every option.

Each option's type, default, allowed values and help text live in the pydantic models below
(post-processing stages and sinks bring their own `Params` models through their registries).
Validation, `edge config show/schema`, the docs and `--help` all read from here. Errors point
at the file, line and column, the key path, what was given and what is allowed.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from edge import labels as labelmatch
from edge.errors import ConfigError
from edge.limits import (
    MAX_CONFIG_BYTES,
    FileLimitError,
    human,
    read_capped,
)
from edge.postprocess import STAGES
from edge.schema import (  # noqa: F401  (spec_items, read_secret: part of the config API)
    Resize,
    Strict,
    _single_key,
    read_secret,
    spec_items,
    spec_union,
)
from edge.sinks import SINKS
from edge.urlmask import mask_url
from edge.yamlbound import compose_and_load

DEFAULT_PATH = Path("/etc/edge/edge.yaml")
# Without a `postprocess:` key: smooth a little, then an event when any label holds >= 0.6.
DEFAULT_CHAIN = (
    {"smooth": {"method": "ema", "alpha": 0.5}},
    {"hysteresis": {"enter": 0.6, "exit": 0.4, "min_frames": 3, "cooldown_s": 10}},
)


class SourceConfig(Strict):
    kind: Literal["auto", "picamera2", "opencv", "files"] = Field(
        "auto",
        description="auto: the Pi camera if present, else /dev/video0; opencv: USB camera, "
        "stream or video file; files: an image, folder or glob",
    )
    device: Annotated[int, Field(ge=0, le=1023)] | str = Field(
        0,
        description="opencv: camera index, /dev/videoN, rtsp:// or http:// URL, or a video "
        "file; picamera2: camera number",
    )
    path: str | None = Field(None, description="files: an image, a folder or a glob")
    width: int = Field(640, ge=16, le=8192, description="capture width in pixels")
    height: int = Field(480, ge=16, le=8192, description="capture height in pixels")
    fps: float = Field(30.0, ge=0.01, le=240, description="requested camera frame rate")
    fourcc: str = Field("MJPG", min_length=4, max_length=4, description="USB camera format")
    loop: bool = Field(False, description="files and video files: start again at the end")
    realtime: bool = Field(
        True,
        description="files and video files: deliver frames at the video's frame rate (images: "
        "`fps`) like a camera, so slow inference drops frames; false: as fast as they can be "
        "read (benchmarks, --no-drop)",
    )
    lores_format: Literal["auto", "YUV420", "RGB888"] = Field(
        "auto",
        description="picamera2 low-res stream format; auto: YUV420 on a Pi 4 (VC4 needs it), "
        "RGB888 on a Pi 5 (24-bit RGB, requested as picamera2's 'BGR888', whose bytes are R,G,B)",
    )
    stall_timeout_s: float = Field(
        5.0, ge=0.1, le=3600, description="no frame for this long counts as a stall: reconnect"
    )
    stale_frames: int = Field(
        50,
        ge=0,
        le=100_000,
        description="this many byte-identical frames in a row count as a stall (an unplugged "
        "USB camera keeps returning its last frame); 0 turns the check off",
    )
    backoff_initial_s: float = Field(0.5, ge=0.01, le=3600, description="first reconnect delay")
    backoff_max_s: float = Field(
        30.0, ge=0.01, le=3600, description="reconnect delay cap (doubles up to it)"
    )


class ModelConfig(Strict):
    path: str = Field(
        "mobilenet_v2_int8",
        description="a .tflite file, or a name from `edge models list` (looked up in the "
        "model directory)",
    )
    labels: str | None = Field(
        None, description="labels file; null: the labels embedded in the model's metadata"
    )
    backend: Literal["auto", "litert", "tflite-runtime", "tensorflow"] = Field(
        "auto", description="auto tries ai-edge-litert, then tflite-runtime, then tensorflow"
    )
    threads: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        "auto",
        description="interpreter threads; auto: on the first `edge run` with this model, CPU "
        "and source, the real pipeline is timed per candidate for a few seconds (at a camera's "
        "pace the fewest threads that keep up, else the fastest; edge.tuning) and cached; "
        "elsewhere (edge classify, a bounded run) 1..min(4, cores) bare invokes are timed",
    )
    resize: Resize = Field(
        "box",
        description="box: average whole blocks of pixels (the largest factor per axis that "
        "keeps the model's size), then bilinear: anti-aliased and bit-identical on x86 and ARM; "
        "linear: bilinear only (aliases when shrinking 2x or more; bit-identical); "
        "area: area averaging (not bit-identical on ARM); crop: centre crop to the model's "
        "aspect, then linear",
    )
    xnnpack: bool = Field(True, description="use the XNNPACK delegate (fast int8 kernels)")
    coverage: Literal["area", "largest_blob"] = Field(
        "area",
        description="segmentation models only: a class's score in a region is the share of the "
        "region it covers (area), or the share its largest connected blob covers (largest_blob)",
    )
    min_blob: float = Field(
        0.0, ge=0, le=1,
        description="segmentation models only: blobs smaller than this share of the region are "
        "ignored (not scored, not counted, no box)",
    )


SEGMENTER_MAX_FPS = 2.0  # a segmenter's default cap: ~50-150 ms per invoke here, ~1 s on a Pi 4


MIN_FPS = 0.001  # below it a period overflows timers (1e-300 did) and nothing happens anyway


class InferenceConfig(Strict):
    max_fps: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="cap on classifications per second (at least 0.001: one per 17 min); 0: as "
        f"fast as frames come for a classifier, {SEGMENTER_MAX_FPS:g} per second for a "
        "segmentation model (its invoke costs ~20x a classifier's; --no-drop runs uncapped)",
    )

    motion_threshold: float = Field(
        0.0,
        ge=0,
        le=1,
        description="motion gate: skip the invoke while the frame has not changed, i.e. the "
        "mean absolute difference of a ~40x30 thumbnail against the last classified frame "
        "stays below this share of full scale (0.01-0.03 suits a fixed camera); a skipped "
        "frame gives no result and no event, and is counted; 0: off, every frame classified",
    )
    motion_max_skip_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="motion gate: classify at least one frame this often even when nothing "
        "changes",
    )

    @field_validator("max_fps")
    @classmethod
    def _usable_fps(cls, v: float) -> float:
        if 0 < v < MIN_FPS:
            raise ValueError(f"must be 0 (no cap) or at least {MIN_FPS:g}")
        return v


_Fraction = Annotated[float, Field(ge=0, le=1)]


class WhenConfig(Strict):
    roi: str = Field(..., min_length=1, description="the gating region: one listed before this one")
    active: list[str] = Field(
        ..., min_length=1,
        description="labels or globs (*, ?, [..]); this region runs only while one of them is "
        "active in the gating region",
    )


_STAGE = spec_union(STAGES)  # a region's own chain: the same stages as the top-level one


class RoiConfig(Strict):
    name: str = Field(..., min_length=1, description="names the region in results and events")
    box: tuple[_Fraction, _Fraction, _Fraction, _Fraction] = Field(
        ..., description="x0, y0, x1, y1 as fractions of the frame (0..1)"
    )
    model: ModelConfig | None = Field(
        None,
        description="this region's own model: a name or path (as model.path, the other model "
        "options at their defaults) or a whole model section; null: the top-level model. "
        "Regions naming the same model share one interpreter",
    )
    every_s: float | None = Field(
        None, gt=0, le=86400,
        description="run this region's model at most once per this many seconds (with "
        "--no-drop, in the file's own time: frame number / frame rate); null: every frame",
    )
    max_fps: float | None = Field(
        None, gt=0, le=240, description="the same rate as a frequency (1 / every_s); give one"
    )
    postprocess: list[_STAGE] | None = Field(
        None, description="this region's own chain (replaces the top-level one); null: the "
        "top-level postprocess"
    )
    when: WhenConfig | None = Field(
        None,
        description="run only while another region has one of these labels active (a cascade: "
        "e.g. the bird model on the feeder only while the scene model sees a bird)",
    )

    @field_validator("model", mode="before")
    @classmethod
    def _model_name(cls, v):
        return {"path": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_rate(self):
        if self.every_s is not None and self.max_fps is not None:
            raise ValueError("give every_s or max_fps, not both")
        return self

    @field_validator("box")
    @classmethod
    def _box_in_frame(cls, v: tuple[float, float, float, float]):
        x0, y0, x1, y1 = v
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError("box must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        return v


class WebConfig(Strict):
    enabled: bool = Field(True, description="serve the status page, /metrics and /healthz")
    bind: str = Field(
        "127.0.0.1:8080",
        pattern=r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$",
        description="HOST:PORT; any address other than loopback requires a token",
    )
    token: str | None = Field(None, description="access token (prefer token_file or ${ENV})")
    token_file: str | None = Field(None, description="file holding the access token")
    preview_fps: float = Field(5.0, ge=0.1, le=30, description="MJPEG preview rate per viewer")
    hosts: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list,
        description="more host names the page may be reached by (e.g. edge.local); any other "
        "Host header gets 421, so DNS rebinding cannot reach the page",
    )


class ServiceConfig(Strict):
    status_every_s: float = Field(5.0, ge=0.1, le=3600, description="systemd STATUS= update period")
    stats_every_s: float = Field(
        60.0, ge=0, le=86400, description="stats line in the log; 0: never"
    )
    watch_config: bool = Field(False, description="reload when the config file changes")
    pidfile: str | None = Field(
        None, description="pid file for `edge reload`; default $RUNTIME_DIRECTORY/edge.pid"
    )


def _build_config_model():
    stage = spec_union(STAGES)
    sink = spec_union(SINKS)
    return create_model(
        "Config",
        __base__=Strict,
        __doc__="edge configuration (YAML)",
        device=(
            str,
            Field(
                default_factory=socket.gethostname,
                min_length=1,
                description="names this device in events and MQTT topics (default: hostname)",
            ),
        ),
        source=(SourceConfig, Field(default_factory=SourceConfig, description="the camera")),
        model=(ModelConfig, Field(default_factory=ModelConfig, description="the classifier")),
        inference=(
            InferenceConfig,
            Field(default_factory=InferenceConfig, description="how often to classify"),
        ),
        rois=(
            list[RoiConfig],
            Field(default_factory=list, description="named regions, each classified on its own"),
        ),
        postprocess=(
            list[stage],
            Field(
                default_factory=lambda: [dict(s) for s in DEFAULT_CHAIN],
                description="stages applied to the scores, in order (replaces the default "
                "chain when given)",
            ),
        ),
        outputs=(
            list[sink],
            Field(
                default_factory=lambda: [{"log": {}}],
                description="where results and events go (replaces the default when given)",
            ),
        ),
        web=(WebConfig, Field(default_factory=WebConfig, description="status page and metrics")),
        service=(ServiceConfig, Field(default_factory=ServiceConfig, description="systemd")),
    )


_MODEL = _build_config_model()  # every stage and sink has registered by now (imports above)


def config_model():
    """The Config model class."""
    return _MODEL


# ---------------------------------------------------------------- loading with positions

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _positions(node, path=(), out=None) -> dict[tuple, tuple[int, int]]:
    """Map each key path to the 1-based (line, column) of its value in the YAML text."""
    out = {} if out is None else out
    out.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[(*path, key)] = (k.start_mark.line + 1, k.start_mark.column + 1)
            _positions(v, (*path, key), out)
            out[(*path, key)] = (k.start_mark.line + 1, k.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _positions(v, (*path, i), out)
    return out


def _interpolate(value: Any, where: str, path: tuple = (), pos: dict | None = None) -> Any:
    """${VAR} and ${VAR:-default} in strings, so secrets need not sit in the file."""
    if isinstance(value, dict):
        return {k: _interpolate(v, where, (*path, k), pos) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, where, (*path, i), pos) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def sub(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{_at(where, pos or {}, path)}: {_dotted(path)}: environment variable {name} "
                "is not set "
                f"(set it, or write ${{{name}:-default}})"
            )

        return _ENV.sub(sub, value)
    return value


def _at(where: str, pos: dict, path: tuple) -> str:
    """file:line:col of a key path (or of its nearest parent the YAML text has)."""
    p = tuple(path)
    while p not in pos and p:
        p = p[:-1]
    line, col = pos.get(p, (1, 1))
    return f"{where}:{line}:{col}"


def _duplicate_key(node, path=()) -> tuple[tuple, yaml.Node] | None:
    """The first key given twice in one mapping (YAML would silently keep the last)."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for k, v in node.value:
            if k.value in seen:
                return (*path, k.value), k
            seen.add(k.value)
            if found := _duplicate_key(v, (*path, k.value)):
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            if found := _duplicate_key(v, (*path, i)):
                return found
    return None


def _dotted(loc: tuple) -> str:
    s = ""
    for part in loc:
        s += f"[{part}]" if isinstance(part, int) else (f".{part}" if s else str(part))
    return s or "(top level)"


def _data_path(data: Any, loc: tuple) -> tuple:
    """The part of a pydantic error location that exists in the data (drops union tags)."""
    path: list = []
    cur = data
    for part in loc:
        in_dict = isinstance(cur, dict) and part in cur
        in_list = isinstance(cur, list) and isinstance(part, int) and part < len(cur)
        if in_dict or in_list:
            cur = cur[part]
            path.append(part)
    return tuple(path)


def _given(data: Any, path: tuple) -> Any:
    cur = data
    for part in path:
        cur = cur[part]
    return cur


def _explain(err: dict, data: Any, registries: dict) -> tuple[tuple, str]:
    path = _data_path(data, err["loc"])
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind == "unknown_key":
        path = (*path, ctx["key"])
        return path, f"unknown key{ctx['hint']} (allowed: {ctx['allowed']})"
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        section = "postprocess" if "postprocess" in path else (path[0] if path else "")
        names = list(registries.get(section, {}))
        given = _single_key(_given(data, path)) if path else None
        what = "stage" if section == "postprocess" else "output"
        if given is None:
            return path, f"each item is one `{what}_name: {{options}}` mapping; {what}s: " + (
                ", ".join(names)
            )
        close = difflib.get_close_matches(given, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return (*path, given), f"unknown {what} {given!r}{hint} (known: {', '.join(names)})"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "literal_error" and "expected" in ctx:
        msg = f"must be one of {ctx['expected']}"
    if path and kind != "missing":
        given = _given(data, path)
        if not isinstance(given, (dict, list)) or (
            isinstance(given, list) and len(repr(given)) <= 60
        ):
            msg += f" (given: {given!r})"
    if kind == "missing":
        path = (*path, err["loc"][-1]) if err["loc"] else path
    return path, msg


def _format_errors(e: ValidationError, data: Any, where: str, pos: dict) -> str:
    registries = {"postprocess": STAGES, "outputs": SINKS}
    found: dict[tuple, list[str]] = {}
    for err in e.errors(include_url=False):
        path, msg = _explain(err, data, registries)
        found.setdefault(path, [])
        if msg not in found[path]:
            found[path].append(msg)
    lines = []
    for path, msgs in found.items():
        if len(msgs) > 1 and any(p[: len(path)] == path and p != path for p in found):
            continue  # union members that did not fit at all, beside one that went deeper
        lines.append(f"{_at(where, pos, path)}: {_dotted(path)}: {_merge_union(msgs)}")
    return "\n".join(lines)


_GIVEN = re.compile(r" \(given: .*\)$")


def _merge_union(msgs: list[str]) -> str:
    """'should be >= 1' and 'must be one of 'auto'' for one value -> one line with both."""
    if len(msgs) == 1:
        return msgs[0]
    given = next((m.group(0) for m in map(_GIVEN.search, msgs) if m), "")
    alts = []
    for msg in msgs:
        msg = _GIVEN.sub("", msg).removeprefix("Input should be ").removeprefix("must be ")
        msg = msg.split(", unable to parse")[0]
        msg = re.sub(r"a valid dictionary or instance of \w+", "a mapping", msg)
        if msg.startswith("one of ") and "," not in msg:
            msg = msg.removeprefix("one of ")
        alts.append(msg)
    fitted = [m for m in msgs if "should be a valid" not in m and "must be one of" not in m]
    if len(fitted) == 1 and not any("must be one of" in m for m in msgs):
        return fitted[0]  # the one member whose type fits says what is wrong
    return "should be " + " or ".join(dict.fromkeys(alts)) + given


def parse(text: str, where: str = "<config>"):
    """Validate YAML text into a Config; raises ConfigError naming file:line:col and key."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: config too large ({len(text)} characters; the limit is "
                          f"{human(MAX_CONFIG_BYTES)})")
    try:
        node, data = compose_and_load(text, where)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}{at}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}:1:1: the top level must be a mapping of options (key: value)")
    pos = _positions(node) if node is not None else {}
    if dup := _duplicate_key(node):
        path, key = dup
        line, col = key.start_mark.line + 1, key.start_mark.column + 1
        raise ConfigError(f"{where}:{line}:{col}: {_dotted(path)}: key given twice")
    data = _interpolate(data, where, (), pos)
    try:
        cfg = config_model().model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, data, where, pos)) from None
    cfg.__dict__["_pos"], cfg.__dict__["_where"] = pos, where  # for check_labels
    return cfg


def load(path: str | Path | None) -> Any:
    """Load a config file (a missing default file means all defaults)."""
    p = Path(path) if path else DEFAULT_PATH
    if path is None and not p.exists():
        return parse("", "<defaults>")
    try:
        text = read_capped(p, MAX_CONFIG_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except FileLimitError as e:
        raise ConfigError(f"{p}: cannot use this config file ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config ({e})") from None
    cfg = parse(text, str(p))
    cfg.__dict__["_path"] = str(p)
    return cfg


def check_labels(cfg, labels: list[str], where: str = "<config>", chain: list | None = None,
                 prefix: tuple = ("postprocess",)) -> None:
    """Every label named in the chain must name a model label (or a group defined before it).

    `chain`/`prefix`: another chain than the top-level one (a region's own, at `prefix`)."""
    known = list(labels)
    pos = cfg.__dict__.get("_pos", {})
    if where == "<config>":
        where = cfg.__dict__.get("_where", where)
    problems = []
    for i, (name, params) in enumerate(spec_items(cfg.postprocess if chain is None else chain)):
        stage = STAGES[name]
        for loc, label in stage.labels_in(params):
            if not labelmatch.resolve(label, known):
                glob = labelmatch.GLOB_CHARS & set(label)
                close = [] if glob else labelmatch.suggest(label, known)
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                what = f"{'matches no label' if glob else 'is not a label'} of the model{hint}"
                if labelmatch.resolve(label, labels):
                    what = "names labels an earlier group or filter stage took out of the list"
                path = (*prefix, i, name, *loc)
                problems.append(f"{_at(where, pos, path)}: {_dotted(path)}: {label!r} {what}")
        before, known = known, stage.labels_out(params, known)
        for label in labelmatch.new_clashes(before, known):
            path = (*prefix, i, name, label)
            problems.append(
                f"{_at(where, pos, path)}: {_dotted(path)}: {label!r} is already a label here: "
                "choose another name"
            )
    if problems:
        raise ConfigError("\n".join(problems))


_SECRET_KEY = re.compile(r"password$|token$|secret|^headers$", re.I)


def masked(cfg) -> dict:
    """The effective config as plain data with secrets replaced by '***': password/token/
    secret keys, every HTTP header value, and credentials inside URLs (edge.urlmask)."""
    data = cfg.model_dump(mode="json")

    def walk(x, key=""):
        if isinstance(x, dict):
            if _SECRET_KEY.search(key):
                return {k: "***" for k in x}
            return {k: ("***" if v and _SECRET_KEY.search(k) and not isinstance(v, dict)
                        else walk(v, k)) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v, key) for v in x]
        if isinstance(x, str):
            return mask_url(x)
        return x

    return walk(data)

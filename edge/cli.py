"""The `edge` command: every subcommand is a small function registered with @command.

Errors a user can fix (EdgeError) print one line naming the file and the cause and exit 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from edge import __version__
from edge.errors import EdgeError

log = logging.getLogger("edge")

COMMANDS: dict[str, tuple[str, Callable, Callable]] = {}  # name -> (help, setup, run)


def command(name: str, help: str, setup: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register `run(args) -> int` as `edge NAME`; `setup` adds its arguments."""

    def deco(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (help, setup or (lambda p: None), run)
        return run

    return deco


def _model_args(p: argparse.ArgumentParser) -> None:
    from edge.config import ModelConfig
    from edge.schema import RESIZE_MODES

    f = ModelConfig.model_fields
    p.add_argument("--model", "-m", help=f["path"].description + f" (default {f['path'].default})")
    p.add_argument("--labels", help=f["labels"].description)
    p.add_argument("--backend", choices=["auto", "litert", "tflite-runtime", "tensorflow"],
                   help=f["backend"].description)
    p.add_argument("--threads", help="integer, or auto: " + f["threads"].description)
    p.add_argument("--resize", choices=RESIZE_MODES, help=f["resize"].description)
    p.add_argument("--config", "-c", help="config file to take model settings from")


def model_from_args(args: argparse.Namespace):
    """The config's model section (or the defaults) with the command-line flags on top."""
    from edge import config
    from edge.model import load_configured

    mc = config.load(getattr(args, "config", None)).model
    threads = args.threads or mc.threads
    if threads != "auto":
        try:
            threads = int(threads)
        except ValueError:
            raise EdgeError(f"--threads {threads!r}: use a number or auto") from None
    flags = {"path": args.model, "labels": args.labels, "backend": args.backend,
             "resize": args.resize}
    return load_configured(mc.model_copy(update={
        "threads": threads, **{k: v for k, v in flags.items() if v is not None}}))


def read_image(path: str, decode_to: tuple[int, int] | None = None):
    """An RGB uint8 array from an image file (a JPEG scaled toward `decode_to` as `edge run`
    decodes it, edge.decode), or an EdgeError that says why not."""
    import cv2
    import numpy as np

    from edge.decode import decode_image

    p = Path(path)
    if not p.exists():
        raise EdgeError(f"{p}: image file not found")
    if p.is_dir():
        raise EdgeError(f"{p}: is a directory, not an image")
    from edge.imagesize import too_large

    if problem := too_large(p):  # before decoding: a small file may declare gigapixels
        raise EdgeError(f"{p}: {problem}")
    try:
        rgb = decode_image(np.fromfile(p, np.uint8), decode_to)
    except (OSError, cv2.error):  # cv2.error: OpenCV's own size guard
        rgb = None
    if rgb is None:
        raise EdgeError(f"{p}: not a readable image (OpenCV cannot decode it)")
    return rgb


def image_paths(specs: list[str]) -> list[str]:
    """Image files, folders of images and globs, as `edge run --source` takes them."""
    from edge.capture.files import is_glob, list_images

    out = []
    for spec in specs:
        if is_glob(spec) or Path(spec).is_dir():
            found = list_images(spec)
            if not found:
                raise EdgeError(f"{spec}: no images there (image types: .jpg .png .bmp ...)")
            out += [str(f) for f in found]
        else:
            out.append(spec)
    return out


def _classify_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders of images or globs ('photos/*.jpg')")
    _model_args(p)
    p.add_argument("--top-k", "-k", type=int, default=5, help="how many labels (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object per image (docs/cli.md)")


@command("classify", "classify image files and print the top labels", _classify_setup)
def cmd_classify(args: argparse.Namespace) -> int:
    from edge.model import model_line
    from edge.postprocess.base import top_indices
    from edge.task import require

    args.images = image_paths(args.images)
    for path in args.images:  # check every input before the model loads
        read_image(path)
    model = model_from_args(args)
    require(model.task, "classify", model.path)
    if not args.json:
        print(model_line(model))
    for path in args.images:
        inference = model.run(model.input(read_image(path, model.input.decode_to)))
        scores = inference.scores
        # by output position (ImageNet has two "crane"s), and no padding with zero scores
        best = [int(i) for i in top_indices(scores, args.top_k) if scores[i] > 0]
        if args.json:
            print(json.dumps({
                "image": path,
                "model": model.name,
                "backend": model.backend,
                "xnnpack_partitions": model.partitions,
                "threads": model.threads,
                "invoke_ms": round(inference.invoke_ms, 3),
                "top": [
                    {"rank": r + 1, "index": i, "label": model.labels[i],
                     "score": round(float(scores[i]), 6)}
                    for r, i in enumerate(best)
                ],
            }), flush=True)
        else:
            print(f"\n{path}  (invoke {inference.invoke_ms:.1f} ms)")
            for r, i in enumerate(best, 1):
                print(f"  {r:>2}  {scores[i]:6.3f}  {model.labels[i]}")
    return 0


def _segment_setup(p: argparse.ArgumentParser) -> None:
    from edge.segment import add_segment_arguments

    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    _model_args(p)
    add_segment_arguments(p)


@command("segment", "which classes cover each image (and region): shares, blobs, mask, overlay "
         "(docs/segment.md)", _segment_setup)
def cmd_segment(args: argparse.Namespace) -> int:
    from edge import config
    from edge.model import model_line
    from edge.segment import parse_roi, run_segment
    from edge.task import require

    images = {path: read_image(path) for path in args.images}  # check inputs before loading
    for spec in args.roi:
        parse_roi(spec)
    cfg = config.load(args.config)
    model = model_from_args(args)
    require(model.task, "segment", model.path)
    if not args.json:
        print(model_line(model))
    return run_segment(args, model, images, cfg)


def _models_setup(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action")  # none: list
    sub.add_parser("list", help="known models and whether they are installed")
    f = sub.add_parser("fetch", help="download a model (verified by sha256) into the model dir")
    f.add_argument("name", nargs="?", default=None, help="model name (default: the default model)")
    f.add_argument("--from", dest="source", metavar="DIR", help="install from a local folder")
    f.add_argument("--dir", help="model directory (default: see `edge models list`; "
                   "EDGE_MODEL_DIR overrides)")


@command("models", "list known models, fetch one", _models_setup)
def cmd_models(args: argparse.Namespace) -> int:
    from edge import catalog

    if args.action in (None, "list"):
        print(f"model directory: {catalog.model_dir()}")
        for m in catalog.CATALOG.values():
            mark = "installed" if catalog.installed(m.name) else "-"
            default = " (default)" if m.name == catalog.DEFAULT_MODEL else ""
            print(f"  {m.name:<20} {mark:<10} {m.description}{default}")
        for path, rec in catalog.custom_models():
            acc = (rec.get("validation") or {}).get("accuracy")
            acc_text = f"{acc:.1%}" if isinstance(acc, (int, float)) else "?"
            print(f"  {path.stem:<20} {'custom':<10} classes {', '.join(rec.get('classes', []))}; "
                  f"base {(rec.get('base') or {}).get('name')}; validation accuracy {acc_text}")
        return 0
    name = args.name or catalog.DEFAULT_MODEL
    path = catalog.fetch(
        name,
        Path(args.source) if args.source else None,
        Path(args.dir) if args.dir else None,
    )
    print(f"{name}: {path} (sha256 verified)")
    return 0


def _config_setup(p: argparse.ArgumentParser) -> None:
    p.set_defaults(help_of=p)
    sub = p.add_subparsers(dest="action")  # none: this help
    v = sub.add_parser("validate", help="check a config file (exit 0 if valid, 2 if not)")
    v.add_argument("file", help="the YAML config file")
    v.add_argument("--no-model", action="store_true", help="skip checking labels against the model")
    s = sub.add_parser("show", help="print the effective config with defaults (secrets masked)")
    s.add_argument("file", nargs="?", help="config file (default /etc/edge/edge.yaml)")
    s.add_argument("--config", "-c", dest="config", help="the same, as run and classify take it")
    sub.add_parser("schema", help="print the JSON Schema (for editor completion)")
    sub.add_parser("default", help="print every option with its default and help, as YAML")
    sub.add_parser("docs", help="print the option reference as markdown (docs/config.md)")


def validate_file(path: str, check_model: bool = True):
    """Every check `edge run` makes before it starts, with all the problems found at once."""
    from edge import app, catalog, config
    from edge.model import read_labels
    from edge.regions import check_region_labels, gates

    cfg = config.load(path)  # a schema error stops here: the rest needs a config
    labels = None
    if check_model:
        read: dict[str, list[str]] = {}

        def labels_of(model_cfg) -> list[str]:
            key = model_cfg.model_dump_json()
            if key not in read:
                read[key] = read_labels(catalog.resolve(model_cfg.path),
                                        model_cfg.labels or catalog.labels_for(model_cfg.path))
            return read[key]

        try:
            labels = labels_of(cfg.model)
            for roi in cfg.rois:  # each region's own model too
                if roi.model is not None:
                    labels_of(roi.model)
        except EdgeError as e:
            log.warning("labels not checked: %s", e)
            labels = None
    problems = app.config_problems(cfg, path, labels)
    for check in [lambda: gates(cfg)] + ([lambda: check_region_labels(cfg, labels_of)]
                                          if labels is not None else []):
        try:  # the regions' `when:` gates, and each region's labels against its own model
            check()
        except EdgeError as e:
            problems += str(e).splitlines()
    if problems:
        raise EdgeError("\n".join(problems))
    return cfg


def _default_config() -> str | None:
    from edge.config import DEFAULT_PATH

    return str(DEFAULT_PATH) if DEFAULT_PATH.exists() else None


@command("config", "validate a config, show the effective one, print the schema", _config_setup)
def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from edge import config

    if args.action is None:
        args.help_of.print_help()
    elif args.action == "validate":
        validate_file(args.file, check_model=not args.no_model)
        print(f"{args.file}: valid")
    elif args.action == "show":
        cfg = config.load(args.file or args.config or _default_config())
        print(yaml.safe_dump(config.masked(cfg), sort_keys=False), end="")
    elif args.action == "schema":
        print(json.dumps(config.config_model().model_json_schema(), indent=2))
    else:
        from edge import confdoc

        print(confdoc.default_yaml() if args.action == "default" else confdoc.markdown(), end="")
    return 0


def _run_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="config file (default /etc/edge/edge.yaml if present)")
    p.add_argument("--source", "-s", help="camera index, /dev/videoN, URL, video, image folder")
    p.add_argument("--model", "-m", help="model file or name (overrides the config)")
    p.add_argument("--max-frames", type=int, help="stop after classifying N frames")
    p.add_argument("--duration", type=float, help="stop after S seconds")
    p.add_argument("--no-drop", action="store_true",
                   help="classify every frame of a file or video, in order (offline evaluation)")
    p.add_argument("--json", action="store_true", help="print every result as a JSON line")
    p.add_argument("--web", action="store_true",
                   help="serve the web page even with --no-drop --json (which skip it)")
    p.add_argument("--pidfile", help="write the pid here (for `edge reload`)")
    p.add_argument("--demo", action="store_true",
                   help="run on a demo clip made from the test photos (no camera needed)")


@command("run", "classify the camera (or a stream, video, folder) continuously", _run_setup)
def cmd_run(args: argparse.Namespace) -> int:
    from edge.app import run_from_args

    return run_from_args(args)


def _inspect_setup(p: argparse.ArgumentParser) -> None:
    from edge.graph import add_inspect_arguments

    add_inspect_arguments(p)


@command("inspect", "show a model's structure (bottlenecks), cost and quantization", _inspect_setup)
def cmd_inspect(args: argparse.Namespace) -> int:
    from edge.graph import cmd_inspect as run

    return run(args)


def _bench_setup(p: argparse.ArgumentParser) -> None:
    from edge.bench import add_bench_arguments

    add_bench_arguments(p)


@command("bench", "time invoke per backend, XNNPACK on/off and threads (docs/models.md)",
         _bench_setup)
def cmd_bench(args: argparse.Namespace) -> int:
    from edge.bench import cmd_bench as run

    return run(args)


def _train_setup(p: argparse.ArgumentParser) -> None:
    from edge.train import add_train_arguments

    add_train_arguments(p)


@command("train", "train custom classes from a folder of photos into one .tflite (docs/train.md)",
         _train_setup)
def cmd_train(args: argparse.Namespace) -> int:
    from edge.train import cmd_train as run

    return run(args)


def _reload_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pidfile", help="pid file of the running instance "
                   "(default $RUNTIME_DIRECTORY/edge.pid, else /run/edge/edge.pid)")


@command("reload", "re-read the config in the running instance (SIGHUP)", _reload_setup)
def cmd_reload(args: argparse.Namespace) -> int:
    from edge.service import send_reload

    pid = send_reload(args.pidfile)
    print(f"sent SIGHUP to edge (pid {pid})")
    return 0


@command("version", "print the version and the installed backends")
def cmd_version(args: argparse.Namespace) -> int:
    from edge.model import BACKENDS, _import_backend

    print(f"edge {__version__}")
    for name in BACKENDS:
        try:
            _, human, version = _import_backend(name)
            print(f"  {human} {version}")
        except ImportError:
            pass
    return 0


def _common(parser: argparse.ArgumentParser, default) -> None:
    """--debug and -v, before the subcommand or after it (`edge -v run`, `edge run -v`)."""
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="show informational logs (and the runtimes' own messages)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge", description="Always-on camera classification for Raspberry Pi."
    )
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    _common(parser, False)
    common = argparse.ArgumentParser(add_help=False)
    _common(common, argparse.SUPPRESS)  # a subcommand's own flag only when given there
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, setup, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        setup(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.verbose or args.debug):
        # OpenCV's own warnings (VIDEOIO on every reconnect) say what edge's log says better
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        from edge import model

        model.QUIET_RUNTIME = True  # LiteRT's "INFO: Created ... delegate" on every load
    level = logging.DEBUG if args.debug else logging.INFO if (
        args.verbose or args.command == "run"
    ) else logging.WARNING
    fmt = "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
    try:
        return args.func(args)
    except EdgeError as e:
        if args.debug:
            raise
        for line in str(e).splitlines():
            print(f"edge: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge models | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

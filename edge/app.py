"""The composition root of `edge run`: config + command-line flags -> the running parts.

Here, and only here, the pieces meet: the config file with the flags on top (`apply_overrides`,
re-applied on every reload), the pidfile, the model, the pipeline (capture, chains, outbox),
the service hooks and signals, the web page and the `edge run` printer. Each part knows
nothing of the others' construction; `pipeline` imports only capture, model, postprocess,
sinks and stats.

Order matters for a user: everything that can be refused is checked before anything starts
(an instance already running, the config, the model, the labels, the web bind), and whatever
did start is stopped again when a later step fails.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import sys
from typing import Any

from edge import config as configmod
from edge import service, tuning
from edge.capture.spec import apply_source, open_source
from edge.demo import demo_clip
from edge.errors import EdgeError
from edge.events import Result, event_line, top_line
from edge.model import load_configured, model_line
from edge.paths import model_dir
from edge.pipeline import Pipeline, build_outbox
from edge.regions import prepare_models
from edge.task import require
from edge.teach import Setup as TeachSetup
from edge.teach import Teach
from edge.web import access_from_config, start_web

log = logging.getLogger(__name__)


class Printer:
    """`edge run` output: a line when the top label of a region changes, or JSON lines."""

    def __init__(self, as_json: bool, events: bool = True, out=sys.stdout) -> None:
        self.as_json, self.events, self.out = as_json, events, out
        self.last: dict = {}

    def configure(self, cfg) -> None:
        """Event lines only when no log output already prints them to stdout."""
        self.events = not logs_events_to_stdout(cfg)

    def __call__(self, results: list[Result], events: list[dict]) -> None:
        lines = []
        if self.as_json:
            lines += [json.dumps({"result": r.to_dict()}) for r in results]
            lines += [json.dumps({"event": e}) for e in events]
        else:  # the log output's format: both may share stdout
            for r in results:
                label = r.top[0][0] if r.top else None
                if label != self.last.get(r.roi):
                    self.last[r.roi] = label
                    lines.append(top_line(r))
            lines += [event_line(e) for e in events] if self.events else []
        if lines:  # one write: lines from sink threads on the same stream never interleave
            self.out.write("".join(line + "\n" for line in lines))
            self.out.flush()


def apply_overrides(cfg, args: argparse.Namespace) -> Any:
    """--demo / --source / --model / --no-drop / --json / --web on top of the config file."""
    source = cfg.source
    if getattr(args, "demo", False):
        source = apply_source(source, str(demo_clip())).model_copy(update={"loop": True})
    if getattr(args, "source", None):
        source = apply_source(source, args.source)
    if getattr(args, "no_drop", False):
        source = source.model_copy(update={"realtime": False})  # as fast as it can be read
    updates: dict = {"source": source} if source != cfg.source else {}
    if getattr(args, "model", None):
        updates["model"] = cfg.model.model_copy(update={"path": args.model})
    if getattr(args, "json", False):  # stdout carries the JSON lines: log sinks move to stderr
        outputs = [_log_to_stderr(spec) for spec in cfg.outputs]
        if outputs != cfg.outputs:
            updates["outputs"] = outputs
    if offline_run(args) and cfg.web.enabled:  # an evaluation, not a service: no web page
        updates["web"] = cfg.web.model_copy(update={"enabled": False})
    return cfg.model_copy(update=updates) if updates else cfg


def offline_run(args) -> bool:
    """`--no-drop --json` without `--web`: evaluating a file, nobody watches a page (and a
    second evaluation must not fight the service over its port)."""
    return bool(getattr(args, "no_drop", False) and getattr(args, "json", False)
                and not getattr(args, "web", False))


def _log_to_stderr(spec):
    name, params = configmod.spec_items([spec])[0]
    if name != "log" or params.stream != "stdout":
        return spec
    return spec.model_copy(update={"log": params.model_copy(update={"stream": "stderr"})})


def logs_events_to_stdout(cfg) -> bool:
    return any(
        name == "log" and "enter" in params.events and params.stream == "stdout"
        for name, params in configmod.spec_items(cfg.outputs)
    )


def start_checks(cfg) -> None:
    """What a start refuses beyond the pipeline's own parts: the web page's bind and token.
    A reload runs the same checks, so it never accepts what the next start would refuse."""
    if cfg.web.enabled:
        access_from_config(cfg.web)


def config_problems(cfg, where: str, labels: list[str] | None) -> list[str]:
    """What a start would refuse in `cfg`, all of it (`edge config validate`): labels (when the
    model's are at hand), the web bind and token, each output (directories, secrets, topics),
    the source settings. Builds the outputs without starting them; opens no device."""
    problems: list[str] = []

    def check(fn) -> bool:
        try:
            fn()
        except EdgeError as e:
            problems.extend(line if line.startswith(where) else f"{where}: {line}"
                            for line in str(e).splitlines())
            return False
        return True

    def outputs(specs):
        return lambda: build_outbox(cfg.model_copy(update={"outputs": specs}), "check").close()

    if labels is not None:
        check(lambda: configmod.check_labels(cfg, labels, where))
    check(lambda: start_checks(cfg))
    each = [check(outputs([spec])) for spec in cfg.outputs]  # one by one: each bad one named
    if all(each):
        check(outputs(cfg.outputs))  # and together: two may not share a folder
    check(lambda: open_source(cfg.source, (224, 224)))
    return problems


def config_path(args: argparse.Namespace) -> str | None:
    """--config, else /etc/edge/edge.yaml when it exists, else none (all defaults)."""
    default = configmod.DEFAULT_PATH
    return args.config or (str(default) if default.exists() else None)


def run_from_args(args: argparse.Namespace) -> int:
    """`edge run`: check everything that can be refused, start the parts, run the loop."""
    faulthandler.enable()  # a watchdog kill (SIGABRT) prints every thread's stack to the journal

    path = config_path(args)
    cfg = apply_overrides(configmod.load(path), args)
    pidfile = service.pidfile_for_run(getattr(args, "pidfile", None) or cfg.service.pidfile)
    with service.PidFile(pidfile):  # another instance running: refused before the model loads
        model = load_configured(cfg.model)
        require(model.task, "run", model.path)
        configmod.check_labels(cfg, model.labels, path or "<defaults>")
        start_checks(cfg)  # all that can be refused, before the seconds of tuning
        bounded = bool(args.max_frames or args.duration)  # an evaluation: no tuning run
        model = tuning.for_pipeline(cfg, model, args.no_drop, measure_now=not bounded)
        models = prepare_models(cfg, model)  # the regions' own models (edge.regions)
        for m in (model, *models.values()):
            log.info("%s", model_line(m))
        hooks = service.ServiceHooks(service.Notifier.from_env(), cfg.service.status_every_s)
        printer = Printer(args.json)
        printer.configure(cfg)
        pipe = Pipeline(cfg, model, no_drop=args.no_drop, printer=printer, hooks=hooks,
                        overrides=lambda c: apply_overrides(c, args), checks=start_checks,
                        on_swap=printer.configure, models=models)
        signals = service.install_signal_handlers(
            on_reload=pipe.reload_event.set, on_stop=pipe.stop_event.set
        )
        web = None
        try:
            if cfg.web.enabled:
                teach = Teach(pipe, TeachSetup(path, model_dir(), getattr(args, "model", None)))
                web = start_web(cfg.web, pipe, teach)
            return pipe.run(args.max_frames, args.duration, path)
        finally:
            if web is not None:
                web.stop()
            signals.restore()

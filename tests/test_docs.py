"""The documented commands still do what the docs show: every ```console block in README.md
and docs/*.md is run (`$ edge ...` lines, from the repository root, with the catalog models
installed from the assets) and its output compared line by line. Timings, thread counts and
the runtime's version are machine facts and are compared as placeholders."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import MODELS
from helpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"```console\n(.*?)```", re.S)
VARIES = [  # (pattern, placeholder): what differs from one machine or run to the next
    (re.compile(r"invoke \d+(\.\d+)? ms"), "invoke X ms"),
    (re.compile(r'"invoke_ms": [\d.]+'), '"invoke_ms": X'),
    (re.compile(r"\b\d+ threads?\b"), "N threads"),
    (re.compile(r'"threads": \d+'), '"threads": N'),
    (re.compile(r"litert \d+(\.\d+)+"), "litert V"),
    (re.compile(r"(?<![\w.])/[^\s:]*/(?=[\w.-]+\.tflite)"), ".../"),  # where models live
]


def _examples() -> list[tuple[str, str, str]]:
    out = []
    for doc in DOCS:
        for block in BLOCK.findall(doc.read_text()):
            for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
                command, _, expected = chunk.partition("\n")
                out.append((f"{doc.name}: {command}", command, expected.rstrip("\n")))
    return out


def _normal(text: str) -> list[str]:
    for pattern, placeholder in VARIES:
        text = pattern.sub(placeholder, text)
    return [line.rstrip() for line in text.strip("\n").splitlines()]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, assets):
    d = tmp_path_factory.mktemp("models")
    for name in ("mobilenet_v2_int8", "deeplabv3_mnv2_dm05", "inat_bird"):
        r = subprocess.run([sys.executable, "-m", "edge", "models", "fetch", name, "--from",
                            str(MODELS), "--dir", str(d)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    return d


EXAMPLES = _examples()


def test_the_docs_have_runnable_examples():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize(("where", "command", "expected"), EXAMPLES,
                         ids=[e[0][:60] for e in EXAMPLES])
def test_documented_command_output(where, command, expected, model_dir, tmp_path):
    assert command.startswith("edge "), f"{where}: a runnable example starts with `$ edge`"
    env = {**os.environ, "EDGE_MODEL_DIR": str(model_dir), "EDGE_CACHE_DIR": str(tmp_path),
           "EDGE_ASSETS": str(MODELS.parent)}
    shell = f'edge() {{ "{sys.executable}" -m edge "$@"; }}; {command}'
    r = subprocess.run(["bash", "-c", shell], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    got = r.stdout + (r.stderr if r.returncode else "")
    assert _normal(got) == _normal(expected), f"{where}\n--- documented\n{expected}\n--- got\n{got}"


def test_every_option_is_in_its_commands_synopsis():
    """docs/cli.md's table names every option each command takes."""
    import argparse

    from edge.cli import build_parser

    doc = (REPO / "docs" / "cli.md").read_text().splitlines()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = {}
    for name, parser in sub.choices.items():
        row = " ".join(ln for ln in doc if ln.startswith(f"| `edge {name}"))
        assert row, f"docs/cli.md has no row for `edge {name}`"
        todo = [parser]
        while todo:
            p = todo.pop()
            for action in p._actions:
                if isinstance(action, argparse._SubParsersAction):
                    todo += action.choices.values()
                for opt in action.option_strings:
                    if opt.startswith("--") and opt not in ("--help", "--debug", "--verbose") \
                            and opt not in row:
                        missing.setdefault(name, []).append(opt)
    assert not missing, f"options missing from docs/cli.md: {missing}"

"""Write the requirement set for the emulated aarch64 environment.

The set is the project's runtime dependencies (pyproject [project.dependencies]) plus the test
runner (pytest, pytest-timeout from the dev extra), each constrained to the version the host
(x86) interpreter running this script has installed, so the parity check compares the same
library versions on both architectures rather than whatever is newest on PyPI today.

Usage: python requirements.py PYPROJECT OUTDIR [EXTRA_REQUIREMENT ...]
Writes OUTDIR/requirements.txt and OUTDIR/constraints.txt.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

TEST_RUNNER = ("pytest", "pytest-timeout")


def requirement_lines(pyproject: Path, extra: list[str]) -> list[str]:
    """Any extra ones (first, so a bad one fails before pip downloads anything), the runtime
    deps, then the test runner's entries from the dev extra."""
    project = tomllib.loads(pyproject.read_text())["project"]
    dev = project.get("optional-dependencies", {}).get("dev", [])
    runner = [r for r in dev if Requirement(r).name in TEST_RUNNER]
    missing = set(TEST_RUNNER) - {Requirement(r).name for r in runner}
    return extra + list(project["dependencies"]) + runner + sorted(missing)


def host_pins(lines: list[str]) -> list[str]:
    """name==version for each requirement the host has installed (others float)."""
    pins = []
    for line in lines:
        name = Requirement(line).name
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    pyproject, out = Path(argv[0]), Path(argv[1])
    lines = requirement_lines(pyproject, argv[2:])
    out.mkdir(parents=True, exist_ok=True)
    (out / "requirements.txt").write_text("\n".join(lines) + "\n")
    (out / "constraints.txt").write_text("\n".join(host_pins(lines)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

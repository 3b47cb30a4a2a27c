"""Option tables for docs/postprocess.md, generated from each stage's Params (the schema).

`python -m edge.postprocess.docs` prints every stage's section; `... --write
docs/postprocess.md` rewrites the tables there. A test checks that the document holds exactly
these tables, so the docs cannot drift from the code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from edge.confdoc import options_table
from edge.postprocess.base import STAGES

ORDER = ("group", "filter", "smooth", "threshold", "hysteresis", "top_k")  # a typical chain
TABLE = re.compile(r"^\| option \|.*?(?=\n\n|\n?\Z)", re.S | re.M)


def update(path: Path) -> None:
    """Rewrite the option table under each stage's `## `name`` heading in a markdown file."""
    text = path.read_text(encoding="utf-8")
    for name, cls in STAGES.items():
        head = text.find(f"## `{name}`")
        if head < 0:
            raise SystemExit(f"{path}: no section for stage {name!r}")
        m = TABLE.search(text, head)
        text = text[: m.start()] + options_table(cls) + text[m.end() :]
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """Print every stage's section, or with --write FILE update the tables in FILE."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--write"] and len(argv) == 2:
        update(Path(argv[1]))
        return
    names = [n for n in ORDER if n in STAGES] + [n for n in STAGES if n not in ORDER]
    for name in names:
        cls = STAGES[name]
        summary = (cls.__doc__ or "").strip().split("\n")[0]
        print(f"## `{name}`\n\n{summary}\n\n{options_table(cls)}\n")


if __name__ == "__main__":
    main()

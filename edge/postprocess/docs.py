"""Option tables for docs/postprocess.md, generated from each stage's Params (the schema).

`python -m edge.postprocess.docs` prints every stage's section; `... --write
docs/postprocess.md` rewrites the tables there. A test checks that the document holds exactly
these tables, so the docs cannot drift from the code.
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from edge.postprocess import STAGES


def type_name(ann: Any) -> str:
    origin, args = get_origin(ann), get_args(ann)
    if origin is Annotated:
        return type_name(args[0])
    if origin is Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"map of {type_name(args[0])} to {type_name(args[1])}"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "{" + ", ".join(ann.model_fields) + "}"
    return getattr(ann, "__name__", str(ann))


def _bounds(metadata: list) -> str:
    sym = {
        at.Ge: ("ge", ">="),
        at.Gt: ("gt", ">"),
        at.Le: ("le", "<="),
        at.Lt: ("lt", "<"),
        at.MinLen: ("min_length", "at least"),
    }
    parts = []
    for m in metadata:
        for cls, (attr, s) in sym.items():
            if isinstance(m, cls):
                parts.append(f"{s} {getattr(m, attr)}")
    return ", ".join(parts)


def _inner_bounds(ann: Any, prefix: str = "") -> str:
    """Bounds inside a union ('0.5 or null'), or on a dict's or list's values (per_label)."""
    if get_origin(ann) in (dict, list):
        prefix = "values "
    for a in get_args(ann):
        if get_origin(a) is Annotated:
            meta = [m for x in get_args(a)[1:] for m in getattr(x, "metadata", [x])]
            if b := _bounds(meta):
                return prefix + b
        elif b := _inner_bounds(a, prefix):
            return b
    return ""


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "(required)"
    else:
        value = info.default
    return f"`{json.dumps(value)}`"


def _row(name: str, info: FieldInfo, ann: Any) -> str:
    bounds = _bounds(info.metadata) or _inner_bounds(ann)
    desc = (info.description or "").replace("|", "\\|")
    return f"| `{name}` | {type_name(ann)} | {_default(info)} | {bounds} | {desc} |"


def options_table(cls) -> str:
    """The markdown table of a stage's options (one row per Params field)."""
    head = "| option | type | default | allowed | meaning |\n|---|---|---|---|---|\n"
    params = cls.Params
    if isinstance(params, type) and issubclass(params, BaseModel):
        rows = [_row(n, f, f.annotation) for n, f in params.model_fields.items()]
    else:  # a bare value, e.g. `- top_k: 3`
        base, *meta = get_args(params)
        info = next(m for m in meta if isinstance(m, FieldInfo))
        rows = [_row(f"{cls.name}: VALUE", info, base)]
    return head + "\n".join(rows)


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

"""The schema rendered for people: a commented YAML of every option, and a markdown reference.

`configs/default.yaml` and `docs/config.md` are generated from here (`edge config default`,
`edge config docs`), and a test checks they match, so the documentation cannot drift from the
code that validates it.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Annotated, Any, Literal, Union

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from edge.config import config_model
from edge.postprocess import STAGES
from edge.sinks import SINKS

HEADER = """\
# edge configuration: every option, its default and what it does.
# Generated from the schema in edge/config.py (`edge config default`); an empty file means
# all defaults. Keep only what you change. Validate with `edge config validate FILE`, apply a
# change to the running service with `systemctl reload edge`. Secrets can come from the
# environment (${VAR}) or files (password_file, token_file) instead of sitting here.
"""


def _allowed(annotation: Any) -> list[Any] | None:
    """The literal values an annotation allows, if it is (a union with) a Literal."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return list(typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        vals = [v for a in typing.get_args(annotation) for v in (_allowed(a) or [])]
        return vals or None
    return None


def _bounds(metadata: list) -> str:
    """'>= 0, <= 1' from a field's constraints."""
    sym = {
        at.Ge: ("ge", ">="),
        at.Gt: ("gt", ">"),
        at.Le: ("le", "<="),
        at.Lt: ("lt", "<"),
        at.MinLen: ("min_length", "at least"),
    }
    parts = []
    for m in metadata:
        for cls, (attr, sign) in sym.items():
            if isinstance(m, cls):
                parts.append(f"{sign} {getattr(m, attr)}")
    return ", ".join(parts)


def _inner_bounds(ann: Any, prefix: str = "") -> str:
    """Bounds inside a union ('0.5 or null'), or on a dict's or list's values (per_label)."""
    if typing.get_origin(ann) in (dict, list):
        prefix = "values "
    for a in typing.get_args(ann):
        if typing.get_origin(a) is Annotated:
            meta = [m for x in typing.get_args(a)[1:] for m in getattr(x, "metadata", [x])]
            if b := _bounds(meta):
                return prefix + b
        elif b := _inner_bounds(a, prefix):
            return b
    return ""


def type_name(ann: Any) -> str:
    origin, args = typing.get_origin(ann), typing.get_args(ann)
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


def _default(info: FieldInfo) -> Any:
    if info.default is not PydanticUndefined:
        return info.default
    if info.default_factory is not None:
        try:
            return info.default_factory()
        except TypeError:
            return None
    return PydanticUndefined


def _scalar(v: Any) -> str:
    if isinstance(v, BaseModel):
        v = v.model_dump(mode="json")
    return json.dumps(v) if not isinstance(v, str) or not v or ":" in v or v[0] in "*{[&!|>" \
        else v


def _flow(value: Any) -> str:
    """A YAML flow mapping, e.g. {method: ema, alpha: 0.5}."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    return _scalar(value)


def help_line(info: FieldInfo) -> str:
    text = info.description or ""
    allowed = _allowed(info.annotation)
    extra = []
    if allowed and len(allowed) > 1:
        extra.append("one of " + " | ".join(str(a) for a in allowed))
    if b := _bounds(info.metadata) or _inner_bounds(info.annotation):
        extra.append(b)
    return text + (f" ({'; '.join(extra)})" if extra else "")


def _annotation_help(annotation: Any) -> str:
    """The description carried by an Annotated params type (e.g. `top_k: 3`, `group: {...}`)."""
    for m in getattr(annotation, "__metadata__", ()):
        if getattr(m, "description", None):
            return m.description
    return "see docs/postprocess.md"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _yaml_model(model: type[BaseModel], indent: str, out: list[str], skip=()) -> None:
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        help_text = help_line(info)
        if help_text:
            out.append(f"{indent}# {help_text}")
        sub = _model_of(info.annotation)
        default = _default(info)
        if sub is not None:
            out.append(f"{indent}{name}:")
            _yaml_model(sub, indent + "  ", out)
        elif default is PydanticUndefined:
            out.append(f"{indent}# {name}: (required)")
        elif default is None:
            out.append(f"{indent}# {name}: null")
        else:
            out.append(f"{indent}{name}: {_scalar(default)}")


def _catalogue(title: str, registry, indent: str, out: list[str]) -> None:
    """Every stage or sink with its options, commented out, to copy from."""
    out.append(f"{indent}# {title}:")
    for name, cls in registry.items():
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        out.append(f"{indent}#   - {name}:    {doc}")
        params = cls.Params
        if _model_of(params) is None:
            out.append(f"{indent}#       {_annotation_help(params)}")
            continue
        for fname, info in params.model_fields.items():
            d = _default(info)
            shown = "(required)" if d is PydanticUndefined else _scalar(d)
            out.append(f"{indent}#       {fname}: {shown}    # {help_line(info)}")


def default_yaml() -> str:
    model = config_model()
    out = [HEADER.rstrip("\n"), ""]
    for name, info in model.model_fields.items():
        if info.description:
            out.append(f"# {help_line(info)}")
        sub = _model_of(info.annotation)
        if sub is not None:
            out.append(f"{name}:")
            _yaml_model(sub, "  ", out)
        elif name == "device":
            out.append("# device: my-pi    (default: this machine's hostname)")
        else:
            default = _default(info)
            if name == "rois":
                out.append("rois: []")
                out.append("# rois:\n#   - {name: feeder, box: [0.25, 0.10, 0.75, 0.60]}")
                out.append("#     each region's options:")
                for key, sub_info, _ in _item_fields(info.annotation):
                    out.append(f"#       {key}    # {help_line(sub_info)}")
            else:
                items = default or []
                out.append(f"{name}:" if items else f"{name}: []")
                for item in items:
                    ((key, value),) = item.items()
                    out.append(f"  - {key}: {_flow(value)}")
                registry = STAGES if name == "postprocess" else SINKS
                _catalogue("available " + ("stages" if name == "postprocess" else "outputs"),
                           registry, "  ", out)
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _shown_default(info: FieldInfo) -> str:
    d = _default(info)
    if d is PydanticUndefined:
        return "(required)"
    if isinstance(d, list) and d and isinstance(d[0], dict):
        return "`[" + ", ".join(_flow(x) for x in d) + "]`"
    return f"`{_scalar(d)}`"


def _row(name: str, info: FieldInfo, ann: Any) -> str:
    bounds = _bounds(info.metadata) or _inner_bounds(ann)
    desc = (info.description or "").replace("|", "\\|")
    return f"| `{name}` | {type_name(ann)} | {_shown_default(info)} | {bounds} | {desc} |"


TABLE_HEAD = "| option | type | default | allowed | meaning |\n|---|---|---|---|---|\n"


def options_table(cls) -> str:
    """The markdown table of a stage's or sink's options (one row per Params field)."""
    params = cls.Params
    if _model_of(params) is not None:
        rows = [_row(n, f, f.annotation) for n, f in params.model_fields.items()]
    else:  # a bare value, e.g. `- top_k: 3`
        base, *meta = typing.get_args(params)
        info = next(m for m in meta if isinstance(m, FieldInfo))
        rows = [_row(f"{cls.name}: VALUE", info, base)]
    return TABLE_HEAD + "\n".join(rows)


def _optional_model(ann: Any) -> type[BaseModel] | None:
    """The section type of an `X | None` option (e.g. a region's `when`)."""
    if typing.get_origin(ann) in (Union, types.UnionType):
        models = [a for a in typing.get_args(ann) if _model_of(a) is not None]
        return models[0] if len(models) == 1 else None
    return _model_of(ann)


def _item_fields(ann: Any) -> list[tuple[str, FieldInfo, Any]]:
    """(key, info, annotation) of each option of a list's items (`rois:` entries), with the
    options of their sub-sections (`when.roi`); a `model` section is the one of `model.*`."""
    (item,) = typing.get_args(ann)
    out = []
    for name, info in _model_of(item).model_fields.items():
        out.append((name, info, info.annotation))
        sub = _optional_model(info.annotation)
        if sub is not None and name != "model":
            out += [(f"{name}.{n}", f, f.annotation) for n, f in sub.model_fields.items()]
    return out


def _md_rows(model: type[BaseModel], prefix: str, rows: list[str]) -> None:
    for name, info in model.model_fields.items():
        sub = _model_of(info.annotation)
        if sub is not None:
            _md_rows(sub, f"{prefix}{name}.", rows)
        elif prefix == "" and name == "device":
            rows.append(f"| `device` | str | hostname | | {info.description} |")
        else:
            rows.append(_row(prefix + name, info, info.annotation))
            args = typing.get_args(info.annotation)
            if typing.get_origin(info.annotation) is list and _model_of(args[0]) is not None:
                rows += [_row(f"{prefix}{name}[].{key}", f, a)
                         for key, f, a in _item_fields(info.annotation)]


def markdown() -> str:
    out = [
        "# Configuration reference",
        "",
        "Generated from the schema in `edge/config.py` by `edge config docs`; a test keeps it "
        "in step. The commented [configs/default.yaml](../configs/default.yaml) holds the same.",
        "",
        TABLE_HEAD.rstrip("\n"),
    ]
    _md_rows(config_model(), "", out)
    for title, registry in (("Post-processing stages", STAGES), ("Outputs", SINKS)):
        out += ["", f"## {title}", ""]
        for name, cls in registry.items():
            doc = (cls.__doc__ or "").strip().split("\n")[0]
            out += [f"### `{name}`", "", doc, "", options_table(cls), ""]
    return "\n".join(out).rstrip("\n") + "\n"

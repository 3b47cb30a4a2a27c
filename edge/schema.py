"""The leaves of the config schema: the section base, shared option types, `- name: {}` specs.

Stages and sinks declare their options with these, and `edge.config` assembles the whole
schema from their registries; this module imports nothing of edge but its errors, so a stage
or a sink never has to import the config that imports it.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from edge.errors import ConfigError
from edge.limits import MAX_SECRET_BYTES, read_capped

Level = Annotated[float, Field(ge=0, le=1)]  # a score level: thresholds, hysteresis marks
EventType = Literal["enter", "exit", "status"]
Resize = Literal["box", "linear", "area", "crop"]  # model.resize; `edge train --resize` too
RESIZE_MODES: tuple[str, ...] = get_args(Resize)
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)


class Strict(BaseModel):
    """A config section: unknown keys are errors, with a 'did you mean'."""

    # inf and nan are never a setting: they passed validation and then crashed a timer
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = list(cls.model_fields)
            for key in data:
                if key not in allowed:
                    close = difflib.get_close_matches(str(key), allowed, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key {key!r}{hint} (allowed: {allowed})",
                        {"key": key, "hint": hint, "allowed": ", ".join(allowed)},
                    )
        return data


def _single_key(value: Any) -> str | None:
    """Discriminator of `- name: {params}` list items: the one key of the mapping."""
    if isinstance(value, dict) and len(value) == 1:
        return str(next(iter(value)))
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


def spec_union(registry) -> Any:
    """`- name: params` items for every class registered, as a tagged union."""
    members = []
    for name, cls in registry.items():
        params = cls.Params
        spec = create_model(
            f"{cls.__name__}Spec",
            __base__=Strict,
            __doc__=(cls.__doc__ or "").strip().split("\n")[0],
            **{name: (params, Field(description=(cls.__doc__ or "").strip().split("\n")[0]))},
        )
        if isinstance(params, type) and issubclass(params, BaseModel):
            spec = create_model(
                spec.__name__,
                __base__=spec,
                __validators__={"_none_is_empty": model_validator(mode="before")(_none_to_empty)},
            )
        members.append(Annotated[spec, Tag(name)])
    if not members:
        return dict[str, Any]
    return Annotated[Union[tuple(members)], Discriminator(_single_key)]  # noqa: UP007


def _none_to_empty(cls, data: Any) -> Any:
    """`- smooth:` with nothing after it means the stage's defaults."""
    if isinstance(data, dict) and len(data) == 1:
        (key, value), = data.items()
        if value is None:
            return {key: {}}
    return data


def spec_items(specs: list) -> list[tuple[str, Any]]:
    """(name, params) pairs of a validated postprocess/outputs list."""
    out = []
    for s in specs:
        name = next(iter(type(s).model_fields))
        out.append((name, getattr(s, name)))
    return out


def read_secret(value: str | None, file: str | None, what: str) -> str | None:
    """A secret given inline (or by ${ENV}) or in a file of its own (a small regular file)."""
    if file:
        try:
            return read_capped(file, MAX_SECRET_BYTES).decode("utf-8", "replace").strip()
        except OSError as e:
            raise ConfigError(f"{what}: cannot read {file} ({e.strerror or e})") from None
    return value

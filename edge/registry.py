"""Name -> class registries for post-processing stages and output sinks.

As rpicam-apps registers its post-processing stages by JSON name, a stage or sink registers
under the key the YAML uses; the config schema is built from these registries, so adding a
class with a `Params` model is all it takes to make a new YAML key valid and documented.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T", bound=type)


class Registry(dict):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str):
        def deco(cls: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            cls.name = name
            self[name] = cls
            return cls

        return deco

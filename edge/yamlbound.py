"""YAML composed with bounds: a config's node graph is checked before anything walks it.

PyYAML shares an anchored node between its aliases, so nine levels of `[*a, *a, ...]` are a
few hundred nodes in memory but billions once any code walks or copies the tree (positions,
${ENV} interpolation, validation); `&x [*x]` is a cycle that ends in a RecursionError. The
expanded size (every alias counted as a full copy) is counted with memoization, in time
proportional to the composed nodes, and refused beyond MAX_NODES; a cycle is refused outright.
"""

from __future__ import annotations

import yaml

from edge.errors import ConfigError

MAX_NODES = 50_000  # expanded nodes; a config with 1000 per-label thresholds has ~ 2000
MAX_DEPTH = 64  # nesting; real configs nest 5 deep


class _Loader(yaml.SafeLoader):
    """SafeLoader that stops composing once more than MAX_NODES nodes were made."""

    def compose_node(self, parent, index):  # noqa: D102
        self._nodes = getattr(self, "_nodes", 0) + 1
        if self._nodes > MAX_NODES:
            raise _TooBig(self.peek_event().start_mark, f"more than {MAX_NODES} YAML nodes")
        return super().compose_node(parent, index)


class _TooBig(Exception):
    def __init__(self, mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark


def _expanded(node, where: str) -> int:
    """Nodes the tree has with aliases expanded; ConfigError for a cycle, too many or too deep."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def fail(n, what: str) -> ConfigError:
        m = n.start_mark
        return ConfigError(f"{where}:{m.line + 1}:{m.column + 1}: {what}")

    def size(n, depth: int) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise fail(n, "recursive YAML alias (an anchor used inside itself)")
        if depth > MAX_DEPTH:
            raise fail(n, f"nested more than {MAX_DEPTH} levels deep")
        on_path.add(key)
        total = 1
        if isinstance(n, yaml.SequenceNode):
            for child in n.value:
                total += size(child, depth + 1)
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                total += size(k, depth + 1) + size(v, depth + 1)
        on_path.discard(key)
        sizes[key] = total
        if total > MAX_NODES:
            raise fail(n, f"YAML aliases expand to more than {MAX_NODES} nodes (alias bomb?)")
        return total

    return size(node, 0)


def compose_and_load(text: str, where: str):
    """(node, data) of one YAML document, composed once and checked before it is built.

    Raises yaml.YAMLError for bad YAML (the caller formats it) and ConfigError for a document
    too large, too deep or recursive.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _expanded(node, where)
        return node, loader.construct_document(node)
    except _TooBig as e:
        m = e.mark
        raise ConfigError(f"{where}:{m.line + 1}:{m.column + 1}: config too large: {e}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply (more than {MAX_DEPTH} levels)") from None
    finally:
        loader.dispose()

"""How a name in the config matches a model label.

Labels such as "tabby, tabby cat" carry synonyms, so a name matches a label when it equals the
whole label or one of its comma-separated names, ignoring case; a name with * ? [ ] is a glob
matched the same way.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections import Counter

GLOB_CHARS = set("*?[")


def names_of(label: str) -> list[str]:
    return [label.lower()] + [p.strip().lower() for p in label.split(",") if p.strip()]


def matches(pattern: str, label: str) -> bool:
    pat = pattern.lower()
    if GLOB_CHARS & set(pat):
        return any(fnmatch.fnmatchcase(n, pat) for n in names_of(label))
    return pat in names_of(label)


def resolve(pattern: str, labels: list[str]) -> list[int]:
    """Indices of the labels the pattern names (empty when it names none)."""
    return [i for i, label in enumerate(labels) if matches(pattern, label)]


def suggest(name: str, labels: list[str], n: int = 3) -> list[str]:
    """Close matches for a misspelt label, shown whole as the model spells them."""
    by_name: dict[str, str] = {}
    for label in labels:
        for alias in names_of(label):
            by_name.setdefault(alias, label)
    close = difflib.get_close_matches(name.lower(), list(by_name), n=n, cutoff=0.6)
    return list(dict.fromkeys(by_name[c] for c in close))


def new_clashes(before: list[str], after: list[str]) -> list[str]:
    """Names a stage added that also name another label (a group called like a label)."""
    was, now = Counter(before), Counter(after)
    added = [label for label, n in now.items() if n > was[label]]
    return [
        label
        for label in added
        if now[label] > 1 or resolve(label, [x for x in after if x != label])
    ]

"""Dotted paths into nested dicts: ``pretrain.eps`` in a config, ``downstream.clean_head.robust_acc.0.25`` in a
record. One set of functions for every place that reads, writes or flattens such trees (``--set`` overrides,
sweep points, run ids, plots, exports), so a path means the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from robinherit.errors import ConfigError

_MISSING = object()


def get_path(tree: Any, path: str, default: Any = _MISSING) -> Any:
    """Value at a dotted ``path`` in nested dicts/lists (an empty path is the tree itself); a missing one raises
    KeyError naming the path, or gives ``default`` where one is passed.

    Keys may hold dots (the budgets ``0.25`` of a record): the longest run of parts that is a key is tried first.
    Keys match numerically too, so ``robust_acc.1.0`` finds the key ``1``; list items are found by index."""
    value = _walk(tree, path.split(".") if path else [])
    if value is _MISSING:
        if default is _MISSING:
            raise KeyError(path)
        return default
    return value


def _walk(node: Any, parts: list[str]) -> Any:
    if not parts:
        return node
    if isinstance(node, dict):
        for n in range(len(parts), 0, -1):
            match = _match_key(node, ".".join(parts[:n]))
            if match is not _MISSING:
                found = _walk(node[match], parts[n:])
                if found is not _MISSING:
                    return found
        return _MISSING
    if isinstance(node, list | tuple) and parts[0].lstrip("-").isdigit():
        i = int(parts[0])
        return _walk(node[i], parts[1:]) if -len(node) <= i < len(node) else _MISSING
    return _MISSING


def _match_key(node: dict, key: str) -> Any:
    if key in node:
        return key
    num = as_float(key)
    if num is None:
        return _MISSING
    for k in node:
        if as_float(k) == num:
            return k
    return _MISSING


def as_float(text: Any) -> float | None:
    """``text`` as a float, or None where it is not a number ("0.25" -> 0.25, "eps" -> None)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` in ``tree`` in place, making the sections on the way; a value on the way is an error."""
    parts = path.split(".")
    cur = tree
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set '{path}': '{p}' is a value, not a section")
        cur = nxt
    cur[parts[-1]] = value


def drop_path(tree: dict[str, Any], path: str) -> None:
    """Remove ``path`` from ``tree`` in place; a path that is not there is no error."""
    *parents, last = path.split(".")
    for p in parents:
        tree = tree.get(p, {})
    tree.pop(last, None)


def nest(path: str, value: Any) -> dict[str, Any]:
    """``nest("a.b", 1)`` -> ``{"a": {"b": 1}}``."""
    tree: dict[str, Any] = {}
    set_path(tree, path, value)
    return tree


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, section by section; neither is modified."""
    out = dict(base)
    for key, val in override.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], val)
        else:
            out[key] = val
    return out


def merge_paths(tree: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    """``tree`` with each ``{dotted path: value}`` merged in, in order; ``tree`` is not modified."""
    for path, value in paths.items():
        tree = deep_merge(tree, nest(path, value))
    return tree


def flatten(
    tree: Any, leaf: Callable[[Any], Any] = lambda v: v, skip: Iterable[str] = (), prefix: str = ""
) -> dict[str, Any]:
    """``{dotted path: leaf(value)}`` of every non-dict value under ``tree``; paths in ``skip`` (and all below
    them) are left out. An empty dict gives no entry."""
    out: dict[str, Any] = {}
    skipped = frozenset(skip)

    def walk(node: Any, path: str) -> None:
        if path in skipped:
            return
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
        else:
            out[path] = leaf(node)

    walk(tree, prefix)
    return out

"""Whether two results stores hold the same numbers: each run both hold, its record without what differs between two
identical runs (timings, the commit), and each derived result both hold, without its measured seconds and its
provenance. What a refactor that keeps behaviour is checked with: the same command on a fresh store before and
after, then

    .venv/bin/python scripts/compare_stores.py before.db after.db

Prints, per table and kind, how many entries both stores hold and how many of them are equal, and the first fields
that differ; exits 1 when any shared entry differs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from robinherit.runs.store import ResultStore

RUN_VOLATILE = ("timing_s", "git_commit", "versions")
AUX_VOLATILE = ("seconds", "git_commit", "versions")  # a derived value's measured time and provenance


def strip(value: Any, volatile: tuple[str, ...]) -> Any:
    """``value`` without the keys ``volatile`` names, at any depth."""
    if isinstance(value, dict):
        return {k: strip(v, volatile) for k, v in value.items() if k not in volatile}
    if isinstance(value, list):
        return [strip(v, volatile) for v in value]
    return value


def differing_fields(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    args = parser.parse_args(argv)
    a, b = ResultStore(args.a, read_only=True), ResultStore(args.b, read_only=True)
    differ = False
    shared = sorted(a.run_ids() & b.run_ids())
    runs = {rid: (strip(a.get(rid), RUN_VOLATILE), strip(b.get(rid), RUN_VOLATILE)) for rid in shared}
    bad = [rid for rid, (x, y) in runs.items() if x != y]
    print(f"runs: {len(a.run_ids())} and {len(b.run_ids())}, {len(shared)} in both, {len(shared) - len(bad)} equal")
    for rid in bad[:5]:
        print(f"  {rid} differs in {', '.join(differing_fields(*runs[rid]))}")
    differ |= bool(bad)
    keys_a, keys_b = a.aux_keys(), b.aux_keys()
    for kind in sorted({k for k, _ in keys_a | keys_b}):
        both = sorted(key for k, key in keys_a & keys_b if k == kind)
        vals = {
            key: (strip(a.get_aux(kind, key), AUX_VOLATILE), strip(b.get_aux(kind, key), AUX_VOLATILE)) for key in both
        }
        bad = [key for key, (x, y) in vals.items() if x != y]
        n_a, n_b = sum(k == kind for k, _ in keys_a), sum(k == kind for k, _ in keys_b)
        print(f"derived {kind}: {n_a} and {n_b}, {len(both)} in both, {len(both) - len(bad)} equal")
        for key in bad[:5]:
            print(f"  {key} differs in {', '.join(differing_fields(*vals[key]))}")
        differ |= bool(bad)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

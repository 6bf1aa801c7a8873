"""Do two bench runs (`sense-local bench --json F`, e.g. before and after a refactor) write the same
tokens? Per task and method: identical, or where the first rep's outputs part and ar's top-2 logit
gap there (a near-tie, < 0.25, is batched arithmetic, not a change of behaviour).

    python -m benchmarks.compare_outputs before.json after.json
"""
from __future__ import annotations

import argparse
import json
import sys

from sense_local.bench.rows import NEAR_TIE
from sense_local.bench.runner import first_divergence


def _rows(path: str) -> dict[tuple[str, str], dict]:
    with open(path) as f:
        doc = json.load(f)
    return {(r["task"], r["method"]): r for r in doc["runs"] if r.get("output_ids") is not None}


def _vs_ar(row: dict) -> str:
    """How a run's output stands to its own run's ar: the same, or where it parts and ar's gap there."""
    if row["identical_to_ar"]:
        return "= ar"
    gap = row.get("divergence_gap")
    return "parts from ar" + ("" if gap is None else f" at gap {gap:.2f}" + (" (near-tie)" if gap < NEAR_TIE else ""))


def compare(before: dict, after: dict) -> list[dict]:
    out = []
    for key in sorted(before.keys() & after.keys()):
        a, b = before[key]["output_ids"], after[key]["output_ids"]
        at = first_divergence(a, b)
        out.append({"task": key[0], "method": key[1], "identical": at is None, "parts_at": at, "tokens": len(a),
                    "vs_ar": (_vs_ar(before[key]), _vs_ar(after[key]))})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    args = ap.parse_args(argv)
    before, after = _rows(args.before), _rows(args.after)
    if not before or not after:
        print("error: a file has no output_ids (bench runs before this field cannot be compared)", file=sys.stderr)
        return 2
    rows = compare(before, after)
    # a drafting method's two outputs may part where either run parted from its own ar at a near-tie
    # (batched arithmetic, draft sizes from each run's measured cost curve); ar is never drafted
    same = sum(r["identical"] for r in rows)
    for r in rows:
        if not r["identical"]:
            print(f"{r['task']:<24} {r['method']:<12} parts at token {r['parts_at']} of {r['tokens']}; "
                  f"before: {r['vs_ar'][0]}; after: {r['vs_ar'][1]}")
    only = sorted((before.keys() ^ after.keys()))
    print(f"{same} / {len(rows)} (task, method) outputs identical; {len(only)} in one run only")
    return 0 if same == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())

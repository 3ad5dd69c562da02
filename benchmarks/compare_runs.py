"""Compare two run folders' results to the last digit: `python benchmarks/compare_runs.py RUN_A RUN_B`.

Used when the code moves but its behaviour must not: run the series twice with the same seed and
data (once before the change, once after) and compare. Compared exactly:

* every ``metrics/*.json`` (the notebooks' figures), except the timing fields listed in ``TIMING``,
  with each run's own folder written as ``<run>`` in paths;
* every ``eval/*.csv`` table (the ablation table, per-patch and per-image scores), less ``TIMING`` columns;
* every ``match/**/*.npz`` and ``*.npy`` (the plans and pair graphs notebook 03 hands to 04).

Prints one line per difference and exits 1 when there is any, 0 when the runs agree. With
``--allow-added``, JSON keys that only RUN_B has (a config field added by the change, recorded in the
metrics) are listed but not counted: every value both runs have must still agree.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

TIMING = {"seconds", "total_seconds", "megapixels_per_s", "s_per_mp", "started"}
"""Keys (and table columns) whose values are wall-clock measurements: they differ between any two runs."""
ADDED = "added in B"
"""How a JSON key that only the second run has is reported (a new config field, say): see ``--allow-added``."""


def _walk(a, b, where: str, out: list[str], roots: tuple[str, str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in TIMING:
                continue
            if key not in a or key not in b:
                out.append(f"{where}.{key}: {ADDED if key not in a else 'only in A'}")
            else:
                _walk(a[key], b[key], f"{where}.{key}", out, roots)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} items against {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            _walk(x, y, f"{where}[{i}]", out, roots)
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return
    elif isinstance(a, str) and isinstance(b, str) and a.replace(roots[0], "<run>") == b.replace(roots[1], "<run>"):
        return
    elif a != b or type(a) is not type(b):
        out.append(f"{where}: {a!r} against {b!r}")


def compare_json(a: Path, b: Path, out: list[str], roots: tuple[str, str]) -> None:
    _walk(json.loads(a.read_text()), json.loads(b.read_text()), a.name, out, roots)


def compare_tables(a: Path, b: Path, out: list[str], roots: tuple[str, str]) -> None:
    def rows(path: Path) -> list[dict[str, str]]:
        with path.open(newline="") as f:
            return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]
    _walk(rows(a), rows(b), a.name, out, roots)


def compare_arrays(a: Path, b: Path, out: list[str], roots: tuple[str, str]) -> None:
    if a.suffix == ".npy":
        x, y = {"": np.load(a)}, {"": np.load(b)}
    else:
        with np.load(a, allow_pickle=False) as za, np.load(b, allow_pickle=False) as zb:
            x, y = dict(za), dict(zb)
    for key in sorted(set(x) | set(y)):
        if key not in x or key not in y:
            out.append(f"{a.name}[{key}]: only in {'B' if key not in x else 'A'}")
        elif x[key].shape != y[key].shape or not np.array_equal(x[key], y[key], equal_nan=x[key].dtype.kind == "f"):
            out.append(f"{a.name}[{key}]: arrays differ")


def compare_runs(run_a: Path, run_b: Path) -> tuple[int, list[str]]:
    """``(files compared, differences)`` between two run folders."""
    patterns = {"metrics/*.json": compare_json, "eval/*.csv": compare_tables, "match/**/*.npz": compare_arrays,
                "match/**/*.npy": compare_arrays}
    out: list[str] = []
    count = 0
    roots = (str(run_a.resolve()), str(run_b.resolve()))
    for pattern, compare in patterns.items():
        names = {p.relative_to(run_a) for p in run_a.glob(pattern)} | {p.relative_to(run_b) for p in run_b.glob(pattern)}
        for rel in sorted(names):
            if not (run_a / rel).is_file() or not (run_b / rel).is_file():
                out.append(f"{rel}: only in {'B' if not (run_a / rel).is_file() else 'A'}")
                continue
            count += 1
            compare(run_a / rel, run_b / rel, out, roots)
    return count, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--allow-added", action="store_true", help="list keys only RUN_B has, do not count them")
    args = parser.parse_args(argv)
    for run in (args.run_a, args.run_b):
        if not (run / "metrics").is_dir():
            print(f"{run}: not a run folder (no metrics/)", file=sys.stderr)
            return 2
    count, diffs = compare_runs(args.run_a, args.run_b)
    added = [d for d in diffs if d.endswith(ADDED)] if args.allow_added else []
    diffs = [d for d in diffs if d not in added]
    for line in diffs + added:
        print(line)
    print(f"{count} files compared, {len(diffs)} differences" + (f", {len(added)} keys added in B" if added else ""))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())

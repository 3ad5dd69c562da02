"""Compare two runs' ablation tables against the seed spread: `python benchmarks/compare_ablation.py RUN_A RUN_B`.

Used when a change may move the figures a little but must not move them beyond what a training seed moves
them (a change of arithmetic, say, where :mod:`compare_runs` would report every digit). Reads each run's
``metrics/06_evaluate.json`` table. A row trained with several seeds (``EvalConfig.seed_methods``) has, per
metric, the mean over its seeds and their standard deviation (``"<metric> sd"``); the **seed spread** of a
metric is the largest of those deviations over the rows of both runs. A row's figure *moves beyond the
spread* when ``|B - A|`` exceeds it.

Prints one line per row and metric (A, B, B - A, the spread) and exits 1 when any figure moves beyond the
spread, or when a row or metric is in one run only, 0 otherwise. Then, for the validation split, each trained
network's kept held-out loss in both runs (``train/<name>/result.json``: the figure of its checkpoint rule at
its kept epoch) and the relative change; those lines inform and do not change the exit status.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

METRICS = ("psnr", "ssim", "delta_e2000")
"""The table's figures compared (``isp_support.evaluate.scoring.METRICS``)."""


class AblationError(Exception):
    """A run folder has no readable ablation table."""


def load_table(run: Path) -> dict[str, dict]:
    """``metrics/06_evaluate.json``'s ablation table of ``run``, by row; an :class:`AblationError` naming the
    file when it is missing or has no table."""
    path = Path(run) / "metrics" / "06_evaluate.json"
    try:
        table = json.loads(path.read_text())["table"]
    except FileNotFoundError:
        raise AblationError(f"{path}: no evaluation metrics (run 06_evaluate first)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise AblationError(f"{path}: no ablation table ({type(exc).__name__}: {exc})") from None
    if not isinstance(table, dict):
        raise AblationError(f"{path}: the table is a {type(table).__name__}, not a mapping of rows")
    return table


def seed_spread(tables: list[dict[str, dict]], metric: str) -> float:
    """The largest per-row standard deviation over seeds of ``metric`` in ``tables`` (NaN when no row has one)."""
    sds = [row[f"{metric} sd"] for table in tables for row in table.values()
           if isinstance(row.get(f"{metric} sd"), (int, float)) and math.isfinite(row[f"{metric} sd"])]
    return max(sds) if sds else math.nan


def compare(a: dict[str, dict], b: dict[str, dict]) -> tuple[list[str], int]:
    """``(report lines, figures beyond the spread or missing)`` for tables ``a`` and ``b``."""
    lines, bad = [], 0
    spread = {m: seed_spread([a, b], m) for m in METRICS}
    lines.append("seed spread (largest sd over seeds): " + ", ".join(f"{m} {spread[m]:.4g}" for m in METRICS))
    lines.append(f"{'row':<16}{'metric':<13}{'A':>10}{'B':>10}{'B - A':>10}  verdict")
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            lines.append(f"{key:<16}only in {'B' if key not in a else 'A'}")
            bad += 1
            continue
        for m in METRICS:
            va, vb = a[key].get(m), b[key].get(m)
            if not isinstance(va, (int, float)) or not isinstance(vb, (int, float)):
                lines.append(f"{key:<16}{m:<13}missing in {'A' if not isinstance(va, (int, float)) else 'B'}")
                bad += 1
                continue
            beyond = not abs(vb - va) <= spread[m]  # a NaN spread or figure counts as beyond
            bad += beyond
            lines.append(f"{key:<16}{m:<13}{va:>10.4f}{vb:>10.4f}{vb - va:>+10.4f}  "
                         f"{'BEYOND the spread' if beyond else 'within'}")
    return lines, bad


def kept_held_out(run: Path) -> dict[str, float]:
    """Each finished training run of ``run``'s kept held-out loss, by run name (runs whose ``result.json`` is
    unreadable or lacks the figure are left out)."""
    out = {}
    for path in sorted(Path(run).glob("train/*/result.json")):
        try:
            done = json.loads(path.read_text())
            record = next(h for h in done["history"] if h["epoch"] == done["best_epoch"])
            out[path.parent.name] = float(record[done["checkpoint_rule"]])
        except (OSError, ValueError, KeyError, TypeError, StopIteration):
            continue
    return out


def held_out_lines(run_a: Path, run_b: Path) -> list[str]:
    """One line per training run in both folders: its kept held-out loss in A and B and the change."""
    a, b = kept_held_out(run_a), kept_held_out(run_b)
    common = sorted(set(a) & set(b))
    if not common:
        return ["validation split: no training run in both folders"]
    changes = [b[k] / a[k] - 1 for k in common if a[k]]
    lines = ["validation split, kept held-out loss per training run:",
             f"{'run':<28}{'A':>12}{'B':>12}{'change':>9}"]
    lines += [f"{k:<28}{a[k]:>12.5g}{b[k]:>12.5g}{(b[k] / a[k] - 1 if a[k] else math.nan):>+9.1%}" for k in common]
    lines.append(f"{len(common)} runs: {sum(c > 0 for c in changes)} worse, {sum(c < 0 for c in changes)} better, "
                 f"changes {min(changes):+.1%} to {max(changes):+.1%}" if changes else f"{len(common)} runs")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args(argv)
    try:
        lines, bad = compare(load_table(args.run_a), load_table(args.run_b))
    except AblationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    print(f"{bad} figure(s) beyond the seed spread or missing" if bad else "every figure within the seed spread")
    print("\n" + "\n".join(held_out_lines(args.run_a, args.run_b)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

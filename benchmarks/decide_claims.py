"""The paper's claims decided from seed-averaged figures: one ``seed_spread.json`` per dataset build.

Each claim compares two rows trained at the same seeds (``benchmarks/seed_spread.py``). At a given seed the two
runs share their held-out scenes, visiting order, crop windows and starting weights, so the per-seed differences
are paired. A claim is **decided** when the mean of its per-seed differences lies outside a 95% t interval around
zero (``|mean| > t(0.975, n - 1) * sd / sqrt(n)``), on the test split's PSNR and CIEDE2000 of the kept networks.
Beside it, the notebook's single-run rule (notebook 06): one seed's difference against twice the spread of a
difference of two single runs, ``2 sqrt(sd_a^2 + sd_b^2)``.

    python benchmarks/decide_claims.py runs/var/study-demo/seed_spread.json runs/var/study-seed1/seed_spread.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from scipy import stats

CLAIMS = (("ot", "random", "OT pairs beat random pairs"), ("ot", "knn", "OT pairs beat kNN pairs"),
          ("ot", "ot_paper", "the series' OT graph against the paper's literal one"),
          ("ot", "ot_lut", "the 1x1 head beats the 3D LUT"), ("ot_stage2", "ot", "stage 2 improves on stage 1"))
FIGURES = {"psnr": 1.0, "delta_e2000": -1.0}
"""Test-split figures compared, and the sign that makes a positive difference a win for the claim's first row."""


def kept(run: dict, metric: str) -> float:
    return run["test"][metric][run["test"]["epoch"].index(run["kept"])]


def decide(a: dict, b: dict, metric: str) -> dict:
    """The paired comparison of rows ``a`` and ``b`` (``{"seed<k>": run}``) on ``metric``."""
    seeds = sorted(set(a) & set(b))
    diffs = [FIGURES[metric] * (kept(a[s], metric) - kept(b[s], metric)) for s in seeds]
    n = len(diffs)
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = stats.t.ppf(0.975, n - 1) * sd / n ** 0.5
    sd_a, sd_b = (statistics.stdev(kept(r[s], metric) for s in seeds) for r in (a, b))
    single = diffs[0]
    return {"seeds": n, "mean": mean, "half_width": half, "per_seed": diffs,
            "verdict": "yes" if mean > half else "no, the opposite" if mean < -half else "undecided",
            "single_run": single, "single_run_threshold": 2 * (sd_a ** 2 + sd_b ** 2) ** 0.5}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spreads", nargs="+", help="seed_spread.json files, one per dataset build")
    parser.add_argument("--variant", default="profile")
    parser.add_argument("--out", default=None, help="write the verdicts as JSON here")
    args = parser.parse_args(argv)
    table = {}
    print("| build | claim | figure | mean of the per-seed differences (95% interval) | verdict | "
          "one seed's difference against the single-run rule |")
    print("|---|---|---|---|---|---|")
    for path in args.spreads:
        runs = json.loads(Path(path).read_text())["runs"][args.variant]
        for first, second, claim in CLAIMS:
            if first not in runs or second not in runs:
                continue
            for metric in FIGURES:
                d = decide(runs[first], runs[second], metric)
                table[f"{path}|{first}-{second}|{metric}"] = d
                unit = "dB" if metric == "psnr" else "dE (fall)"
                single = "decided" if abs(d["single_run"]) > d["single_run_threshold"] else "undecided"
                print(f"| {Path(path).parent.name} | {claim} | {metric} | {d['mean']:+.2f} ± {d['half_width']:.2f} "
                      f"{unit} ({d['seeds']} seeds) | {d['verdict']} | {d['single_run']:+.2f} against "
                      f"{d['single_run_threshold']:.2f}: {single} |")
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

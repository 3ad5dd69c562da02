"""What stage 2's adversarial epochs change, measured per epoch over the seeds of a ``seed_spread.py`` study.

Reads ``<study>/seed_spread.json`` and the stage-2 runs' ``result.json`` (``<study>/profile/train/stage2_ot*``).
Epoch 0 of stage 2 is the stage-1 network it starts from. Per epoch, the mean over the seeds of: the figures
training validates on without ground truth (colour distance of the pooled predictions to the target domain,
structure fidelity to the input, the held-out pseudo-loss), and, for reporting, PSNR and CIEDE2000 on the test split.

    python benchmarks/stage2_effect.py runs/var/study-demo runs/var/study-seed1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from isp_support.config import profile_config
from isp_support.runs import RunLayout, run_name

VALIDATION = ("colour_distance", "structure", "pseudo_loss")
DEMO = profile_config("demo")
"""The settings the stage-2 runs were named under (``seed_spread.py`` trains the demo profile's rows)."""


def per_epoch(study: Path, variant: str = "profile") -> list[dict[str, float]]:
    """Mean over the seeds of each figure, per stage-2 epoch."""
    runs = json.loads((study / "seed_spread.json").read_text())["runs"][variant]["ot_stage2"]
    rows: dict[int, list[dict[str, float]]] = {}
    for seed, run in runs.items():
        k = int(seed.removeprefix("seed"))
        folder = RunLayout(study / variant).training(run_name(2, "ot", DEMO, None if k == 0 else k))
        history = {h["epoch"]: h for h in json.loads((folder / "result.json").read_text())["history"]}
        for k, epoch in enumerate(run["test"]["epoch"]):
            rows.setdefault(epoch, []).append({**{f: history[epoch][f] for f in VALIDATION},
                                               "test_psnr": run["test"]["psnr"][k],
                                               "test_de": run["test"]["delta_e2000"][k],
                                               "kept": float(epoch == run["kept"])})
    return [{"epoch": e, "seeds": len(v), **{k: statistics.fmean(r[k] for r in v) for k in v[0]}}
            for e, v in sorted(rows.items())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="seed_spread.py output folders with an ot_stage2 row")
    args = parser.parse_args(argv)
    print("| build | stage-2 epoch | colour distance | structure | held-out loss | test PSNR | test CIEDE2000 | "
          "share of seeds keeping it |")
    print("|---|---|---|---|---|---|---|---|")
    for study in map(Path, args.studies):
        for r in per_epoch(study):
            print(f"| {study.name} | {r['epoch']} | {r['colour_distance']:.4f} | {r['structure']:.4f} | "
                  f"{r['pseudo_loss']:.4f} | {r['test_psnr']:.2f} | {r['test_de']:.2f} | {r['kept']:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

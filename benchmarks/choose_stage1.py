"""Stage-1 settings chosen on the validation split: notebook 06's stage-1 runs again under variant settings.

Takes a run folder in which notebooks 01-03 have run (its ``preprocessed``, ``stitched`` and ``match``
folders; notebook 06's folder has all of them) and trains the ablation table's stage-1 rows again for each
``--variant NAME KEY=VALUE ...``, in a fresh run folder per variant under ``--out``, on the same
pre-processing and pair graphs. The rows' runs at the profile's own settings are loaded from the run folder
itself where they are there (notebook 06 trains them all), else trained under ``--out`` as well.

Each run is judged on its validation scenes (held out of training; each seed holds out other ones) by two
figures, never by the test split:

* the kept held-out loss, the figure its checkpoint rule keeps (:func:`isp_support.train.validate.kept_epoch`):
  ``pseudo_loss`` against pseudo-targets (``paired_loss`` for the supervised rows). It is compared with the
  same row and seed under the profile's settings only where a variant changes no part of the objective
  (:data:`SAME_OBJECTIVE`): a loss with fewer terms is lower without being better.
* PSNR, SSIM and CIEDE2000 of the kept network on the validation patches against their ``train/gt``
  renderings, where the dataset has them (the demo builder makes them; a challenge dataset may not).

Per variant it prints each run's changes, their medians and how many runs got worse, and the stage-1
training time.

    python benchmarks/choose_stage1.py --run-dir runs/demo --out runs/choose \\
        --variant epochs-4 train.epochs=4 --variant gram-relu2_2 train.gram_layers=relu1_2,relu2_2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isp_support.artifacts import atomic_write_json
from isp_support.config import ConfigError, load_config
from isp_support.config_rules import validate
from isp_support.data import open_dataset
from isp_support.evaluate import scoring
from isp_support.io import read_rgb_batch
from isp_support.pipeline.preprocess import load_preprocessed
from isp_support.runs import RunLayout

SHARED = ("preprocessed", "stitched", "match", "run.json")
"""What the stage-1 runs read of notebooks 01-03 (linked, not copied, into each fresh run folder)."""
SAME_OBJECTIVE = ("train.epochs", "train.lr", "train.schedule", "train.ema", "train.patience", "train.weight_decay")
"""Settings that change how the objective is minimised, not the objective: a variant changing only these has
held-out losses comparable with the profile's."""
TRUTH = {"psnr": True, "ssim": True, "delta_e2000": False}
"""Validation figures against ground truth, and whether higher is better."""


def stage1_jobs(cfg) -> list[tuple[scoring.Method, int]]:
    """``(row, seed)`` of every stage-1 run notebook 06 makes: each stage-1 row at the profile's seed, the
    ``seed_methods`` rows at the extra seeds too."""
    seeds = (cfg.seed, *cfg.evaluate.seeds)
    return [(m, s) for m in (scoring.METHODS[k] for k in cfg.evaluate.methods) if m.stage == 1
            for s in seeds if s == cfg.seed or m.key in cfg.evaluate.seed_methods]


def linked_run_dir(source: Path, out: Path) -> Path:
    """A fresh run folder sharing ``source``'s outputs of notebooks 01-03."""
    out.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        if not (source / name).exists():
            raise SystemExit(f"{source}: no {name}; run notebooks 01-03 into it first")
        link = out / name
        if not link.exists():
            os.symlink((source / name).resolve(), link)
    return out


def _value(text: str) -> Any:
    """A ``KEY=VALUE`` value: an integer, a number, ``none``, a comma-separated list, else the text."""
    if text.lower() == "none":
        return None
    if "," in text:
        return [_value(t) for t in text.split(",") if t]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_variant(words: list[str]) -> tuple[str, dict[str, Any]]:
    """``[NAME, KEY=VALUE, ...]`` -> ``(NAME, {KEY: value})``; a malformed item exits with its text."""
    name, items = words[0], words[1:]
    if not items or "=" in name or not all("=" in item for item in items):
        raise SystemExit(f"--variant {' '.join(words)}: give a name, then one or more KEY=VALUE settings")
    return name, {k: _value(v) for k, v in (item.split("=", 1) for item in items)}


def kept(result) -> dict:
    rule = result.checkpoint_rule
    return {"best_epoch": result.best_epoch, "rule": rule, "held_out": float(result.best[rule]),
            "seconds": round(result.seconds, 1), "loaded": result.loaded}


class ValidationTruth:
    """The validation patches of a run (pre-processed inputs) and their ``train/gt`` renderings."""

    def __init__(self, cfg, run_dir: Path):
        split = open_dataset(cfg.data_dir)["train"]
        self.gt = {p.id: p.path for scene in split.gt.values() for p in scene.patches}
        self.pre = RunLayout(run_dir).preprocessed

    def patches(self, val_ids) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The pre-processed inputs and ``train/gt`` renderings of the validation patches (``None``: no ground
        truth)."""
        ids = [i for i in val_ids if i in self.gt]
        if not ids:
            return None
        inputs = torch.from_numpy(np.stack([load_preprocessed(self.pre, "train", i) for i in ids]).astype(np.float32))
        return inputs, read_rgb_batch([self.gt[i] for i in ids])

    def scores(self, result) -> dict[str, float] | None:
        """Mean :data:`TRUTH` figures of the kept network on its validation patches (``None``: no ground truth)."""
        patches = self.patches(result.val_ids)
        return None if patches is None else scoring.mean_scores(result.model, *patches)


def train_all(cfg, where: Path, jobs, truth: ValidationTruth) -> dict[str, dict]:
    runs = {}
    for method, seed in jobs:
        result = scoring.train_method(cfg, where, method, seed=seed, progress=False, log=lambda _: None)
        row = kept(result) | {"truth": truth.scores(result)}
        runs[f"{method.key}/seed{seed}"] = row
        shown = "" if row["truth"] is None else "  validation " + "  ".join(
            f"{k} {v:.4g}" for k, v in row["truth"].items())
        print(f"{where.name:>16s}  {method.key:15s} seed {seed}  kept epoch {row['best_epoch']}  "
              f"{row['rule']} {row['held_out']:.5g}{shown}  {row['seconds']:.0f} s"
              f"{'  (loaded)' if row['loaded'] else ''}", flush=True)
    return runs


def compare(base: dict[str, dict], runs: dict[str, dict], same_objective: bool) -> dict[str, Any]:
    """Per-run changes against the profile's runs, their medians and how many runs got worse: the held-out
    loss's relative change (negative: better), the ground-truth figures' gains (a rise of PSNR and SSIM, a fall
    of CIEDE2000: positive is better)."""
    figures: dict[str, dict[str, float]] = {}
    if same_objective:
        figures["held_out"] = {k: runs[k]["held_out"] / base[k]["held_out"] - 1 for k in base}
    for metric, higher in TRUTH.items():
        pairs = {k: (runs[k]["truth"], base[k]["truth"]) for k in base if base[k]["truth"] and runs[k]["truth"]}
        if pairs:
            figures[metric] = {k: (a[metric] - b[metric]) * (1 if higher else -1) for k, (a, b) in pairs.items()}
    summary = {"seconds": sum(v["seconds"] for v in runs.values()), "figures": {}}
    for figure, changes in figures.items():
        worse = sum(c > 0 for c in changes.values()) if figure == "held_out" else sum(c < 0 for c in changes.values())
        summary["figures"][figure] = {"median": statistics.median(changes.values()), "worse": worse,
                                      "runs": len(changes), "changes": changes}
    return summary


def print_summary(name: str, summary: dict[str, Any], same_objective: bool) -> None:
    print(f"{name}: stage-1 training {summary['seconds']:.0f} s"
          f"{'' if same_objective else '; held-out loss not compared (another objective)'}")
    for figure, s in summary["figures"].items():
        unit = "relative, negative: better" if figure == "held_out" else \
            "positive: better" if TRUTH[figure] else "its fall, positive: better"
        median = f"{s['median']:+.1%}" if figure == "held_out" else f"{s['median']:+.4g}"
        print(f"    {figure:12s} median change {median} ({unit}), worse in {s['worse']} of {s['runs']} runs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a run folder where notebooks 01-03 have run")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--data-dir", default=None, help="the dataset (default: the profile's)")
    parser.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME KEY=VALUE",
                        help="a variant's name and its settings (dotted config names), e.g. epochs-4 train.epochs=4")
    parser.add_argument("--out", required=True, help="folder for one fresh run folder per variant")
    parser.add_argument("--rows", nargs="*", help="only these stage-1 rows (default: all of the table's)")
    parser.add_argument("--seeds", type=int, nargs="*", help="only these training seeds (default: notebook 06's)")
    args = parser.parse_args(argv)

    run_dir, out = Path(args.run_dir), Path(args.out)
    cfg = load_config(args.profile, data_dir=args.data_dir, run_dir=run_dir, environ={})
    variants = dict(parse_variant(words) for words in args.variant)
    try:
        configs = {name: validate(cfg.replace(**changes)) for name, changes in variants.items()}
    except ConfigError as exc:
        raise SystemExit(f"--variant: {exc}") from exc
    jobs = [(m, s) for m, s in stage1_jobs(cfg)
            if (not args.rows or m.key in args.rows) and (args.seeds is None or s in args.seeds)]
    truth = ValidationTruth(cfg, run_dir)
    base_dir = run_dir if (run_dir / "train").is_dir() else linked_run_dir(run_dir, out / "profile")
    table = {"profile": train_all(cfg, base_dir, jobs, truth)}
    for name, vcfg in configs.items():
        table[name] = train_all(vcfg, linked_run_dir(run_dir, out / name), jobs, truth)
    print()
    summary = {}
    for name, changes in variants.items():
        same = all(k in SAME_OBJECTIVE for k in changes)
        summary[name] = compare(table["profile"], table[name], same)
        print_summary(name, summary[name], same)
    atomic_write_json(out / "choose_stage1.json", {"run_dir": str(run_dir), "variants": variants, "runs": table,
                                                   "summary": summary})
    print(f"-> {out / 'choose_stage1.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

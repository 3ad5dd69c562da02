"""Stage-1 epochs chosen on the validation split: each row's kept held-out loss under other epoch counts.

Takes a run folder in which notebooks 01-03 have run (its ``preprocessed``, ``stitched`` and ``match``
folders; notebook 06's folder has all of them) and trains the ablation table's stage-1 rows again, for
each ``--epochs`` value, in a fresh run folder per value under ``--out``, on the same pre-processing and pair
graphs. Each run's figure is the one its checkpoint rule keeps (:func:`isp_support.train.validate.kept_epoch`):
the held-out loss of the validation patches (``pseudo_loss``; ``paired_loss`` for the supervised rows). No
test-split figure is read. The rows' runs at the profile's own epochs are loaded from the run folder itself
where they are there (notebook 06 trains them all), else trained under ``--out`` as well.

Per row and seed it prints the kept epoch, the kept held-out loss and the training time, and per epoch count
each run's change of that loss against the same row and seed at the profile's epochs (the same validation
patches and pseudo-targets: both are drawn from the seed), their median, and how many runs got worse. Losses
of different seeds are not compared: each seed holds out other scenes.

    python benchmarks/choose_epochs.py --run-dir runs/demo --epochs 3 4 --out runs/choose-epochs
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from isp_support.artifacts import atomic_write_json
from isp_support.config import load_config
from isp_support.evaluate import scoring

SHARED = ("preprocessed", "stitched", "match", "run.json")
"""What the stage-1 runs read of notebooks 01-03 (linked, not copied, into each fresh run folder)."""


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


def kept(result) -> dict:
    rule = result.checkpoint_rule
    return {"best_epoch": result.best_epoch, "rule": rule, "held_out": float(result.best[rule]),
            "seconds": round(result.seconds, 1), "loaded": result.loaded}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a run folder where notebooks 01-03 have run")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--data-dir", default=None, help="the dataset (default: the profile's)")
    parser.add_argument("--epochs", type=int, nargs="+", required=True, help="epoch counts to try")
    parser.add_argument("--out", required=True, help="folder for one fresh run folder per epoch count")
    parser.add_argument("--rows", nargs="*", help="only these stage-1 rows (default: all of the table's)")
    parser.add_argument("--seeds", type=int, nargs="*", help="only these training seeds (default: notebook 06's)")
    args = parser.parse_args(argv)

    run_dir, out = Path(args.run_dir), Path(args.out)
    cfg = load_config(args.profile, data_dir=args.data_dir, run_dir=run_dir, environ={})
    jobs = [(m, s) for m, s in stage1_jobs(cfg)
            if (not args.rows or m.key in args.rows) and (args.seeds is None or s in args.seeds)]
    base_epochs = cfg.train.epochs
    counts = [base_epochs] + [e for e in args.epochs if e != base_epochs]
    table: dict[int, dict[str, dict]] = {}
    for epochs in counts:
        ecfg = cfg.replace(**{"train.epochs": epochs})
        where = run_dir if epochs == base_epochs and (run_dir / "train").is_dir() else \
            linked_run_dir(run_dir, out / f"epochs-{epochs}")
        table[epochs] = {}
        for method, seed in jobs:
            result = scoring.train_method(ecfg, where, method, seed=seed, progress=False, log=lambda _: None)
            row = kept(result)
            table[epochs][f"{method.key}/seed{seed}"] = row
            print(f"epochs {epochs:2d}  {method.key:15s} seed {seed}  kept epoch {row['best_epoch']}  "
                  f"{row['rule']} {row['held_out']:.5g}  {row['seconds']:.0f} s"
                  f"{'  (loaded)' if row['loaded'] else ''}", flush=True)

    base = table[base_epochs]
    print()
    summary = {}
    for epochs in counts[1:]:
        changes = {k: table[epochs][k]["held_out"] / base[k]["held_out"] - 1 for k in base}
        seconds = sum(v["seconds"] for v in table[epochs].values())
        summary[epochs] = {"median_change": statistics.median(changes.values()),
                           "worse": sum(c > 0 for c in changes.values()), "runs": len(changes),
                           "seconds": seconds, "changes": changes}
        print(f"epochs {epochs}: held-out loss against {base_epochs} epochs, median {summary[epochs]['median_change']:+.1%}, "
              f"worse in {summary[epochs]['worse']} of {len(changes)} runs; training {seconds:.0f} s")
        for k, c in changes.items():
            print(f"    {k:24s} {c:+.1%}")
    atomic_write_json(out / "choose_epochs.json", {"run_dir": str(run_dir), "base_epochs": base_epochs,
                                                   "runs": table, "summary": summary})
    print(f"-> {out / 'choose_epochs.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

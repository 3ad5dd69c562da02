"""The seed spread of stage 1: where it comes from, and what a setting does to it.

Takes a run folder in which notebooks 01-03 have run and trains the stage-1 rows (default ``ot``, ``random`` and
``ot_paper``) at several training seeds (default 0-4) under each variant, in a fresh run folder per variant under
``--out``, on the same pre-processing and pair graphs (``choose_stage1.linked_run_dir``). Per row and variant it
prints the mean and standard deviation over the seeds of:

* the kept network's PSNR on the validation scenes against their ``train/gt`` renderings: what settings are chosen
  on (each seed holds out other scenes unless ``split`` is held fixed);
* the kept network's test PSNR and CIEDE2000: reported, never chosen on;
* the last epoch's test PSNR, and the kept epoch's regret (kept minus the best epoch's test PSNR);
* the kept held-out loss.

``--sources`` adds the variance study: one variant per source of randomness in which only that source follows the
seed (``TrainConfig.fixed_randomness`` holds the others at seed 0), and ``fixed``, in which none does (the
arithmetic alone: its spread should be 0 on a CPU). Each source's share is its variance over the seeds divided by
the variance with every source free (the ``profile`` variant); the shares need not add up to 1 where sources
interact.

    python benchmarks/seed_spread.py --run-dir runs/var/demo --out runs/var/study --sources
    python benchmarks/seed_spread.py --run-dir runs/var/demo --out runs/var/lr --variant lr-3e-4 train.lr=3e-4
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from choose_stage1 import ValidationTruth, linked_run_dir, parse_variant
from isp_support.artifacts import atomic_write_json
from isp_support.config import ConfigError, load_config
from isp_support.config_rules import RANDOMNESS, validate
from isp_support.evaluate import scoring

ROWS = ("ot", "random", "ot_paper")


def source_variants() -> dict[str, dict[str, Any]]:
    """``only-<source>`` for each source of randomness (the others held at seed 0), and ``fixed`` (all held)."""
    variants = {f"only-{part}": {"train.fixed_randomness": [p for p in RANDOMNESS if p != part]}
                for part in RANDOMNESS}
    return variants | {"fixed": {"train.fixed_randomness": list(RANDOMNESS)}}


class Truth(ValidationTruth):
    """The validation patches' ``train/gt`` renderings (:class:`choose_stage1.ValidationTruth`) and the scored
    split's patches."""

    def __init__(self, cfg, run_dir: Path):
        super().__init__(cfg, run_dir)
        if not self.gt:
            raise SystemExit(f"{cfg.data_dir}/train/gt: no ground truth; the seed spread is measured against it")
        self.test = scoring.load_test_set(cfg, run_dir)


def measure(result, truth: Truth) -> dict[str, Any]:
    """One run's figures: per epoch on the validation scenes and on the scored split, the held-out losses, the kept
    epoch."""
    val = scoring.epoch_scores(result.folder, *truth.patches(result.val_ids))
    test = scoring.epoch_scores(result.folder, truth.test.inputs, truth.test.truth)
    rule = result.checkpoint_rule
    return {"kept": result.best_epoch, "rule": rule, "held_out": [h.get(rule) for h in result.history],
            "val": val.to_dict("list"), "test": test.to_dict("list"), "seconds": round(result.seconds, 1)}


def figures(run: dict[str, Any]) -> dict[str, float]:
    """The figures a run is summarised by (see the module's docstring)."""
    k = run["test"]["epoch"].index(run["kept"])
    return {"val_psnr": run["val"]["psnr"][k], "test_psnr": run["test"]["psnr"][k],
            "test_de": run["test"]["delta_e2000"][k], "last_test_psnr": run["test"]["psnr"][-1],
            "last_val_psnr": run["val"]["psnr"][-1], "regret": run["test"]["psnr"][k] - max(run["test"]["psnr"]),
            "held_out": run["held_out"][k], "kept": run["kept"]}


def spread(runs: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (ddof 1) over the seeds of each of :func:`figures`."""
    table = [figures(r) for r in runs.values()]
    return {k: {"mean": statistics.fmean(t[k] for t in table),
                "sd": statistics.stdev(t[k] for t in table) if len(table) > 1 else 0.0} for k in table[0]}


def train_variant(cfg, where: Path, rows, seeds, truth: Truth, name: str) -> dict[str, dict[str, dict]]:
    """``{row: {"seed<k>": measure(...)}}`` of one variant, each run trained (or loaded) in ``where``."""
    out: dict[str, dict[str, dict]] = {}
    for row in rows:
        for seed in seeds:
            result = scoring.train_method(cfg, where, scoring.METHODS[row], seed=seed, progress=False,
                                          log=lambda _: None)
            run = out.setdefault(row, {})[f"seed{seed}"] = measure(result, truth)
            f = figures(run)
            print(f"{name:>18s}  {row:9s} seed {seed}  kept {f['kept']}  validation {f['val_psnr']:.2f} dB  "
                  f"test {f['test_psnr']:.2f} dB (last epoch {f['last_test_psnr']:.2f})  {run['seconds']:.0f} s",
                  flush=True)
    return out


def print_table(table: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """Per variant and row: the mean and sd of each figure; the sources' shares where the study ran."""
    summary = {name: {row: spread(runs) for row, runs in rows.items()} for name, rows in table.items()}
    print("\n| variant | row | val PSNR | test PSNR | last-epoch test PSNR | regret | test dE | held-out | "
          "share of test var |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rows in summary.items():
        for row, s in rows.items():
            base = summary.get("profile", {}).get(row, {}).get("test_psnr", {}).get("sd")
            share = f"{(s['test_psnr']['sd'] / base) ** 2:.0%}" if base and name != "profile" else ""
            cell = lambda k, f=".2f": f"{s[k]['mean']:{f}} ± {s[k]['sd']:{f}}"  # noqa: E731
            print(f"| {name} | {row} | {cell('val_psnr')} | {cell('test_psnr')} | {cell('last_test_psnr')} | "
                  f"{cell('regret')} | {cell('test_de')} | {cell('held_out', '.4g')} | {share} |")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a run folder where notebooks 01-03 have run")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--data-dir", default=None, help="the dataset (default: the profile's)")
    parser.add_argument("--out", required=True, help="folder for one fresh run folder per variant")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=sorted(scoring.METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--sources", action="store_true", help="add the variance study's variants")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME KEY=VALUE",
                        help="a variant's name and its settings (dotted config names), e.g. lr-3e-4 train.lr=3e-4")
    parser.add_argument("--base", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings every variant takes, the profile's row included")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile's own variant")
    args = parser.parse_args(argv)

    run_dir, out = Path(args.run_dir), Path(args.out)
    cfg = load_config(args.profile, data_dir=args.data_dir, run_dir=run_dir, environ={})
    base = parse_variant(["base", *args.base])[1] if args.base else {}
    variants = ({} if args.no_profile else {"profile": {}}) | (source_variants() if args.sources else {})
    variants |= dict(parse_variant(words) for words in args.variant)
    try:
        configs = {name: validate(cfg.replace(**(base | changes))) for name, changes in variants.items()}
    except ConfigError as exc:
        raise SystemExit(f"--variant: {exc}") from exc
    truth = Truth(cfg, run_dir)
    table = {name: train_variant(vcfg, linked_run_dir(run_dir, out / name), args.rows, args.seeds, truth, name)
             for name, vcfg in configs.items()}
    summary = print_table(table)
    atomic_write_json(out / "seed_spread.json", {"run_dir": str(run_dir), "data_dir": str(cfg.data_dir),
                                                 "base": base, "variants": variants, "runs": table,
                                                 "summary": summary})
    print(f"-> {out / 'seed_spread.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

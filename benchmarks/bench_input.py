"""Training's input pipeline alone: how many pairs per second one epoch's loader delivers to the steps.

On a GPU the stage-1 step of the 7K network takes milliseconds, so the loader decides the rate: reading the
pre-processed source patch, decoding the target JPEG, cutting both. This times whole epochs of
:func:`isp_support.train.pairs.epoch_loader` over a run folder that notebooks 01-03 filled (the challenge
rehearsal's 512 px targets are the realistic case), with the targets decoded once
(:class:`~isp_support.train.decoded.DecodedTargets`; the first pass builds the array and is not timed) and
decoded every time, for each number of DataLoader workers. The batches are the same either way (tested).

    python benchmarks/bench_input.py --run-dir runs/rehearsal/run-12 --data-dir runs/rehearsal/data-12 --profile full
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from isp_support.config import load_config  # noqa: E402
from isp_support.train import pairs  # noqa: E402


def epoch_rate(src, cfg, decode_once: bool, repeats: int) -> float:
    """Median pairs per second over ``repeats`` epochs of the loader (nothing else)."""
    rates = []
    for epoch in range(1, repeats + 1):
        start = time.perf_counter()
        n = sum(len(x) for x, _ in pairs.epoch_loader(src, epoch, cfg, "cpu", decode_once=decode_once))
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--profile", default="full")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--crop", type=int, default=None, help="TrainConfig.crop (default: the profile's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    for workers in args.workers:
        changes = {"train.workers": workers} | ({"train.crop": args.crop} if args.crop else {})
        cfg = load_config(args.profile, data_dir=args.data_dir, run_dir=args.run_dir, device="cpu", environ={},
                          overrides=changes)
        src = pairs.pair_source(cfg, args.run_dir)
        list(pairs.epoch_loader(src, 0, cfg, "cpu"))  # builds (or finds) the decoded array: not timed
        for decode_once in (False, True):
            rate = epoch_rate(src, cfg, decode_once, args.repeats)
            rows.append({"workers": workers, "decode_once": decode_once, "pairs_per_s": rate,
                         "pairs_per_epoch": len(src.train_ids), "batch": cfg.train.batch_size,
                         "crop": cfg.train.crop})
            print(f"workers {workers}  targets {'decoded once' if decode_once else 'decoded each time':18s} "
                  f"{rate:8.1f} pairs/s  ({rate / cfg.train.batch_size:6.2f} batches of {cfg.train.batch_size}/s; "
                  f"{len(src.train_ids)} pairs an epoch, crop {cfg.train.crop})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

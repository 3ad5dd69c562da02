"""``make smoke``: a check of a new GPU node before the long challenge run, in a few minutes.

1. What torch sees: its version and CUDA build, the device, its memory and compute capability (a driver too old
   for the pinned CUDA 13 build shows here as no CUDA device).
2. The six notebooks under ``full`` on a tiny challenge-layout rehearsal (6 scenes, 16 px RAW patches, no ground
   truth inside), with :data:`~isp_support.demo_data.challenge.SMALL_FULL_OVERRIDES`, on the device: every code
   path of the long run (CUDA autocast, the no-ground-truth evaluation, the submission zips), timed.
3. One full-size stage-1 training step of the ``full`` profile (24 patches of 512 px, the Gram term on the
   profile's backbone), timed by ``bench_training.py``: it needs VGG19's weights (``isp-support prepare-weights
   --profile full``), or ``--stand-in`` for the offline VGG16, said in the output.

    python benchmarks/smoke.py                 # cuda when there is one, else the CPU (slower, still checks)
    python benchmarks/smoke.py --stand-in --device cpu --side 64 --batch 2   # a quick look on a CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--stand-in", action="store_true", help="the full-size step's Gram term on the offline VGG16")
    parser.add_argument("--keep", type=Path, default=None, help="keep the tiny run here (default: a temp folder)")
    parser.add_argument("--side", type=int, default=512, help="patch side of the timed step (the challenge's: 512)")
    parser.add_argument("--batch", type=int, default=24, help="patches in the timed step (the full profile's: 24)")
    args = parser.parse_args()

    import torch

    from isp_support.config import load_config
    from isp_support.config_rules import resolve_device
    from isp_support.demo_data.challenge import SMALL_FULL_OVERRIDES, build_rehearsal
    from isp_support.series import run_series

    device = resolve_device(args.device)
    print(f"[smoke] torch {torch.__version__} (CUDA build {torch.version.cuda}); device {device}")
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(torch.device(device))
        print(f"[smoke] {p.name}: {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
    elif args.device != "cpu":
        print("[smoke] WARNING: no CUDA device: check the driver (the pinned torch is a CUDA 13 build: NVIDIA "
              "driver 580 or later); continuing on the CPU")

    root = Path(args.keep or tempfile.mkdtemp(prefix="isp-smoke-"))
    start = time.perf_counter()
    data, _ = build_rehearsal(root / "data", 6, raw_patch=16, progress=False, log=lambda *_: None)
    cfg = load_config("full", data_dir=data, run_dir=root / "run", device=device, environ={},
                      overrides=SMALL_FULL_OVERRIDES)
    run_series(cfg, REPO / "notebooks", overrides=SMALL_FULL_OVERRIDES, log=lambda *_: None)
    series = json.loads((root / "run" / "series.json").read_text())
    metrics = json.loads((root / "run" / "metrics" / "06_evaluate.json").read_text())
    print(f"[smoke] tiny challenge series on {device}: {time.perf_counter() - start:.0f} s "
          f"({', '.join(f'{k[:2]} {v:.0f} s' for k, v in series['seconds'].items())}); submissions: "
          + ", ".join(f"{s} {v['images']} images" for s, v in metrics["submissions"].items()))

    import bench_training

    if args.stand_in:
        print("[smoke] WARNING: the timed step's Gram term runs on the offline VGG16 stand-in (--stand-in)")
    step_args = ["--device", device, "--profile", "full", "--sizes", str(args.side), "--batch", str(args.batch),
                 "--warmup", "1", "--repeats", "3", "--no-stage2"]
    result = bench_training.main(step_args + (["--no-amp"] if device == "cpu" else [])
                                 + (["--set", "embed.style_backbone=vgg16_offline"] if args.stand_in else []))
    step = next(r for r in result["rows"] if r["step"] == "stage 1")
    print(f"[smoke] one stage-1 step ({args.batch} x {args.side} px, Gram on {result['gram_backbone']}): "
          f"{step['seconds']:.2f} s, {step['patches_per_s']:.1f} patches/s")
    print(f"[smoke] passed in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every stage's throughput, peak memory and the demo series end to end, in one run (``make bench``).

Stages, each on synthetic input of the demo profile's sizes (throughput does not depend on content):

* **pre-processing**: DemosaicNet + FFDNet, batched (``bench_preprocess.py``), output megapixels/s;
* **embedding**: the semantic backbone's patch and image descriptors, patches/s and images/s;
* **matching**: image-level FGW and patch-level OT for a demo-sized problem (``bench_matching.py``);
* **training**: one stage-1 and one stage-2 step (``bench_training.py``), patches/s, and the stage-1
  step's limit at the measured matrix-product rate in the step's arithmetic (its counted FLOP per patch
  at that rate). It is a yardstick, not the hardware's peak: the float32 step has run faster than it;
* **inference**: the colour network over a 1-megapixel image, megapixels/s: the reference path and the
  fast one (``evaluate.fused``), in one pass and in tiles, the fast path at several tile sides, and the
  limit at the measured float32 matrix-product rate (FLOP per pixel at that rate);
* **demo series**: ``isp-support run-series --profile demo`` into a fresh run folder, seconds per
  notebook and in total (``--skip-series`` to leave it out; it takes about 25 minutes on 2 CPU cores),
  and its stage-1 training at the step's limit: the patch-steps its stage-1 runs took (their
  ``result.json``) times the step's FLOP per patch, at the matrix-product rate.

Peak memory of each stage: the process's resident set (sampled), and on CUDA also
``torch.cuda.max_memory_allocated``; for the series, the largest notebook kernel's resident
set. Everything printed also goes to ``--json`` (default ``runs/bench/bench.json``). The summary
puts the previous run's figures beside the new ones, with the speed-up: those of ``--baseline``, by
default the ``--json`` file a previous run left (``--baseline-series RUN_DIR`` takes the baseline's
series from a run made on its own, e.g. from another checkout).

    python benchmarks/bench_all.py                 # the CPU, or the GPU when there is one
    python benchmarks/bench_all.py --device cuda --skip-series
    python benchmarks/bench_all.py --baseline OLD/bench.json --baseline-series OLD_RUN_DIR
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_matching  # noqa: E402
import bench_preprocess  # noqa: E402
import bench_training  # noqa: E402

from isp_support.evaluate import scoring
from isp_support.embed import descriptors
from isp_support.evaluate import tiles  # noqa: E402
from isp_support.artifacts import atomic_write_json  # noqa: E402
from isp_support.config import load_config, project_root  # noqa: E402
from isp_support.config_rules import resolve_device  # noqa: E402
from isp_support.train.models import ColourNet  # noqa: E402
from isp_support.runs import device_description, package_versions  # noqa: E402
from isp_support.embed.backbones import load_backbone  # noqa: E402

MIB = 1024 * 1024


class RssPeak:
    """Peak resident memory during a block, sampled with psutil: of this process (``peak``) and
    of its largest child process, such as a notebook kernel (``child_peak``).

    Sampling, not the kernel's high-water marks: ``bench_matching`` resets this process's mark,
    and a child's inherits its parent's at ``fork``.
    """

    def __init__(self, interval: float = 0.005, children: bool = False):
        self.proc = psutil.Process()
        self.interval = interval
        self.children = children
        self.peak = self.proc.memory_info().rss
        self.child_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample_once(self) -> None:
        self.peak = max(self.peak, self.proc.memory_info().rss)
        for child in self.proc.children(recursive=True) if self.children else ():
            try:
                self.child_peak = max(self.child_peak, child.memory_info().rss)
            except psutil.Error:  # ended between listing and reading
                pass

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample_once()

    def __enter__(self) -> "RssPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample_once()


@contextmanager
def stage(name: str, device: str, record: dict, children: bool = False):
    """Time a stage and record its peak memory (process RSS; on CUDA also allocated GPU memory).

    ``children``: also the largest child process's RSS, sampled every 0.2 s (listing processes
    every 5 ms would itself take CPU from what is measured).
    """
    print(f"\n=== {name} ===", flush=True)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    entry = record.setdefault(name, {})
    start = time.perf_counter()
    with RssPeak(0.2 if children else 0.005, children) as rss:
        yield
    entry["wall_seconds"] = round(time.perf_counter() - start, 2)
    entry["peak_rss_mib"] = round(rss.peak / MIB, 1)
    if rss.child_peak:
        entry["peak_child_rss_mib"] = round(rss.child_peak / MIB, 1)
    if device.startswith("cuda"):
        entry["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / MIB, 1)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_embedding(cfg, device: str, count: int, repeats: int) -> dict:
    """Semantic descriptors of ``count`` patches and images at the profile's sizes, best of ``repeats``."""
    model, info = load_backbone(cfg.embed.semantic_backbone, cfg.embed, device, log=lambda *_: None)
    gen = torch.Generator().manual_seed(0)
    out = {"backbone": cfg.embed.semantic_backbone}
    for what, side in (("patches", cfg.embed.patch_side), ("images", cfg.embed.image_side)):
        x = torch.rand(count, 3, side, side, generator=gen).to(device)
        with torch.inference_mode():
            descriptors.semantic_features(model, x[:2])  # warm-up
            best = float("inf")
            for _ in range(repeats):
                _sync(device)
                start = time.perf_counter()
                descriptors.semantic_features(model, x)
                _sync(device)
                best = min(best, time.perf_counter() - start)
        out[f"{what}_side"] = side
        out[f"{what}_per_s"] = count / best
        print(f"semantic descriptors ({cfg.embed.semantic_backbone}) of {count} {what} at {side} px: "
              f"{count / best:.1f} {what}/s")
    return out


TILE_SWEEP = (64, 96, 128, 160, 192, 256)
"""Tile sides the inference stage times the fast path at (``tiles.AUTO_TILE`` was chosen from this sweep)."""


def matmul_gflops(device: str, n: int = 2048, repeats: int = 3, dtype: torch.dtype = torch.float32) -> float:
    """The device's matrix-product rate in ``dtype`` (GFLOP/s, best of ``repeats`` ``n`` x ``n`` products):
    the yardstick for the colour network's throughput (float32) and a training step's (in its arithmetic)."""
    a, b = torch.rand(n, n, device=device, dtype=dtype), torch.rand(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def bench_inference(device: str, side: int, repeats: int) -> dict:
    """The colour network over a ``side`` x ``side`` image: the reference path in one pass and in ``"auto"``
    tiles, the fast path (``evaluate.fused``) in one pass, in ``"auto"`` tiles and at every tile of
    :data:`TILE_SWEEP`; the limit at the device's float32 matrix-product rate (FLOP per pixel at it)."""
    tile = tiles.network_tile("auto", device)
    out = {"side": side, "auto_tile": tile}
    for head in ("1x1", "lut"):
        for fast in (False, True):
            for mode, t in (("one_pass", None), ("auto_tiles", "auto")):
                spm = scoring.seconds_per_megapixel(ColourNet(head=head).eval(), device, side, repeats, t, fast)
                key = f"{head}_{'fast_' if fast else ''}{mode}_megapixels_per_s"
                out[key] = 1 / spm
                print(f"ColourNet ({head} head, {'fast' if fast else 'reference'} path) on a {side}x{side} image, "
                      f"{'one pass' if t is None else f'{tile} px tiles'}: {1 / spm:.2f} MP/s (median of {repeats})")
    sweep = {t: 1 / scoring.seconds_per_megapixel(ColourNet().eval(), device, side, repeats, t) for t in TILE_SWEEP}
    out["fast_tile_sweep_megapixels_per_s"] = {str(t): v for t, v in sweep.items()}
    print("fast path, 1x1 head, by tile side: " + ", ".join(f"{t} px {v:.2f}" for t, v in sweep.items()) + " MP/s")
    hidden = ColourNet().conv1.out_channels
    flop_per_pixel = 2 * (27 * hidden + hidden * 27 + 9) + hidden  # two 3x3 convolutions, head, ReLU
    gflops = matmul_gflops(device)
    out |= {"flop_per_pixel": flop_per_pixel, "matmul_gflops": gflops,
            "limit_megapixels_per_s": gflops * 1e3 / flop_per_pixel}
    print(f"limit at the matrix-product rate: {flop_per_pixel:,} FLOP per pixel at {gflops:.0f} GFLOP/s (float32 matrix product) = "
          f"{out['limit_megapixels_per_s']:.1f} MP/s; the fast path in auto tiles reaches "
          f"{out['1x1_fast_auto_tiles_megapixels_per_s'] / out['limit_megapixels_per_s']:.0%} of it")
    return out


def training_limit(rows: list[dict], gflops: float, dtype: str = "float32") -> dict:
    """The stage-1 step's limit at the matrix-product rate from ``bench_training`` rows: its FLOP per patch at
    ``gflops`` (the ``dtype`` matrix-product rate, the step's arithmetic), and the measured step's share of it
    (printed)."""
    step = next(r for r in rows if r["step"] == "stage 1")
    gram = next(r for r in rows if r["step"] == "Gram fwd+bwd")
    out = {"stage_1_flop_per_patch": step["flop_per_patch"], "gram_flop_per_patch": gram["flop_per_patch"],
           "matmul_gflops": gflops, "matmul_dtype": dtype,
           "stage_1_limit_patches_per_s": gflops * 1e9 / step["flop_per_patch"]}
    print(f"stage-1 limit at the matrix-product rate: {step['flop_per_patch'] / 1e9:.2f} GFLOP per patch (the Gram loss "
          f"{gram['flop_per_patch'] / step['flop_per_patch']:.0%} of it) at {gflops:.0f} GFLOP/s ({dtype}) = "
          f"{out['stage_1_limit_patches_per_s']:.1f} patches/s; the step reaches "
          f"{step['patches_per_s'] / out['stage_1_limit_patches_per_s']:.0%} of it")
    return out


def training_floor(run_dir: Path, training: dict) -> dict:
    """The stage-1 runs of a finished series (``RUN_DIR/train/*/result.json``): their patch-steps, their
    seconds (validation included) and the seconds those steps take at ``training``'s limit (printed)."""
    runs = [json.loads(p.read_text()) for p in sorted(Path(run_dir).glob("train/*/result.json"))]
    epochs = [h for r in runs if r["settings"]["stage"] == 1 for h in r["history"] if h["epoch"] > 0]
    steps = sum(round(h["patches_per_second"] * h["seconds"]) for h in epochs)
    out = {"stage_1_runs": sum(r["settings"]["stage"] == 1 for r in runs), "stage_1_patch_steps": steps,
           "stage_1_seconds": sum(h["seconds"] for h in epochs),
           "stage_1_floor_seconds": steps * training["stage_1_flop_per_patch"] / (training["matmul_gflops"] * 1e9)}
    print(f"stage-1 training in the series: {out['stage_1_runs']} runs, {steps:,} patch-steps in "
          f"{out['stage_1_seconds']:.0f} s (validation included); at that limit "
          f"{out['stage_1_floor_seconds']:.0f} s")
    return out


def run_demo_series(run_dir: Path) -> dict:
    from isp_support.series import run_series

    if run_dir.exists():
        shutil.rmtree(run_dir)
    cfg = load_config("demo", run_dir=run_dir)
    start = time.perf_counter()
    run_series(cfg, project_root() / "notebooks")
    total = time.perf_counter() - start
    timing = json.loads((run_dir / "series.json").read_text())
    return {"run_dir": str(run_dir), "seconds": timing["seconds"], "total_seconds": round(total, 1)}


def run_stages(cfg, device: str, stages: dict, series_run_dir: Path | None) -> None:
    """Every stage's figures into ``stages``; the demo series into ``series_run_dir`` unless it is ``None``."""
    raw_side = cfg.dataset.raw_patch
    with stage("pre-processing", device, stages):
        pre = bench_preprocess.main(["--device", device, "--patch", str(raw_side), "--count", "32",
                                     "--batch-size", "16", "--repeats", "1"])
        stages["pre-processing"] |= {"megapixels_per_s": pre["rows"][0]["megapixels_per_s"],
                                     "one_at_a_time_megapixels_per_s": pre["rows"][1]["megapixels_per_s"]}
    with stage("embedding", device, stages):
        stages["embedding"] |= bench_embedding(cfg, device, count=32, repeats=2)
    with stage("matching", device, stages):
        rows = bench_matching.main(["--device", device, "--sizes", "80", "--methods", "ot", "--no-isolate"])
        stages["matching"] |= {k: rows[0][k] for k in ("source_patches", "image_seconds", "patch_seconds")
                               if k in rows[0]} | {"images": 80}
    with stage("training", device, stages):
        train = bench_training.main(["--device", device, "--sizes", str(cfg.train.crop or 2 * raw_side),
                                     "--batch", str(cfg.train.batch_size), "--warmup", "1", "--repeats", "3"])
        stages["training"] |= {r["step"].replace(" ", "_").replace(",", ""): r["patches_per_s"]
                               for r in train["rows"] if r["patches_per_s"]} | {"side": train["rows"][0]["side"]}
        dtype = torch.bfloat16 if train["amp"] else torch.float32
        stages["training"] |= {"precision": "bfloat16 autocast" if train["amp"] else "float32"}
        stages["training"] |= training_limit(train["rows"], matmul_gflops(device, dtype=dtype), str(dtype)[6:])
    with stage("inference", device, stages):
        stages["inference"] |= bench_inference(device, cfg.evaluate.timing_side, 3)
    if series_run_dir is not None:
        with stage("demo series", device, stages, children=True):
            stages["demo series"] |= run_demo_series(series_run_dir)
        stages["demo series"] |= training_floor(series_run_dir, stages["training"])


def figures(record: dict) -> list[tuple[str, float, str]]:
    """The summary's figures of ``record``: ``(name, value, unit)``; times in seconds, everything else a rate."""
    s = record["stages"]
    inf = s.get("inference", {})
    rows = [("pre-processing (DemosaicNet + FFDNet)", s.get("pre-processing", {}).get("megapixels_per_s"), "MP/s"),
            ("embedding, patches", s.get("embedding", {}).get("patches_per_s"), "patches/s"),
            ("embedding, images", s.get("embedding", {}).get("images_per_s"), "images/s"),
            ("matching, 80 images (FGW + patch OT)",
             s["matching"]["image_seconds"] + s["matching"]["patch_seconds"] if "matching" in s else None, "s"),
            ("training step, stage 1", s.get("training", {}).get("stage_1"), "patches/s"),
            ("training step, stage 1, float32", s.get("training", {}).get("stage_1_float32"), "patches/s"),
            ("training step, stage 1, bfloat16", s.get("training", {}).get("stage_1_bfloat16"), "patches/s"),
            ("training step, stage 1, no Gram", s.get("training", {}).get("stage_1_no_Gram"), "patches/s"),
            ("training step, stage 1, at the matmul rate", s.get("training", {}).get("stage_1_limit_patches_per_s"),
             "patches/s"),
            ("training step, stage 2", s.get("training", {}).get("stage_2"), "patches/s")]
    for head in ("1x1", "lut"):
        for path, label in (("", "reference"), ("fast_", "fast")):
            rows += [(f"inference, {head} head, {label}, one pass", inf.get(f"{head}_{path}one_pass_megapixels_per_s"),
                      "MP/s"),
                     (f"inference, {head} head, {label}, auto tiles", inf.get(f"{head}_{path}auto_tiles_megapixels_per_s"),
                      "MP/s")]
    rows.append(("inference, at the matmul rate", inf.get("limit_megapixels_per_s"), "MP/s"))
    series = s.get("demo series", {})
    rows += [(f"demo series, {name}", sec, "s") for name, sec in series.get("seconds", {}).items()]
    if series:
        rows.append(("demo series, all notebooks", sum(series["seconds"].values()), "s"))
        rows += [("demo series, stage-1 training", series.get("stage_1_seconds"), "s"),
                 ("demo series, stage-1 training, at the matmul rate", series.get("stage_1_floor_seconds"), "s")]
    return [(name, value, unit) for name, value, unit in rows if value is not None]


def print_summary(record: dict, baseline: dict | None = None) -> None:
    """The summary table of ``record`` (beside ``baseline``'s figures and the speed-up when given), then the
    peak memory of every stage."""
    device = record["device"]
    print("\n=== summary ===")
    print(f"device {device} ({record['device_name']}), {record['threads']} CPU threads, torch {torch.__version__}")
    before = {name: value for name, value, _ in figures(baseline)} if baseline else {}
    if baseline:
        print(f"{'':<52}{'before':>10}{'after':>10}  unit       speed-up")
    for name, value, unit in figures(record):
        if not baseline:
            print(f"{name:<52}{value:>10.2f}  {unit}")
            continue
        old = before.get(name)
        ratio = "" if not old or not value else f"{(old / value if unit == 's' else value / old):.2f}x"
        print(f"{name:<52}{'-' if old is None else f'{old:.2f}':>10}{value:>10.2f}  {unit:<10} {ratio}")
    train = record["stages"].get("training", {})
    if "stage_1_limit_patches_per_s" in train:
        print(f"stage-1 training step: {train['stage_1'] / train['stage_1_limit_patches_per_s']:.0%} of the limit at the "
              f"matrix-product rate ({train['stage_1_flop_per_patch'] / 1e9:.2f} GFLOP per patch at "
              f"{train['matmul_gflops']:.0f} GFLOP/s, {train.get('matmul_dtype', 'float32')})")
    inf = record["stages"].get("inference", {})
    if "limit_megapixels_per_s" in inf:
        print(f"fast inference in auto tiles: {inf['1x1_fast_auto_tiles_megapixels_per_s'] / inf['limit_megapixels_per_s']:.0%}"
              f" of the limit at the matrix-product rate ({inf['flop_per_pixel']:,} FLOP per pixel at {inf['matmul_gflops']:.0f} GFLOP/s)")
    print("peak process RSS (MiB): " + ", ".join(f"{k} {v['peak_rss_mib']:.0f}" for k, v in record["stages"].items()))
    if device.startswith("cuda"):
        print("peak GPU memory allocated (MiB): " + ", ".join(f"{k} {v['peak_gpu_mib']:.0f}"
                                                            for k, v in record["stages"].items()))
    if "demo series" in record["stages"]:
        print(f"largest notebook kernel RSS: {record['stages']['demo series'].get('peak_child_rss_mib', float('nan')):.0f} MiB")


def load_baseline(path: str | None, series_run_dir: str | None) -> dict | None:
    """A previous ``bench.json`` to compare with, its demo series replaced by ``series_run_dir``'s
    ``series.json`` when given (a series run on its own, e.g. from another checkout)."""
    if path is None:
        return None
    baseline = json.loads(Path(path).read_text())
    if series_run_dir is not None:
        timing = json.loads((Path(series_run_dir) / "series.json").read_text())
        baseline["stages"]["demo series"] = {"run_dir": str(series_run_dir), "seconds": timing["seconds"]}
    return baseline


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--skip-series", action="store_true", help="leave out the end-to-end demo series")
    parser.add_argument("--series-run-dir", default="runs/bench-demo", help="fresh run folder for the series")
    parser.add_argument("--json", default="runs/bench/bench.json", metavar="PATH")
    parser.add_argument("--baseline", metavar="BENCH_JSON", help="a previous run's JSON to print beside the new "
                        "figures (default: the --json file a previous run left, if any)")
    parser.add_argument("--baseline-series", metavar="RUN_DIR", help="take the baseline's demo series from this "
                        "finished run's series.json")
    args = parser.parse_args(argv)
    root = project_root()
    if args.baseline is None and (root / args.json).is_file():
        args.baseline = str(root / args.json)
    baseline = load_baseline(args.baseline, args.baseline_series)
    device = resolve_device(args.device)
    cfg = load_config("demo", device=device)
    record: dict = {"device": device, "device_name": device_description(device), "platform": platform.platform(),
                    "threads": torch.get_num_threads(), "versions": package_versions(), "stages": {}}
    run_stages(cfg, device, record["stages"], None if args.skip_series else root / args.series_run_dir)
    if baseline is not None:
        record["baseline"] = {"json": args.baseline, "series_run_dir": args.baseline_series,
                              "figures": {name: value for name, value, _ in figures(baseline)}}
    print_summary(record, baseline)
    out = root / args.json
    atomic_write_json(out, record)
    print(f"written to {out}")
    return record


if __name__ == "__main__":
    main()

"""Every stage's throughput, peak memory and the demo series end to end, in one run (``make bench``).

Stages, each on synthetic input of the demo profile's sizes (throughput does not depend on content):

* **pre-processing**: DemosaicNet + FFDNet, batched (``bench_preprocess.py``), output megapixels/s;
* **embedding**: the semantic backbone's patch and image descriptors, patches/s and images/s;
* **matching**: image-level FGW and patch-level OT for a demo-sized problem (``bench_matching.py``);
* **training**: one stage-1 and one stage-2 step (``bench_training.py``), patches/s;
* **inference**: the colour network over a 1-megapixel image, megapixels/s;
* **demo series**: ``isp-support run-series --profile demo`` into a fresh run folder, seconds per
  notebook and in total (``--skip-series`` to leave it out; it takes about 25 minutes on 2 CPU cores).

Peak memory of each stage: the process's resident set (sampled), and on CUDA also
``torch.cuda.max_memory_allocated``; for the series, the largest notebook kernel's resident
set. Everything printed also goes to ``--json`` (default ``runs/bench/bench.json``).

    python benchmarks/bench_all.py                 # the CPU, or the GPU when there is one
    python benchmarks/bench_all.py --device cuda --skip-series
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


def bench_inference(device: str, side: int, repeats: int) -> dict:
    """The colour network over a ``side`` x ``side`` image, in one pass and in ``"auto"`` tiles."""
    tile = tiles.network_tile("auto", device)
    out = {"side": side, "auto_tile": tile}
    for head in ("1x1", "lut"):
        for mode, t in (("one_pass", None), ("auto_tiles", "auto")):
            spm = scoring.seconds_per_megapixel(ColourNet(head=head).eval(), device, side, repeats, t)
            out[f"{head}_{mode}_megapixels_per_s"] = 1 / spm
            print(f"ColourNet ({head} head) on a {side}x{side} image, "
                  f"{'one pass' if t is None else f'{tile} px tiles'}: {1 / spm:.2f} MP/s (median of {repeats})")
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
    with stage("inference", device, stages):
        stages["inference"] |= bench_inference(device, cfg.evaluate.timing_side, 3)
    if series_run_dir is not None:
        with stage("demo series", device, stages, children=True):
            stages["demo series"] |= run_demo_series(series_run_dir)


def print_summary(record: dict) -> None:
    """The summary table of ``record``: one line per figure, then the peak memory of every stage."""
    device = record["device"]
    print("\n=== summary ===")
    print(f"device {device} ({record['device_name']}), {record['threads']} CPU threads, torch {torch.__version__}")
    s = record["stages"]
    lines = [("pre-processing (DemosaicNet + FFDNet)", f"{s['pre-processing']['megapixels_per_s']:.3f} MP/s"),
             ("embedding, patches", f"{s['embedding']['patches_per_s']:.1f} patches/s"),
             ("embedding, images", f"{s['embedding']['images_per_s']:.1f} images/s"),
             ("matching, 80 images (FGW + patch OT)",
              f"{s['matching']['image_seconds'] + s['matching']['patch_seconds']:.2f} s"),
             ("training step, stage 1", f"{s['training']['stage_1']:.1f} patches/s"),
             ("training step, stage 2", f"{s['training'].get('stage_2', float('nan')):.1f} patches/s"),
             *((f"inference, {head} head, {label}", f"{s['inference'][f'{head}_{mode}_megapixels_per_s']:.2f} MP/s")
               for head in ("1x1", "lut")
               for mode, label in (("one_pass", "one pass"), ("auto_tiles", f"{s['inference']['auto_tile']} px tiles")))]
    if "demo series" in s:
        lines.append(("demo series end to end", f"{s['demo series']['total_seconds']:.0f} s "
                                                 f"({', '.join(f'{k[:2]} {v:.0f} s' for k, v in s['demo series']['seconds'].items())})"))
    for name, value in lines:
        print(f"{name:<40}{value}")
    print("peak process RSS (MiB): " + ", ".join(f"{k} {v['peak_rss_mib']:.0f}" for k, v in s.items()))
    if device.startswith("cuda"):
        print("peak GPU memory allocated (MiB): " + ", ".join(f"{k} {v['peak_gpu_mib']:.0f}" for k, v in s.items()))
    if "demo series" in s:
        print(f"largest notebook kernel RSS: {s['demo series'].get('peak_child_rss_mib', float('nan')):.0f} MiB")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--skip-series", action="store_true", help="leave out the end-to-end demo series")
    parser.add_argument("--series-run-dir", default="runs/bench-demo", help="fresh run folder for the series")
    parser.add_argument("--json", default="runs/bench/bench.json", metavar="PATH")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    cfg = load_config("demo", device=device)
    root = project_root()
    record: dict = {"device": device, "device_name": device_description(device), "platform": platform.platform(),
                    "threads": torch.get_num_threads(), "versions": package_versions(), "stages": {}}
    run_stages(cfg, device, record["stages"], None if args.skip_series else root / args.series_run_dir)
    print_summary(record)
    out = root / args.json
    atomic_write_json(out, record)
    print(f"written to {out}")
    return record


if __name__ == "__main__":
    main()

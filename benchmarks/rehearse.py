"""The challenge run rehearsed: the six notebooks under ``full`` on challenge-layout data without ground truth.

For each scene count: ``build-dataset --layout challenge`` (ground truth kept outside the layout), then every
notebook in its own ``isp-support run-series --only NN`` process, timed, with the peak resident set of its
process tree sampled (the papermill kernel is where the work happens); then ``isp-support predict`` over the
test split, the same way; then the submission zips scored against the ground truth the series never saw
(PSNR, SSIM, CIEDE2000 as notebook 06 computes them). With two or more scene counts, each notebook's time and
peak memory are fitted as ``a + b * patches`` (least squares over the sizes) and extrapolated to the
challenge's 38,253 patches (train raws + jpegs, val, test): a linear model, stated as such.

    python benchmarks/rehearse.py --scenes 12                      # one size, the CPU settings below
    python benchmarks/rehearse.py --scenes 8 16 --set 'evaluate.methods=["floor","ot"]'
    python benchmarks/rehearse.py --scenes 12 --device cuda --no-cpu-settings   # a GPU node, the paper's settings

On a CPU the ``full`` profile's paper settings (10 epochs of whole 512 px patches, twelve rows) take days, so
:data:`CPU_SETTINGS` are applied unless ``--no-cpu-settings``: the offline VGG16 stand-ins, chosen explicitly
(DINOv2 and VGG19 cannot be had offline here), 128 px crops, 2 stage-1 epochs and 1 stage-2 epoch, and the
loader in the main process (the profile's 4 workers are for a GPU node's cores). They are
recorded in each run's ``run.json`` like every other setting. Everything printed also goes to ``OUT/bench.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from isp_support.config_rules import field_values  # noqa: E402

CHALLENGE_PATCHES = 13_420 + 13_421 + 3_795 + 7_617
CPU_SETTINGS = {"embed.semantic_backbone": "vgg16_offline", "embed.style_backbone": "vgg16_offline",
                "train.crop": 128, "train.epochs": 2, "stage2.epochs": 1, "train.workers": 0,
                "evaluate.timing_side": 512, "evaluate.timing_repeats": 1}


def measured(cmd: list[str], period: float = 0.2) -> tuple[float, int, int]:
    """``(seconds, peak RSS of the process tree in bytes, exit status)`` of ``cmd``; the largest single process
    (the kernel) is what is reported, the tree's sum is never above the machine's memory anyway."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
    reader.start()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            peak = max(peak, *(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(period)
    reader.join()
    if proc.returncode:
        print("".join(log[-40:]), file=sys.stderr)
    return time.perf_counter() - start, peak, proc.returncode


def score(zip_path: Path, truth: Path, split: str) -> dict[str, float]:
    """Mean PSNR, SSIM and CIEDE2000 of a submission zip against the rehearsal's ground truth, per image."""
    import io
    import zipfile

    import torch
    from PIL import Image

    from isp_support.metrics import image_metrics

    sums: dict[str, float] = {}
    n = 0
    with zipfile.ZipFile(zip_path) as zf:
        for name in sorted(zf.namelist()):
            if name == "readme.txt":
                continue
            pred = np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("RGB"), dtype=np.float32) / 255
            ref = np.asarray(Image.open(truth / split / "gt" / f"{Path(name).stem}.png").convert("RGB"),
                             dtype=np.float32) / 255
            as_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]  # noqa: E731
            for k, v in image_metrics(as_t(pred), as_t(ref)).items():
                sums[k] = sums.get(k, 0.0) + float(v[0])
            n += 1
    return {k: v / n for k, v in sums.items()} | {"images": n}


def grid_check(run: Path, truth: Path) -> dict[str, int]:
    """Notebook 02's recovered grids against the rehearsal's: right, wrong but flagged low-confidence, wrong."""
    found = json.loads((run / "stitched" / "grids.json").read_text())
    kind = {"train/raws": "train/raw", "train/jpegs": "train/jpeg", "val/raws": "val/raw", "test/raws": "test/raw"}
    counts = {"right": 0, "wrong_flagged": 0, "wrong": 0}
    for rec in json.loads((truth / "rehearsal.json").read_text())["scene_records"]:
        got = found[kind[rec["part"]]][rec["scene"]]
        right = (got["rows"], got["cols"]) == (rec["rows"], rec["cols"])
        counts["right" if right else "wrong_flagged" if got["low_confidence"] else "wrong"] += 1
    return counts


def rehearse(scenes: int, args: argparse.Namespace, overrides: dict[str, object]) -> dict[str, object]:
    cli = [sys.executable, "-m", "isp_support.cli"]
    data, run = args.out / f"data-{scenes}", args.out / f"run-{scenes}"
    built = subprocess.run(cli + ["build-dataset", "--layout", "challenge", "--scenes", str(scenes), "--raw-patch",
                                  str(args.raw_patch), "--out", str(data)], cwd=REPO, capture_output=True, text=True)
    if built.returncode:
        sys.exit(built.stderr)
    truth = data.with_name(f"{data.name}-truth")
    patches = sum(1 for _ in data.rglob("*.npy")) + sum(1 for _ in data.rglob("*.jpg"))
    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    notebooks = {}
    for nb in sorted(p.stem for p in (REPO / "notebooks").glob("0[1-6]_*.ipynb")):
        seconds, peak, status = measured(cli + ["run-series", "--profile", "full", "--data-dir", str(data),
                                                "--run-dir", str(run), "--device", args.device, "--only", nb[:2],
                                                *sets])
        notebooks[nb] = {"seconds": round(seconds, 1), "peak_rss_mb": round(peak / 2**20), "status": status}
        print(f"  {scenes} scenes · {nb:18s} {seconds:8.1f} s  peak RSS {peak / 2**20:7.0f} MB"
              + ("" if status == 0 else f"  FAILED ({status})"), flush=True)
        if status:
            return {"scenes": scenes, "patches": patches, "notebooks": notebooks, "failed": nb}
    grids = grid_check(run, truth)
    print(f"  {scenes} scenes · grids recovered: {grids['right']} right, {grids['wrong_flagged']} wrong but flagged, "
          f"{grids['wrong']} wrong and not flagged")
    metrics = json.loads((run / "metrics" / "06_evaluate.json").read_text())
    method = metrics["export"]["method"]
    checkpoint = run / "train" / f"stage1_{method}" / "best.pt"
    seconds, peak, status = measured(cli + ["predict", str(checkpoint), str(data / "test" / "raws"),
                                            str(args.out / f"predict-{scenes}"), "--device", args.device,
                                            "--overwrite"])
    predict = {"seconds": round(seconds, 1), "peak_rss_mb": round(peak / 2**20), "status": status,
               "images": sum(1 for _ in (data / "test" / "raws").glob("*.npy"))}
    print(f"  {scenes} scenes · predict test split   {seconds:8.1f} s  peak RSS {peak / 2**20:7.0f} MB "
          f"({predict['images']} patches)")
    scores = {split: score(Path(sub["zip"]), truth, split) for split, sub in metrics["submissions"].items()}
    for split, s in scores.items():
        print(f"  {scenes} scenes · submission {split}: {s['images']} images, PSNR {s['psnr']:.2f} dB, "
              f"SSIM {s['ssim']:.3f}, CIEDE2000 {s['delta_e2000']:.2f} (against the ground truth kept outside)")
    return {"scenes": scenes, "patches": patches, "run_dir": str(run), "notebooks": notebooks, "predict": predict,
            "grids": grids,
            "submission_scores": scores, "series_json": json.loads((run / "series.json").read_text())}


def fit(results: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    """Per notebook and figure, ``a + b * patches`` by least squares over the sizes, and its value at the
    challenge's patch count."""
    done = [r for r in results if "failed" not in r]
    if len({r["patches"] for r in done}) < 2:
        return {}
    x = np.array([r["patches"] for r in done], dtype=float)
    out = {}
    for nb in done[0]["notebooks"]:
        for figure in ("seconds", "peak_rss_mb"):
            y = np.array([r["notebooks"][nb][figure] for r in done], dtype=float)
            b, a = np.polyfit(x, y, 1)
            out[f"{nb} {figure}"] = {"a": a, "b_per_patch": b, "at_challenge_scale": a + b * CHALLENGE_PATCHES}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, nargs="+", default=[12])
    parser.add_argument("--raw-patch", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "rehearsal")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--no-cpu-settings", action="store_true", help="the full profile's own settings")
    args = parser.parse_args()
    args.out = args.out.resolve()
    overrides = ({} if args.no_cpu_settings else dict(CPU_SETTINGS)) | field_values(args.overrides)
    print(f"rehearsal: full profile, {args.raw_patch} px RAW patches, device {args.device}, overrides {overrides}")
    results = [rehearse(n, args, overrides) for n in args.scenes]
    growth = fit(results)
    for name, f in growth.items():
        print(f"  fit {name:32s} {f['a']:10.1f} + {f['b_per_patch']:.4f} x patches -> "
              f"{f['at_challenge_scale']:,.0f} at {CHALLENGE_PATCHES:,} patches (linear extrapolation)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps({"overrides": overrides, "raw_patch": args.raw_patch,
                                                      "device": args.device, "results": results, "fit": growth},
                                                     indent=1))
    print(f"written: {args.out / 'bench.json'}")


if __name__ == "__main__":
    main()

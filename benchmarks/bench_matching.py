"""Time and peak memory of the section 4.2 matching versus scale (synthetic descriptors).

Two stages, as :func:`isp_support.pairing.match.match_dataset` runs them:

* **image**: squared-distance matrices (``C``, ``D_X``, ``D_Y``) of ``N`` source and ``N``
  target image descriptors (``--image-dim``, default 2,560) and the entropic fused
  Gromov-Wasserstein plan (PGD loop, log-domain Sinkhorn inside), then the top-10 targets;
* **patch**: one entropic OT problem per source image (its ``--patches`` patches against
  the patches of its top 10 target images, 768-dim descriptors), solved in padded
  batches, then ``w_st`` and the top 8 per source patch.

``--methods knn`` times the plain kNN baseline instead (image: nearest descriptors;
patch: the 8 nearest of all target patches).

Descriptors come from :func:`isp_support.pairing.match.synthetic_match_inputs` (scene classes
with shared "parts" at patch level, a domain shift on the target side), so Sinkhorn
meets the near-duplicate patches that make real problems slow; iteration counts
are printed with the times because time is roughly proportional to them.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the stage minus what was
allocated before it. On CPU, the growth of the process's peak resident set over the
stage (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` before each stage;
elsewhere a psutil sampling thread): ``tracemalloc`` does not see torch's
allocations. Each size runs in a fresh subprocess (``--no-isolate`` to turn that off)
so that memory freed by one size does not hide the next size's peak.

The challenge's scale is about 13,400 source and 13,400 target patches: 383 images of
35 patches per side, the default ladder's last rung.

Figures measured with it (2 CPU cores, float64, the defaults) are in docs/measurements.md ("Matching").

    python benchmarks/bench_matching.py                                   # CPU ladder, about a minute
    python benchmarks/bench_matching.py --sizes 383 --methods ot,unbalanced,knn --json bench.json
    python benchmarks/bench_matching.py --device cuda --sizes 100,383,1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isp_support.config_rules import resolve_device  # noqa: E402
from isp_support.ot.fgw import fused_gw_plan, sq_distances  # noqa: E402
from isp_support.ot.reports import MatchingConvergenceWarning  # noqa: E402
from isp_support.pairing.baselines import knn_graph  # noqa: E402
from isp_support.pairing.match import synthetic_match_inputs  # noqa: E402
from isp_support.pairing.patches import patch_plans, top_k_targets  # noqa: E402

MIB = 1 << 20


def _rss_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory growth over a ``with`` block, in bytes (``.peak``)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0
        self.how = ""

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            self.how = "cuda max_memory_allocated"
            return self
        self.base = _rss_bytes("VmRSS")
        self._thread = None
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")                      # resets VmHWM to the current RSS
            self.how = "VmHWM growth"
        except OSError:
            import psutil

            proc = psutil.Process()
            self.base = proc.memory_info().rss
            self._max = self.base
            self._stop = threading.Event()

            def sample() -> None:
                while not self._stop.is_set():
                    self._max = max(self._max, proc.memory_info().rss)
                    time.sleep(0.002)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
            self.how = "psutil RSS sampling"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = self._max - self.base
        else:
            self.peak = (_rss_bytes("VmHWM") or 0) - (self.base or 0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _image_stage(method: str, xs: torch.Tensor, xt: torch.Tensor, args: argparse.Namespace, device: torch.device,
                 row: dict) -> tuple:
    """The image level, timed and measured into ``row``; returns ``(plan, top)`` (``plan`` is ``None`` for knn)."""
    with PeakMemory(device) as mem:
        _sync(device)
        t0 = time.perf_counter()
        if method == "knn":
            d = sq_distances(xs, xt)
            top = np.argsort(d.cpu().numpy(), axis=1, kind="stable")[:, : args.top_images]
            plan, rep = None, None
        else:
            plan, rep = fused_gw_plan(xs, xt, alpha=args.alpha, epsilon_rel=args.epsilon,
                                      unbalanced_tau=args.tau if method == "unbalanced" else None,
                                      max_iter=args.max_iter, tol=args.tol, overrelax=args.overrelax, warn=False)
            top, _ = top_k_targets(plan, args.top_images)
        _sync(device)
        row["image_seconds"] = time.perf_counter() - t0
    row["image_peak_mib"] = mem.peak / MIB
    row["memory_measure"] = mem.how
    if rep is not None:
        row.update(image_converged=rep.converged, image_outer_iterations=rep.outer_iterations,
                   image_inner_iterations=rep.inner_iterations_total)
    return plan, top


def _patch_stage(method: str, patches: tuple, parents: tuple, plan, top, args: argparse.Namespace,
                 device: torch.device, row: dict) -> None:
    """The patch level, timed and measured into ``row``; ``patches``: ``(ps, pt, sp, tp)`` (features on the
    device and their descriptor sets), ``parents``: each patch's image index, source and target."""
    ps, pt, sp, tp = patches
    src_parent, tgt_parent = parents
    with PeakMemory(device) as mem:
        _sync(device)
        t0 = time.perf_counter()
        if method == "knn":
            g = knn_graph(ps, pt, sp.ids, tp.ids, args.top_patches)
            row["edges"] = g.n_edges
            pm = None
        else:
            pm = patch_plans(ps, src_parent, pt, tgt_parent, plan, top, top_patches=args.top_patches,
                             epsilon_rel=args.epsilon, unbalanced_tau=args.tau if method == "unbalanced" else None,
                             max_iter=args.max_iter, tol=args.tol, max_chunk_bytes=args.chunk_mb * MIB,
                             overrelax=args.overrelax, warn=False)
            row["edges"] = int(pm.indices.size)
        _sync(device)
        row["patch_seconds"] = time.perf_counter() - t0
    row["patch_peak_mib"] = mem.peak / MIB
    if pm is not None:
        s = pm.report.summary()
        row.update(patch_problems=s["problems"], patch_converged=s["converged"], patch_chunks=s["chunks"],
                   patch_iterations_mean=s["iterations_mean"], patch_iterations_max=s["iterations_max"],
                   patch_problem_shape=f"{s['rows_max']}x{s['cols_max']}",
                   patch_cost_seconds=pm.seconds["cost"], patch_solve_seconds=pm.seconds["solve"])


def run_one(n_images: int, method: str, args: argparse.Namespace) -> dict:
    """Both stages for ``n_images`` source and target images; returns one result row."""
    device = torch.device(resolve_device(args.device))
    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    si, ti, sp, tp = synthetic_match_inputs(n_images, n_images, args.patches, image_dim=args.image_dim,
                                            patch_dim=args.patch_dim, seed=args.seed)
    # inputs on the device before timing (a notebook keeps its features there)
    xs, xt = (torch.as_tensor(d.features, device=device, dtype=dtype) for d in (si, ti))
    ps, pt = (torch.as_tensor(d.features, device=device, dtype=dtype) for d in (sp, tp))
    src_parent = np.repeat(np.arange(n_images), args.patches)
    tgt_parent = np.repeat(np.arange(n_images), args.patches)
    row: dict = {"method": method, "images": n_images, "source_patches": len(sp), "target_patches": len(tp),
                 "device": str(device), "dtype": args.dtype}
    # warm-up (allocator, kernels) on a tiny problem
    fused_gw_plan(xs[:8], xt[:8], warn=False)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MatchingConvergenceWarning)
        plan, top = _image_stage(method, xs, xt, args, device, row)
        _patch_stage(method, (ps, pt, sp, tp), (src_parent, tgt_parent), plan, top, args, device, row)
    row["warnings"] = [str(w.message) for w in caught]
    return row


def _child_args(argv: list[str]) -> list[str]:
    """The command line for one size's subprocess: ``argv`` less ``--sizes``, ``--methods``, ``--json`` and
    ``--no-isolate``."""
    strip = {"--sizes", "--methods", "--json"}
    clean: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in strip:
            skip = True
            continue
        if a.split("=", 1)[0] in strip or a == "--no-isolate":
            continue
        clean.append(a)
    return clean


def _print_row(row: dict) -> None:
    conv = (f"{row['patch_converged']}/{row['patch_problems']}" if "patch_converged" in row else "-")
    img_conv = {True: "yes", False: "NO"}.get(row.get("image_converged"), "-")
    print(f"{row['method']:<10} {row['images']:>6} {row['source_patches']:>7} | {row['image_seconds']:>8.2f} "
          f"{row['image_peak_mib']:>7.1f} {row.get('image_outer_iterations', '-'):>5} "
          f"{row.get('image_inner_iterations', '-'):>6} {img_conv:>4} | {row['patch_seconds']:>8.2f} "
          f"{row['patch_peak_mib']:>7.1f} {row.get('patch_problem_shape', '-'):>7} "
          f"{row.get('patch_iterations_mean', float('nan')):>7.0f} {row.get('patch_iterations_max', '-'):>6} "
          f"{conv:>7}", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--sizes", default="50,100,200,383",
                        help="comma-separated images per side (default 50,100,200,383; 383 x 35 = 13,405 patches)")
    parser.add_argument("--patches", type=int, default=35, help="patches per image")
    parser.add_argument("--methods", default="ot", help="comma-separated: ot, unbalanced, knn")
    parser.add_argument("--image-dim", type=int, default=2560)
    parser.add_argument("--patch-dim", type=int, default=768)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--tau", type=float, default=1.0, help="unbalanced_tau (relative)")
    parser.add_argument("--max-iter", type=int, default=2000)
    parser.add_argument("--tol", type=float, default=1e-7)
    parser.add_argument("--overrelax", type=float, default=1.0,
                        help="Sinkhorn over-relaxation (image-level inner solves and patch level)")
    parser.add_argument("--top-images", type=int, default=10)
    parser.add_argument("--top-patches", type=int, default=8)
    parser.add_argument("--chunk-mb", type=int, default=256, help="patch-level batch memory bound (MiB)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-isolate", action="store_true", help="run every size in this process")
    parser.add_argument("--json", metavar="PATH", help="also write the rows to this JSON file")
    parser.add_argument("--_one", nargs=2, metavar=("SIZE", "METHOD"), help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args._one:
        print(json.dumps(run_one(int(args._one[0]), args._one[1], args)))
        return []

    sizes = [int(s) for s in args.sizes.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in ("ot", "unbalanced", "knn"):
            parser.error(f"unknown method {m!r}")
    rows = []
    clean = _child_args(argv if argv is not None else sys.argv[1:])
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads, device {resolve_device(args.device)}, {args.dtype}", flush=True)
    header = (f"{'method':<10} {'images':>6} {'patches':>7} | {'image s':>8} {'MiB':>7} {'outer':>5} {'inner':>6} "
              f"{'conv':>4} | "
              f"{'patch s':>8} {'MiB':>7} {'problem':>7} {'it mean':>7} {'it max':>6} {'conv':>7}")
    print(header)
    print("-" * len(header), flush=True)
    for method in methods:
        for n in sizes:
            if args.no_isolate:
                row = run_one(n, method, args)
            else:
                cmd = [sys.executable, os.path.abspath(__file__), *clean, "--_one", str(n), method]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"{method:<10} {n:>6}  FAILED:\n{out.stderr[-2000:]}", flush=True)
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            _print_row(row)
    if rows:
        print(f"memory: {rows[0]['memory_measure']} over each stage; times include the cost matrices. "
              "outer/inner: FGW PGD iterations / total inner Sinkhorn iterations; it mean/max: patch-level "
              "Sinkhorn iterations per problem; conv: problems that met tol within max_iter")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "_one"},
                                               "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()

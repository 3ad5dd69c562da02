"""Throughput of the section 4.1 RAW pipeline (DemosaicNet + FFDNet): batched versus one image at a time.

Both modes reuse the same loaded models (one :class:`isp_support.pipeline.raw.RawPipeline`);
the baseline only calls it with batches of one. Throughput is in output
megapixels per second (a packed ``H x W`` patch gives ``2H x 2W`` pixels) and
includes the host-to-device copy of the RAW batch and the copy of the result back.

On a CPU expect little or no gain from batching: both networks are convolution
bound and a single 128x128 image already keeps the cores busy, so batching only
saves the per-call overhead (about a millisecond against tens of milliseconds of
arithmetic per image). Batching pays on a GPU, where one small image leaves most
of the device idle. On a shared CPU, pass ``--threads`` no larger than the number
of idle cores: an OpenMP thread sharing a core with another process stalls every
parallel region, which hurts the many small calls of the one-at-a-time mode most
and inflates the apparent speed-up.

    python benchmarks/bench_preprocess.py --device cpu --patch 64 --count 32 --batch-size 16
    python benchmarks/bench_preprocess.py --device cuda --patch 256 --count 128 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from isp_support.config import PreprocessConfig
from isp_support.config_rules import resolve_device
from isp_support.pipeline.raw import RawPipeline


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_mode(pipe: RawPipeline, raws: np.ndarray, batch_size: int, repeats: int) -> float:
    """Best wall time over ``repeats`` passes through all of ``raws`` in batches of ``batch_size``."""
    best = float("inf")
    for _ in range(repeats):
        _sync(pipe.device)
        start = time.perf_counter()
        for i in range(0, len(raws), batch_size):
            pipe(raws[i:i + batch_size]).cpu()
        _sync(pipe.device)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--patch", type=int, default=64, help="side of a packed RAW patch (output is twice it)")
    parser.add_argument("--count", type=int, default=32, help="number of synthetic patches")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="passes per mode; the fastest is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    pipe = RawPipeline(PreprocessConfig(batch_size=args.batch_size), device)
    raws = np.random.default_rng(0).integers(0, 1024, (args.count, args.patch, args.patch, 4), dtype=np.uint16)
    megapixels = args.count * (2 * args.patch) ** 2 / 1e6

    # Warm-up: first calls pay for allocator growth, cuDNN/oneDNN algorithm choice.
    time_mode(pipe, raws[: args.batch_size], args.batch_size, 1)
    time_mode(pipe, raws[:2], 1, 1)

    rows = []
    for mode, batch in (("batched", args.batch_size), ("one at a time", 1)):
        seconds = time_mode(pipe, raws, batch, args.repeats)
        rows.append({"mode": mode, "batch_size": batch, "seconds": seconds, "megapixels_per_s": megapixels / seconds})
    speedup = rows[1]["seconds"] / rows[0]["seconds"]

    name = torch.cuda.get_device_name(pipe.device) if pipe.device.type == "cuda" else platform.processor() or "cpu"
    print(f"device {pipe.device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"{args.count} patches {args.patch}x{args.patch}x4 -> {2 * args.patch}x{2 * args.patch}x3, "
          f"{megapixels:.2f} output MP, demosaicnet + ffdnet (sigma 0.01), best of {args.repeats}")
    print(f"{'mode':<15}{'batch':>7}{'seconds':>10}{'MP/s':>9}")
    for row in rows:
        print(f"{row['mode']:<15}{row['batch_size']:>7}{row['seconds']:>10.3f}{row['megapixels_per_s']:>9.3f}")
    print(f"batched speed-up: {speedup:.2f}x")

    result = {"device": str(pipe.device), "device_name": name, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "patch": args.patch, "count": args.count,
              "output_megapixels": megapixels, "rows": rows, "speedup": speedup}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()

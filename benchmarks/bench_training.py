"""Training throughput of the colour network (section 4.5) and the share of the Gram backbone in a step.

Rows per patch side (``--sizes``, RGB pixels; ``--batch`` patches per step), each
the median over ``--repeats`` timed steps after ``--warmup`` untimed ones:

* **stage 1**: one step as :func:`isp_support.train.loop.train` runs it
  (:func:`isp_support.train.loop.train_step`): ColourNet forward,
  :func:`isp_support.train.losses.stage1_loss` (moments, histograms, Gram, TV),
  the finiteness check (a device sync, as in training), backward, AdamW;
* **stage 1, no Gram**: the same with ``LossWeights(gram=0)``;
* **Gram fwd+bwd**: the Gram loss alone on a prediction that needs a gradient: the
  frozen backbone's forward on the target (no autograd) and on the prediction, and
  the backward through the backbone to the prediction;
* **stage 2** (``--no-stage2`` to skip): the same step with stage 2's objective
  (:class:`isp_support.train.objectives.AdversarialObjective`): a hinge step of the
  U-Net discriminator (Adam) on target vs detached prediction, then the generator
  step with the stage-2 weights plus the adversarial term (discriminator frozen for it).

The Gram share of the stage-1 step is given two ways: ``1 - t(no Gram) / t(stage 1)``
and ``t(Gram fwd+bwd) / t(stage 1)``. Each row also gives its floating-point work per patch,
counted on one more untimed step by ``torch.utils.flop_counter.FlopCounterMode``
(matrix products and convolutions, forward and backward: with the backbone frozen, its
backward computes input gradients only); at a device's measured matrix-product rate it gives a
yardstick for the step's rate (``bench_all.py`` prints it), not a bound: oneDNN's convolutions can
run faster than the product measured. Inputs are ``torch.rand`` (throughput does
not depend on content). The steps compute as training does (:mod:`isp_support.train.precision`:
bfloat16 autocast on CUDA; float32 on the CPU unless the profile sets ``TrainConfig.cpu_amp``), and where
the device has both, a **stage 1, float32** or **stage 1, bfloat16** row times the stage-1 step in the
other arithmetic (``--no-amp``: float32 only, no such row). The Gram backbone, weights and stage-2
settings come from ``--profile`` (``demo``: offline VGG16; ``full``: VGG19, or VGG16 with a loud note when
its weights are missing).

    python benchmarks/bench_training.py --device cpu --sizes 48 96 --batch 8 --repeats 3
    python benchmarks/bench_training.py --device cuda --sizes 48 96 256 --json bench.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from torch.utils.flop_counter import FlopCounterMode

from isp_support.train import losses
from isp_support.train.gram import training_gram_loss
from isp_support.train import loop
from isp_support.config_rules import field_values
from isp_support.config import load_config
from isp_support.config_rules import resolve_device
from isp_support.train.discriminators import UNetDiscriminator
from isp_support.train.models import ColourNet
from isp_support.train.objectives import AdversarialObjective, Objective, loss_weights
from isp_support.train.precision import autocast, uses_bf16
from isp_support.runs import device_description


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def median_step(step: Callable[[], None], device: str, warmup: int, repeats: int) -> float:
    """Median wall time of ``step`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def flop_per_call(step: Callable[[], None]) -> int:
    """Floating-point operations of one call of ``step`` (matrix products and convolutions, forward and
    backward), as ``FlopCounterMode`` counts them."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def report(result: dict) -> None:
    """Print :func:`main`'s result as a table, then the Gram share of the stage-1 step."""
    print(f"device {result['device']} ({result['device_name']}), torch {result['torch']}, "
          f"{result['threads']} CPU threads, {'bf16 autocast' if result['amp'] else 'float32'}, "
          f"profile {result['profile']}, Gram backbone {result['gram_backbone']}, median of {result['repeats']} steps")
    print(f"{'side':>5}{'batch':>7}  {'step':<18}{'ms/step':>10}{'patches/s':>11}{'GFLOP/patch':>13}")
    for r in result["rows"]:
        rate = f"{r['patches_per_s']:>11.1f}" if r["patches_per_s"] is not None else f"{'-':>11}"
        print(f"{r['side']:>5}{r['batch']:>7}  {r['step']:<18}{1e3 * r['seconds']:>10.1f}{rate}"
              f"{r['flop_per_patch'] / 1e9:>13.3f}")
    print("Gram share of the stage-1 step, 1 - t(no Gram) / t(stage 1) and t(Gram fwd+bwd) / t(stage 1):")
    for s in result["gram_share"]:
        print(f"{s['side']:>5} px  {s['by_difference']:>5.0%}  {s['direct']:>5.0%}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--profile", default="demo", help="config profile for the Gram backbone and stage-2 settings")
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 96], help="patch sides in RGB pixels")
    parser.add_argument("--batch", type=int, default=24, help="patches per step")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each measurement")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps; the median is reported")
    parser.add_argument("--no-amp", action="store_true", help="float32 steps only, no bfloat16 row")
    parser.add_argument("--no-stage2", action="store_true", help="skip the stage-2 (discriminator) step")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", "--out", dest="json", metavar="PATH", help="also write the results to this JSON file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a config field of the profile, e.g. embed.style_backbone=vgg16_offline")
    return parser


def _generator_step(model, opt, x, y, objective, amp: bool) -> None:
    if loop.train_step(model, opt, x, y, objective, amp) is None:
        raise RuntimeError("non-finite loss on random inputs")


def _gram_step(gram, y_hat, y, amp: bool) -> None:
    with autocast(y_hat, amp):
        loss = gram(y_hat, y)
    loss.backward()
    y_hat.grad = None


def side_steps(side: int, cfg, gram, device: str, batch: int, amp: bool, stage2: bool,
               other: bool = False) -> dict[str, Callable[[], None]]:
    """The timed steps at patch side ``side`` (see the module docstring), on fresh random inputs and networks
    drawn after ``torch.manual_seed(0)``; with ``other``, also the stage-1 step in the other arithmetic."""
    tc, s2 = cfg.train, cfg.stage2
    w1, w2 = loss_weights(cfg, 1, "ot"), loss_weights(cfg, 2, "ot")
    stage1 = lambda weights: Objective(partial(losses.stage1_loss, weights=weights, gram=gram))  # noqa: E731
    torch.manual_seed(0)
    x, y = torch.rand(2, batch, 3, side, side, device=device)
    y_hat = torch.rand_like(x).requires_grad_(True)
    model = ColourNet(hidden=tc.hidden, head=tc.head).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    no_gram = stage1(dataclasses.replace(w1, gram=0.0))
    steps = {"stage 1": lambda: _generator_step(model, opt, x, y, stage1(w1), amp),
             **({f"stage 1, {'float32' if amp else 'bfloat16'}":
                 lambda: _generator_step(model, opt, x, y, stage1(w1), not amp)} if other else {}),
             "stage 1, no Gram": lambda: _generator_step(model, opt, x, y, no_gram, amp),
             "Gram fwd+bwd": lambda: _gram_step(gram, y_hat, y, amp)}
    if stage2:
        disc = UNetDiscriminator(features=s2.d_features).to(device)
        d_opt = torch.optim.Adam(disc.parameters(), lr=s2.d_lr, betas=(0.9, 0.99))
        adversarial = AdversarialObjective(partial(losses.stage1_loss, weights=w2, gram=gram), disc, d_opt, s2.adv)
        steps["stage 2"] = lambda: _generator_step(model, opt, x, y, adversarial, amp)
    return steps


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    cfg = load_config(args.profile, environ={}, overrides=field_values(args.overrides))
    amp = uses_bf16(device, not args.no_amp, cfg.train.cpu_amp)
    other = not args.no_amp and (amp or uses_bf16(device, True, cpu_amp=True))
    gram = training_gram_loss(cfg, device)
    rows, shares = [], []
    for side in args.sizes:
        steps = side_steps(side, cfg, gram, device, args.batch, amp, not args.no_stage2, other)
        seconds = {name: median_step(step, device, args.warmup, args.repeats) for name, step in steps.items()}
        for name, s in seconds.items():
            rows.append({"side": side, "batch": args.batch, "step": name, "seconds": s,
                         "patches_per_s": args.batch / s if name != "Gram fwd+bwd" else None,
                         "flop_per_patch": flop_per_call(steps[name]) / args.batch})
        shares.append({"side": side, "by_difference": 1 - seconds["stage 1, no Gram"] / seconds["stage 1"],
                       "direct": seconds["Gram fwd+bwd"] / seconds["stage 1"]})

    result = {"device": device, "device_name": device_description(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "amp": amp, "profile": args.profile,
              "gram_backbone": gram.backbone_name, "warmup": args.warmup, "repeats": args.repeats,
              "rows": rows, "gram_share": shares}
    report(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()

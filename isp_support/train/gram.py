"""The Gram loss of the colour network (paper section 4.3, eq. 9) and the choice of its backbone.

* :func:`gram_matrix`: normalised Gram matrices of feature maps.
* :class:`GramLoss` (eq. 9): squared Frobenius distance between Gram matrices of
  a frozen backbone's features; :func:`gram_loss_for` picks the backbone,
  :func:`training_gram_loss` builds the term a run's ``TrainConfig`` asks for.
* :data:`INPUT_SCALE_CORRECTION`: the factor bringing a backbone's loss to VGG19's scale.
* :class:`TargetGramCache`: the target side of the loss kept by the exact bytes of the target batch,
  for targets that recur (the held-out loss scores the same pairs after every epoch);
  :meth:`GramLoss.with_target_cache` gives a loss that uses one.
* :func:`uses_trace_form`: where a layer's ``N = H W`` positions are far fewer than its ``C`` channels
  (the deep VGG layers on training crops), the squared distance of the ``C x C`` Gram matrices is computed
  from ``N x N`` products instead (:meth:`GramLoss.per_layer`): the same value, in float64.

Like the other losses (:mod:`isp_support.train.losses`), the Gram matrices are computed
in at least float32 with autocast disabled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .losses import _at_least_float32, _check_images, _no_autocast

__all__ = ["INPUT_SCALE_CORRECTION", "GramLoss", "TargetGramCache", "gram_loss_for", "gram_matrix",
           "training_gram_loss", "uses_trace_form"]


def gram_matrix(fmap: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` features -> ``(B, C, C)`` Gram matrices ``F F^T / (C H W)`` (at least float32)."""
    b, c, h, w = fmap.shape
    with _no_autocast(fmap):
        flat = _at_least_float32(fmap).reshape(b, c, h * w)
        return flat @ flat.transpose(1, 2) / (c * h * w)


TRACE_FORM_RATIO = 4
"""A layer uses the trace form when its channels are at least this many times its positions."""


def uses_trace_form(channels: int, positions: int) -> bool:
    """Whether a layer of ``channels`` x ``positions`` (``H W``) features takes the trace form of the distance.

    With features ``A = F_pred``, ``B = F_target`` (``C x N``), ``||A A^T - B B^T||_F^2 =
    ||A^T A||_F^2 - 2 ||A^T B||_F^2 + ||B^T B||_F^2``: three ``N x N`` products in place of two ``C x C``
    Gram matrices and their difference. The offline VGG16's relu4_3 and relu5_3 on 48 px crops have
    ``C = 512`` and ``N = 36`` / ``9``: ``C x C`` matrices of 1 MB per patch against ``N x N`` ones of a few
    kB. The three terms nearly cancel when prediction and target are close, so they are computed in
    float64 (cheap at these sizes); for ``C`` below ``TRACE_FORM_RATIO N`` the Gram form is the cheaper one.
    """
    return channels >= TRACE_FORM_RATIO * positions


def _squared_norm(m: torch.Tensor) -> torch.Tensor:
    """``(B, P, Q)`` -> ``(B,)`` squared Frobenius norms."""
    return m.pow(2).sum(dim=(1, 2))


TargetSide = dict[str, tuple[torch.Tensor, ...]]
"""A target batch's side of the loss, per layer: ``(Gram matrices,)``, or in the trace form
(:func:`uses_trace_form`) ``(float64 features (B, C, N), ||F^T F||_F^2 (B,))``."""


class TargetGramCache:
    """The target side of target batches (:data:`TargetSide`), keyed by the batch's exact bytes (and dtype,
    shape, device).

    A hit returns the tensors computed for the identical batch, so a loss using the cache has the
    same value, bit for bit, as one computing them afresh. At most ``max_bytes`` are held: entries are
    kept until the cache is full, and later ones are computed and not kept. The held-out loss visits
    the same batches in the same order every epoch, so the kept share hits every epoch; evicting the
    least recently used would miss every lookup once the set outgrows the cache (the ``full``
    profile's 450 validation patches of 512 px need about 1.1 GB against 1 GiB). The target side
    costs a backbone forward pass per patch, so it is worth keeping for targets that recur, not for
    training batches cut at fresh random windows.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.entries: dict[bytes, tuple[TargetSide, int]] = {}
        """Key -> (target side, its bytes), in the order they were kept."""
        self.bytes = 0
        self.hits = self.misses = 0

    @staticmethod
    def key(y: torch.Tensor) -> bytes:
        digest = hashlib.blake2b(y.detach().contiguous().cpu().numpy().tobytes(), digest_size=20)
        digest.update(repr((y.dtype, tuple(y.shape), str(y.device))).encode())
        return digest.digest()

    def get(self, y: torch.Tensor, compute: Callable[[torch.Tensor], TargetSide]) -> TargetSide:
        """The target side of ``y``: the kept one, or ``compute(y)`` (then kept when it fits)."""
        key = self.key(y)
        if key in self.entries:
            self.hits += 1
            return self.entries[key][0]
        self.misses += 1
        side = compute(y)
        size = sum(t.numel() * t.element_size() for terms in side.values() for t in terms)
        if self.bytes + size <= self.max_bytes:
            self.entries[key] = (side, size)
            self.bytes += size
        return side


class GramLoss(nn.Module):
    """Eq. 9: ``sum_l ||G_l(y_hat) - G_l(y*)||_F^2`` on a frozen backbone, averaged over the batch.

    ``backbone`` is any module with ``features_at(x, layers) -> {name: (B, C, H, W)}``
    taking RGB in [0, 1] (the VGG wrappers of :mod:`isp_support.embed.backbones`); ``layers``
    defaults to its ``style_layers`` (VGG19 relu1_1..relu5_1, offline VGG16
    relu1_2..relu5_3). Gram matrices are normalised by ``C * H * W``
    (:func:`gram_matrix`). ``scale`` multiplies the result (1 for the paper's loss).

    ``reduction`` says how each layer's ``C x C`` difference is reduced:
    ``"sum"`` is eq. 9 as printed (squared Frobenius norm); ``"mean"`` divides it
    by ``C^2`` (the mean squared entry, i.e. ``F.mse_loss`` on the Gram matrices,
    the usual implementation). The paper does not say which its weight of 1.0
    refers to; with ``"sum"`` the term dwarfs the histogram and moment terms on
    natural patches (the deep layers have ``C = 256..512``; measured in
    ``docs/measurements.md``, Training) and alone decides training, so training
    uses ``"mean"`` (:class:`~isp_support.config.TrainConfig`).

    The backbone is frozen here (``requires_grad_(False)``, eval mode, kept in eval
    mode by :meth:`train`) and registered as a submodule, so ``.to(device)`` moves
    it. The target's features are computed without autograd: gradients reach
    ``y_hat`` only, never the backbone or ``y``.
    """

    def __init__(self, backbone: nn.Module, layers: Sequence[str] | None = None, scale: float = 1.0,
                 name: str | None = None, reduction: str = "sum") -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if not hasattr(backbone, "features_at"):
            raise TypeError(f"{type(backbone).__name__} has no features_at(x, layers); a VGG backbone is needed")
        if layers is None:
            layers = getattr(backbone, "style_layers", None)
            if not layers:
                raise ValueError("the backbone has no style_layers; pass layers explicitly")
        known = getattr(backbone, "layer_index", None)
        unknown = [name for name in layers if known is not None and name not in known]
        if not layers or unknown:
            raise ValueError(f"Gram layers {list(layers)}: unknown {unknown or 'none given'}; give one or more of "
                             f"{', '.join(known or ())} (TrainConfig.gram_layers)")
        self.backbone = backbone.eval().requires_grad_(False)
        self.layers = tuple(layers)
        self.scale = float(scale)
        self.reduction = reduction
        self.backbone_name = name or type(backbone).__name__
        """The backbone the loss runs on (:func:`gram_loss_for`: the one that loaded, which training records)."""
        self.weights_info: Any = None
        """The backbone's :class:`~isp_support.embed.weights_files.WeightsInfo` when built by :func:`gram_loss_for`."""
        self.target_cache: TargetGramCache | None = None
        """Where the target side is kept (:meth:`with_target_cache`); ``None``: computed for every call."""

    def with_target_cache(self, max_bytes: int) -> "GramLoss":
        """The same loss on the same backbone, keeping the target side in a :class:`TargetGramCache` of
        ``max_bytes``: equal values, computed once per distinct target batch."""
        loss = GramLoss(self.backbone, self.layers, self.scale, self.backbone_name, self.reduction)
        loss.weights_info = self.weights_info
        loss.target_cache = TargetGramCache(max_bytes)
        return loss

    def train(self, mode: bool = True) -> "GramLoss":
        super().train(mode)
        self.backbone.eval()  # a frozen feature extractor: no dropout / batch-norm updates, ever
        return self

    def target_side(self, y: torch.Tensor) -> TargetSide:
        """What the loss needs of the target batch ``y`` per layer (:data:`TargetSide`)."""
        side: TargetSide = {}
        for name, f in self.backbone.features_at(y, self.layers).items():
            b, c, h, w = f.shape
            if uses_trace_form(c, h * w):
                with _no_autocast(f):
                    flat = f.reshape(b, c, h * w).double()
                    side[name] = (flat, _squared_norm(flat.transpose(1, 2) @ flat))
            else:
                side[name] = (gram_matrix(f),)
        return side

    def per_layer(self, y_hat: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each layer's ``(1/B) sum_b ||G_l(y_hat_b) - G_l(y*_b)||_F^2`` (``/ C^2`` for ``"mean"``; before
        :attr:`scale`), in the trace form where :func:`uses_trace_form` says so."""
        _check_images(y_hat, y)
        with torch.no_grad():
            target = self.target_side(y) if self.target_cache is None else self.target_cache.get(y, self.target_side)
        pred = self.backbone.features_at(y_hat, self.layers)
        out = {}
        for name in self.layers:
            f, side = pred[name], target[name]
            b, c, h, w = f.shape
            if len(side) == 1:
                diff = (gram_matrix(f) - side[0]).pow(2)
                per_sample = diff.sum(dim=(1, 2)) if self.reduction == "sum" else diff.mean(dim=(1, 2))
            else:
                with _no_autocast(f):
                    a = f.reshape(b, c, h * w).double()
                    at = a.transpose(1, 2)
                    squared = _squared_norm(at @ a) - 2 * _squared_norm(at @ side[0]) + side[1]
                    squared = squared / float(c * h * w) ** 2 if self.reduction == "sum" else \
                        squared / (float(c * h * w) ** 2 * c ** 2)
                    per_sample = squared.to(_at_least_float32(f).dtype)
            out[name] = per_sample.mean()
        return out

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.stack(list(self.per_layer(y_hat, y).values())).sum()

    def extra_repr(self) -> str:
        return f"backbone={self.backbone_name}, layers={self.layers}, scale={self.scale}, reduction={self.reduction}"


def gram_loss_for(cfg: Any, device: str | torch.device = "cpu", log: Callable[[str], None] = print,
                  layers: Sequence[str] | None = None, scale: float | None = 1.0, reduction: str = "sum") -> GramLoss:
    """The eq. 9 loss on the configured backbone, saying which one is used and why (one line via ``log``).

    ``cfg`` is a :class:`~isp_support.config.Config` (its ``embed``) or an
    :class:`~isp_support.config.EmbedConfig`. With ``style_backbone='vgg19'`` (the
    paper's, and the ``full`` profile's) VGG19 is loaded. When its weights are not
    available (:class:`~isp_support.embed.weights_files.WeightsUnavailableError`), for a ``Config`` of
    the ``full`` profile (the paper's settings) the error is raised again, saying how to provide them or
    to choose the stand-in explicitly (``embed.style_backbone=vgg16_offline``); otherwise the offline
    ImageNet VGG16 stands in and a ``WARNING`` line says so. :attr:`GramLoss.backbone_name` is the
    backbone that loaded, which training records. With ``style_backbone='vgg16_offline'`` (the ``tiny``
    / ``demo`` profiles) VGG19 is not tried, so those profiles never download anything. Other loading
    errors (e.g. a checksum mismatch) propagate.

    ``layers``, ``scale`` and ``reduction`` are passed to :class:`GramLoss`;
    ``scale=None`` means the chosen backbone's :data:`INPUT_SCALE_CORRECTION`
    (1 for VGG19).

    Note: the offline VGG16 takes Caffe-preprocessed input (0-255 scale, about
    ``255 * 0.226 = 57.6`` x the ImageNet-normalised input VGG19 sees), so its
    features are roughly 57.6x, its Gram matrices 57.6^2 x and this loss about
    57.6^4 ~ 1.1e7 x VGG19's (exactly so for a bias-free ReLU network, which is
    positively homogeneous; its measured size is in ``docs/measurements.md``,
    Training). ``scale=None`` divides that factor out.
    """
    from ..embed.backbones import load_backbone
    from ..embed.weights_files import WeightsUnavailableError

    embed = getattr(cfg, "embed", cfg)
    wanted = embed.style_backbone
    if wanted == "vgg16_offline":
        backbone, info = load_backbone("vgg16_offline", embed, device, log=log)
        log("[gram loss] backbone: vgg16_offline (offline ImageNet VGG16), as configured "
            "(EmbedConfig.style_backbone='vgg16_offline')")
        name = "vgg16_offline"
    elif wanted == "vgg19":
        try:
            backbone, info = load_backbone("vgg19", embed, device, log=log)
            log("[gram loss] backbone: vgg19 (the paper's), as configured")
            name = "vgg19"
        except WeightsUnavailableError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if getattr(cfg, "profile", None) == "full":
                raise _no_silent_stand_in(reason) from exc
            backbone, info = load_backbone("vgg16_offline", embed, device, log=log)
            log(f"WARNING [gram loss] backbone: vgg16_offline INSTEAD OF the paper's vgg19, whose weights are "
                f"unavailable ({reason}); loss values are not comparable with VGG19's, and training records "
                f"vgg16_offline as the Gram backbone that ran")
            name = "vgg16_offline"
    else:
        raise ValueError(f"style_backbone {wanted!r} cannot serve the Gram loss; use 'vgg19' or 'vgg16_offline'")
    if scale is None:
        scale = INPUT_SCALE_CORRECTION[name]
    loss = GramLoss(backbone, layers=layers, scale=scale, name=name, reduction=reduction)
    loss.weights_info = info
    return loss


def _no_silent_stand_in(reason: str) -> Exception:
    from ..embed.weights_files import WeightsUnavailableError

    return WeightsUnavailableError(
        f"the full profile's Gram loss needs the paper's VGG19, whose weights are unavailable ({reason}). "
        f"Provide them: set EmbedConfig.vgg19_weights to a torchvision VGG19 checkpoint, or fetch them "
        f"with `isp-support prepare-weights --profile full`. Or choose the offline ImageNet VGG16 "
        f"stand-in explicitly with embed.style_backbone=vgg16_offline; the run then records it as its "
        f"Gram backbone")


def training_gram_loss(cfg: Any, device: str | torch.device = "cpu", log: Callable[[str], None] = print) -> GramLoss:
    """The Gram term as training builds it: :func:`gram_loss_for` with ``TrainConfig.gram_layers``,
    ``gram_scale`` and ``gram_reduction`` of the :class:`~isp_support.config.Config` ``cfg``."""
    tc = cfg.train
    return gram_loss_for(cfg, device, log=log, layers=tc.gram_layers, scale=tc.gram_scale, reduction=tc.gram_reduction)


INPUT_SCALE_CORRECTION = {"vgg19": 1.0, "vgg16_offline": (255 * 0.226) ** -4}
"""Factor bringing a backbone's Gram loss to the scale of VGG19 on ImageNet-normalised input (see
:func:`gram_loss_for`)."""

"""The arithmetic of training steps: bfloat16 autocast on CUDA, and on request on a CPU that computes it natively.

``TrainConfig.amp`` (on by default) runs the training steps on CUDA under bfloat16 autocast (the colour
network's forward, the losses with the Gram backbone, the discriminator). ``TrainConfig.cpu_amp`` (off by
default) does the same on a CPU whose instructions compute bfloat16 products natively (AVX512-BF16 or AMX,
which oneDNN's kernels use); on any other CPU bfloat16 is emulated and slower than float32, so the steps stay
in float32 there. Validation, the held-out loss that picks the kept epoch, and rendering are always float32.
:func:`precision` names what a run on a device uses; training records it in its settings, so a run trained one
way is never loaded or resumed as the other. :func:`isp_support.runs.configure_backends` keeps float32 float32
on CUDA (no TF32) and cuDNN's algorithm choice fixed; every notebook and training run call it and record it.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast", "cpu_has_native_bf16", "precision", "uses_bf16"]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX tiles)."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


def uses_bf16(device: str | torch.device, amp: bool, cpu_amp: bool = False) -> bool:
    """Whether training steps on ``device`` run under bfloat16 autocast, given ``TrainConfig.amp`` and
    ``TrainConfig.cpu_amp``."""
    kind = torch.device(device).type
    return (amp and kind == "cuda") or (cpu_amp and kind == "cpu" and cpu_has_native_bf16())


def precision(device: str | torch.device, amp: bool, cpu_amp: bool = False) -> str:
    """``"bfloat16 autocast"`` or ``"float32"``: what the training steps on ``device`` compute in."""
    return "bfloat16 autocast" if uses_bf16(device, amp, cpu_amp) else "float32"


def autocast(x: torch.Tensor, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``x``'s device when ``enabled``, else nothing."""
    return torch.autocast(x.device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()

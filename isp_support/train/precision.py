"""The arithmetic of training steps: bfloat16 autocast on CUDA, and on request on a CPU that computes it natively.

``TrainConfig.amp`` (on by default) runs the training steps on CUDA under bfloat16 autocast (the colour
network's forward, the losses with the Gram backbone, the discriminator). ``TrainConfig.cpu_amp`` (off by
default) does the same on a CPU whose instructions compute bfloat16 products natively (AVX512-BF16 or AMX,
which oneDNN's kernels use); on any other CPU bfloat16 is emulated and slower than float32, so the steps stay
in float32 there. Validation, the held-out loss that picks the kept epoch, and rendering are always float32.
:func:`precision` names what a run on a device uses; training records it in its settings, so a run trained one
way is never loaded or resumed as the other. :func:`configure_backends` keeps float32 float32 on CUDA (no TF32)
and cuDNN's algorithm choice fixed; training calls it first and records what it returns.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast", "configure_backends", "cpu_has_native_bf16", "precision", "uses_bf16"]


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


def configure_backends() -> dict[str, bool | str]:
    """Set torch's process-wide backend flags for training, and return them as torch now reports them.

    * TF32 off for CUDA matmuls and cuDNN convolutions, and float32 matmul precision ``"highest"``: on Ampere and
      later GPUs torch would otherwise run float32 convolutions (cuDNN's default) in TF32, with a 10-bit
      mantissa, so the float32 validation and held-out loss that pick the kept epoch would not be float32.
      The bfloat16 autocast of the steps is unaffected.
    * cuDNN ``benchmark`` off and ``deterministic`` on: benchmarking picks convolution algorithms by timing, so
      a resumed run could take other ones than the uninterrupted run did, and some are not deterministic. CUDA
      kernels outside cuDNN that add atomically (the backward of the U-Net discriminator's bilinear upsampling)
      stay nondeterministic; only ``torch.use_deterministic_algorithms(True)`` would change that.

    The flags are process-wide and stay set after training; on a CPU only the matmul precision applies (and
    ``"highest"`` is torch's default). The returned values are read back from torch, so a record of them says
    what held, not what was asked.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    return {"cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic}

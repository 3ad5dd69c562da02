"""bfloat16 autocast of training steps: where it is used, that it is used there, and that it stays close to float32."""

from __future__ import annotations

import pytest
import torch

from isp_support.train import losses, objectives, precision
from isp_support.train import loop
from isp_support.train.discriminators import UNetDiscriminator
from isp_support.train.gram import GramLoss
from isp_support.train.models import ColourNet


@pytest.mark.parametrize("native", [True, False])
def test_bf16_is_used_on_cuda_and_on_request_on_cpus_that_compute_it_natively(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.uses_bf16("cuda:0", True) and precision.uses_bf16(torch.device("cuda"), True)
    assert not precision.uses_bf16("cuda", False) and not precision.uses_bf16("cuda", False, cpu_amp=True)
    assert not precision.uses_bf16("cpu", True)                          # amp alone is CUDA's
    assert precision.uses_bf16("cpu", False, cpu_amp=True) is native     # cpu_amp only where native
    assert precision.precision("cpu", True, True) == ("bfloat16 autocast" if native else "float32")
    assert precision.precision("cpu", True) == "float32"


def test_native_bf16_follows_the_cpu_capability_checks(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not precision.cpu_has_native_bf16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.cpu_has_native_bf16()
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert not precision.cpu_has_native_bf16()


class _TinyBackbone(torch.nn.Module):
    """Two convolutions with a ``features_at`` like the VGG wrappers', recording the dtype each computed in."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.seen: list[torch.dtype] = []

    def features_at(self, x, layers):
        fa = torch.relu(self.a(x))
        fb = torch.relu(self.b(fa))
        self.seen += [fa.dtype, fb.dtype]
        return {"a": fa, "b": fb}


def _step(amp: bool):
    torch.manual_seed(0)
    x, y = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    model, backbone = ColourNet(hidden=8), _TinyBackbone()
    gram = GramLoss(backbone, layers=("a", "b"), reduction="mean")
    weights = losses.LossWeights()
    objective = objectives.Objective(lambda y_hat, t: losses.stage1_loss(y_hat, t, weights, gram=gram))
    terms = loop.train_step(model, torch.optim.AdamW(model.parameters(), lr=1e-3), x, y, objective, amp)
    return terms, model, backbone.seen


def test_a_bf16_step_runs_the_backbone_in_bf16_and_stays_close_to_float32():
    (exact, m32, seen32), (mixed, m16, seen16) = _step(False), _step(True)
    assert set(seen32) == {torch.float32} and set(seen16) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in m16.parameters())       # the weights stay float32
    assert not torch.equal(mixed["total"], exact["total"])                # bf16 arithmetic really happened
    assert float(mixed["total"]) == pytest.approx(float(exact["total"]), rel=2e-2)
    for a, b in zip(m32.parameters(), m16.parameters()):                  # one AdamW step: lr-sized moves
        assert torch.allclose(a, b, atol=2e-3)


def test_the_discriminator_step_follows_the_same_autocast():
    torch.manual_seed(0)
    disc = UNetDiscriminator(features=8)
    seen = []
    disc.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    adversarial = objectives.AdversarialObjective(lambda y_hat, t: losses.stage1_loss(y_hat, t, losses.LossWeights(gram=0.0)),
                                                  disc, torch.optim.Adam(disc.parameters(), lr=1e-4), 1e-3)
    real, fake = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert adversarial.critic_step(real, fake, True)["d_loss"].dtype == torch.float32
    adversarial.critic_step(real, fake, False)
    assert seen == [torch.bfloat16, torch.bfloat16, torch.float32, torch.float32]

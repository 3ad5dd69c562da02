"""bfloat16 autocast of training steps: where it is used, that it is used there, and that it stays close to float32;
what stays float32 under it (spectral norm, the frequency expert's FFT); the backend flags training sets."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize
from torch.overrides import TorchFunctionMode

from isp_support import runs
from isp_support.train import losses, objectives, precision
from isp_support.train import loop
from isp_support.train.discriminators import ExpertCommittee, FrequencyExpert, UNetDiscriminator
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


def test_the_frequency_experts_spectrum_is_float32_whatever_the_input_or_autocast():
    """CUDA has no bfloat16 FFT and its autocast does not cast FFTs to float32 (CPU's does): the view computes in
    float32 itself, so a bfloat16 image gives exactly the spectrum of its values in float32."""
    torch.manual_seed(11)
    expert = FrequencyExpert(patch=16, features=8)
    x = torch.rand(2, 3, 32, 48).bfloat16()
    exact, grid = expert.view(x.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = expert.view(x)
        logits = expert(x)
    for spec, g in (expert.view(x), under_autocast):
        assert spec.dtype == torch.float32 and g == grid == (2, 3)
        torch.testing.assert_close(spec, exact, rtol=1e-6, atol=1e-6)
    assert logits.shape == (2, 1, 2, 3) and torch.isfinite(logits).all()


class _AutocastAtPowerIteration(TorchFunctionMode):
    """Records, for each ``mv`` / ``vdot`` (spectral norm's power iteration and ``sigma``), whether CPU autocast was
    on: CUDA autocast would run both in bfloat16 (CPU's leaves them alone, so on a CPU only the state shows it)."""

    def __init__(self):
        super().__init__()
        self.seen: list[bool] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.mv, torch.vdot):
            self.seen.append(torch.is_autocast_enabled("cpu"))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("make", [lambda: UNetDiscriminator(features=8), lambda: ExpertCommittee(features=8, patch=16)],
                         ids=["unet", "experts"])
def test_discriminators_train_under_bf16_autocast_with_float32_spectral_norm(make):
    torch.manual_seed(12)
    disc = make().train()
    real, fake = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32).requires_grad_()
    spy = _AutocastAtPowerIteration()
    with torch.autocast("cpu", dtype=torch.bfloat16), spy:
        d_loss, _ = disc.d_loss(real, fake.detach())
        g_loss, _ = disc.g_loss(fake)
        logits = disc(real)
    outputs = list(logits.values()) if isinstance(logits, dict) else [logits]
    assert all(t.dtype == torch.bfloat16 and torch.isfinite(t).all() for t in outputs)  # the convolutions autocast
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    (d_loss + g_loss).backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in disc.parameters())
    assert spy.seen and not any(spy.seen)                 # power iteration and sigma with autocast off
    normed = [m for m in disc.modules() if parametrize.is_parametrized(m, "weight")]
    assert normed
    for m in normed:
        sn = m.parametrizations.weight
        assert sn.original.dtype == sn[0]._u.dtype == sn[0]._v.dtype == torch.float32
        assert torch.isfinite(sn[0]._u).all() and torch.isfinite(sn[0]._v).all()


@pytest.fixture
def backend_flags():
    """Torch's process-wide backend flags, restored after the test."""
    b = torch.backends
    saved = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, torch.get_float32_matmul_precision(), b.cudnn.benchmark,
             b.cudnn.deterministic)
    yield
    b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, _, b.cudnn.benchmark, b.cudnn.deterministic = saved
    torch.set_float32_matmul_precision(saved[2])


def test_configure_backends_turns_tf32_and_benchmarking_off_and_reports_what_holds(backend_flags, monkeypatch):
    b = torch.backends
    b.cuda.matmul.allow_tf32 = b.cudnn.allow_tf32 = b.cudnn.benchmark = True
    b.cudnn.deterministic = False
    torch.set_float32_matmul_precision("high")
    applied = runs.configure_backends()
    assert (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, torch.get_float32_matmul_precision(), b.cudnn.benchmark,
            b.cudnn.deterministic) == (False, False, "highest", False, True)
    assert applied == {"cuda_matmul_allow_tf32": False, "cudnn_allow_tf32": False,
                       "float32_matmul_precision": "highest", "cudnn_benchmark": False, "cudnn_deterministic": True}
    overriding = torch.set_float32_matmul_precision                 # a torch that overrides the request ...
    monkeypatch.setattr(torch, "set_float32_matmul_precision", lambda _: overriding("high"))
    held = runs.configure_backends()                              # ... is recorded as it holds
    assert held["float32_matmul_precision"] == "high" and held["cuda_matmul_allow_tf32"] is True

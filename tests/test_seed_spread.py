"""benchmarks/seed_spread.py and decide_claims.py: the variance study's variants and the claims' paired rule."""

import importlib.util
import sys
from pathlib import Path

import pytest

from isp_support.config import profile_config
from isp_support.config_rules import RANDOMNESS, validate

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    sys.path.insert(0, str(BENCH))  # seed_spread imports choose_stage1 as the scripts do
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


spread, claims = _load("seed_spread"), _load("decide_claims")


def test_each_source_variant_frees_exactly_one_source_and_validates():
    variants = spread.source_variants()
    assert set(variants) == {f"only-{p}" for p in RANDOMNESS} | {"fixed"}
    for part in RANDOMNESS:
        held = variants[f"only-{part}"]["train.fixed_randomness"]
        assert part not in held and set(held) | {part} == set(RANDOMNESS)
        validate(profile_config("demo").replace(**variants[f"only-{part}"]))
    assert set(variants["fixed"]["train.fixed_randomness"]) == set(RANDOMNESS)


def run(psnr, de):
    return {"kept": 1, "test": {"epoch": [0, 1], "psnr": [10.0, psnr], "delta_e2000": [30.0, de]}}


@pytest.mark.parametrize("gaps, verdict", [([1.0, 1.1, 0.9, 1.2, 1.0], "yes"), ([-1.0, -1.1, -0.9, -1.2, -1.0],
                                                                                 "no, the opposite"),
                                           ([1.0, -1.0, 2.0, -2.0, 0.5], "undecided")])
def test_a_claim_is_decided_by_its_paired_differences(gaps, verdict):
    base = [15.0, 18.0, 16.0, 17.0, 14.0]  # a seed moves both rows together: only the gaps matter
    a = {f"seed{k}": run(b + g, 20.0) for k, (b, g) in enumerate(zip(base, gaps))}
    b = {f"seed{k}": run(x, 20.0) for k, x in enumerate(base)}
    d = claims.decide(a, b, "psnr")
    assert d["verdict"] == verdict and d["seeds"] == 5 and d["per_seed"] == pytest.approx(gaps)
    assert d["single_run_threshold"] > 2  # the single-run rule sees the seeds' spread of 1.6 dB in both rows
    assert claims.decide(a, b, "delta_e2000")["verdict"] == "undecided"  # equal colour error: no difference

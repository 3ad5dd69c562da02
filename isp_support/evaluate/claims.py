"""The paper's claims, judged by this run's verdict table, and said in plain words.

Each :class:`Claim` names two rows of the ablation (``better`` should beat ``worse``) and where the claim comes
from. :func:`judge` reads the same statistic as notebook 06's verdict table (:func:`.scoring.compare_to` and
:func:`.scoring.verdicts`: the mean per-scene difference to the reference row, its paired bootstrap interval over
test scenes, and twice the run-to-run spread over training seeds), so the paragraph cannot disagree with the
table. A claim is *confirmed* when the table calls the difference real in the claimed direction, *refuted* when
it calls it real the other way, and *undecided* otherwise, with the reason: the interval includes zero, or the
gap is within twice the seed spread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .scoring import HIGHER_IS_BETTER, METHODS

UNITS = {"psnr": " dB", "ssim": "", "delta_e2000": ""}
NAMES = {"psnr": "PSNR", "ssim": "SSIM", "delta_e2000": "CIEDE2000"}


@dataclass(frozen=True)
class Claim:
    """``better`` beats ``worse``: a claim of the paper (or of the series, where ``source`` says so)."""

    better: str
    worse: str
    says: str
    source: str


CLAIMS = (
    Claim("ot", "floor", "a network trained on OT pseudo pairs improves on the fixed pre-processing alone",
          "the paper's premise"),
    Claim("ot", "random", "OT pseudo pairs beat random pairs", "the paper, figure 6"),
    Claim("ot", "knn", "OT matching beats kNN matching", "the paper, figure 7"),
    Claim("ot", "ot_lut", "the 1x1 colour head beats the 3D-LUT head", "the paper's conclusion"),
    Claim("ot_stage2", "ot", "the adversarial second stage improves on stage 1", "the paper, section 5"),
    Claim("ot", "ot_paper", "the series' image-level plan beats the paper's literal one",
          "this series, not the paper"),
)
"""The claims 06 judges, in the order the paragraph says them."""


def judge(versus: pd.DataFrame, judged: pd.DataFrame, reference: str, metric: str = "psnr",
          claims: tuple[Claim, ...] = CLAIMS) -> pd.DataFrame:
    """One row per claim whose two rows are in the table: verdict, signed gap (claimed side positive), interval,
    twice the seed spread and the reason, read from the verdict table against ``reference``."""
    rows = []
    for claim in claims:
        other, sign = (claim.worse, -1) if claim.better == reference else (claim.better, 1)
        if reference not in (claim.better, claim.worse) or other not in versus.index:
            continue
        up = 1 if HIGHER_IS_BETTER[metric] else -1  # a gap is positive when it favours the claim
        gap = sign * up * float(versus.loc[other, f"{metric} diff"])
        lo, hi = sorted(sign * up * float(versus.loc[other, f"{metric} {end}"]) for end in ("lo", "hi"))
        two_sd = float(judged.loc[other, f"{metric} 2x spread"])
        said = judged.loc[other, f"{metric} verdict"]
        verdict = "undecided" if said == "no clear difference" else \
            ("confirmed" if (said == "better") == (sign == 1) else "refuted")
        rows.append({"claim": claim.says, "source": claim.source, "better": claim.better, "worse": claim.worse,
                     "metric": metric, "verdict": verdict, "gap": gap, "lo": lo, "hi": hi, "2x spread": two_sd,
                     "reason": _reason(verdict, lo, hi, gap, two_sd, metric)})
    return pd.DataFrame(rows)


def _reason(verdict: str, lo: float, hi: float, gap: float, two_sd: float, metric: str) -> str:
    unit = UNITS[metric]
    interval = f"95% interval over test scenes [{lo:+.2f}, {hi:+.2f}]{unit}"
    spread = "" if math.isnan(two_sd) else f"twice the seed spread {two_sd:.2f}{unit}"
    if verdict != "undecided":
        return f"{interval} excludes zero" + (f" and the gap exceeds {spread}" if spread else "")
    if lo <= 0 <= hi:
        return f"{interval} includes zero"
    return f"the gap is within {spread}, though the {interval} excludes zero"


def sentences(judgements: pd.DataFrame) -> list[str]:
    """The verdict paragraph: one plain sentence per claim (no markdown), then one that sums them up."""
    out = []
    for _, j in judgements.iterrows():
        label = f"{METHODS[j.better].label} against {METHODS[j.worse].label}"
        gap = f"{j.gap:+.2f}{UNITS[j.metric]} {NAMES[j.metric]}"
        word = {"confirmed": "Confirmed", "refuted": "Refuted", "undecided": "Cannot decide"}[j.verdict]
        out.append(f"{word}: {j.claim} ({j.source}). {label}: {gap}; {j.reason}.")
    if len(judgements):
        counts = judgements["verdict"].value_counts()
        out.append(f"In all, this run confirms {counts.get('confirmed', 0)}, refutes {counts.get('refuted', 0)} "
                   f"and cannot decide {counts.get('undecided', 0)} of the {len(judgements)} claims it can test. "
                   + _why_undecided(judgements))
    return out


def _why_undecided(judgements: pd.DataFrame) -> str:
    undecided = judgements[judgements["verdict"] == "undecided"]
    if undecided.empty:
        return ""
    by_spread = undecided["2x spread"].notna() & ((undecided["lo"] > 0) | (undecided["hi"] < 0))
    if by_spread.all():
        return "Every undecided gap lies within twice the seed spread: more seeds, not more test scenes, would decide."
    if not by_spread.any():
        return "Every undecided gap has an interval over test scenes that includes zero: more test scenes would help."
    return ("Some undecided gaps lie within twice the seed spread (more seeds would help), others have an interval "
            "that includes zero (more test scenes would help).")

"""How wide each colour cloud of the colour-distribution figures is against the target domain's (04, 05).

* :func:`chroma_spread`: per batch, the centre of its pooled (U, V) cloud, its spread (RMS distance from that
  centre), the spread over the target domain's and the distance between the centres;
* :func:`spread_reading`: the same in words chosen by the numbers (wider: overshoots; narrower; about as wide).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from ..metrics import yuv_pixels

SPREAD = "chroma spread"
RATIO = "spread / target's"
OFFSET = "centre offset"


def chroma_spread(sets: Mapping[str, torch.Tensor], target: str = "target domain",
                  max_pixels: int = 1_000_000) -> pd.DataFrame:
    """Per RGB batch of ``sets`` (:func:`isp_support.evaluate.held_out.colour_sets`' order): the centre of its UV
    cloud, its spread (RMS distance of the pixels' (U, V) from that centre), the spread over ``target``'s, and
    the distance of its centre from ``target``'s."""
    rows = {}
    for name, rgb in sets.items():
        uv = yuv_pixels(rgb.float().cpu(), max_pixels)[:, 1:].double()
        centre = uv.mean(dim=0)
        rows[name] = {"U centre": float(centre[0]), "V centre": float(centre[1]),
                      SPREAD: float((uv - centre).pow(2).sum(dim=1).mean().sqrt())}
    table = pd.DataFrame(rows).T
    table[RATIO] = table[SPREAD] / table.loc[target, SPREAD]
    table[OFFSET] = np.hypot(table["U centre"] - table.loc[target, "U centre"],
                             table["V centre"] - table.loc[target, "V centre"])
    return table


def spread_reading(table: pd.DataFrame, target: str = "target domain", source: str = "input",
                   tolerance: float = 0.15, start: str = "stage 1") -> str:
    """Each network's UV cloud against the target domain's, in words chosen by :func:`chroma_spread`'s figures:
    wider (overshoots), narrower or about as wide (within ``tolerance``), and how far off its centre is."""
    goal = table.loc[target, SPREAD]
    nets = table.drop(index=[target, source], errors="ignore")
    parts = [f"`{name}` {row[SPREAD]:.3f} ({row[RATIO]:.2f} times the target's, centre {row[OFFSET]:.3f} from "
             f"the target's)" for name, row in nets.iterrows()]
    if (nets[RATIO] > 1 + tolerance).all():
        verdict = ("every network's UV cloud overshoots the target's: it is wider, the outputs spread over more "
                   "colours than the target domain")
    elif (nets[RATIO] < 1 - tolerance).all():
        verdict = "every network's UV cloud is narrower than the target's: the outputs spread over fewer colours"
    elif ((nets[RATIO] - 1).abs() <= tolerance).all():
        verdict = "every network's UV cloud is about as wide as the target's"
    else:
        verdict = "the networks' UV clouds are not all wider, nor all narrower, than the target's"
    far = nets[OFFSET].max()
    centre = (f" Their centres lie up to {far:.3f} from the target's, {far / goal:.1f} times its spread: the "
              f"outputs' average colour is off the target's as well." if far > 0.5 * goal else
              f" Their centres lie within {far:.3f} of the target's, less than half its spread.")
    inputs = (f" The input's spread is {table.loc[source, SPREAD]:.3f} ({table.loc[source, RATIO]:.2f} times the "
              f"target's)." if source in table.index else "")
    later = [n for n in nets.index if n != start]
    versus = ""
    if start in nets.index and later:
        ratios = {n: nets.loc[n, SPREAD] / nets.loc[start, SPREAD] for n in later}
        versus = f" Against `{start}`'s cloud: " + ", ".join(
            f"`{n}`'s is {r:.2f} times as wide ("
            + ("about as wide" if abs(r - 1) <= 0.05 else "wider" if r > 1 else "narrower") + ")"
            for n, r in ratios.items()) + "."
    return (f"**Reading.** Chroma spread (the RMS distance of a pixel's (U, V) from its cloud's centre): target "
            f"domain {goal:.3f}; " + "; ".join(parts) + f". So {verdict}.{centre}{versus}{inputs}")



"""The sparse pseudo-pair graph: the contract between notebook 03 (which writes it) and training (which samples it).

A :class:`PairGraph` lists, per source patch id, a few ``(target_id, weight)`` edges whose weights sum to 1;
training draws one target per source with probability ``w_st`` (:meth:`PairGraph.sampler`).

Stable ids
----------
Graphs are keyed by ids (``"<scene>_<idx>"``), never list positions, and
:func:`~isp_support.pairing.match.match_dataset` sorts every input by id before solving, so the result
for an id does not depend on the order of the inputs (bit for bit).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import atomic_write_bytes
from ..ot.reports import _jsonable

GRAPH_FORMAT = "isp_support.pair_graph"
GRAPH_VERSION = 1


class PairGraphError(ValueError):
    """A pair graph (in memory or on disk) is inconsistent; the message names the file when there is one."""


def _check_ids(ids: Sequence[str], what: str) -> tuple[str, ...]:
    ids = tuple(ids)
    for i in ids:
        if not isinstance(i, str) or not i or "\x00" in i:
            raise PairGraphError(f"{what}: ids must be non-empty strings without NUL, got {i!r}")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                raise PairGraphError(f"{what}: duplicate id {i!r}")
            seen.add(i)
    return ids


class PairGraph:
    """Sparse pseudo-pair graph keyed by stable ids: per source id, ``(target_id, weight)`` edges summing to 1.

    Stored as CSR arrays: ``indptr`` (``len(source_ids) + 1``), ``indices`` (positions in ``target_ids``)
    and ``weights`` (float64), plus the two id lists and a JSON-able ``meta`` dict. Edges of a source
    are in decreasing weight order.
    """

    def __init__(self, source_ids: Sequence[str], target_ids: Sequence[str], indptr: Any, indices: Any,
                 weights: Any, meta: dict[str, Any] | None = None, *, _where: str = "pair graph"):
        self.source_ids = _check_ids(source_ids, f"{_where}: source_ids")
        self.target_ids = _check_ids(target_ids, f"{_where}: target_ids")
        self.indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(indices, dtype=np.int64)
        self.weights = np.ascontiguousarray(weights, dtype=np.float64)
        self.meta = dict(meta or {})
        self._validate(_where)
        self._row = {s: i for i, s in enumerate(self.source_ids)}

    def _validate(self, where: str) -> None:
        ns, nt = len(self.source_ids), len(self.target_ids)
        p, idx, w = self.indptr, self.indices, self.weights
        if p.ndim != 1 or idx.ndim != 1 or w.ndim != 1:
            raise PairGraphError(f"{where}: CSR arrays must be 1-D")
        if p.shape[0] != ns + 1 or p[0] != 0 or p[-1] != idx.shape[0] or idx.shape != w.shape:
            raise PairGraphError(f"{where}: inconsistent CSR shapes (indptr {p.shape[0]} for {ns} sources, "
                                 f"{idx.shape[0]} indices, {w.shape[0]} weights)")
        if np.any(np.diff(p) <= 0):
            raise PairGraphError(f"{where}: every source needs at least one edge (indptr must increase)")
        if idx.size and (idx.min() < 0 or idx.max() >= nt):
            raise PairGraphError(f"{where}: target index out of range [0, {nt})")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise PairGraphError(f"{where}: weights must be finite and non-negative")
        sums = np.add.reduceat(w, p[:-1]) if ns else np.zeros(0)
        if ns and np.max(np.abs(sums - 1.0)) > 1e-9:
            worst = int(np.argmax(np.abs(sums - 1.0)))
            raise PairGraphError(f"{where}: weights of source {self.source_ids[worst]!r} sum to {sums[worst]!r}, not 1")
        rows = np.repeat(np.arange(ns), np.diff(p))
        if idx.size and np.unique(rows * np.int64(nt) + idx).size != idx.size:
            raise PairGraphError(f"{where}: a source lists the same target twice")

    # -- access
    def __len__(self) -> int:
        return len(self.source_ids)

    @property
    def n_edges(self) -> int:
        return int(self.indices.shape[0])

    def row(self, source_id: str) -> list[tuple[str, float]]:
        """``[(target_id, weight), ...]`` of one source, by decreasing weight."""
        try:
            r = self._row[source_id]
        except KeyError:
            raise KeyError(f"source id {source_id!r} is not in the pair graph") from None
        lo, hi = self.indptr[r], self.indptr[r + 1]
        return [(self.target_ids[t], float(w)) for t, w in zip(self.indices[lo:hi], self.weights[lo:hi])]

    def to_edges(self) -> list[tuple[str, str, float]]:
        """All edges as ``(source_id, target_id, weight)``, sources in graph order."""
        rows = np.repeat(np.arange(len(self.source_ids)), np.diff(self.indptr))
        return [(self.source_ids[r], self.target_ids[t], float(w))
                for r, t, w in zip(rows.tolist(), self.indices.tolist(), self.weights)]

    def to_dict(self) -> dict[str, list[tuple[str, float]]]:
        """``{source_id: [(target_id, weight), ...]}``."""
        return {s: self.row(s) for s in self.source_ids}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PairGraph):
            return NotImplemented
        return (self.source_ids == other.source_ids and self.target_ids == other.target_ids
                and np.array_equal(self.indptr, other.indptr) and np.array_equal(self.indices, other.indices)
                and np.array_equal(self.weights, other.weights) and self.meta == other.meta)

    def __repr__(self) -> str:
        return (f"PairGraph({len(self.source_ids)} sources, {len(self.target_ids)} targets, {self.n_edges} edges, "
                f"meta={self.meta})")

    # -- construction
    @classmethod
    def from_rows(cls, source_ids: Sequence[str], target_ids: Sequence[str], rows: Sequence[Sequence[int]],
                  weights: Sequence[Sequence[float]], meta: dict[str, Any] | None = None,
                  normalise: bool = True) -> "PairGraph":
        """Build from per-source lists of target positions and weights (sorted and normalised here)."""
        indptr = [0]
        idx_all: list[np.ndarray] = []
        w_all: list[np.ndarray] = []
        for r, w in zip(rows, weights):
            r = np.asarray(r, dtype=np.int64)
            w = np.asarray(w, dtype=np.float64)
            o = np.lexsort((r, -w))
            r, w = r[o], w[o]
            if normalise:
                w = w / w.sum()
            idx_all.append(r)
            w_all.append(w)
            indptr.append(indptr[-1] + len(r))
        return cls(source_ids, target_ids, np.asarray(indptr), np.concatenate(idx_all) if idx_all else [],
                   np.concatenate(w_all) if w_all else [], meta)

    # -- persistence
    def save(self, path: str | Path) -> Path:
        """Write one ``.npz`` atomically (temporary file, fsync, rename); zip CRCs guard the bytes."""
        buf = io.BytesIO()
        header = {"format": GRAPH_FORMAT, "version": GRAPH_VERSION, "meta": self.meta}
        np.savez(buf, header=np.array(json.dumps(_jsonable(header), sort_keys=True)),
                 source_ids=np.array(self.source_ids, dtype=str), target_ids=np.array(self.target_ids, dtype=str),
                 indptr=self.indptr, indices=self.indices, weights=self.weights)
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "PairGraph":
        """Read and validate a graph written by :meth:`save`; :class:`PairGraphError` names the file if corrupt."""
        path = Path(path)
        try:
            data = path.read_bytes()
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("header", "source_ids", "target_ids", "indptr", "indices", "weights")}
            header = json.loads(str(arrays["header"]))
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise PairGraphError(f"{path}: corrupt or not a pair graph file ({type(exc).__name__}: {exc})") from exc
        if not isinstance(header, dict) or header.get("format") != GRAPH_FORMAT:
            fmt = header.get("format") if isinstance(header, dict) else header
            raise PairGraphError(f"{path}: not a pair graph file (format {fmt!r})")
        if header.get("version") != GRAPH_VERSION:
            raise PairGraphError(f"{path}: unsupported pair graph version {header.get('version')!r}")
        for name in ("indptr", "indices"):
            if arrays[name].dtype.kind not in "iu":
                raise PairGraphError(f"{path}: {name} must be integers, got {arrays[name].dtype}")
        return cls(arrays["source_ids"].tolist(), arrays["target_ids"].tolist(), arrays["indptr"], arrays["indices"],
                   arrays["weights"], header.get("meta") or {}, _where=str(path))

    # -- sampling
    def sampler(self, seed: int | None = 0) -> "GraphSampler":
        return GraphSampler(self, seed)


class GraphSampler:
    """Draws one target per source with probability equal to its edge weight (inverse CDF, vectorised)."""

    def __init__(self, graph: PairGraph, seed: int | None = 0):
        self.graph = graph
        self.rng = np.random.default_rng(seed)
        counts = np.diff(graph.indptr)
        rows = np.repeat(np.arange(len(graph.source_ids)), counts)
        total = np.concatenate([[0.0], np.cumsum(graph.weights)])
        row_sum = total[graph.indptr[1:]] - total[graph.indptr[:-1]]
        within = (total[1:] - np.repeat(total[graph.indptr[:-1]], counts)) / np.repeat(row_sum, counts)
        # Key of an edge of row r: r + (cumulative weight within the row), in [r, r + 1], the row's last
        # key exactly r + 1; a draw for row r is r + u with u uniform in [0, 1): its edge is the first key
        # above it (zero-weight edges repeat the previous key and are never chosen).
        keys = rows + np.clip(within, 0.0, 1.0)
        keys[graph.indptr[1:] - 1] = np.arange(1, len(graph.source_ids) + 1)
        self._keys = keys

    def sample_indices(self, rows: np.ndarray) -> np.ndarray:
        """Target positions for source rows ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        u = self.rng.random(rows.shape[0])
        pos = np.searchsorted(self._keys, rows + u, side="right")
        return np.clip(pos, self.graph.indptr[rows], self.graph.indptr[rows + 1] - 1)

    def sample(self, source_ids: Sequence[str]) -> list[str]:
        """One target id per source id, drawn with probability ``w_st``; reproducible for a seed."""
        try:
            rows = np.fromiter((self.graph._row[s] for s in source_ids), dtype=np.int64, count=len(source_ids))
        except KeyError as exc:
            raise KeyError(f"source id {exc.args[0]!r} is not in the pair graph") from None
        tids = self.graph.target_ids
        return [tids[t] for t in self.graph.indices[self.sample_indices(rows)].tolist()]



# --- statistics ----------------------------------------------------------------------------------------------------

def graph_stats(graph: PairGraph) -> dict[str, float]:
    """Diversity of a pair graph (many-to-one collapse shows as few targets, high in-degree and Gini).

    * ``distinct_targets`` / ``fraction_targets_used``: targets with at least one edge;
    * ``distinct_top1_targets``: targets that are some source's highest-weight edge;
    * ``max_in_degree``: most edges into one target; ``max_load``: the largest expected number of draws
      of one target when every source draws once (sum of its incoming weights);
    * ``gini_load`` (0: every target equally used, -> 1: one target takes all) and
      ``load_entropy_norm`` (entropy of the load distribution / log(#targets), 1 = uniform);
    * ``mean_weight_entropy``: mean over sources of the entropy (nats) of its edge weights.
    """
    ns, nt = len(graph.source_ids), len(graph.target_ids)
    deg = np.bincount(graph.indices, minlength=nt)
    load = np.bincount(graph.indices, weights=graph.weights, minlength=nt)
    top1 = graph.indices[graph.indptr[:-1]] if ns else np.zeros(0, np.int64)
    srt = np.sort(load)
    total = load.sum()
    gini = float((2 * np.sum(np.arange(1, nt + 1) * srt) / (nt * total)) - (nt + 1) / nt) if total > 0 else 0.0
    p = load[load > 0] / total if total > 0 else np.zeros(0)
    ent = float(-(p * np.log(p)).sum()) if p.size else 0.0
    w = graph.weights
    wl = np.where(w > 0, w * np.log(np.where(w > 0, w, 1.0)), 0.0)
    row_ent = -np.add.reduceat(wl, graph.indptr[:-1]) if ns else np.zeros(0)
    return {
        "sources": ns,
        "targets": nt,
        "edges": graph.n_edges,
        "mean_edges_per_source": graph.n_edges / ns if ns else 0.0,
        "distinct_targets": int((deg > 0).sum()),
        "fraction_targets_used": float((deg > 0).mean()) if nt else 0.0,
        "distinct_top1_targets": int(np.unique(top1).size),
        "max_in_degree": int(deg.max()) if nt else 0,
        "max_load": float(load.max()) if nt else 0.0,
        "gini_load": gini,
        "load_entropy_norm": ent / math.log(nt) if nt > 1 else 1.0,
        "mean_weight_entropy": float(row_ent.mean()) if ns else 0.0,
    }

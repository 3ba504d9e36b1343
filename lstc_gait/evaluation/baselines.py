"""Gait-energy-image + nearest-neighbour baseline, and same-view rank-1 from the protocol's tables.

GEI (Han and Bhanu, "Individual Recognition Using Gait Energy Image", TPAMI 2006): the mean of a
sequence's silhouettes; here the central ``width`` columns of the cached 64x64 frames, compared
with the Euclidean distance under the same protocol as the models. It needs no training, so it is
the floor a learned model must clear on the same test subjects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def gait_energy_images(cache: Any, rows: np.ndarray | None = None, width: int = 44) -> np.ndarray:
    """GEIs of cached sequences.

    Args:
        cache: a :class:`~lstc_gait.data.cache.SequenceCache` (64x64 uint8 frames).
        rows: cache rows (int) to use, in this order; None = every row.
        width: central columns kept (44 of 64, as the models see them).

    Returns:
        float32 (len(rows), 64 * width) in [0, 1].
    """
    rows = np.arange(len(cache)) if rows is None else np.asarray(rows, dtype=np.int64)
    left = (64 - width) // 2
    out = np.empty((len(rows), 64 * width), dtype=np.float32)
    for i, r in enumerate(rows):
        out[i] = cache.frames(int(r))[:, :, left:left + width].mean(axis=0, dtype=np.float32).ravel() / 255.0
    return out


def same_view_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """Same-view rank-1 (%) per probe set: the diagonal of the protocol's ``crossview_<set>`` tables.

    Args:
        tables: the tables of :func:`~lstc_gait.evaluation.protocols.protocol_metrics` (casia_b).

    Returns:
        A frame with one row per probe set and columns ``views..., mean``; None when the tables have
        no cross-view matrices (other protocols).
    """
    rows = {}
    for name, t in tables.items():
        if not name.startswith("crossview_"):
            continue
        views = [v for v in t.index if v in t.columns]
        diag = {v: float(t.loc[v, v]) for v in views if pd.notna(t.loc[v, v])}
        if diag:
            rows[name[len("crossview_"):]] = {**diag, "mean": float(np.mean(list(diag.values())))}
    return pd.DataFrame(rows).T if rows else None


def gei_baseline(cache: Any, rows: np.ndarray, protocol: str = "casia_b", width: int = 44,
                 metric: str = "euclidean") -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """GEI + nearest neighbour under ``protocol`` on the given test rows.

    Args:
        cache: the sequence cache.
        rows: cache rows of the test sequences.
        protocol: an evaluation protocol name (``casia_b``, ``ou_mvlp``, ``retrieval``).
        width: central columns.
        metric: distance.

    Returns:
        ``(tables, metrics)`` as :func:`~lstc_gait.evaluation.protocols.protocol_metrics` gives them,
        plus ``<set>/same_view_rank1`` metrics for CASIA-B.
    """
    from .protocols import protocol_metrics

    index = cache.index
    rows = np.asarray(rows, dtype=np.int64)
    emb = gait_energy_images(cache, rows, width)
    sub = index.iloc[rows]
    tables, metrics = protocol_metrics(protocol, emb, sub["subject"].astype(str).to_numpy(),
                                       sub["type"].astype(str).to_numpy(), sub["view"].astype(str).to_numpy(),
                                       metric)
    same = same_view_table(tables)
    if same is not None:
        metrics.update({f"{k}/same_view_rank1": float(v) for k, v in same["mean"].items()})
    return tables, metrics


def rank1_ratio_row(model: dict[str, float], baseline: dict[str, float], sets: tuple[str, ...] = ("NM", "BG", "CL")
                    ) -> pd.DataFrame:
    """Model vs baseline cross-view rank-1 per probe set, with their mean and the ratio.

    Args:
        model: the model's metrics (``<set>/rank1``).
        baseline: the baseline's metrics.
        sets: probe sets to show (those present in both).

    Returns:
        A frame with rows ``model``, ``GEI + NN``, ``ratio`` and columns the sets + ``mean``.
    """
    present = [s for s in sets if f"{s}/rank1" in model and f"{s}/rank1" in baseline]
    m = {s: model[f"{s}/rank1"] for s in present}
    b = {s: baseline[f"{s}/rank1"] for s in present}
    if present:
        m["mean"] = float(np.mean(list(m.values())))
        b["mean"] = float(np.mean(list(b.values())))
    ratio = {k: (m[k] / b[k] if b[k] > 0 else float("inf")) for k in m}
    return pd.DataFrame([m, b, ratio], index=["model", "GEI + NN", "ratio"])


def print_gei_comparison(cache: Any, rows: np.ndarray, protocol: str, width: int, metric: str,
                         model_metrics: dict[str, float], tracker: Any = None, step: int | None = None
                         ) -> dict[str, float]:
    """Compute GEI + NN on the same test rows, print it beside the model's rank-1, log ``baseline/gei/...``.

    Args:
        cache: the sequence cache.
        rows: cache rows of the test sequences (the model's test set).
        protocol: evaluation protocol.
        width: central columns.
        metric: distance.
        model_metrics: the model's final test metrics (``<set>/rank1``).
        tracker: optional tracker with ``log_metrics``.
        step: the step to log at.

    Returns:
        The baseline's metrics.
    """
    import time

    t0 = time.perf_counter()
    _, base = gei_baseline(cache, rows, protocol, width, metric)
    table = rank1_ratio_row(model_metrics, base)
    if len(table.columns):
        shown = table.copy()
        print(f"\ncross-view rank-1 (%) vs GEI + nearest neighbour on the same {protocol} test sequences "
              f"({time.perf_counter() - t0:.1f} s):\n{shown.round(2).to_string()}\n", flush=True)
    if tracker is not None:
        tracker.log_metrics({f"baseline/gei/{k}": float(v) for k, v in base.items()
                             if k.endswith("rank1")}, step=step)
    return base

"""Verification metrics from distances: ROC, EER, TAR at a given FAR, a threshold at a target FAR.

A pair is *accepted* when its distance is ``<= threshold``. Over genuine pairs (same identity) and
impostor pairs (different identities):

* FAR(t) = share of impostor pairs accepted, TAR(t) = share of genuine pairs accepted;
* the ROC is (FAR, TAR) at every distinct distance as threshold, from (0, 0) to (1, 1);
* TAR@FAR=x is the highest TAR among thresholds whose FAR <= x (the strict, non-interpolated
  convention: the operating point must really be reachable);
* EER is where FAR = FRR = 1 - TAR, linearly interpolated between the two ROC points around it.

Pairs come from a distance matrix and a same-identity mask of the same shape (for example probes x
gallery of any protocol), optionally restricted by a ``valid`` mask (to drop self-pairs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_FARS = (1e-2, 1e-3)


@dataclass
class ROC:
    """An ROC curve.

    Attributes:
        far: float64 (K,) false-accept rates, non-decreasing, first 0 and last 1.
        tar: float64 (K,) true-accept rates at the same thresholds.
        thresholds: float64 (K,) accept when distance <= threshold (first is -inf).
        genuine: number of genuine pairs.
        impostor: number of impostor pairs.
    """

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    genuine: int
    impostor: int


def split_pairs(distances, same, valid=None) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor distances of a (Nq, Ng) distance matrix.

    Args:
        distances: float (Nq, Ng) distances (numpy or torch).
        same: bool (Nq, Ng), True where query and gallery share the identity.
        valid: optional bool (Nq, Ng); False pairs are ignored (self-pairs, other views).

    Returns:
        (genuine float64 (G,), impostor float64 (I,)).
    """
    d = np.asarray(distances.detach().cpu() if hasattr(distances, "detach") else distances, dtype=np.float64)
    s = np.asarray(same, dtype=bool)
    if d.shape != s.shape:
        raise ValueError(f"distances {d.shape} and same-identity mask {s.shape} differ in shape")
    v = np.ones_like(s) if valid is None else np.asarray(valid, dtype=bool)
    if v.shape != d.shape:
        raise ValueError(f"valid mask {v.shape} does not match distances {d.shape}")
    if not np.isfinite(d[v]).all():
        raise ValueError("distances contain NaN or inf")
    return d[v & s], d[v & ~s]


def roc_curve(genuine: Sequence[float], impostor: Sequence[float]) -> ROC:
    """ROC of genuine vs impostor distances (accept when distance <= threshold).

    Args:
        genuine: distances of same-identity pairs (G,).
        impostor: distances of different-identity pairs (I,).

    Returns:
        :class:`ROC` with one point per distinct distance plus the (0, 0) start.

    Raises:
        ValueError: no genuine or no impostor pair.
    """
    g = np.sort(np.asarray(genuine, dtype=np.float64).ravel())
    i = np.sort(np.asarray(impostor, dtype=np.float64).ravel())
    if g.size == 0 or i.size == 0:
        raise ValueError(f"an ROC needs genuine and impostor pairs (got {g.size} and {i.size})")
    thr = np.unique(np.concatenate([g, i]))
    tar = np.searchsorted(g, thr, side="right") / g.size
    far = np.searchsorted(i, thr, side="right") / i.size
    return ROC(np.concatenate([[0.0], far]), np.concatenate([[0.0], tar]), np.concatenate([[-np.inf], thr]),
               int(g.size), int(i.size))


def tar_at_far(roc: ROC, far: float) -> float:
    """Highest TAR among the ROC's thresholds whose FAR is <= ``far``."""
    ok = roc.far <= far + 1e-12
    return float(roc.tar[ok].max()) if ok.any() else 0.0


def equal_error_rate(roc: ROC) -> float:
    """EER: the error rate where FAR equals FRR (1 - TAR), interpolated linearly along the ROC."""
    frr = 1.0 - roc.tar
    diff = roc.far - frr  # increases from -1 to 1 along the curve
    k = int(np.searchsorted(diff, 0.0, side="left"))
    if k == 0:
        return float(roc.far[0])
    if diff[k] == 0.0:
        return float(roc.far[k])
    d0, d1 = diff[k - 1], diff[k]
    w = -d0 / (d1 - d0)
    return float(roc.far[k - 1] + w * (roc.far[k] - roc.far[k - 1]))


def threshold_at_far(genuine: Sequence[float], impostor: Sequence[float], far: float) -> dict:
    """An accept threshold whose FAR on these impostor pairs is at most ``far``.

    With impostor distances sorted ``i_1 <= ... <= i_n`` and ``k = floor(far * n)`` of them allowed,
    the threshold is halfway between ``i_k`` and ``i_{k+1}`` (``i_0``: the largest genuine distance
    below ``i_1``, else 0): the middle of the gap, not its edge, so a new pair near ``i_{k+1}`` is not
    accepted by a hair.

    Args:
        genuine: same-identity distances (may be empty: the TAR is then reported as None).
        impostor: different-identity distances (at least one).
        far: target false-accept rate in (0, 1).

    Returns:
        ``{"value", "far", "far_achieved", "tar", "genuine_pairs", "impostor_pairs", "eer"}``.
    """
    if not 0.0 < far < 1.0:
        raise ValueError(f"far must be in (0, 1), got {far}")
    g = np.sort(np.asarray(genuine, dtype=np.float64).ravel())
    i = np.sort(np.asarray(impostor, dtype=np.float64).ravel())
    if i.size == 0:
        raise ValueError("a threshold at a target FAR needs impostor pairs (two or more subjects)")
    k = int(np.floor(far * i.size + 1e-9))
    if k >= i.size:
        value = float(i[-1])
    else:
        if k > 0:
            low = i[k - 1]
        else:
            below = g[g < i[0]]
            low = float(below[-1]) if below.size else 0.0
        value = float(0.5 * (low + i[k]))
        if value >= i[k]:  # equal distances: stay strictly below the first impostor not allowed
            value = float(np.nextafter(i[k], -np.inf))
    out = {"value": value, "far": float(far), "far_achieved": float(np.mean(i <= value)),
           "tar": float(np.mean(g <= value)) if g.size else None, "genuine_pairs": int(g.size),
           "impostor_pairs": int(i.size), "eer": None}
    if g.size:
        out["eer"] = equal_error_rate(roc_curve(g, i))
    return out


def verification_metrics(distances, same, valid=None, fars: Sequence[float] = DEFAULT_FARS) -> dict[str, float]:
    """EER and TAR at each FAR from a distance matrix and a same-identity mask.

    Args:
        distances: float (Nq, Ng).
        same: bool (Nq, Ng) same identity.
        valid: optional bool (Nq, Ng) pairs to use.
        fars: FARs at which to report the TAR.

    Returns:
        ``{"eer", "tar_far_0.01", "tar_far_0.001", ..., "genuine_pairs", "impostor_pairs"}``.
    """
    g, i = split_pairs(distances, same, valid)
    roc = roc_curve(g, i)
    out = {"eer": equal_error_rate(roc)}
    for f in fars:
        out[f"tar_far_{f:g}"] = tar_at_far(roc, f)
    out["genuine_pairs"] = float(roc.genuine)
    out["impostor_pairs"] = float(roc.impostor)
    return out


def plot_roc(rocs: dict[str, ROC] | ROC, path=None, title: str = "ROC", fmt: str | None = "png"):
    """Plot ROC curves (TAR against FAR, FAR on a log axis) with matplotlib; optionally save to ``path``.

    Args:
        rocs: one :class:`ROC` or ``{label: ROC}``.
        path: where to save the figure (PNG, SVG, ...); None keeps it open.
        title: the figure title.
        fmt: image format (``png``, ``svg``, ...), whatever ``path``'s suffix (temporary files).

    Returns:
        The matplotlib Figure (closed after saving when ``path`` is given).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if isinstance(rocs, ROC):
        rocs = {"ROC": rocs}
    fig, ax = plt.subplots(figsize=(5, 4))
    floor = 1e-4
    for label, roc in rocs.items():
        far = np.clip(roc.far, floor, 1.0)
        eer = equal_error_rate(roc)
        ax.step(far, roc.tar, where="post", label=f"{label} (EER {eer:.1%})")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120, format=fmt)
        plt.close(fig)
    return fig


def protocol_verification(protocol: str, embeddings, subjects, types, views, metric: str = "euclidean",
                          max_probes: int = 4000, seed: int = 0) -> tuple[dict[str, float], ROC | None]:
    """Verification metrics on a protocol's probe x gallery pairs.

    Pairs: CASIA-B (Yu et al. 2006): probes of every type but ``nm-01..04`` against the ``nm-01..04``
    gallery; OU-MVLP (Takemura et al. 2018): sequence ``00`` against ``01``; otherwise every pair of
    distinct sequences. As in the protocols, pairs of the same view are left out (CASIA-B, OU-MVLP).
    At most ``max_probes`` probes (a fixed random subset) keep the distance matrix small.

    Args:
        protocol: ``casia_b``, ``ou_mvlp`` or ``retrieval``.
        embeddings: float (N, D) or (N, C, parts).
        subjects: (N,) subject ids.
        types: (N,) sequence types.
        views: (N,) views.
        metric: ``euclidean`` or ``cosine``.
        max_probes: cap on the probes used.
        seed: seed of the probe subset.

    Returns:
        (``{"verify/eer", "verify/tar_far_0.01", "verify/tar_far_0.001"}``, the ROC), or ({}, None)
        when there is no genuine or no impostor pair.
    """
    from .metrics import pairwise_distance

    subjects = np.asarray(subjects).astype(str)
    types = np.char.lower(np.asarray(types).astype(str))
    views = np.asarray(views).astype(str)
    n = len(subjects)
    if protocol == "casia_b":
        norm = np.asarray([f"{t.partition('-')[0]}-{t.partition('-')[2].zfill(2)}" for t in types])
        gal = np.isin(norm, ["nm-01", "nm-02", "nm-03", "nm-04"])
        probe, cross_view = ~gal, True
    elif protocol == "ou_mvlp":
        seq = np.asarray([t.zfill(2) if t.isdigit() else t for t in types])
        probe, gal, cross_view = seq == "00", seq == "01", True
    else:
        probe, gal, cross_view = np.ones(n, bool), np.ones(n, bool), False
    pidx, gidx = np.flatnonzero(probe), np.flatnonzero(gal)
    if len(pidx) > max_probes:
        pidx = np.sort(np.random.default_rng(seed).choice(pidx, max_probes, replace=False))
    if len(pidx) == 0 or len(gidx) == 0:
        return {}, None
    emb = np.asarray(embeddings)
    d = pairwise_distance(emb[pidx], emb[gidx], metric).numpy()
    same = subjects[pidx][:, None] == subjects[gidx][None, :]
    valid = pidx[:, None] != gidx[None, :]
    if cross_view:
        valid &= views[pidx][:, None] != views[gidx][None, :]
    g, i = split_pairs(d, same, valid)
    if g.size == 0 or i.size == 0:
        return {}, None
    roc = roc_curve(g, i)
    out = {"verify/eer": equal_error_rate(roc)}
    for f in DEFAULT_FARS:
        out[f"verify/tar_far_{f:g}"] = tar_at_far(roc, f)
    return out, roc

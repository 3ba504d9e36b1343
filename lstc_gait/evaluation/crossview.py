"""Cross-view rank-1 matrices: probe view x gallery view, for any dataset with views.

A cell (p, g) is the share (percent) of probe sequences of view p whose nearest gallery sequence
among those of view g has the probe's subject. Probes whose subject has no gallery sequence at
view g either count as misses (``count_missing=True``) or are left out of that cell's
denominator (``False``). A cell is NaN when nothing could be measured: no probe of view p, no
gallery sequence at view g, an identical-view cell that was not computed, or (misses excluded)
no probe of view p with a gallery match at view g.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .metrics import prepare, search


def labels_of(values, n: int | None = None, name: str = "labels") -> np.ndarray:
    """Array-like of labels -> numpy array of stripped str (checked against ``n`` entries)."""
    if values is None:
        raise ValueError(f"{name} is required")
    if hasattr(values, "detach"):  # torch tensor of ids
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        arr = np.asarray([str(v) for v in values], dtype=object) if arr.ndim == 0 or arr.dtype == object \
            else arr.reshape(-1)
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries but there are {n} embeddings")
    return np.char.strip(arr.astype(str))


@dataclass
class CrossViewCounts:
    """Raw tallies behind a cross-view matrix (rows = probe views, columns = gallery views)."""

    probe_views: list[str]
    gallery_views: list[str]
    hits: np.ndarray  # (Vp, Vg) probes whose nearest gallery entry at view g has their subject
    present: np.ndarray  # (Vp, Vg) probes whose subject has at least one gallery entry at view g
    total: np.ndarray  # (Vp,) probes of view p
    computed: np.ndarray  # (Vp, Vg) bool: cell searched (gallery view non-empty, not a skipped diagonal)

    def accuracy(self, count_missing: bool = True) -> pd.DataFrame:
        """Percent rank-1 matrix, NaN where undefined (see the module docstring)."""
        denom = np.broadcast_to(self.total[:, None], self.hits.shape) if count_missing else self.present
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = np.where(self.computed & (denom > 0), 100.0 * self.hits / np.maximum(denom, 1), np.nan)
        df = pd.DataFrame(acc, index=pd.Index(self.probe_views, name="probe_view"),
                          columns=pd.Index(self.gallery_views, name="gallery_view"))
        return df

    def per_probe_view(self, count_missing: bool = True) -> pd.Series:
        """Mean of each row over the other gallery views (identical view excluded, NaN cells skipped)."""
        acc = self.accuracy(count_missing).to_numpy()
        same = np.array([[p == g for g in self.gallery_views] for p in self.probe_views], dtype=bool)
        vals = np.where(same.reshape(acc.shape), np.nan, acc)
        counts = (~np.isnan(vals)).sum(axis=1)
        sums = np.nansum(vals, axis=1)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        return pd.Series(means, index=list(self.probe_views), dtype=float)

    def missing_pairs(self) -> int:
        """(probe, other gallery view) pairs whose subject has no gallery entry at that view."""
        miss = np.broadcast_to(self.total[:, None], self.hits.shape) - self.present
        same = np.array([[p == g for g in self.gallery_views] for p in self.probe_views], dtype=bool)
        return int(miss[self.computed & ~same].sum())


def tally(nearest: np.ndarray, probe_rows: np.ndarray, probe_subjects: np.ndarray, probe_views: np.ndarray,
          gallery_subjects: np.ndarray, gallery_views: np.ndarray, view_labels: list[str],
          computed_groups: np.ndarray | None = None, skipped_identical: bool = False) -> CrossViewCounts:
    """Count hits from a nearest-per-gallery-view search.

    ``nearest`` (Nq, V) gallery index per view code (-1 = none); ``probe_rows`` selects the probes
    (rows of ``nearest``) to tally; ``probe_views`` / ``gallery_views`` are view codes into
    ``view_labels``; ``probe_subjects`` / ``gallery_subjects`` are integer subject codes.
    """
    nv = len(view_labels)
    pv = probe_views[probe_rows]
    ps = probe_subjects[probe_rows]
    near = nearest[probe_rows]
    hit = (near >= 0) & (gallery_subjects[np.maximum(near, 0)] == ps[:, None])
    # subject presence per gallery view
    nsub = int(max(probe_subjects.max(initial=-1), gallery_subjects.max(initial=-1))) + 1
    have = np.zeros((nsub, nv), dtype=bool)
    have[gallery_subjects, gallery_views] = True
    present_each = have[ps]  # (n, V)
    hits = np.zeros((nv, nv), dtype=np.int64)
    present = np.zeros((nv, nv), dtype=np.int64)
    np.add.at(hits, pv, hit.astype(np.int64))
    np.add.at(present, pv, present_each.astype(np.int64))
    total = np.bincount(pv, minlength=nv).astype(np.int64)
    gal_count = np.bincount(gallery_views, minlength=nv)
    computed = np.broadcast_to(gal_count > 0, (nv, nv)).copy()
    if skipped_identical:
        np.fill_diagonal(computed, False)
    prow = np.flatnonzero(np.bincount(pv, minlength=nv) > 0)
    gcol = np.flatnonzero(gal_count > 0)
    return CrossViewCounts([view_labels[i] for i in prow], [view_labels[i] for i in gcol],
                           hits[np.ix_(prow, gcol)], present[np.ix_(prow, gcol)], total[prow],
                           computed[np.ix_(prow, gcol)])


def crossview_counts(embeddings, subjects, views, probe_mask, gallery_mask, metric: str = "euclidean",
                     include_identical: bool = True, progress: bool = False) -> CrossViewCounts:
    """Search every probe against each gallery view and tally (see :class:`CrossViewCounts`)."""
    prep = prepare(embeddings, metric)
    n = len(prep)
    subj = labels_of(subjects, n, "subjects")
    view = labels_of(views, n, "views")
    pmask = np.asarray(probe_mask, dtype=bool)
    gmask = np.asarray(gallery_mask, dtype=bool)
    if pmask.shape != (n,) or gmask.shape != (n,):
        raise ValueError("probe_mask and gallery_mask need one boolean per embedding")
    pidx, gidx = np.flatnonzero(pmask), np.flatnonzero(gmask)
    if len(gidx) == 0:
        raise ValueError("the gallery is empty: no sequence matches the gallery selection")
    labels = sorted(set(view[pidx]) | set(view[gidx]))
    code = {v: i for i, v in enumerate(labels)}
    vcode = np.array([code.get(v, -1) for v in view], dtype=np.int64)
    _, scode = np.unique(subj, return_inverse=True)
    res = search(prep.take(pidx), prep.take(gidx), gallery_groups=vcode[gidx], num_groups=len(labels),
                 query_groups=vcode[pidx], skip_same_group=not include_identical, progress=progress)
    return tally(res.nearest, np.arange(len(pidx)), scode[pidx], vcode[pidx], scode[gidx], vcode[gidx],
                 labels, skipped_identical=not include_identical)


def crossview_matrix(embeddings, subjects, views, probe_mask, gallery_mask, metric: str = "euclidean",
                     count_missing: bool = True, include_identical: bool = True) -> pd.DataFrame:
    """Full probe-view x gallery-view rank-1 matrix (percent) for the given probe / gallery split."""
    counts = crossview_counts(embeddings, subjects, views, probe_mask, gallery_mask, metric, include_identical)
    return counts.accuracy(count_missing)

"""The field's test protocols on embeddings: CASIA-B, OU-MVLP, open-set retrieval.

All numbers are percent. Inputs are embeddings (N, D) or (N, C, P) (numpy or torch) plus one
label per sequence (array-likes, compared as str). The exact rules are in docs/protocols.md.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

from .crossview import CrossViewCounts, labels_of, tally
from .metrics import as_embeddings, build_positives, prepare, search, summarize_ranks

CASIA_B_GALLERY = ("nm-01", "nm-02", "nm-03", "nm-04")
CASIA_B_PROBES = {"NM": ("nm-05", "nm-06"), "BG": ("bg-01", "bg-02"), "CL": ("cl-01", "cl-02")}
OU_MVLP_PROBE_SEQ = "00"
OU_MVLP_GALLERY_SEQ = "01"
PROTOCOLS = ("casia_b", "ou_mvlp", "retrieval")


def _casia_type(t: str) -> str:
    """'NM-1' / 'nm-01' -> 'nm-01'."""
    t = t.strip().lower()
    head, sep, num = t.partition("-")
    return f"{head}-{num.zfill(2)}" if sep and num.isdigit() else t


def _ou_seq(t: str) -> str:
    t = t.strip()
    return t.zfill(2) if t.isdigit() else t


def _normalised(values: np.ndarray, fn) -> np.ndarray:
    """Apply a per-label normaliser once per distinct label."""
    uniq, inv = np.unique(values, return_inverse=True)
    return np.array([fn(u) for u in uniq], dtype=object).astype(str)[inv.reshape(-1)]


def _summary(counts_by_row: dict[str, CrossViewCounts | None], count_missing: bool) -> pd.DataFrame:
    """Rows of per-probe-view accuracies (identical view excluded) with views sorted and mean last."""
    series = {}
    for name, counts in counts_by_row.items():
        series[name] = counts.per_probe_view(count_missing) if counts is not None else pd.Series(dtype=float)
    columns = sorted({v for s in series.values() for v in s.index})
    df = pd.DataFrame({name: s.reindex(columns) for name, s in series.items()}, index=columns, dtype=float).T
    df.columns = pd.Index(columns, name="probe_view")
    df["mean"] = df[columns].mean(axis=1, skipna=True) if columns else np.nan
    return df


class _Split:
    """Codes shared by the protocol functions: subjects, views, probe / gallery rows."""

    def __init__(self, embeddings, subjects, types, views, metric: str):
        # raw embeddings kept once; probe and gallery subsets are laid out only when searched
        self.x = as_embeddings(embeddings)
        self.metric = metric
        prepare(self.x[:1], metric)  # validates the metric early
        n = self.x.shape[0]
        self.subjects = labels_of(subjects, n, "subjects")
        self.types = labels_of(types, n, "types")
        self.views = labels_of(views, n, "views")
        _, self.scode = np.unique(self.subjects, return_inverse=True)
        self.labels = sorted(set(self.views.tolist()))
        code = {v: i for i, v in enumerate(self.labels)}
        self.vcode = np.array([code[v] for v in self.views], dtype=np.int64)

    def run(self, pidx: np.ndarray, gidx: np.ndarray, include_identical: bool, with_ranks: bool,
            progress: bool = False):
        # gallery sorted by view (stable) so the search needs no sorted copy; ties still break by
        # the original order through tie_index; nearest indices are mapped back to gidx positions
        gperm = np.argsort(self.vcode[gidx], kind="stable")
        gs = gidx[gperm]
        positives = None
        if with_ranks:
            positives = build_positives(self.scode[pidx], self.scode[gs], self.vcode[pidx], self.vcode[gs])
        res = search(prepare(self.x[torch.as_tensor(pidx)], self.metric),
                     prepare(self.x[torch.as_tensor(gs)], self.metric), gallery_groups=self.vcode[gs],
                     num_groups=len(self.labels), query_groups=self.vcode[pidx],
                     skip_same_group=not include_identical, positives=positives, progress=progress,
                     tie_index=gperm)
        if res.nearest is not None:
            res.nearest = np.where(res.nearest >= 0, gperm[np.maximum(res.nearest, 0)], -1)
        return res

    def tally(self, res, rows: np.ndarray, pidx: np.ndarray, gidx: np.ndarray, include_identical: bool):
        if len(rows) == 0:
            return None
        return tally(res.nearest, rows, self.scode[pidx], self.vcode[pidx], self.scode[gidx], self.vcode[gidx],
                     self.labels, skipped_identical=not include_identical)


# ---------------------------------------------------------------- CASIA-B
def _casia_rows(split: _Split):
    types = _normalised(split.types, _casia_type)
    gidx = np.flatnonzero(np.isin(types, CASIA_B_GALLERY))
    if len(gidx) == 0:
        raise ValueError(f"CASIA-B protocol: no gallery sequence (types {', '.join(CASIA_B_GALLERY)}); "
                         f"types present: {sorted(set(types.tolist()))[:12]}")
    sets = {name: np.flatnonzero(np.isin(types, members)) for name, members in CASIA_B_PROBES.items()}
    for name, idx in sets.items():
        if len(idx) == 0:
            warnings.warn(f"CASIA-B protocol: no {name} probe sequence ({'/'.join(CASIA_B_PROBES[name])}); "
                          f"its row is NaN", stacklevel=3)
    pidx = np.concatenate(list(sets.values()))
    if len(pidx) == 0:
        raise ValueError("CASIA-B protocol: no probe sequence (nm-05/06, bg-01/02, cl-01/02)")
    bounds = np.cumsum([0] + [len(v) for v in sets.values()])
    rows = {name: np.arange(bounds[i], bounds[i + 1]) for i, name in enumerate(sets)}
    return pidx, gidx, rows


def _casia_counts(split: _Split, include_identical: bool, with_ranks: bool, progress: bool = False):
    pidx, gidx, rows = _casia_rows(split)
    res = split.run(pidx, gidx, include_identical, with_ranks, progress)
    counts = {name: split.tally(res, r, pidx, gidx, include_identical) for name, r in rows.items()}
    return counts, res, rows


def evaluate_casia_b(embeddings, subjects, types, views, metric: str = "euclidean",
                     count_missing: bool = True) -> pd.DataFrame:
    """CASIA-B rank-1 (percent): index NM/BG/CL, one column per probe view (sorted), then ``mean``.

    Gallery nm-01..04; probes NM nm-05/06, BG bg-01/02, CL cl-01/02. Cell (set, p) = mean over
    gallery views g != p of the rank-1 of probe view p against gallery view g alone; ``mean`` =
    mean over probe views. NaN cells (nothing to measure) are left out of every mean.
    """
    split = _Split(embeddings, subjects, types, views, metric)
    counts, _, _ = _casia_counts(split, include_identical=False, with_ranks=False)
    return _summary(counts, count_missing)


# ---------------------------------------------------------------- OU-MVLP
def _ou_rows(split: _Split):
    seqs = _normalised(split.types, _ou_seq)
    pidx = np.flatnonzero(seqs == OU_MVLP_PROBE_SEQ)
    gidx = np.flatnonzero(seqs == OU_MVLP_GALLERY_SEQ)
    if len(pidx) == 0 or len(gidx) == 0:
        raise ValueError(f"OU-MVLP protocol: needs probe seq {OU_MVLP_PROBE_SEQ!r} and gallery seq "
                         f"{OU_MVLP_GALLERY_SEQ!r} in `types`; found {sorted(set(seqs.tolist()))[:12]}")
    return pidx, gidx


def evaluate_ou_mvlp(embeddings, subjects, types, views, metric: str = "euclidean",
                     count_missing: bool = True) -> pd.DataFrame:
    """OU-MVLP rank-1 (percent): one row ``rank1``, one column per probe view (sorted), then ``mean``.

    Probe seq 00 against gallery seq 01 (``types`` holds the seq id), per (probe view, gallery
    view), identical view excluded. ``count_missing``: probes whose subject has no gallery
    sequence at a gallery view count as misses (True, the common practice) or are left out (False).
    """
    split = _Split(embeddings, subjects, types, views, metric)
    pidx, gidx = _ou_rows(split)
    res = split.run(pidx, gidx, include_identical=False, with_ranks=False)
    counts = split.tally(res, np.arange(len(pidx)), pidx, gidx, include_identical=False)
    return _summary({"rank1": counts}, count_missing)


# ---------------------------------------------------------------- retrieval
def _same_object(a, b) -> bool:
    if a is b:
        return True
    try:
        import torch

        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            return a.shape == b.shape and a.data_ptr() == b.data_ptr() and a.stride() == b.stride()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return (a.shape == b.shape and a.strides == b.strides
                and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])
    return False


def evaluate_retrieval(query_embeddings, query_ids, gallery_embeddings, gallery_ids, query_cams=None,
                       gallery_cams=None, metric: str = "euclidean", exclude_self: bool | None = None) -> dict:
    """Open-set retrieval: rank1/rank5/rank10, mAP, mINP (percent) and ``num_skipped``.

    Gallery entries with the query's id and the query's cam are ignored when cams are given.
    A query is never matched with itself: when query and gallery are the same array (same object
    or same memory) or ``exclude_self=True``, gallery entry i is ignored for query i.
    Queries left with no positive are excluded from every metric and counted in ``num_skipped``.
    """
    q = prepare(query_embeddings, metric, "query_embeddings")
    g = prepare(gallery_embeddings, metric, "gallery_embeddings")
    qid = labels_of(query_ids, len(q), "query_ids")
    gid = labels_of(gallery_ids, len(g), "gallery_ids")
    qcam = None if query_cams is None else labels_of(query_cams, len(q), "query_cams")
    gcam = None if gallery_cams is None else labels_of(gallery_cams, len(g), "gallery_cams")
    if exclude_self is None:
        exclude_self = _same_object(query_embeddings, gallery_embeddings)
    self_index = None
    if exclude_self:
        if len(q) != len(g):
            raise ValueError("exclude_self needs query and gallery of the same length (entry i is query i)")
        self_index = np.arange(len(q))
    pos = build_positives(qid, gid, qcam, gcam, self_index)
    res = search(q, g, positives=pos)
    out = summarize_ranks(res.ranks, res.offsets, (1, 5, 10))
    return {k: out[k] for k in ("rank1", "rank5", "rank10", "mAP", "mINP", "num_skipped")}


# ---------------------------------------------------------------- one entry point for training
def _prefixed(prefix: str, summary: dict) -> dict:
    return {f"{prefix}{k}": float(v) for k, v in summary.items() if k != "num_queries"}


def protocol_metrics(protocol: str, embeddings, subjects, types, views, metric: str = "euclidean",
                     progress: bool = False) -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """Run ``protocol`` once and return (tables, metrics) for logging (names in docs/protocols.md).

    The rank-1 tables and the retrieval metrics (mAP, mINP, rank5, rank10) come out of one pass
    over the probe x gallery distances. Retrieval here: probes against the whole gallery, gallery
    entries of the probe's subject at the probe's own view ignored (cams = views).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; expected one of {PROTOCOLS}")
    if protocol == "retrieval":
        return _retrieval_protocol(embeddings, subjects, types, views, metric)
    split = _Split(embeddings, subjects, types, views, metric)
    tables: dict[str, pd.DataFrame] = {}
    metrics: dict[str, float] = {}
    if protocol == "casia_b":
        counts, res, rows = _casia_counts(split, include_identical=True, with_ranks=True, progress=progress)
        summary = _summary(counts, count_missing=True)
        tables["rank1"] = summary
        for name, c in counts.items():
            metrics[f"{name}/rank1"] = float(summary.loc[name, "mean"])
            if c is not None:
                tables[f"crossview_{name}"] = c.accuracy(count_missing=True)
                sub = _subset_ranks(res.ranks, res.offsets, rows[name])
                metrics.update(_prefixed(f"{name}/", {k: v for k, v in summarize_ranks(*sub).items()
                                                      if k in ("mAP", "mINP")}))
        metrics.update(_prefixed("", summarize_ranks(res.ranks, res.offsets, (1, 5, 10))))
        metrics.pop("rank1", None)  # retrieval rank-1 over all views; the protocol's rank-1 is per set
        return tables, metrics
    # ou_mvlp
    pidx, gidx = _ou_rows(split)
    res = split.run(pidx, gidx, include_identical=True, with_ranks=True, progress=progress)
    counts = split.tally(res, np.arange(len(pidx)), pidx, gidx, include_identical=True)
    counted = _summary({"rank1": counts}, count_missing=True)
    excluded = _summary({"rank1": counts}, count_missing=False)
    tables["rank1"] = counted
    tables["rank1_excl_missing"] = excluded
    tables["crossview"] = counts.accuracy(count_missing=True)
    tables["crossview_excl_missing"] = counts.accuracy(count_missing=False)
    metrics["rank1"] = float(counted.loc["rank1", "mean"])
    metrics["rank1_excl_missing"] = float(excluded.loc["rank1", "mean"])
    metrics["num_missing_pairs"] = float(counts.missing_pairs())
    retrieval = summarize_ranks(res.ranks, res.offsets, (1, 5, 10))
    retrieval.pop("rank1")
    metrics.update(_prefixed("", retrieval))
    return tables, metrics


def _subset_ranks(ranks: np.ndarray, offsets: np.ndarray, rows: np.ndarray):
    counts = np.diff(offsets)[rows]
    parts = [ranks[offsets[r]:offsets[r + 1]] for r in rows]
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return flat, np.concatenate([[0], np.cumsum(counts)])


def _retrieval_protocol(embeddings, subjects, types, views, metric: str):
    """Generic datasets: types 'query'/'probe' vs 'gallery' when given, else all-vs-all without self."""
    emb = as_embeddings(embeddings)
    n = emb.shape[0]
    types_ = np.array([t.lower() for t in labels_of(types, n, "types")])
    subj = labels_of(subjects, n, "subjects")
    cams = None if views is None else labels_of(views, n, "views")
    qmask = np.isin(types_, ("query", "probe"))
    gmask = types_ == "gallery"
    if qmask.any() and gmask.any():
        qi, gi = np.flatnonzero(qmask), np.flatnonzero(gmask)
        e = emb.numpy()
        out = evaluate_retrieval(e[qi], subj[qi], e[gi], subj[gi],
                                 None if cams is None else cams[qi], None if cams is None else cams[gi],
                                 metric=metric, exclude_self=False)
    else:
        out = evaluate_retrieval(emb, subj, emb, subj, cams, cams, metric=metric, exclude_self=True)
    table = pd.DataFrame([out], index=["retrieval"])
    return {"retrieval": table}, {k: float(v) for k, v in out.items()}

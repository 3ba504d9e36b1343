"""The field's test protocols on embeddings: CASIA-B, OU-MVLP, open-set retrieval.

All numbers are percent. Inputs are embeddings (N, D) or (N, C, P) (numpy or torch) plus one
label per sequence (array-likes, compared as str). The exact rules are in docs/protocols.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from lstc_gait.errors import UserError

from .crossview import CrossViewCounts, labels_of, tally
from .metrics import as_embeddings, build_positives, prepare, search, summarize_ranks

CASIA_B_GALLERY = ("nm-01", "nm-02", "nm-03", "nm-04")
CASIA_B_PROBES = {"NM": ("nm-05", "nm-06"), "BG": ("bg-01", "bg-02"), "CL": ("cl-01", "cl-02")}
OU_MVLP_PROBE_SEQ = "00"
OU_MVLP_GALLERY_SEQ = "01"
PROTOCOLS = ("casia_b", "ou_mvlp", "retrieval")
SAME_VIEW_SETTINGS = ("auto", "true", "false")


class ProtocolError(UserError, ValueError):
    """Labelled sequences a protocol cannot score: a missing gallery or probe set, or nothing to measure."""


def same_view_setting(value: Any, key: str = "exclude_same_view") -> str:
    """Normalise an ``exclude_same_view`` setting.

    Args:
        value: ``auto`` (or None), ``true`` / ``false`` as text (any case) or as bool.
        key: The setting's config key, for the message.

    Returns:
        ``"auto"``, ``"true"`` or ``"false"``.

    Raises:
        ProtocolError: Any other value (the message names ``key``).
    """
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip().lower()
    if text not in SAME_VIEW_SETTINGS:
        raise ProtocolError(f"{key}={value!r} is not one of: {', '.join(SAME_VIEW_SETTINGS)}")
    return text


def exclude_same_view(setting: Any, views: Sequence[str] | np.ndarray | None) -> bool:
    """Whether retrieval ignores gallery entries of the query's subject at the query's own view.

    Args:
        setting: ``auto``, ``true`` or ``false`` (see :func:`same_view_setting`). ``auto`` excludes
            them only when the sequences have more than one view: with a single view (one camera)
            every positive would be excluded.
        views: (N,) view labels of all the sequences (query and gallery), or None (no views).

    Returns:
        True to exclude same-view positives.

    Raises:
        ProtocolError: An unknown setting.
    """
    mode = same_view_setting(setting)
    if views is None:
        return False
    if mode == "auto":
        return len(set(np.asarray(views).astype(str).tolist())) > 1
    return mode == "true"


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
def _present(values: np.ndarray, limit: int = 12) -> str:
    found = sorted(set(values.tolist()))
    return ", ".join(found[:limit]) + (f", ... ({len(found)} in all)" if len(found) > limit else "") \
        if found else "none"


def _cross_view_problem(name: str, probe_views: np.ndarray, gallery_views: np.ndarray) -> str | None:
    """Why a cross-view protocol has nothing to measure for a probe set (None: it has)."""
    pv, gv = set(probe_views.tolist()), set(gallery_views.tolist())
    if any(p != g for p in pv for g in gv):
        return None
    return (f"the {name} probes and the gallery have only view {sorted(pv | gv)[0]!r}; the protocol compares "
            "different views only (use the retrieval protocol for a one-camera dataset)")


def _casia_sets(types: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Gallery rows and each probe set's rows, or a ProtocolError naming every missing set."""
    gidx = np.flatnonzero(np.isin(types, CASIA_B_GALLERY))
    sets = {name: np.flatnonzero(np.isin(types, members)) for name, members in CASIA_B_PROBES.items()}
    missing = [f"gallery ({'/'.join(CASIA_B_GALLERY)})"] if len(gidx) == 0 else []
    missing += [f"{name} probe set ({'/'.join(CASIA_B_PROBES[name])})" for name, idx in sets.items() if len(idx) == 0]
    if missing:
        raise ProtocolError(f"CASIA-B protocol: the evaluated data has no {' and no '.join(missing)}; types present: "
                            f"{_present(types)} (choose the dataset's protocol with dataset.evaluation=...)")
    return gidx, sets


def _casia_rows(split: _Split):
    types = _normalised(split.types, _casia_type)
    gidx, sets = _casia_sets(types)
    for name, idx in sets.items():
        problem = _cross_view_problem(name, split.views[idx], split.views[gidx])
        if problem:
            raise ProtocolError(f"CASIA-B protocol: {problem}")
    pidx = np.concatenate(list(sets.values()))
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
    return _require_numbers(_summary(counts, count_missing), "CASIA-B")


# ---------------------------------------------------------------- OU-MVLP
def _ou_sets(seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pidx = np.flatnonzero(seqs == OU_MVLP_PROBE_SEQ)
    gidx = np.flatnonzero(seqs == OU_MVLP_GALLERY_SEQ)
    missing = ([f"probe set (seq {OU_MVLP_PROBE_SEQ})"] if len(pidx) == 0 else []) + \
        ([f"gallery (seq {OU_MVLP_GALLERY_SEQ})"] if len(gidx) == 0 else [])
    if missing:
        raise ProtocolError(f"OU-MVLP protocol: the evaluated data has no {' and no '.join(missing)}; sequence ids "
                            f"(types) present: {_present(seqs)} (choose the dataset's protocol with "
                            "dataset.evaluation=...)")
    return pidx, gidx


def _ou_rows(split: _Split):
    pidx, gidx = _ou_sets(_normalised(split.types, _ou_seq))
    problem = _cross_view_problem("OU-MVLP", split.views[pidx], split.views[gidx])
    if problem:
        raise ProtocolError(f"OU-MVLP protocol: {problem}")
    return pidx, gidx


def _require_numbers(table: pd.DataFrame, protocol: str, what: str = "rank-1") -> pd.DataFrame:
    """The table, or a ProtocolError when a row measured nothing (every probe skipped: never NaN)."""
    empty = [str(name) for name, value in table["mean"].items() if not np.isfinite(value)]
    if empty:
        raise ProtocolError(f"{protocol} protocol: every probe of {', '.join(empty)} was skipped, so its {what} is "
                            "undefined (no probe of a view with a gallery sequence at another view)")
    return table


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
    return _require_numbers(_summary({"rank1": counts}, count_missing), "OU-MVLP",
                            "rank-1" if count_missing else "rank-1 without missing gallery views")


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
    if out["num_queries"] == 0:
        raise ProtocolError(_no_positive_message(len(q), qcam is not None, self_index is not None))
    return {k: out[k] for k in ("rank1", "rank5", "rank10", "mAP", "mINP", "num_skipped")}


def _no_positive_message(num_queries: int, same_view_excluded: bool, self_excluded: bool) -> str:
    rule = "another sequence of its subject" if self_excluded else "a sequence of its subject"
    if same_view_excluded:
        rule += " at another view"
    text = (f"retrieval protocol: none of the {num_queries} queries has a positive in the gallery ({rule}), so every "
            "metric would be undefined")
    if same_view_excluded:
        text += "; same-view positives are excluded (exclude_same_view): set it to false to keep them"
    return text


# ---------------------------------------------------------------- checks before anything is embedded
def _retrieval_sides(types: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Query rows, gallery rows and whether a query is also in the gallery (all-vs-all, itself excluded)."""
    lowered = np.char.lower(types.astype(str))
    qmask = np.isin(lowered, ("query", "probe"))
    gmask = lowered == "gallery"
    if qmask.any() and gmask.any():
        return np.flatnonzero(qmask), np.flatnonzero(gmask), False
    every = np.arange(len(types))
    return every, every, True


def _any_positive(subjects: np.ndarray, views: np.ndarray, qidx: np.ndarray, gidx: np.ndarray,
                  same_view_excluded: bool, self_excluded: bool) -> bool:
    """Whether at least one query has a positive in the gallery under the exclusion rules."""
    from collections import Counter

    per_subject = Counter(subjects[gidx].tolist())
    per_subject_view = Counter(zip(subjects[gidx].tolist(), views[gidx].tolist()))
    for s, v in set(zip(subjects[qidx].tolist(), views[qidx].tolist())):
        available = per_subject[s] - (per_subject_view[(s, v)] if same_view_excluded else 0)
        if self_excluded and not same_view_excluded:
            available -= 1  # the query itself
        if available > 0:
            return True
    return False


def check_protocol_data(protocol: str, subjects, types, views, same_view: Any = "auto") -> None:
    """Check that labelled sequences hold what ``protocol`` scores, before anything is embedded or trained.

    CASIA-B (Yu et al. 2006) needs the gallery (nm-01..04) and the NM (nm-05/06), BG (bg-01/02) and CL
    (cl-01/02) probe sets, each with a probe view that differs from a gallery view; OU-MVLP (Takemura
    et al. 2018) needs probe seq 00 and gallery seq 01 at different views; retrieval needs at least one
    query with a positive in the gallery (see :func:`exclude_same_view`).

    Args:
        protocol: ``casia_b``, ``ou_mvlp`` or ``retrieval``.
        subjects: (N,) subject ids.
        types: (N,) sequence types (CASIA-B types, OU-MVLP seq ids, or ``query``/``gallery``).
        views: (N,) view labels.
        same_view: The retrieval protocol's ``exclude_same_view`` setting (``auto``, ``true``, ``false``).

    Raises:
        ProtocolError: Naming every missing set, or saying why nothing could be measured.
    """
    if protocol not in PROTOCOLS:
        raise ProtocolError(f"unknown evaluation protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    subj = labels_of(subjects, None, "subjects")
    n = len(subj)
    if n == 0:
        raise ProtocolError(f"{protocol} protocol: no sequence to evaluate")
    kinds = labels_of(types, n, "types")
    view = labels_of(views, n, "views") if views is not None or protocol != "retrieval" else np.full(n, "")
    if protocol == "casia_b":
        gidx, sets = _casia_sets(_normalised(kinds, _casia_type))
        for name, idx in sets.items():
            problem = _cross_view_problem(name, view[idx], view[gidx])
            if problem:
                raise ProtocolError(f"CASIA-B protocol: {problem}")
    elif protocol == "ou_mvlp":
        pidx, gidx = _ou_sets(_normalised(kinds, _ou_seq))
        problem = _cross_view_problem("OU-MVLP", view[pidx], view[gidx])
        if problem:
            raise ProtocolError(f"OU-MVLP protocol: {problem}")
    else:
        qidx, gidx, self_excluded = _retrieval_sides(kinds)
        excluded = exclude_same_view(same_view, view)
        if not _any_positive(subj, view, qidx, gidx, excluded, self_excluded):
            raise ProtocolError(_no_positive_message(len(qidx), excluded, self_excluded))


# ---------------------------------------------------------------- one entry point for training
def _prefixed(prefix: str, summary: dict) -> dict:
    """Metric names with a prefix; undefined values (no query with a positive) are left out, never NaN."""
    return {f"{prefix}{k}": float(v) for k, v in summary.items() if k != "num_queries" and np.isfinite(v)}


def protocol_metrics(protocol: str, embeddings, subjects, types, views, metric: str = "euclidean",
                     progress: bool = False, same_view: Any = "auto") -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """Run ``protocol`` once and return (tables, metrics) for logging (names in docs/protocols.md).

    The rank-1 tables and the retrieval metrics (mAP, mINP, rank5, rank10) come out of one pass
    over the probe x gallery distances. Retrieval inside CASIA-B / OU-MVLP: probes against the whole
    gallery, gallery entries of the probe's subject at the probe's own view ignored (cams = views).

    Args:
        protocol: ``casia_b`` (Yu et al. 2006), ``ou_mvlp`` (Takemura et al. 2018) or ``retrieval``.
        embeddings: float (N, D) or part-wise (N, C, P).
        subjects: (N,) subject ids.
        types: (N,) sequence types.
        views: (N,) view labels.
        metric: ``euclidean`` or ``cosine``.
        progress: Show a progress bar over the queries.
        same_view: The retrieval protocol's ``exclude_same_view`` setting (``auto``: exclude the
            query's subject at the query's view only when there is more than one view).

    Returns:
        (tables: name -> DataFrame of percentages, metrics: name -> float, undefined ones left out).

    Raises:
        ProtocolError: A missing gallery or probe set, or a table in which every query was skipped.
    """
    if protocol not in PROTOCOLS:
        raise ProtocolError(f"unknown evaluation protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if protocol == "retrieval":
        return _retrieval_protocol(embeddings, subjects, types, views, metric, same_view)
    split = _Split(embeddings, subjects, types, views, metric)
    tables: dict[str, pd.DataFrame] = {}
    metrics: dict[str, float] = {}
    if protocol == "casia_b":
        counts, res, rows = _casia_counts(split, include_identical=True, with_ranks=True, progress=progress)
        summary = _require_numbers(_summary(counts, count_missing=True), "CASIA-B")
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
    counted = _require_numbers(_summary({"rank1": counts}, count_missing=True), "OU-MVLP")
    excluded = _require_numbers(_summary({"rank1": counts}, count_missing=False), "OU-MVLP",
                                "rank-1 without missing gallery views")
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


def _retrieval_protocol(embeddings, subjects, types, views, metric: str, same_view: Any = "auto"):
    """Generic datasets: types 'query'/'probe' vs 'gallery' when given, else all-vs-all without self.

    Gallery entries of the query's subject at the query's view are ignored when
    :func:`exclude_same_view` says so (by default: only when there is more than one view).
    """
    emb = as_embeddings(embeddings)
    n = emb.shape[0]
    kinds = labels_of(types, n, "types")
    subj = labels_of(subjects, n, "subjects")
    view = None if views is None else labels_of(views, n, "views")
    cams = view if exclude_same_view(same_view, view) else None
    qi, gi, self_excluded = _retrieval_sides(kinds)
    if not self_excluded:
        e = emb.numpy()
        out = evaluate_retrieval(e[qi], subj[qi], e[gi], subj[gi],
                                 None if cams is None else cams[qi], None if cams is None else cams[gi],
                                 metric=metric, exclude_self=False)
    else:
        out = evaluate_retrieval(emb, subj, emb, subj, cams, cams, metric=metric, exclude_self=True)
    table = pd.DataFrame([out], index=["retrieval"])
    return {"retrieval": table}, {k: float(v) for k, v in out.items()}

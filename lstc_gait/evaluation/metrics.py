"""Distances and retrieval metrics (rank-k CMC, mAP, mINP), vectorised and chunked.

Everything is computed in blocks of ``(query chunk) x (whole gallery)`` so memory stays bounded
at any size, in float32 (float64 inputs stay float64; half precision is upcast, never used).

Ranking key. Every function ranks gallery entries by one *key* per (query, gallery) pair,
smaller = closer, computed by :func:`key_block` only, so all modes agree bit for bit:

* euclidean, flat (N, D): ``|g|^2 - 2 q.g`` (the squared distance minus the query's constant
  ``|q|^2``; monotone in the distance, so argmin/rank need neither ``|q|^2`` nor a square root);
* euclidean, part-wise (N, C, P): the mean over parts of the per-part Euclidean distance;
* cosine: ``-mean_p cos(q_p, g_p)`` (``P = 1`` for flat embeddings); the distance is ``1 + key``.

Ties. Gallery entries are ordered by ``(key, gallery index)``: among exactly equal keys the lowest
gallery index (position in the gallery as given) comes first. ``torch.min`` returns the first
minimum and the rank counting below uses the same order, so rank-1 from the nearest-neighbour
search and from the retrieval ranks agree, whatever the chunk size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

METRICS = ("euclidean", "cosine")
DEFAULT_BLOCK_BYTES = 512 * 2**20  # one key block (query chunk x gallery) stays under this
_PART_TILE = (256, 2048)  # rows x cols of a part-wise tile: 2 MB, cache-resident across parts


def as_embeddings(x, name: str = "embeddings") -> torch.Tensor:
    """numpy / torch / nested lists -> contiguous CPU tensor (N, D) or (N, C, P), float32 or float64."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name}: cannot convert {type(x).__name__} to an array ({err})") from err
    if t.dtype != torch.float64:
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"{name}: expected real numbers, got dtype {t.dtype}")
        t = t.to(torch.float32)  # fp16/bf16/int inputs are upcast: distances are never half precision
    if t.ndim not in (2, 3):
        raise ValueError(f"{name}: expected shape (N, D) or (N, C, P), got {tuple(t.shape)}")
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return t.contiguous()


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    return metric


@dataclass(frozen=True)
class Prepared:
    """Embeddings laid out for fast key blocks.

    euclidean flat: ``data`` (N, D), ``sqnorm`` (N,); euclidean parts: ``data`` (P, N, C),
    ``sqnorm`` (P, N); cosine: ``data`` (N, C*P) with every part L2-normalised, ``sqnorm`` None.
    """

    metric: str
    data: torch.Tensor
    sqnorm: torch.Tensor | None
    parts: int  # 0 = flat

    def __len__(self) -> int:
        return self.data.shape[1] if (self.metric == "euclidean" and self.parts) else self.data.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        """The stored features' dtype."""
        return self.data.dtype

    def to(self, dtype: torch.dtype) -> Prepared:
        """These features in ``dtype``.

        Args:
            dtype: Target dtype.

        Returns:
            Self when already in it, else a converted copy.
        """
        if self.dtype == dtype:
            return self
        sq = None if self.sqnorm is None else self.sqnorm.to(dtype)
        return Prepared(self.metric, self.data.to(dtype), sq, self.parts)

    def take(self, index) -> Prepared:
        """A subset of the entries.

        Args:
            index: int (K,) entry indices.

        Returns:
            The K entries, contiguous.
        """
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        if self.metric == "euclidean" and self.parts:
            return Prepared(self.metric, self.data[:, idx].contiguous(), self.sqnorm[:, idx].contiguous(), self.parts)
        sq = None if self.sqnorm is None else self.sqnorm[idx].contiguous()
        return Prepared(self.metric, self.data[idx].contiguous(), sq, self.parts)


def prepare(embeddings, metric: str = "euclidean", name: str = "embeddings") -> Prepared:
    """Validate and lay out embeddings once (norms, part-major copy) for repeated key blocks."""
    _check_metric(metric)
    x = as_embeddings(embeddings, name)
    parts = x.shape[2] if x.ndim == 3 else 0
    if metric == "euclidean":
        if parts:
            data = x.permute(2, 0, 1).contiguous()  # (P, N, C): one contiguous matrix per part
            return Prepared(metric, data, (data * data).sum(2), parts)
        return Prepared(metric, x, (x * x).sum(1), 0)
    # cosine: normalise each part, then one matmul over the concatenated parts gives sum_p cos_p
    eps = torch.finfo(x.dtype).tiny
    if parts:
        x = x / x.norm(dim=1, keepdim=True).clamp_min(eps)
        x = x.reshape(x.shape[0], -1)
    else:
        x = x / x.norm(dim=1, keepdim=True).clamp_min(eps)
    return Prepared(metric, x.contiguous(), None, parts)


def match_pair(query: Prepared, gallery: Prepared) -> tuple[Prepared, Prepared]:
    """Check that query and gallery fit together and lay them out for exact keys.

    Mixed float32/float64 become float64. For Euclidean distances both sides are shifted by the
    gallery's first entry (per part): distances do not change, but the ``|g|^2 - 2 q.g`` keys no
    longer cancel a large common offset, which in float32 scrambles the ranking of nearly collapsed
    embeddings (e.g. an untrained model's). An entry, not the mean, so exactly representable
    inputs stay exact and exact ties stay ties.

    Args:
        query: Prepared query embeddings.
        gallery: Prepared gallery embeddings (same metric, feature and part sizes).

    Returns:
        The pair, in one dtype, centred for Euclidean metrics.

    Raises:
        ValueError: Different metrics or embedding shapes.
    """
    _check_pair(query, gallery)
    if query.dtype != gallery.dtype:
        query, gallery = query.to(torch.float64), gallery.to(torch.float64)
    if query.metric != "euclidean" or len(gallery) == 0:
        return query, gallery
    origin = gallery.data.narrow(-2, 0, 1).clone()  # (1, D) flat, (P, 1, C) part-wise
    return _shifted(query, origin), _shifted(gallery, origin)


def _shifted(prep: Prepared, origin: torch.Tensor) -> Prepared:
    data = prep.data - origin
    return Prepared(prep.metric, data, (data * data).sum(-1), prep.parts)


def _check_pair(query: Prepared, gallery: Prepared) -> None:
    if query.metric != gallery.metric:
        raise ValueError(f"query prepared for {query.metric!r}, gallery for {gallery.metric!r}")
    qshape = tuple(query.data.shape[::2] if query.parts and query.metric == "euclidean" else query.data.shape[1:])
    gshape = tuple(gallery.data.shape[::2] if gallery.parts and gallery.metric == "euclidean"
                   else gallery.data.shape[1:])
    if query.parts != gallery.parts or qshape != gshape:
        raise ValueError("query and gallery embeddings have different shapes (feature/part sizes differ)")


def key_block(query: Prepared, gallery: Prepared, out: torch.Tensor | None = None,
              work: torch.Tensor | None = None) -> torch.Tensor:
    """Ranking keys (len(query), len(gallery)), smaller = closer; see the module docstring.

    ``out`` / ``work`` are optional preallocated buffers of at least that shape (reused across
    chunks to avoid page faults on large blocks).
    """
    nq, ng = len(query), len(gallery)
    if out is not None:
        out = out.view(-1)[: nq * ng].view(nq, ng)
    if query.metric == "euclidean" and not query.parts:
        return torch.addmm(gallery.sqnorm.unsqueeze(0), query.data, gallery.data.t(), beta=1, alpha=-2,
                           out=out) if out is not None else \
            torch.addmm(gallery.sqnorm.unsqueeze(0), query.data, gallery.data.t(), beta=1, alpha=-2)
    if query.metric == "cosine":
        res = torch.mm(query.data, gallery.data.t(), out=out) if out is not None else \
            torch.mm(query.data, gallery.data.t())
        return res.mul_(-1.0 / max(query.parts, 1))
    # part-wise Euclidean: sqrt per part (not monotone after averaging), summed in part order.
    # Tiles small enough to stay in cache across the P parts keep the elementwise work cheap.
    acc = out if out is not None else torch.empty((nq, ng), dtype=query.dtype)
    tr, tc = _PART_TILE
    need = min(nq, tr) * min(ng, tc)
    if work is None or work.numel() < 2 * need:
        work = torch.empty(2 * need, dtype=query.dtype)
    for r0 in range(0, nq, tr):
        r1 = min(nq, r0 + tr)
        for c0 in range(0, ng, tc):
            c1 = min(ng, c0 + tc)
            n = (r1 - r0) * (c1 - c0)
            tile = work[:n].view(r1 - r0, c1 - c0)
            tmp = work[n:2 * n].view(r1 - r0, c1 - c0)
            for p in range(query.parts):
                target = tile if p == 0 else tmp
                torch.addmm(gallery.sqnorm[p, c0:c1].unsqueeze(0), query.data[p, r0:r1], gallery.data[p, c0:c1].t(),
                            beta=1, alpha=-2, out=target)
                target.add_(query.sqnorm[p, r0:r1].unsqueeze(1)).clamp_(min=0).sqrt_()
                if p:
                    tile.add_(tmp)
            acc[r0:r1, c0:c1] = tile
    return acc.div_(query.parts)


def key_to_distance(key: torch.Tensor, query: Prepared) -> torch.Tensor:
    """Turn a key block into true distances (in place)."""
    if query.metric == "cosine":
        return key.add_(1.0)
    if query.parts:
        return key
    return key.add_(query.sqnorm.unsqueeze(1)).clamp_(min=0).sqrt_()


def pairwise_distance(query, gallery, metric: str = "euclidean") -> torch.Tensor:
    """Distances (Nq, Ng): Euclidean (per-part, averaged over parts for (N, C, P)) or 1 - cosine."""
    q = prepare(query, metric, "query")
    g = prepare(gallery, metric, "gallery")
    q, g = match_pair(q, g)
    if len(q) == 0:
        return torch.empty((0, len(g)), dtype=q.dtype)
    rows = _padded_rows(np.arange(len(q)))  # same kernels as the chunked search (bit-identical keys)
    return key_to_distance(key_block(q.take(rows), g)[: len(q)], q)


_ROW_QUANTUM = 32  # query chunks are whole multiples of this many rows (padded), see _padded_rows


def _rows_per_block(ncols: int, bytes_per_elem: int, max_block_bytes: int, cap: int = 8192) -> int:
    rows = max_block_bytes // max(1, ncols * bytes_per_elem)
    return int(max(_ROW_QUANTUM, min(cap, rows)) // _ROW_QUANTUM * _ROW_QUANTUM)


def _padded_rows(index: np.ndarray) -> np.ndarray:
    """Pad a query chunk (repeating its first row) to a multiple of ``_ROW_QUANTUM`` rows.

    BLAS picks different kernels (and summation orders) for very small or odd row counts, e.g.
    matrix-vector for one row; fixed-size chunks keep every key bit-identical whatever the chunk
    size, so near-ties break the same way everywhere.
    """
    pad = (-len(index)) % _ROW_QUANTUM
    return index if pad == 0 else np.concatenate([index, np.full(pad, index[0], dtype=index.dtype)])


# ---------------------------------------------------------------- positives for retrieval
@dataclass(frozen=True)
class Positives:
    """Per query: gallery indices of its positives (padded with -1) and of entries to exclude."""

    positive: np.ndarray  # (Nq, K) int64, valid positives only (excluded ones removed), -1 padded
    excluded: np.ndarray  # (Nq, E) int64, gallery indices ignored for this query, -1 padded


def _ragged_to_padded(rows: list[np.ndarray]) -> np.ndarray:
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), max(width, 1)), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _codes(values: Sequence, other: Sequence | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Map labels to shared integer codes (str comparison, so 1 and "1" are the same label)."""
    a = np.asarray([str(v) for v in values], dtype=object)
    if other is None:
        _, inv = np.unique(a.astype(str), return_inverse=True)
        return inv.astype(np.int64), None
    b = np.asarray([str(v) for v in other], dtype=object)
    _, inv = np.unique(np.concatenate([a, b]).astype(str), return_inverse=True)
    return inv[: len(a)].astype(np.int64), inv[len(a):].astype(np.int64)


def build_positives(query_ids, gallery_ids, query_cams=None, gallery_cams=None,
                    self_index: np.ndarray | None = None) -> Positives:
    """Positives = gallery entries with the query's id; excluded = same id and same cam (when cams
    are given) plus ``self_index[q]`` (the query itself, when it is also in the gallery)."""
    qid, gid = _codes(query_ids, gallery_ids)
    nq = len(qid)
    if (query_cams is None) != (gallery_cams is None):
        raise ValueError("give both query_cams and gallery_cams, or neither")
    if query_cams is not None:
        qcam, gcam = _codes(query_cams, gallery_cams)
        if len(qcam) != nq or len(gcam) != len(gid):
            raise ValueError("query_cams / gallery_cams must match the number of query / gallery entries")
    order = np.argsort(gid, kind="stable")
    sorted_ids = gid[order]
    lo = np.searchsorted(sorted_ids, qid, side="left")
    hi = np.searchsorted(sorted_ids, qid, side="right")
    pos_rows, exc_rows = [], []
    for q in range(nq):
        members = order[lo[q]:hi[q]]  # ascending gallery index (stable sort)
        drop = np.zeros(len(members), dtype=bool)
        if query_cams is not None:
            drop |= gcam[members] == qcam[q]
        if self_index is not None and self_index[q] >= 0:
            drop |= members == self_index[q]
        pos_rows.append(members[~drop])
        exc_rows.append(members[drop])
    return Positives(_ragged_to_padded(pos_rows), _ragged_to_padded(exc_rows))


# ---------------------------------------------------------------- the search engine
@dataclass
class SearchResult:
    """Output of the chunked nearest-neighbour search used by the protocols and mAP / mINP (Ye et al. 2021)."""
    nearest: np.ndarray | None  # (Nq, num_groups) gallery index of the nearest entry per group, -1 = none
    ranks: np.ndarray | None  # concatenated ascending 1-based ranks of each query's valid positives
    offsets: np.ndarray | None  # (Nq + 1,) query q's ranks are ranks[offsets[q]:offsets[q + 1]]


_CANDIDATE_BUDGET = 8_000_000  # candidate entries sorted at once when ranking positives


def _positive_ranks_block(kn: np.ndarray, col_index: np.ndarray, pos_cols: np.ndarray,
                          valid: np.ndarray) -> list[np.ndarray]:
    """Ascending 1-based ranks of each row's positives in a key block, order (key, gallery index).

    ``kn`` (B, G) keys (excluded entries already +inf); ``col_index`` gallery index of each
    column; ``pos_cols`` (B, K) columns of the positives, ``valid`` (B, K) which are real. Only
    entries no farther than a row's farthest positive can precede a positive, so only those
    candidates are sorted (few for a good model), in row groups of bounded size.
    """
    b = kn.shape[0]
    t = np.where(valid, np.take_along_axis(kn, np.where(valid, pos_cols, 0), axis=1), -np.inf)
    tmax = t.max(axis=1)
    cand = kn <= tmax[:, None]
    per_row = cand.sum(axis=1)
    out: list[np.ndarray] = [np.zeros(0, np.int64)] * b
    r0 = 0
    while r0 < b:
        # rows [r0, r1) whose candidates fit the budget (at least one row)
        r1 = r0 + max(1, int(np.searchsorted(np.cumsum(per_row[r0:]), _CANDIDATE_BUDGET, side="right")))
        ri, cj = np.nonzero(cand[r0:r1])  # row-major: ascending flat position
        cv = kn[r0 + ri, cj]
        order = np.lexsort((col_index[cj], cv, ri))
        rank_of = np.empty(len(order), dtype=np.int64)
        rank_of[order] = np.arange(len(order))
        row_start = np.searchsorted(ri[order], np.arange(r1 - r0), side="left")
        flat = ri.astype(np.int64) * kn.shape[1] + cj
        vi, vk = np.nonzero(valid[r0:r1])
        where = np.searchsorted(flat, vi.astype(np.int64) * kn.shape[1] + pos_cols[r0 + vi, vk])
        ranks = rank_of[where] - row_start[vi] + 1
        bounds = np.searchsorted(vi, np.arange(r1 - r0 + 1), side="left")
        for i in range(r1 - r0):
            if bounds[i + 1] > bounds[i]:
                out[r0 + i] = np.sort(ranks[bounds[i]:bounds[i + 1]])
        r0 = r1
    return out


def search(query: Prepared, gallery: Prepared, *, gallery_groups: np.ndarray | None = None,
           num_groups: int = 0, query_groups: np.ndarray | None = None, skip_same_group: bool = False,
           positives: Positives | None = None, max_block_bytes: int = DEFAULT_BLOCK_BYTES,
           progress: bool = False, tie_index: np.ndarray | None = None) -> SearchResult:
    """One pass over ``query x gallery`` key blocks computing, as requested:

    * ``gallery_groups`` (G,) int codes in [0, num_groups): the nearest gallery entry of every
      group (e.g. view) for every query; with ``skip_same_group`` the query's own group
      (``query_groups``) is neither searched nor computed (unless ranks need the full gallery);
    * ``positives``: the rank of every valid positive (for CMC / mAP / mINP).

    ``tie_index`` (G,): the index that breaks exact ties in the ranks (default: gallery
    position); it must increase with position inside each group. A gallery already sorted by
    group is used as is (no copy).
    """
    query, gallery = match_pair(query, gallery)
    nq, ng = len(query), len(gallery)
    want_nearest = gallery_groups is not None
    if want_nearest:
        gallery_groups = np.asarray(gallery_groups, dtype=np.int64)
        if gallery_groups.shape != (ng,):
            raise ValueError("gallery_groups must have one entry per gallery embedding")
        if ng and (gallery_groups.min() < 0 or gallery_groups.max() >= num_groups):
            raise ValueError("gallery_groups out of range [0, num_groups)")
    if skip_same_group:
        if query_groups is None:
            raise ValueError("skip_same_group needs query_groups")
        query_groups = np.asarray(query_groups, dtype=np.int64)
    # gallery sorted by group (stable: original order kept inside a group) -> contiguous segments
    if want_nearest:
        gorder = np.argsort(gallery_groups, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(gallery_groups, minlength=num_groups))])
    else:
        gorder = np.arange(ng)
        bounds = np.array([0, ng])
    presorted = not want_nearest or bool(np.all(gorder == np.arange(ng)))
    gsorted = gallery if presorted else gallery.take(gorder)
    tie = np.arange(ng) if tie_index is None else np.asarray(tie_index, dtype=np.int64)
    if tie.shape != (ng,):
        raise ValueError("tie_index must have one entry per gallery embedding")
    nearest = np.full((nq, max(num_groups, 0)), -1, dtype=np.int64) if want_nearest else None
    ranks_per_query: list[np.ndarray] = [np.zeros(0, np.int64)] * nq
    if positives is not None:
        pos_cols_all = np.full(ng, -1, dtype=np.int64)
        pos_cols_all[gorder] = np.arange(ng)  # gallery index -> column in the sorted gallery

    # query batches: per query group when its gallery segment is skipped, else all queries at once
    if skip_same_group and want_nearest:
        qgroups = [(grp, np.flatnonzero(query_groups == grp)) for grp in np.unique(query_groups)]
    else:
        qgroups = [(-1, np.arange(nq))]
    bytes_per = query.data.element_size()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=nq, desc="evaluate", unit="query", leave=False)
    for grp, qidx in qgroups:
        if len(qidx) == 0:
            continue
        cols = np.arange(ng)
        seg = [(h, bounds[h], bounds[h + 1]) for h in range(len(bounds) - 1)]
        if grp >= 0 and 0 <= grp < num_groups and positives is None:
            s, e = bounds[grp], bounds[grp + 1]
            cols = np.concatenate([np.arange(s), np.arange(e, ng)])
            seg = [(h, a - (e - s if a >= e else 0), b - (e - s if b >= e else 0))
                   for h, a, b in seg if h != grp]
            gsub = gsorted.take(cols) if e > s else gsorted
        else:
            seg = [(h, a, b) for h, a, b in seg if h != grp]
            gsub = gsorted
        ncols = len(cols)
        rows = _rows_per_block(ncols, bytes_per, max_block_bytes)
        buf = torch.empty(min(rows, len(_padded_rows(qidx))) * max(ncols, 1), dtype=query.dtype)
        work = None
        col_index = gorder[cols]  # gallery position of each column
        col_tie = tie[col_index]
        for start in range(0, len(qidx), rows):
            chunk = qidx[start:start + rows]
            kb = key_block(query.take(_padded_rows(chunk)), gsub, out=buf, work=work)
            kn = kb.numpy()[: len(chunk)]
            if want_nearest:
                for h, a, b in seg:
                    if b > a:  # numpy argmin: first minimum = lowest gallery index (and fast on slices)
                        nearest[chunk, h] = col_index[a + kn[:, a:b].argmin(axis=1)]
            if positives is not None:
                excl = positives.excluded[chunk]
                r_, c_ = np.nonzero(excl >= 0)
                if len(r_):
                    kn[r_, pos_cols_all[excl[r_, c_]]] = np.inf
                pos = positives.positive[chunk]
                valid = pos >= 0
                if valid.any():
                    block = _positive_ranks_block(kn, col_tie, pos_cols_all[np.maximum(pos, 0)], valid)
                    for i, q in enumerate(chunk):
                        ranks_per_query[q] = block[i]
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    if positives is None:
        return SearchResult(nearest, None, None)
    counts = np.array([len(r) for r in ranks_per_query], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    flat = np.concatenate(ranks_per_query) if nq else np.zeros(0, np.int64)
    return SearchResult(nearest, flat.astype(np.int64), offsets)


# ---------------------------------------------------------------- metrics from ranks
def summarize_ranks(ranks: np.ndarray, offsets: np.ndarray, topk: Sequence[int] = (1, 5, 10)) -> dict:
    """CMC at each k, mAP and mINP in percent, over queries with at least one positive.

    AP of a query = mean over its positives (ascending ranks r_1 < ... < r_n) of j / r_j;
    INP = n / r_n (number of positives over the rank of the last positive).
    """
    counts = np.diff(offsets)
    valid = counts > 0
    out: dict = {}
    nvalid = int(valid.sum())
    if nvalid == 0:
        for k in topk:
            out[f"rank{k}"] = float("nan")
        out.update(mAP=float("nan"), mINP=float("nan"), num_queries=0, num_skipped=int(len(counts)))
        return out
    starts = offsets[:-1][valid]
    ends = offsets[1:][valid] - 1
    first = ranks[starts]
    last = ranks[ends]
    # position j (1-based) of each rank within its query
    qid = np.repeat(np.arange(len(counts)), counts)
    j = np.arange(len(ranks)) - offsets[qid] + 1
    prec = j / ranks
    ap = np.add.reduceat(prec, starts) / counts[valid] if len(ranks) else np.zeros(0)
    for k in topk:
        out[f"rank{k}"] = float(np.mean(first <= k) * 100.0)
    out["mAP"] = float(ap.mean() * 100.0)
    out["mINP"] = float(np.mean(counts[valid] / last) * 100.0)
    out["num_queries"] = nvalid
    out["num_skipped"] = int(len(counts) - nvalid)
    return out


def retrieval_metrics(query, query_ids, gallery, gallery_ids, query_cams=None, gallery_cams=None,
                      self_index: np.ndarray | None = None, metric: str = "euclidean",
                      topk: Sequence[int] = (1, 5, 10), max_block_bytes: int = DEFAULT_BLOCK_BYTES) -> dict:
    """Rank-k CMC, mAP, mINP (percent) with the exclusions of :func:`build_positives`."""
    q = prepare(query, metric, "query_embeddings")
    g = prepare(gallery, metric, "gallery_embeddings")
    if len(query_ids) != len(q) or len(gallery_ids) != len(g):
        raise ValueError(f"ids must match embeddings: {len(query_ids)} query ids for {len(q)} queries, "
                         f"{len(gallery_ids)} gallery ids for {len(g)} gallery entries")
    pos = build_positives(query_ids, gallery_ids, query_cams, gallery_cams, self_index)
    res = search(q, g, positives=pos, max_block_bytes=max_block_bytes)
    return summarize_ranks(res.ranks, res.offsets, topk)

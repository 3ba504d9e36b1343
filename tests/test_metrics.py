"""Distances, CMC / mAP / mINP, tie-breaking and chunking of lstc_gait.evaluation.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lstc_gait.evaluation import metrics as metrics_module
from lstc_gait.evaluation.metrics import (
    build_positives,
    pairwise_distance,
    prepare,
    retrieval_metrics,
    search,
    summarize_ranks,
)
from lstc_gait.evaluation.protocols import evaluate_retrieval


# ---------------------------------------------------------------- hand-computed cases
def test_euclidean_hand_computed_cmc_map_minp():
    # query (0,0) id A: distances 1 (B), 2 (A), 3 (A), 4 (B) -> positive ranks 2, 3
    # query (10,0) id B: distances 9 (B), 10.2 (A), 7 (A), 10.77 (B) -> order g2 g0 g1 g3 -> ranks 2, 4
    gallery = np.array([[1, 0], [0, 2], [3, 0], [0, -4]], dtype=np.float32)
    gids = ["B", "A", "A", "B"]
    query = np.array([[0, 0], [10, 0]], dtype=np.float32)
    out = evaluate_retrieval(query, ["A", "B"], gallery, gids)
    ap = ((1 / 2 + 2 / 3) / 2 + (1 / 2 + 2 / 4) / 2) / 2
    inp = (2 / 3 + 2 / 4) / 2
    assert out["rank1"] == pytest.approx(0.0)
    assert out["rank5"] == pytest.approx(100.0)
    assert out["rank10"] == pytest.approx(100.0)
    assert out["mAP"] == pytest.approx(100 * ap)
    assert out["mINP"] == pytest.approx(100 * inp)
    assert out["num_skipped"] == 0
    d = pairwise_distance(query, gallery).numpy()
    assert d[0] == pytest.approx([1, 2, 3, 4])
    assert d[1] == pytest.approx([9, math.sqrt(104), 7, math.sqrt(116)], rel=1e-6)


def test_cosine_hand_computed():
    # cos to q=(1,0): g0 (1,1) .707, g1 (0,1) 0, g2 (-1,0) -1, g3 (2,.1) .9988 -> order g3 g0 g1 g2
    gallery = np.array([[1, 1], [0, 1], [-1, 0], [2, 0.1]], dtype=np.float32)
    gids = ["A", "B", "A", "B"]
    out = evaluate_retrieval(np.array([[1.0, 0.0]]), ["A"], gallery, gids, metric="cosine")
    assert out["rank1"] == 0.0 and out["rank5"] == 100.0
    assert out["mAP"] == pytest.approx(100 * (1 / 2 + 2 / 4) / 2)
    assert out["mINP"] == pytest.approx(100 * 2 / 4)
    d = pairwise_distance(np.array([[1.0, 0.0]]), gallery, metric="cosine").numpy()[0]
    assert d == pytest.approx([1 - 1 / math.sqrt(2), 1, 2, 1 - 2 / math.sqrt(4.01)], abs=1e-6)
    # Euclidean ranks differently here: g0 (1.0), g3 (1.005), g1 (1.41), g2 (2) -> ranks 1, 4
    out_e = evaluate_retrieval(np.array([[1.0, 0.0]]), ["A"], gallery, gids)
    assert out_e["rank1"] == 100.0 and out_e["mAP"] == pytest.approx(100 * (1 + 2 / 4) / 2)


def test_partwise_distance_is_mean_of_part_distances():
    x = np.zeros((1, 2, 2), dtype=np.float32)  # (N, C, P)
    y = np.zeros((1, 2, 2), dtype=np.float32)
    y[0, :, 0] = [3, 4]  # part 0 distance 5
    y[0, :, 1] = [1, 0]  # part 1 distance 1
    assert pairwise_distance(x, y).item() == pytest.approx(3.0)  # not sqrt(26) of the flattened vectors
    assert pairwise_distance(x.reshape(1, 4), y.reshape(1, 4)).item() == pytest.approx(math.sqrt(26))
    # cosine per part: part 0 cos 1, part 1 cos 0 -> mean cos 0.5 -> distance 0.5
    a = np.array([[[1.0, 1.0], [0.0, 0.0]]])  # part0 (1,0), part1 (1,0)
    b = np.array([[[2.0, 0.0], [0.0, 3.0]]])  # part0 (2,0), part1 (0,3)
    assert pairwise_distance(a, b, metric="cosine").item() == pytest.approx(0.5)


def test_partwise_changes_the_nearest_neighbour():
    # flattened: g0 is nearer (sqrt 26 ~ 5.10 vs sqrt 27 ~ 5.20); part-wise: g1 (mean 2.6 vs 3)
    q = np.zeros((1, 2, 2), dtype=np.float32)
    g = np.zeros((2, 2, 2), dtype=np.float32)
    g[0, :, 0] = [3, 4]
    g[0, :, 1] = [1, 0]
    g[1, :, 0] = [3, 3 * math.sqrt(2)]  # 5.196
    g[1, :, 1] = [0, 0]
    g[1, 0, 1] = 0.0
    dp = pairwise_distance(q, g).numpy()[0]
    df = pairwise_distance(q.reshape(1, -1), g.reshape(2, -1)).numpy()[0]
    assert df[0] < df[1] and dp[1] < dp[0]
    res = search(prepare(q), prepare(g), gallery_groups=np.zeros(2, np.int64), num_groups=1)
    assert res.nearest[0, 0] == 1


def test_summarize_ranks_skips_queries_without_positives():
    ranks = np.array([1, 3, 2])  # q0: ranks 1, 3; q1: none; q2: rank 2
    offsets = np.array([0, 2, 2, 3])
    out = summarize_ranks(ranks, offsets, topk=(1, 2))
    assert out["num_skipped"] == 1 and out["num_queries"] == 2
    assert out["rank1"] == pytest.approx(50.0) and out["rank2"] == pytest.approx(100.0)
    assert out["mAP"] == pytest.approx(100 * ((1 + 2 / 3) / 2 + 1 / 2) / 2)
    assert out["mINP"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    empty = summarize_ranks(np.zeros(0, np.int64), np.array([0, 0]))
    assert empty["num_skipped"] == 1 and math.isnan(empty["mAP"])


# ---------------------------------------------------------------- ties and chunking
def test_exact_ties_lowest_gallery_index_wins():
    q = np.array([[0.0, 0.0]])
    g = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])  # g0 and g1 tie at distance 1
    # positive second among the tie -> rank 2; first -> rank 1
    assert evaluate_retrieval(q, ["a"], g, ["b", "a", "c"])["rank1"] == 0.0
    assert evaluate_retrieval(q, ["a"], g, ["a", "b", "c"])["rank1"] == 100.0
    res = search(prepare(q), prepare(g), gallery_groups=np.zeros(3, np.int64), num_groups=1)
    assert res.nearest[0, 0] == 0


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_ties_identical_across_chunk_sizes_and_modes(metric, monkeypatch):
    rng = np.random.default_rng(3)
    # small integer vectors: many exact duplicates and exactly equal distances
    g = rng.integers(-1, 2, size=(60, 3)).astype(np.float32)
    q = rng.integers(-1, 2, size=(100, 3)).astype(np.float32)
    g[np.abs(g).sum(1) == 0, 0] = 1  # no zero vectors (cosine undefined)
    q[np.abs(q).sum(1) == 0, 1] = 1
    q[:5] = g[:5]  # some zero distances too
    gids = rng.integers(0, 6, size=60)
    qids = rng.integers(0, 6, size=100)
    groups = rng.integers(0, 3, size=60)
    qgroups = rng.integers(0, 3, size=100)
    pos = build_positives(qids, gids)
    results = []
    for block in (1, 4 * 60 * 64, 2**30):  # chunks of 32, 64 and all rows
        r = search(prepare(q, metric), prepare(g, metric), gallery_groups=groups, num_groups=3,
                   positives=pos, max_block_bytes=block)
        results.append(r)
        # skipping the query's own group (a smaller gallery matrix) leaves the other groups unchanged
        skip = search(prepare(q, metric), prepare(g, metric), gallery_groups=groups, num_groups=3,
                      query_groups=qgroups, skip_same_group=True, max_block_bytes=block)
        own = qgroups[:, None] == np.arange(3)[None, :]
        assert (skip.nearest[own] == -1).all()
        np.testing.assert_array_equal(skip.nearest[~own], r.nearest[~own])
    # rank counting in small candidate groups (one row at a time) gives the same ranks
    monkeypatch.setattr(metrics_module, "_CANDIDATE_BUDGET", 3)
    results.append(search(prepare(q, metric), prepare(g, metric), gallery_groups=groups, num_groups=3,
                          positives=pos))
    for r in results[1:]:
        np.testing.assert_array_equal(r.nearest, results[0].nearest)
        np.testing.assert_array_equal(r.ranks, results[0].ranks)
        np.testing.assert_array_equal(r.offsets, results[0].offsets)
    # reference: lowest index among exact ties (integer data -> exact float arithmetic)
    d = _ref_dist(q.astype(np.float64), g.astype(np.float64), metric)
    for i in range(len(q)):
        for h in range(3):
            members = [j for j in range(60) if groups[j] == h]
            best = min(members, key=lambda j: (round(d[i][j], 9), j))
            assert results[0].nearest[i, h] == best
    # rank-1 of retrieval agrees with the nearest-neighbour search (one group = whole gallery)
    one = search(prepare(q, metric), prepare(g, metric), gallery_groups=np.zeros(60, np.int64), num_groups=1,
                 positives=pos)
    key = pairwise_distance(q, g, metric).numpy()
    np.testing.assert_array_equal(one.nearest[:, 0], key.argmin(axis=1))
    for i in range(len(q)):
        first = one.ranks[one.offsets[i]] if one.offsets[i + 1] > one.offsets[i] else None
        if first is not None:
            assert (first == 1) == (gids[one.nearest[i, 0]] == qids[i])


# ---------------------------------------------------------------- slow reference on random data
def _ref_dist(q, g, metric, parts=False):
    out = []
    for a in q:
        row = []
        for b in g:
            if parts:
                vals = []
                for p in range(a.shape[1]):
                    if metric == "euclidean":
                        vals.append(math.sqrt(sum((a[c, p] - b[c, p]) ** 2 for c in range(a.shape[0]))))
                    else:
                        na = math.sqrt(sum(a[c, p] ** 2 for c in range(a.shape[0])))
                        nb = math.sqrt(sum(b[c, p] ** 2 for c in range(a.shape[0])))
                        vals.append(1 - sum(a[c, p] * b[c, p] for c in range(a.shape[0])) / (na * nb))
                row.append(sum(vals) / len(vals))
            elif metric == "euclidean":
                row.append(math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b))))
            else:
                na = math.sqrt(sum(x * x for x in a))
                nb = math.sqrt(sum(y * y for y in b))
                row.append(1 - sum(x * y for x, y in zip(a, b)) / (na * nb))
        out.append(row)
    return out


def _ref_retrieval(q, qids, g, gids, qcams, gcams, metric, parts=False, exclude_self=False):
    d = _ref_dist(q, g, metric, parts)
    r1 = r5 = r10 = 0
    aps, inps, skipped = [], [], 0
    for i in range(len(q)):
        keep = [j for j in range(len(g))
                if not (qcams is not None and gids[j] == qids[i] and gcams[j] == qcams[i])
                and not (exclude_self and j == i)]
        order = sorted(keep, key=lambda j: (d[i][j], j))
        hits = [k + 1 for k, j in enumerate(order) if gids[j] == qids[i]]
        if not hits:
            skipped += 1
            continue
        r1 += hits[0] <= 1
        r5 += hits[0] <= 5
        r10 += hits[0] <= 10
        aps.append(sum((n + 1) / r for n, r in enumerate(hits)) / len(hits))
        inps.append(len(hits) / hits[-1])
    n = len(aps)
    return {"rank1": 100 * r1 / n, "rank5": 100 * r5 / n, "rank10": 100 * r10 / n,
            "mAP": 100 * sum(aps) / n, "mINP": 100 * sum(inps) / n, "num_skipped": skipped}


@pytest.mark.parametrize("metric,parts", [("euclidean", False), ("cosine", False), ("euclidean", True),
                                          ("cosine", True)])
def test_retrieval_matches_slow_reference(metric, parts):
    rng = np.random.default_rng(11)
    shape = (6, 3) if parts else (8,)
    q = rng.standard_normal((30, *shape))
    g = rng.standard_normal((70, *shape))
    qids = rng.integers(0, 16, size=30).astype(str)  # ids 12..15 have no gallery entry
    gids = rng.integers(0, 12, size=70).astype(str)
    qcams = rng.integers(0, 3, size=30).astype(str)
    gcams = rng.integers(0, 3, size=70).astype(str)
    got = evaluate_retrieval(q.astype(np.float32), qids, g.astype(np.float32), gids, qcams, gcams, metric=metric)
    ref = _ref_retrieval(q, qids, g, gids, qcams, gcams, metric, parts)
    assert ref["num_skipped"] > 0  # the case exercises skipping
    assert got["num_skipped"] == ref["num_skipped"]
    for k in ("rank1", "rank5", "rank10", "mAP", "mINP"):
        assert got[k] == pytest.approx(ref[k], abs=1e-3), k


def test_self_exclusion_same_object_and_explicit():
    x = np.array([[0.0], [3.0], [1.0], [2.5]])
    ids = ["a", "a", "b", "b"]
    # query 0: others at 1 (b), 2.5 (b), 3 (a) -> rank 3; query 1: 0.5 (b), 2 (b), 3 (a) -> rank 3
    # query 2: 1 (a), 1.5 (b) -> rank 2; query 3: 0.5 (a), 1.5 (b) -> rank 2
    expected = 100 * (1 / 3 + 1 / 3 + 1 / 2 + 1 / 2) / 4
    assert evaluate_retrieval(x, ids, x, ids)["mAP"] == pytest.approx(expected)
    t = torch.as_tensor(x)
    assert evaluate_retrieval(t, ids, t, ids)["mAP"] == pytest.approx(expected)
    assert evaluate_retrieval(x, ids, x.copy(), ids, exclude_self=True)["mAP"] == pytest.approx(expected)
    # a copy is a different gallery: the query finds itself at distance 0
    assert evaluate_retrieval(x, ids, x.copy(), ids)["rank1"] == 100.0
    ref = _ref_retrieval(x, ids, x, ids, None, None, "euclidean", exclude_self=True)
    assert ref["mAP"] == pytest.approx(expected)


def test_retrieval_cams_and_skipped_queries():
    g = np.array([[0.0], [1.0], [0.5]])
    gids, gcams = ["A", "A", "B"], ["c1", "c2", "c1"]
    q = np.array([[0.1], [0.4], [9.0]])
    qids, qcams = ["A", "B", "C"], ["c1", "c1", "c1"]
    out = evaluate_retrieval(q, qids, g, gids, qcams, gcams)
    # A/c1: its gallery twin at c1 is ignored; left: B (0.4), A/c2 (0.9) -> rank 2. B/c1: only positive
    # is same cam -> skipped; C: no positive -> skipped
    assert out["num_skipped"] == 2
    assert out["rank1"] == 0.0 and out["rank5"] == 100.0
    assert out["mAP"] == pytest.approx(50.0) and out["mINP"] == pytest.approx(50.0)
    assert retrieval_metrics(q, qids, g, gids)["num_skipped"] == 1


def test_inputs_validated_and_half_precision_upcast():
    with pytest.raises(ValueError, match="metric"):
        pairwise_distance(np.zeros((2, 3)), np.zeros((2, 3)), metric="manhattan")
    with pytest.raises(ValueError, match="NaN"):
        pairwise_distance(np.full((2, 3), np.nan), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        pairwise_distance(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="ids must match"):
        retrieval_metrics(np.zeros((2, 3)), ["a"], np.zeros((2, 3)), ["a", "b"])
    h = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float16)
    d = pairwise_distance(h, h)
    assert d.dtype == torch.float32
    assert d[0, 1].item() == pytest.approx(math.sqrt(8))
    assert pairwise_distance(h.double(), h.double()).dtype == torch.float64


@pytest.mark.parametrize("parts", [0, 3])
def test_nearly_collapsed_embeddings_rank_as_in_float64(parts):
    """A large common offset with tiny differences (an untrained model) ranks exactly as float64 does."""
    from lstc_gait.evaluation.metrics import pairwise_distance as pd

    rng = np.random.default_rng(3)
    shape = (40, 16) if not parts else (40, 16, parts)
    base = 100.0 + rng.normal(size=shape[1:])
    x32 = (base[None] + 1e-3 * rng.normal(size=shape)).astype(np.float32)
    q32, g32 = x32[:10], x32[10:]
    exact = pd(q32.astype(np.float64), g32.astype(np.float64), "euclidean").numpy()  # same inputs, float64
    got = pd(q32, g32, "euclidean").numpy()
    np.testing.assert_array_equal(np.argmin(got, axis=1), np.argmin(exact, axis=1))
    np.testing.assert_allclose(got, exact, rtol=2e-2)

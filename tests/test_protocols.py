"""CASIA-B / OU-MVLP / retrieval protocols, cross-view matrices and embedding extraction."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lstc_gait.evaluation import (
    ProtocolError,
    check_protocol_data,
    crossview_matrix,
    evaluate_casia_b,
    evaluate_ou_mvlp,
    extract_embeddings,
    protocol_metrics,
)
from lstc_gait.evaluation.embed import length_sorted_batches

VIEWS4 = ["000", "018", "036", "054"]
TYPES = ["nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02"]


def _casia_case(num_subjects: int = 5):
    """Embeddings whose every cell is known.

    dims: one-hot subject (S) + one-hot (view, subject) key (V*S). Gallery / NM / normal probes:
    e_s + k(v, s). BG probes: 0.4 e_s + k(v, s+1): at the same view the key matches subject s+1
    (wrong, 0 %), at any other view subject s is nearest (100 %) -> the identical-view exclusion
    decides BG between 100 and 75. CL probes of view 018: e_{s+1} + k(018, s+1): wrong at every
    view -> CL 018 = 0.
    """
    S, V = num_subjects, len(VIEWS4)
    dim = S + V * S
    emb, subj, types, views = [], [], [], []

    def vec(s_weight, s, key_view, key_subject):
        x = np.zeros(dim)
        x[s] = s_weight
        x[S + key_view * S + key_subject] = 1.0
        return x

    for s in range(S):
        for t in TYPES:
            for vi, v in enumerate(VIEWS4):
                if t.startswith("bg"):
                    x = vec(0.4, s, vi, (s + 1) % S)
                elif t.startswith("cl") and v == "018":
                    x = vec(1.0, (s + 1) % S, vi, (s + 1) % S)
                else:
                    x = vec(1.0, s, vi, s)
                emb.append(x)
                subj.append(f"{s + 75:03d}")
                types.append(t)
                views.append(v)
    return np.array(emb, dtype=np.float32), np.array(subj), np.array(types), np.array(views)


def test_casia_b_known_cells_and_identical_view_exclusion():
    emb, subj, types, views = _casia_case()
    df = evaluate_casia_b(emb, subj, types, views)
    assert list(df.index) == ["NM", "BG", "CL"]
    assert list(df.columns) == VIEWS4 + ["mean"]
    np.testing.assert_allclose(df.loc["NM"].to_numpy(), 100.0)
    np.testing.assert_allclose(df.loc["BG"].to_numpy(), 100.0)  # would be 75 with the diagonal
    np.testing.assert_allclose(df.loc["CL"].to_numpy(), [100, 0, 100, 100, 75])
    # the full matrix shows the identical-view failure of BG
    tables, metrics = protocol_metrics("casia_b", emb, subj, types, views, "euclidean")
    bg = tables["crossview_BG"]
    assert list(bg.index) == VIEWS4 and list(bg.columns) == VIEWS4
    np.testing.assert_allclose(np.diag(bg.to_numpy()), 0.0)
    np.testing.assert_allclose(bg.to_numpy()[~np.eye(4, dtype=bool)], 100.0)
    assert metrics["NM/rank1"] == 100.0 and metrics["BG/rank1"] == 100.0 and metrics["CL/rank1"] == 75.0
    pd.testing.assert_frame_equal(tables["rank1"], df)
    for key in ("mAP", "mINP", "rank5", "rank10", "NM/mAP", "CL/mINP", "num_skipped"):
        assert key in metrics and math.isfinite(metrics[key])
    assert metrics["NM/mAP"] == pytest.approx(100.0)
    # the fused retrieval pass equals evaluate_retrieval (probes vs gallery, cams = views), exact
    # ties across views included (this case is full of them)
    from lstc_gait.evaluation import evaluate_retrieval

    probes = np.isin(types, ["nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02"])
    gal = np.isin(types, ["nm-01", "nm-02", "nm-03", "nm-04"])
    order = np.concatenate([np.flatnonzero(np.isin(types, m)) for m in
                            (["nm-05", "nm-06"], ["bg-01", "bg-02"], ["cl-01", "cl-02"])])
    assert probes.sum() == len(order)
    ref = evaluate_retrieval(emb[order], subj[order], emb[gal], subj[gal], views[order], views[gal])
    for key in ("mAP", "mINP", "rank5", "rank10"):
        assert metrics[key] == pytest.approx(ref[key], abs=1e-9), key
    # part-wise input and torch input give the same table
    parts = torch.as_tensor(emb).reshape(len(emb), -1, 1)
    pd.testing.assert_frame_equal(evaluate_casia_b(parts, subj, types, views), df)


def test_casia_b_missing_probe_view_is_nan_and_left_out():
    emb, subj, types, views = _casia_case()
    drop = (np.isin(types, ["nm-05", "nm-06"])) & (views == "036")
    df = evaluate_casia_b(emb[~drop], subj[~drop], types[~drop], views[~drop])
    assert math.isnan(df.loc["NM", "036"])
    assert df.loc["NM", "mean"] == 100.0
    # a set with no probes at all is named, never a NaN row
    keep = ~np.isin(types, ["cl-01", "cl-02"])
    with pytest.raises(ProtocolError, match="no CL probe set"):
        evaluate_casia_b(emb[keep], subj[keep], types[keep], views[keep])
    with pytest.raises(ValueError, match="gallery"):
        evaluate_casia_b(emb[types == "bg-01"], subj[types == "bg-01"], types[types == "bg-01"],
                         views[types == "bg-01"])
    with pytest.raises(ValueError, match="subjects"):
        evaluate_casia_b(emb, subj[:-1], types, views)


def _ou_case():
    """4 subjects x 3 views x seq 00/01, clean embeddings; subject 0 has no seq 01 at view 030."""
    S, V = 4, ["000", "015", "030"]
    emb, subj, types, views = [], [], [], []
    for s in range(S):
        for vi, v in enumerate(V):
            for seq in ("00", "01"):
                if s == 0 and v == "030" and seq == "01":
                    continue
                x = np.zeros(S + S * len(V))
                x[s] = 1
                x[S + vi * S + s] = 1
                emb.append(x)
                subj.append(f"{2 * s + 2:05d}")
                types.append(seq)
                views.append(v)
    return np.array(emb), np.array(subj), np.array(types), np.array(views)


def test_ou_mvlp_missing_gallery_both_modes():
    emb, subj, types, views = _ou_case()
    counted = evaluate_ou_mvlp(emb, subj, types, views, count_missing=True)
    excluded = evaluate_ou_mvlp(emb, subj, types, views, count_missing=False)
    assert list(counted.index) == ["rank1"] and list(counted.columns) == ["000", "015", "030", "mean"]
    # probe views 000 / 015: gallery 030 lacks subject 0 -> 3/4 there, 100 elsewhere -> 87.5
    np.testing.assert_allclose(counted.loc["rank1"].to_numpy(), [87.5, 87.5, 100, (87.5 * 2 + 100) / 3])
    np.testing.assert_allclose(excluded.loc["rank1"].to_numpy(), 100.0)
    tables, metrics = protocol_metrics("ou_mvlp", emb, subj, types, views, "euclidean")
    assert metrics["rank1"] == pytest.approx(counted.loc["rank1", "mean"])
    assert metrics["rank1_excl_missing"] == pytest.approx(100.0)
    assert metrics["num_missing_pairs"] == 2
    pd.testing.assert_frame_equal(tables["rank1"], counted)
    pd.testing.assert_frame_equal(tables["rank1_excl_missing"], excluded)
    cv = tables["crossview"]
    assert cv.loc["000", "030"] == 75.0 and tables["crossview_excl_missing"].loc["000", "030"] == 100.0
    assert "mAP" in metrics and metrics["mAP"] == pytest.approx(100.0)
    # integer seq ids are accepted ("0" -> "00")
    alt = evaluate_ou_mvlp(emb, subj, [str(int(t)) for t in types], views)
    pd.testing.assert_frame_equal(alt, counted)


# ---------------------------------------------------------------- slow reference protocol
def _ref_crossview(emb, subj, views, pmask, gmask, count_missing):
    d = lambda a, b: math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))  # noqa: E731
    labels = sorted(set(views[pmask]) | set(views[gmask]))
    out = {}
    for p in labels:
        probes = [i for i in range(len(emb)) if pmask[i] and views[i] == p]
        for g in labels:
            gal = [j for j in range(len(emb)) if gmask[j] and views[j] == g]
            if not probes or not gal:
                continue
            hits = total = 0
            for i in probes:
                has = any(subj[j] == subj[i] for j in gal)
                if not has and not count_missing:
                    continue
                best = min(gal, key=lambda j: (d(emb[i], emb[j]), j))
                hits += subj[best] == subj[i]
                total += 1
            out[(p, g)] = 100.0 * hits / total if total else float("nan")
    return out


def _ref_row_means(cells, labels):
    res = {}
    for p in labels:
        vals = [v for (pp, g), v in cells.items() if pp == p and g != p and not math.isnan(v)]
        res[p] = sum(vals) / len(vals) if vals else float("nan")
    return res


def test_casia_b_matches_slow_reference_on_random_data():
    rng = np.random.default_rng(5)
    S, V = 6, ["000", "090", "180"]
    rows = [(s, t, v) for s in range(S) for t in TYPES for v in V]
    keep = rng.random(len(rows)) > 0.1  # some sequences missing
    rows = [r for r, k in zip(rows, keep) if k]
    centres = rng.standard_normal((S, 6))
    emb = np.array([centres[s] + 1.3 * rng.standard_normal(6) for s, _, _ in rows])
    subj = np.array([str(s) for s, _, _ in rows])
    types = np.array([t for _, t, _ in rows])
    views = np.array([v for _, _, v in rows])
    df = evaluate_casia_b(emb, subj, types, views)
    gmask = np.isin(types, ["nm-01", "nm-02", "nm-03", "nm-04"])
    for name, members in {"NM": ["nm-05", "nm-06"], "BG": ["bg-01", "bg-02"], "CL": ["cl-01", "cl-02"]}.items():
        cells = _ref_crossview(emb, subj, views, np.isin(types, members), gmask, count_missing=True)
        ref = _ref_row_means(cells, V)
        for v in V:
            assert df.loc[name, v] == pytest.approx(ref[v], abs=1e-3)
        assert df.loc[name, "mean"] == pytest.approx(np.nanmean([ref[v] for v in V]), abs=1e-3)
        matrix = crossview_matrix(emb, subj, views, np.isin(types, members), gmask)
        for (p, g), val in cells.items():
            assert matrix.loc[p, g] == pytest.approx(val, abs=1e-3)


def test_ou_mvlp_matches_slow_reference_on_random_data():
    rng = np.random.default_rng(8)
    S, V = 8, ["000", "015", "030", "045"]
    rows = [(s, q, v) for s in range(S) for q in ("00", "01") for v in V]
    rows = [r for r in rows if rng.random() > 0.2]
    centres = rng.standard_normal((S, 5))
    emb = np.array([centres[s] + 1.0 * rng.standard_normal(5) for s, _, _ in rows], dtype=np.float32)
    subj = np.array([f"{s:05d}" for s, _, _ in rows])
    types = np.array([q for _, q, _ in rows])
    views = np.array([v for _, _, v in rows])
    for count_missing in (True, False):
        df = evaluate_ou_mvlp(emb, subj, types, views, count_missing=count_missing)
        cells = _ref_crossview(emb.astype(np.float64), subj, views, types == "00", types == "01", count_missing)
        ref = _ref_row_means(cells, sorted(set(views[types == "00"])))
        for v, val in ref.items():
            assert df.loc["rank1", v] == pytest.approx(val, abs=1e-3, nan_ok=True)


def test_retrieval_protocol_query_gallery_split_and_all_vs_all():
    emb = np.array([[0.0], [0.2], [5.0], [5.3], [0.1], [5.1]])
    subj = ["a", "a", "b", "b", "a", "b"]
    types = ["gallery", "gallery", "gallery", "gallery", "query", "query"]
    cams = ["c1", "c2", "c1", "c2", "c1", "c1"]
    tables, metrics = protocol_metrics("retrieval", emb, subj, types, cams)
    # query a/c1 at 0.1: a/c1 ignored (same cam), a/c2 at 0.1 -> rank 1; b/c1 at 5.1: b/c2 rank 1
    assert metrics["rank1"] == 100.0 and metrics["mAP"] == 100.0 and metrics["num_skipped"] == 0
    assert list(tables["retrieval"].columns) == ["rank1", "rank5", "rank10", "mAP", "mINP", "num_skipped"]
    _, one_cam = protocol_metrics("retrieval", emb, subj, ["seq"] * 6, ["c"] * 6)
    assert one_cam["num_skipped"] == 0  # one cam: same-cam positives are kept (exclude_same_view=auto)
    with pytest.raises(ProtocolError, match="exclude_same_view"):  # excluded: nothing left to measure, never NaN
        protocol_metrics("retrieval", emb, subj, ["seq"] * 6, ["c"] * 6, same_view="true")
    _, no_cams = protocol_metrics("retrieval", emb, subj, ["seq"] * 6, None)
    assert no_cams["rank1"] == 100.0 and no_cams["num_skipped"] == 0
    with pytest.raises(ValueError, match="protocol"):
        protocol_metrics("gait3d", emb, subj, types, cams)


def _one_camera_case():
    """Two subjects x 3 walks, one camera, 1-D embeddings whose all-vs-all rank-1 is known by hand:
    a0 -> a1 hit, a1 -> a0 hit, a2 -> b0 miss, b0 -> a2 miss, b1 -> b2 hit, b2 -> b1 hit: 4/6."""
    emb = np.array([[0.0], [1.0], [10.0], [10.5], [20.0], [21.0]])
    subj = np.array(["a", "a", "a", "b", "b", "b"])
    return emb, subj, np.array(["walk1", "walk2", "walk3"] * 2), np.array(["000"] * 6)


def test_one_camera_retrieval_keeps_same_view_positives_and_the_setting_decides():
    emb, subj, types, views = _one_camera_case()
    for setting in ("auto", "false", False):
        tables, metrics = protocol_metrics("retrieval", emb, subj, types, views, same_view=setting)
        assert metrics["rank1"] == pytest.approx(100 * 4 / 6) and metrics["num_skipped"] == 0
        assert np.isfinite(tables["retrieval"].to_numpy(dtype=float)).all()
    for setting in ("true", True):
        with pytest.raises(ProtocolError, match="none of the 6 queries.*exclude_same_view"):
            protocol_metrics("retrieval", emb, subj, types, views, same_view=setting)
    with pytest.raises(ProtocolError, match="exclude_same_view='sometimes'"):
        protocol_metrics("retrieval", emb, subj, types, views, same_view="sometimes")
    # two cameras: auto excludes the query's subject at the query's own camera (ReID convention), so
    # subject a, seen by camera c1 only, has no positive left and its queries are skipped
    two = np.array(["c1", "c1", "c1", "c1", "c2", "c2"])
    _, excluded = protocol_metrics("retrieval", emb, subj, types, two)
    _, kept = protocol_metrics("retrieval", emb, subj, types, two, same_view="false")
    assert excluded["num_skipped"] == 3 and kept["num_skipped"] == 0
    assert kept["rank1"] == pytest.approx(100 * 4 / 6)


def test_protocol_sets_are_checked_from_labels_naming_what_is_missing():
    _, subj, types, views = _casia_case()
    check_protocol_data("casia_b", subj, types, views)  # complete: nothing raised
    keep = ~np.isin(types, ["bg-01", "bg-02", "nm-01", "nm-02", "nm-03", "nm-04"])
    with pytest.raises(ProtocolError, match=r"no gallery \(nm-01.*and no BG probe set \(bg-01/bg-02\)"):
        check_protocol_data("casia_b", subj[keep], types[keep], views[keep])
    one_view = views == "018"
    with pytest.raises(ProtocolError, match="only view '018'.*retrieval"):
        check_protocol_data("casia_b", subj[one_view], types[one_view], views[one_view])
    with pytest.raises(ProtocolError, match="only view '018'"):  # the protocol itself says so too, never NaN
        evaluate_casia_b(np.zeros((one_view.sum(), 2)), subj[one_view], types[one_view], views[one_view])
    _, osubj, otypes, oviews = _ou_case()
    check_protocol_data("ou_mvlp", osubj, otypes, oviews)
    with pytest.raises(ProtocolError, match=r"no gallery \(seq 01\)"):
        check_protocol_data("ou_mvlp", osubj[otypes == "00"], otypes[otypes == "00"], oviews[otypes == "00"])
    emb, rsubj, rtypes, rviews = _one_camera_case()
    check_protocol_data("retrieval", rsubj, rtypes, rviews)
    with pytest.raises(ProtocolError, match="none of the 6 queries"):
        check_protocol_data("retrieval", rsubj, rtypes, rviews, same_view="true")
    with pytest.raises(ProtocolError, match="none of the 2 queries"):  # one sequence per subject
        check_protocol_data("retrieval", ["a", "b"], ["s", "s"], ["0", "0"])
    with pytest.raises(ProtocolError, match="no sequence"):
        check_protocol_data("retrieval", [], [], [])


def test_a_table_where_every_query_was_skipped_is_an_error_in_every_protocol():
    from lstc_gait.evaluation import evaluate_retrieval

    with pytest.raises(ProtocolError, match="none of the 2 queries"):
        evaluate_retrieval(np.zeros((2, 1)), ["a", "b"], np.ones((2, 1)), ["c", "d"])
    # OU-MVLP without missing views counted: no probe's subject is in the gallery -> every probe skipped
    emb, subj, types, views = _ou_case()
    gallery_subjects = np.where(types == "01", np.char.add("g", subj), subj)
    assert np.isfinite(evaluate_ou_mvlp(emb, gallery_subjects, types, views).loc["rank1", "mean"])
    with pytest.raises(ProtocolError, match="every probe of rank1 was skipped"):
        evaluate_ou_mvlp(emb, gallery_subjects, types, views, count_missing=False)
    with pytest.raises(ProtocolError, match="every probe"):
        protocol_metrics("ou_mvlp", emb, gallery_subjects, types, views)


# ---------------------------------------------------------------- extract_embeddings
class _FakeDataset(torch.utils.data.Dataset):
    """Sequence i: T_i frames of constant value (i + 1); lengths known without loading."""

    def __init__(self, lengths):
        self.lengths = np.asarray(lengths)

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, i):
        return torch.full((int(self.lengths[i]), 4, 3), i + 1, dtype=torch.uint8), i


def _collate(batch):
    lengths = torch.tensor([x.shape[0] for x, _ in batch])
    out = torch.zeros((len(batch), int(lengths.max()), 4, 3), dtype=torch.uint8)
    for k, (x, _) in enumerate(batch):
        out[k, : len(x)] = x
    return out, lengths, torch.tensor([p for _, p in batch])


class _MeanModel(torch.nn.Module):
    """embedding = [mean over valid frames of the pixel value, length]: padding must be ignored."""

    def forward(self, x, lengths=None):
        assert x.ndim == 5 and x.shape[1] == 1 and x.dtype == torch.float32 and float(x.max()) <= 1.0
        t = torch.arange(x.shape[2])[None, :] < lengths[:, None]
        s = (x.mean(dim=(1, 3, 4)) * t).sum(1) / lengths
        return {"embedding": torch.stack([s * 255, lengths.float()], 1)}


def test_extract_embeddings_order_padding_and_batch_size():
    lengths = [5, 1, 9, 3, 9, 2, 7]
    ds = _FakeDataset(lengths)
    model = _MeanModel().train()
    expected = np.stack([np.arange(1, 8), lengths], 1).astype(np.float32)
    for bs in (1, 3, 16):
        out = extract_embeddings(model, ds, batch_size=bs, progress=False, collate_fn=_collate)
        assert out.dtype == np.float32 and out.shape == (7, 2)
        np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert model.training  # mode restored
    bf16 = extract_embeddings(model, ds, batch_size=4, amp="bf16", progress=False, collate_fn=_collate)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, expected, rtol=2e-2)
    batches = length_sorted_batches(np.array(lengths), 7, 3)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert [lengths[i] for i in batches[0]] == [9, 9, 7]
    with pytest.raises(ValueError, match="amp"):
        extract_embeddings(model, ds, amp="int8", progress=False, collate_fn=_collate)


def test_extract_embeddings_with_project_dataset_and_collate():
    datasets = pytest.importorskip("lstc_gait.data.datasets")

    class _Cache:
        index = pd.DataFrame({"num_frames": [4, 6, 2]})

        def frames(self, i):
            return np.full((int(self.index.num_frames[i]), 64, 64), 10 * (i + 1), dtype=np.uint8)

        def __len__(self):
            return 3

    try:
        ds = datasets.TestSequenceDataset(_Cache(), [2, 0, 1], width=44, max_frames=5)
    except Exception as exc:  # the data room's dataset may check a real cache type
        pytest.skip(f"TestSequenceDataset needs a real cache here: {exc}")
    out = extract_embeddings(_MeanModel(), ds, batch_size=2, progress=False)
    np.testing.assert_allclose(out, [[30, 2], [10, 4], [20, 5]], rtol=1e-5)

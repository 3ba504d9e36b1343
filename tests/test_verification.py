"""Verification metrics (ROC, EER, TAR@FAR, threshold at a target FAR) on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from lstc_gait.evaluation.verification import (
    equal_error_rate,
    plot_roc,
    roc_curve,
    split_pairs,
    tar_at_far,
    threshold_at_far,
    verification_metrics,
)

GENUINE = [0.1, 0.4]
IMPOSTOR = [0.3, 0.5, 0.6, 0.9]


def test_roc_hand_computed():
    roc = roc_curve(GENUINE, IMPOSTOR)
    # thresholds 0.1 0.3 0.4 0.5 0.6 0.9 (accept when distance <= t), after the (0, 0) start
    np.testing.assert_allclose(roc.far, [0, 0, 0.25, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(roc.tar, [0, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0])
    assert (roc.genuine, roc.impostor) == (2, 4)
    assert tar_at_far(roc, 0.01) == 0.5 and tar_at_far(roc, 0.25) == 1.0
    # FRR 0.5 -> 0 while FAR stays 0.25: the curves cross at 0.25
    assert equal_error_rate(roc) == pytest.approx(0.25)


def test_eer_interpolates_and_perfect_separation():
    roc = roc_curve([0.1, 0.2], [0.5, 0.6])
    assert equal_error_rate(roc) == 0.0 and tar_at_far(roc, 1e-3) == 1.0
    # one genuine above one impostor: FAR 0 -> 0.5 while FRR 0.5 -> 0.5 ... crossing at 0.5
    roc = roc_curve([0.1, 0.7], [0.5, 0.9])
    np.testing.assert_allclose(roc.far, [0, 0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(roc.tar, [0, 0.5, 0.5, 1.0, 1.0])
    assert equal_error_rate(roc) == pytest.approx(0.5)


def test_threshold_at_far_hand_computed():
    rec = threshold_at_far(GENUINE, IMPOSTOR, far=0.25)  # one of 4 impostors allowed: between 0.3 and 0.5
    assert rec["value"] == pytest.approx(0.4) and rec["far_achieved"] == 0.25 and rec["tar"] == 1.0
    rec = threshold_at_far(GENUINE, IMPOSTOR, far=0.01)  # none allowed: between genuine 0.1 and impostor 0.3
    assert rec["value"] == pytest.approx(0.2) and rec["far_achieved"] == 0.0 and rec["tar"] == 0.5
    assert rec["genuine_pairs"] == 2 and rec["impostor_pairs"] == 4 and rec["eer"] == pytest.approx(0.25)
    rec = threshold_at_far([], [0.3, 0.3], far=0.01)  # ties: strictly below the first impostor
    assert rec["value"] < 0.3 and rec["tar"] is None
    with pytest.raises(ValueError, match="impostor"):
        threshold_at_far([0.1], [], 0.01)


def test_metrics_from_distance_matrix_and_masks(tmp_path):
    d = np.array([[0.1, 0.3, 0.5], [0.6, 0.4, 0.9], [0.0, 0.2, 0.7]])
    same = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 1]], bool)
    valid = np.ones_like(same)
    valid[2] = False  # a row of self-pairs, say
    g, i = split_pairs(d, same, valid)
    np.testing.assert_allclose(sorted(g), GENUINE)
    np.testing.assert_allclose(sorted(i), IMPOSTOR)
    m = verification_metrics(d, same, valid)
    assert m["eer"] == pytest.approx(0.25) and m["tar_far_0.01"] == 0.5 and m["tar_far_0.001"] == 0.5
    assert m["genuine_pairs"] == 2 and m["impostor_pairs"] == 4
    with pytest.raises(ValueError, match="shape"):
        split_pairs(d, same[:2])
    plot_roc({"hand": roc_curve(GENUINE, IMPOSTOR)}, tmp_path / "roc.png")
    assert (tmp_path / "roc.png").stat().st_size > 1000


def test_protocol_verification_casia_pairs_and_evaluator_roc(tmp_path):
    from lstc_gait.evaluation.evaluator import Evaluator
    from lstc_gait.evaluation.verification import protocol_verification

    rng = np.random.default_rng(0)
    subjects, types, views, emb = [], [], [], []
    for s in range(4):
        centre = rng.normal(0, 1, 8) * 10
        for t in ("nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02"):
            for v in ("000", "090"):
                subjects.append(f"{s:03d}")
                types.append(t)
                views.append(v)
                emb.append(centre + rng.normal(0, 0.1, 8))
    m, roc = protocol_verification("casia_b", np.asarray(emb), subjects, types, views)
    # probes 6 types x 2 views x 4 subjects, gallery 4 x 2 x 4; other-view pairs only
    assert roc.genuine == 48 * 4 and roc.impostor == 48 * 12
    assert m["verify/eer"] == 0.0 and m["verify/tar_far_0.01"] == 1.0
    ev = Evaluator("casia_b", show=False)
    res = ev.evaluate_embeddings(np.asarray(emb, np.float32), subjects, types, views, "ckpt", "test",
                                 out_dirs=[tmp_path])
    assert res.metrics["verify/eer"] == 0.0 and (tmp_path / "roc.png").stat().st_size > 1000

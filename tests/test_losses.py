"""Losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from lstc_gait.engine.losses import BatchHardTripletLoss, GaitLoss, pairwise_distance


def test_batch_hard_triplet_hand_computed():
    # 1-D embeddings 0, 1 (id 0) and 3, 7 (id 1), margin 0.5:
    # anchor 0: hardest pos 1, hardest neg 3 -> relu(1 - 3 + .5) = 0
    # anchor 1: pos 1, neg |1-3| = 2 -> 0;  anchor 3: pos 4, neg |3-1| = 2 -> 2.5;  anchor 7: pos 4, neg 6 -> 0
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    y = torch.tensor([0, 0, 1, 1])
    loss = BatchHardTripletLoss(margin=0.5)(x, y)
    assert loss.item() == pytest.approx(2.5 / 4)
    sq = BatchHardTripletLoss(margin=0.5, distance="sqeuclidean")(x, y)
    # squared: anchor 3 -> relu(16 - 4 + .5) = 12.5; anchor 0: relu(1 - 9 + .5) = 0; anchor 1: relu(1-4+.5)=0
    assert sq.item() == pytest.approx(12.5 / 4)


def test_triplet_skips_anchors_without_positive_and_backprops_at_zero_distance():
    x = torch.tensor([[0.0], [1.0], [3.0]])
    y = torch.tensor([0, 0, 1])  # the id-1 anchor has no positive: left out
    # anchor 0: relu(1 - 3 + 2.5) = 0.5; anchor 1: relu(1 - 2 + 2.5) = 1.5; mean 1.0
    assert BatchHardTripletLoss(margin=2.5)(x, y).item() == pytest.approx(1.0)
    same = torch.zeros(4, 3, requires_grad=True)
    loss = BatchHardTripletLoss(margin=0.2)(same, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert loss.item() == pytest.approx(0.2) and torch.isfinite(same.grad).all()
    lone = torch.randn(3, 2, requires_grad=True)
    zero = BatchHardTripletLoss()(lone, torch.tensor([0, 1, 2]))
    zero.backward()
    assert zero.item() == 0.0 and lone.grad is not None


def test_pairwise_distance_kinds():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(pairwise_distance(a, b), torch.tensor([[5.0, math.sqrt(13)], [1.0, math.sqrt(5)]]))
    assert torch.allclose(pairwise_distance(a, b, "sqeuclidean"), torch.tensor([[25.0, 13.0], [1.0, 5.0]]))
    cos = pairwise_distance(a, torch.tensor([[1.0, 0.0]]), "cosine")
    assert torch.allclose(cos, torch.tensor([[1 - 0.6], [0.0]]), atol=1e-6)
    with pytest.raises(ValueError, match="unknown distance"):
        pairwise_distance(a, b, "manhattan")


def test_gait_loss_weighted_sum_and_label_smoothing():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1])
    emb = torch.tensor([[0.0], [1.0]])
    # CE with smoothing eps over C=2: target q = (1 - eps) one-hot + eps / 2
    eps = 0.2
    lp = torch.log_softmax(logits, 1)
    q = torch.tensor([[1 - eps / 2, eps / 2], [eps / 2, 1 - eps / 2]])
    ce_hand = -(q * lp).sum(1).mean().item()
    tri = BatchHardTripletLoss(margin=0.3)(emb, labels).item()  # no positives -> 0
    loss = GaitLoss(ce_weight=2.0, triplet_weight=3.0, label_smoothing=eps, margin=0.3)
    total, parts = loss({"logits": logits, "embedding": emb}, labels)
    assert parts["ce"].item() == pytest.approx(ce_hand, rel=1e-6)
    assert total.item() == pytest.approx(2 * ce_hand + 3 * tri, rel=1e-6)
    only_tri = GaitLoss(ce_weight=0.0, triplet_weight=1.0)
    total, parts = only_tri({"embedding": emb}, labels)  # no logits needed
    assert set(parts) == {"triplet"}


def test_gait_loss_rejects_bad_settings():
    with pytest.raises(ValueError, match="ce_weight"):
        GaitLoss(ce_weight=0.0, triplet_weight=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        GaitLoss(label_smoothing=1.0)
    with pytest.raises(ValueError, match="loss.distance"):
        GaitLoss(distance="l1")
    with pytest.raises(ValueError, match="classifier"):
        GaitLoss(ce_weight=1.0)({"embedding": torch.zeros(2, 3)}, torch.tensor([0, 1]))

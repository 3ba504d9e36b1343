"""Training losses: cross-entropy with label smoothing, batch-hard triplet, and their weighted sum."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DISTANCES = ("euclidean", "sqeuclidean", "cosine")


def pairwise_distance(x: Tensor, y: Tensor, kind: str = "euclidean") -> Tensor:
    """Differentiable pairwise distances for the training losses (evaluation uses
    :func:`lstc_gait.evaluation.metrics.pairwise_distance`, a bit-stable chunked search instead).

    Args:
        x: float (N, D).
        y: float (M, D).
        kind: ``euclidean``, ``sqeuclidean`` or ``cosine`` (1 - cosine similarity).

    Returns:
        float32 (N, M).

    Raises:
        ValueError: Unknown ``kind``.
    """
    x, y = x.float(), y.float()
    if kind == "cosine":
        return 1.0 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).t()
    sq = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2.0 * (x @ y.t())
    sq = sq.clamp_min(0.0)
    if kind == "sqeuclidean":
        return sq
    if kind == "euclidean":
        # The clamp keeps the gradient of sqrt finite on the diagonal (distance 0).
        return sq.clamp_min(1e-12).sqrt()
    raise ValueError(f"unknown distance {kind!r}; choose one of {', '.join(DISTANCES)}")


class BatchHardTripletLoss(nn.Module):
    """Batch-hard triplet loss (Hermans et al. 2017): for every anchor, its farthest positive and its
    nearest negative in the batch; loss = mean over anchors of relu(d_ap - d_an + margin).

    Anchors without a positive or without a negative in the batch are left out; a batch with no
    valid anchor gives a zero loss that still depends on the input (so backward works)."""

    def __init__(self, margin: float = 0.2, distance: str = "euclidean") -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"loss.distance={distance!r} is not one of: {', '.join(DISTANCES)}")
        if margin < 0:
            raise ValueError(f"loss.margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.distance = distance

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The batch-hard triplet loss (Hermans et al. 2017).

        Args:
            embeddings: float (N, D) (or (N, ...), flattened by the distance).
            labels: int64 (N,) identities.

        Returns:
            Scalar loss (zero, still differentiable, when no anchor has both a positive and a negative).
        """
        dist = pairwise_distance(embeddings, embeddings, self.distance)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos_mask = same & ~eye
        neg_mask = ~same
        valid = pos_mask.any(1) & neg_mask.any(1)
        if not bool(valid.any()):
            return embeddings.sum() * 0.0
        hardest_pos = dist.masked_fill(~pos_mask, float("-inf")).amax(1)
        hardest_neg = dist.masked_fill(~neg_mask, float("inf")).amin(1)
        losses = F.relu(hardest_pos - hardest_neg + self.margin)
        return losses[valid].mean()


class GaitLoss(nn.Module):
    """``ce_weight * CE(logits, labels; label_smoothing) + triplet_weight * batch-hard triplet(embedding)``.

    ``forward(outputs, labels)`` takes the model's output dict (``logits`` and ``embedding``) and
    returns ``(total, parts)`` where ``parts`` holds the detached terms for logging."""

    def __init__(self, ce_weight: float = 1.0, triplet_weight: float = 1.0, label_smoothing: float = 0.1,
                 margin: float = 0.2, distance: str = "euclidean") -> None:
        super().__init__()
        if ce_weight < 0 or triplet_weight < 0 or ce_weight + triplet_weight <= 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0 (loss.ce_weight={ce_weight}, "
                             f"loss.triplet_weight={triplet_weight})")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"loss.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.ce_weight = float(ce_weight)
        self.triplet_weight = float(triplet_weight)
        self.label_smoothing = float(label_smoothing)
        self.triplet = BatchHardTripletLoss(margin, distance)

    def forward(self, outputs: dict[str, Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted loss of one batch.

        Args:
            outputs: The model's dict: ``logits`` float (N, classes) (BNNeck, Luo et al. 2019) and
                ``embedding`` float (N, D).
            labels: int64 (N,) class indices.

        Returns:
            (total scalar loss, detached terms ``{"ce", "triplet"}`` for logging).

        Raises:
            ValueError: ``ce_weight > 0`` but the model has no classifier.
        """
        parts: dict[str, Tensor] = {}
        total: Tensor | None = None
        if self.ce_weight > 0:
            if "logits" not in outputs:
                raise ValueError("loss.ce_weight > 0 needs a model with a classifier (num_classes > 0)")
            ce = F.cross_entropy(outputs["logits"].float(), labels, label_smoothing=self.label_smoothing)
            parts["ce"] = ce.detach()
            total = self.ce_weight * ce
        if self.triplet_weight > 0:
            tri = self.triplet(outputs["embedding"], labels)
            parts["triplet"] = tri.detach()
            total = self.triplet_weight * tri if total is None else total + self.triplet_weight * tri
        assert total is not None
        return total, parts

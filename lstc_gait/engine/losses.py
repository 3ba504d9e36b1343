"""Training losses: cross-entropy with label smoothing, batch-hard / batch-all triplet, their weighted sum.

Embeddings may be one vector per sequence ``(N, D)`` or one per part ``(N, D, P)``; with parts,
every loss acts on each part separately and the per-part losses are averaged (as in GaitSet /
OpenGait's separate-part triplet and BNNeck losses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DISTANCES = ("euclidean", "sqeuclidean", "cosine")
MINING = ("batch_hard", "batch_all")


def pairwise_distance(x: Tensor, y: Tensor, kind: str = "euclidean") -> Tensor:
    """Differentiable distances between rows for the training losses, in float32 (evaluation uses
    :func:`lstc_gait.evaluation.metrics.pairwise_distance`, a bit-stable chunked search instead).

    Args:
        x: (N, D) or (P, N, D) (one matrix per part).
        y: (M, D) or (P, M, D).
        kind: ``euclidean``, ``sqeuclidean`` or ``cosine``.

    Returns:
        (N, M) or (P, N, M) float32 distances.

    Raises:
        ValueError: an unknown ``kind``.
    """
    x, y = x.float(), y.float()
    if kind == "cosine":
        return 1.0 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).transpose(-1, -2)
    sq = (x * x).sum(-1).unsqueeze(-1) + (y * y).sum(-1).unsqueeze(-2) - 2.0 * (x @ y.transpose(-1, -2))
    sq = sq.clamp_min(0.0)
    if kind == "sqeuclidean":
        return sq
    if kind == "euclidean":
        # The clamp keeps the gradient of sqrt finite on the diagonal (distance 0).
        return sq.clamp_min(1e-12).sqrt()
    raise ValueError(f"unknown distance {kind!r}; choose one of {', '.join(DISTANCES)}")


def _part_major(embeddings: Tensor) -> Tensor:
    """(N, D) -> (1, N, D); (N, D, P) -> (P, N, D)."""
    if embeddings.dim() == 2:
        return embeddings.unsqueeze(0)
    if embeddings.dim() == 3:
        return embeddings.permute(2, 0, 1)
    raise ValueError(f"embeddings must be (N, D) or (N, D, P), got shape {tuple(embeddings.shape)}")


class BatchHardTripletLoss(nn.Module):
    """Triplet loss with in-batch mining (Hermans, Beyer, Leibe, "In Defense of the Triplet Loss
    for Person Re-Identification", 2017).

    - ``batch_hard``: for every anchor its farthest positive and nearest negative; the loss is the
      mean over anchors of ``relu(d_ap - d_an + margin)``.
    - ``batch_all``: every (anchor, positive, negative) triplet of the batch; the loss is the sum
      of ``relu(d_ap - d_an + margin)`` divided by the number of triplets with a non-zero loss
      (Hermans et al.'s BA≠0, the averaging GaitSet uses), or by all triplets with
      ``nonzero_mean=False``.

    With part embeddings ``(N, D, P)`` the loss is computed per part and averaged over parts.
    Anchors without a positive or a negative are left out; a batch with no valid triplet gives a
    zero loss that still depends on the input (so backward works).

    Args:
        margin: the margin (>= 0).
        distance: ``euclidean`` | ``sqeuclidean`` | ``cosine``.
        mining: ``batch_hard`` | ``batch_all``.
        nonzero_mean: batch-all averages over active triplets only.

    Raises:
        ValueError: an unknown distance or mining, or a negative margin.
    """

    def __init__(self, margin: float = 0.2, distance: str = "euclidean", mining: str = "batch_hard",
                 nonzero_mean: bool = True) -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"loss.distance={distance!r} is not one of: {', '.join(DISTANCES)}")
        if mining not in MINING:
            raise ValueError(f"loss.mining={mining!r} is not one of: {', '.join(MINING)}")
        if margin < 0:
            raise ValueError(f"loss.margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.distance = distance
        self.mining = mining
        self.nonzero_mean = bool(nonzero_mean)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The loss of ``embeddings`` (N, D) or (N, D, P) float with int64 ``labels`` (N,): a scalar."""
        parts = _part_major(embeddings)
        dist = pairwise_distance(parts, parts, self.distance)  # (P, N, N)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos_mask = same & ~eye
        neg_mask = ~same
        valid = pos_mask.any(1) & neg_mask.any(1)
        if not bool(valid.any()):
            return embeddings.sum() * 0.0
        if self.mining == "batch_hard":
            hardest_pos = dist.masked_fill(~pos_mask, float("-inf")).amax(2)  # (P, N)
            hardest_neg = dist.masked_fill(~neg_mask, float("inf")).amin(2)
            losses = F.relu(hardest_pos - hardest_neg + self.margin)
            return losses[:, valid].mean()
        # batch all: (P, a, p, n) triplets
        trip = (pos_mask.unsqueeze(2) & neg_mask.unsqueeze(1)).to(dist.dtype)  # (a, p, n)
        losses = F.relu(dist.unsqueeze(3) - dist.unsqueeze(2) + self.margin) * trip
        total = losses.sum(dim=(1, 2, 3))  # (P,)
        if self.nonzero_mean:
            count = (losses > 0).sum(dim=(1, 2, 3)).clamp_min(1)
        else:
            count = trip.sum().clamp_min(1).expand_as(total)
        return (total / count).mean()


class GaitLoss(nn.Module):
    """``ce_weight * CE(logits, labels; label_smoothing) + triplet_weight * triplet(embedding)``.

    ``forward(outputs, labels)`` takes the model's output dict (``logits`` (N, K) or per-part
    (N, K, P), and ``embedding`` (N, D) or (N, D, P)) and returns ``(total, parts)`` where
    ``parts`` holds the detached terms for logging. Per-part CE is the mean over parts.

    Args:
        ce_weight: weight of the cross-entropy (needs a classifier, i.e. a BNNeck).
        triplet_weight: weight of the triplet loss.
        label_smoothing: CE label smoothing in [0, 1).
        margin: triplet margin.
        distance: triplet distance.
        mining: ``batch_hard`` or ``batch_all`` (see :class:`BatchHardTripletLoss`).
        nonzero_mean: batch-all averages over active triplets only.

    Raises:
        ValueError: negative weights, both weights zero, or a bad smoothing/margin/distance/mining.
    """

    def __init__(self, ce_weight: float = 1.0, triplet_weight: float = 1.0, label_smoothing: float = 0.1,
                 margin: float = 0.2, distance: str = "euclidean", mining: str = "batch_hard",
                 nonzero_mean: bool = True) -> None:
        super().__init__()
        if ce_weight < 0 or triplet_weight < 0 or ce_weight + triplet_weight <= 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0 (loss.ce_weight={ce_weight}, "
                             f"loss.triplet_weight={triplet_weight})")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"loss.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.ce_weight = float(ce_weight)
        self.triplet_weight = float(triplet_weight)
        self.label_smoothing = float(label_smoothing)
        self.triplet = BatchHardTripletLoss(margin, distance, mining, nonzero_mean)

    def forward(self, outputs: dict[str, Tensor], labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss (scalar) and its detached terms ``{"ce", "triplet"}``."""
        parts: dict[str, Tensor] = {}
        total: Tensor | None = None
        if self.ce_weight > 0:
            if "logits" not in outputs:
                raise ValueError("loss.ce_weight > 0 needs a model with a classifier (num_classes > 0, "
                                 "model.bnneck=true)")
            logits = outputs["logits"].float()
            target = labels if logits.dim() == 2 else labels[:, None].expand(-1, logits.shape[2])
            ce = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
            parts["ce"] = ce.detach()
            total = self.ce_weight * ce
        if self.triplet_weight > 0:
            tri = self.triplet(outputs["embedding"], labels)
            parts["triplet"] = tri.detach()
            total = self.triplet_weight * tri if total is None else total + self.triplet_weight * tri
        assert total is not None
        return total, parts

"""BNNeck classification head and ``GaitModel`` (backbone + optional head)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from .backbone import LSTCBackbone


class BNNeckHead(nn.Module):
    """BNNeck: BatchNorm1d (bias frozen at zero) -> Linear without bias -> logits.

    The triplet loss sees the raw embedding, the classifier sees the normalised one; freezing the
    BN shift keeps the classifier's features centred (the BNNeck recipe).
    """

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        if embedding_dim < 1 or num_classes < 1:
            raise ValueError(f"BNNeckHead needs embedding_dim >= 1 and num_classes >= 1, "
                             f"got {embedding_dim} and {num_classes}")
        self.bn = nn.BatchNorm1d(embedding_dim)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(embedding_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, embedding: Tensor) -> Tensor:  # noqa: D102
        return self.classifier(self.bn(embedding))


class GaitModel(nn.Module):
    """``forward(x, lengths=None) -> {"embedding", "parts", "logits" (only when num_classes > 0)}``."""

    def __init__(self, backbone: LSTCBackbone, num_classes: int = 0) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.head = BNNeckHead(backbone.embedding_dim, num_classes) if num_classes > 0 else None

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:  # noqa: D102
        out = self.backbone(x, lengths)
        if self.head is not None:
            out["logits"] = self.head(out["embedding"])
        return out


def build_gait_model(num_classes: int = 0, **backbone_kwargs: Any) -> GaitModel:
    """Hydra ``_target_``: build ``GaitModel(LSTCBackbone(**backbone_kwargs), num_classes)``.

    Config containers (OmegaConf lists) are converted to plain Python values first.
    """
    kwargs = {k: _plain(v) for k, v in backbone_kwargs.items()}
    return GaitModel(LSTCBackbone(**kwargs), int(num_classes))


def _plain(value: Any) -> Any:
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    try:
        return [_plain(v) for v in value]
    except TypeError:
        return value

"""Embedding heads and ``GaitModel`` (backbone + head + optional classifier).

Two heads:

- ``single`` (the original lstc-gait head, and what a stored config without a ``head`` key
  builds): the backbone's ``Linear(C*S, D) + BatchNorm1d`` gives one ``(N, D)`` vector; an optional
  :class:`BNNeckHead` classifies it.
- ``parts``: the ``S`` stripe features LSTP already computes stay separate parts. An optional
  pyramid over the stripes (:class:`StripePyramid`, horizontal pyramid mapping as in GaitSet)
  adds coarser parts; :class:`SeparateFCs` maps every part with its own ``Linear(C, D)``; the
  embedding is ``(N, D, P)``, which evaluation compares part by part (the mean over parts of the
  per-part Euclidean distance). An optional :class:`PartBNNeck` gives per-part logits
  ``(N, num_classes, P)`` for a per-part cross-entropy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config_schema import model_default
from .backbone import LSTCBackbone

HEAD_TYPES = ("single", "parts")


class BNNeckHead(nn.Module):
    """BNNeck: BatchNorm1d (bias frozen at zero) -> Linear without bias -> logits.

    The triplet loss sees the raw embedding, the classifier sees the normalised one; freezing the
    BN shift keeps the classifier's features centred (Luo et al., "Bag of Tricks and a Strong
    Baseline for Deep Person Re-identification", CVPRW 2019).

    Args:
        embedding_dim: D, the width of the embedding.
        num_classes: number of training identities.

    Raises:
        ValueError: a size below 1.
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

    def forward(self, embedding: Tensor) -> Tensor:
        """Classify an embedding through the BNNeck.

        Args:
            embedding: float (N, D), the raw (triplet) embedding.

        Returns:
            float (N, num_classes) logits.
        """
        return self.classifier(self.bn(embedding))


class StripePyramid(nn.Module):
    """Horizontal pyramid over stripe features: ``(N, C, S) -> (N, C, sum(levels))``.

    Level ``b`` splits the ``S`` stripes into ``b`` groups of ``S / b`` consecutive stripes and
    pools each group with mean + max (GaitSet's horizontal pyramid mapping, Chao et al., AAAI
    2019, applied to LSTP's stripes instead of feature-map rows). Level ``S`` keeps every stripe
    (its mean + max is twice the stripe feature).

    Args:
        num_stripes: S.
        levels: the bin counts, each a divisor of ``S`` (e.g. ``(8, 4, 2, 1)``).

    Raises:
        ValueError: an empty level list or a level that does not divide ``S``.
    """

    def __init__(self, num_stripes: int, levels: Sequence[int]) -> None:
        super().__init__()
        levels = tuple(int(b) for b in levels)
        if not levels or any(b < 1 or num_stripes % b for b in levels):
            raise ValueError(f"model.pyramid levels must divide num_stripes={num_stripes}, got {list(levels)}")
        self.num_stripes = int(num_stripes)
        self.levels = levels

    @property
    def num_parts(self) -> int:
        """P = the sum of the levels."""
        return sum(self.levels)

    def forward(self, parts: Tensor) -> Tensor:
        """Pool stripe features into pyramid parts.

        Args:
            parts: float (N, C, S) stripe features.

        Returns:
            float (N, C, P), P = the sum of the levels, the levels in the order given.

        Raises:
            RuntimeError: a level does not divide the stripe count of ``parts`` (the view fails).
        """
        n, c, s = parts.shape
        out = []
        for b in self.levels:
            g = parts.view(n, c, b, s // b)
            out.append(g.mean(-1) + g.amax(-1))
        return torch.cat(out, dim=2)

    def extra_repr(self) -> str:
        """The stripe count and levels, for ``repr``."""
        return f"num_stripes={self.num_stripes}, levels={list(self.levels)}"


class SeparateFCs(nn.Module):
    """One ``Linear(C, D)`` (no bias) per part: ``(N, C, P) -> (N, D, P)``.

    Args:
        num_parts: P.
        in_channels: C.
        out_channels: D.

    Raises:
        ValueError: a size below 1.
    """

    def __init__(self, num_parts: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if min(num_parts, in_channels, out_channels) < 1:
            raise ValueError(f"SeparateFCs needs sizes >= 1, got P={num_parts}, C={in_channels}, D={out_channels}")
        self.weight = nn.Parameter(torch.empty(num_parts, in_channels, out_channels))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Map every part through its own FC.

        Args:
            x: float (N, C, P) part features.

        Returns:
            (N, D, P) in ``x``'s dtype (the weight is cast to it).

        Raises:
            RuntimeError: ``x`` does not have C channels and P parts (the batched matmul fails).
        """
        # (P, N, C) @ (P, C, D) -> (P, N, D)
        y = torch.bmm(x.permute(2, 0, 1), self.weight.to(x.dtype))
        return y.permute(1, 2, 0)


class PartBNNeck(nn.Module):
    """BNNeck per part: ``(N, D, P) -> logits (N, num_classes, P)``.

    BatchNorm1d over all ``D*P`` features (shift frozen at zero), then one bias-free classifier per
    part (BNNeck: Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person
    Re-identification", CVPRW 2019, applied per part).

    Args:
        num_parts: P.
        embedding_dim: D.
        num_classes: number of training identities.

    Raises:
        ValueError: a size below 1.
    """

    def __init__(self, num_parts: int, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        if min(num_parts, embedding_dim, num_classes) < 1:
            raise ValueError("PartBNNeck needs num_parts, embedding_dim and num_classes >= 1")
        self.bn = nn.BatchNorm1d(embedding_dim * num_parts)
        self.bn.bias.requires_grad_(False)
        self.classifier = SeparateFCs(num_parts, embedding_dim, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, embedding: Tensor) -> Tensor:
        """Classify every part of a part embedding.

        Args:
            embedding: float (N, D, P) part embedding.

        Returns:
            float (N, num_classes, P) per-part logits.
        """
        n, d, p = embedding.shape
        normed = self.bn(embedding.reshape(n, d * p)).view(n, d, p)
        return self.classifier(normed)


class PartHead(nn.Module):
    """Stripe parts -> (pyramid) -> separate part FCs: ``(N, C, S) -> (N, D, P)``.

    Args:
        in_channels: C, the backbone's stripe feature width.
        num_stripes: S.
        embedding_dim: D per part.
        pyramid: bin counts of a :class:`StripePyramid`, or None/empty for the S stripes as they are.

    Raises:
        ValueError: a pyramid level that does not divide S, or a size below 1.
    """

    def __init__(self, in_channels: int, num_stripes: int, embedding_dim: int,
                 pyramid: Sequence[int] | None = None) -> None:
        super().__init__()
        self.pyramid = StripePyramid(num_stripes, pyramid) if pyramid else None
        self.num_parts = self.pyramid.num_parts if self.pyramid is not None else int(num_stripes)
        self.fcs = SeparateFCs(self.num_parts, in_channels, embedding_dim)

    def forward(self, parts: Tensor) -> Tensor:
        """Embed stripe features as parts.

        Args:
            parts: float (N, C, S) LSTP stripe features.

        Returns:
            float (N, D, P) part embedding (P = S without a pyramid).
        """
        if self.pyramid is not None:
            parts = self.pyramid(parts)
        return self.fcs(parts)


class InputResize(nn.Module):
    """Model-input transform: resize every frame of ``(N, C, T, H, W)`` to ``(h, w)`` (bilinear).

    The cache keeps 64x64 frames; a smaller model input trades accuracy for speed.

    Args:
        size: ``(h, w)`` of the model input, pixels.

    Raises:
        ValueError: a side below 4 pixels.
    """

    def __init__(self, size: Sequence[int]) -> None:
        super().__init__()
        h, w = (int(v) for v in size)
        if h < 4 or w < 4:
            raise ValueError(f"model.input_size must be at least 4x4, got {list(size)}")
        self.size = (h, w)

    def forward(self, x: Tensor) -> Tensor:
        """Resize every frame (bilinear, ``align_corners=False``).

        Args:
            x: float (N, C, T, H, W).

        Returns:
            float (N, C, T, h, w); ``x`` itself when it already has that size.
        """
        n, c, t, h, w = x.shape
        if (h, w) == self.size:
            return x
        y = F.interpolate(x.transpose(1, 2).reshape(n * t, c, h, w), size=self.size, mode="bilinear",
                          align_corners=False)
        return y.view(n, t, c, *self.size).transpose(1, 2)

    def extra_repr(self) -> str:
        """The target size, for ``repr``."""
        return f"size={self.size}"


class GaitModel(nn.Module):
    """LSTC/LSTP backbone + embedding head + optional BNNeck classifier.

    ``x: (N, 1, T, H, W) float32 -> {"embedding": (N, D) or (N, D, P), "parts": (N, C, S),
    "logits": (N, K) or (N, K, P) with a classifier}``.

    ``head`` defaults to ``single``, the legacy head (see :func:`build_gait_model`); the other
    defaults are the typed config's (:func:`lstc_gait.config_schema.model_default`).

    Args:
        backbone: an :class:`LSTCBackbone` (built with ``flat_embedding=False`` for the parts head).
        num_classes: K, training identities; 0 builds no classifier.
        head: ``single`` (one ``(N, D)`` vector, the original head) or ``parts`` (``(N, D, P)``).
        part_dim: D per part for the parts head.
        pyramid: stripe pyramid levels for the parts head (None: the stripes as they are).
        bnneck: build the BNNeck classifier when ``num_classes > 0``.
        input_size: ``(h, w)`` model-input resize, or None.

    Raises:
        ValueError: an unknown head, a negative ``num_classes``, or invalid head sizes
            (:class:`PartHead`, :class:`InputResize`).
    """

    def __init__(self, backbone: LSTCBackbone, num_classes: int = 0, head: str = "single",
                 part_dim: int = model_default("part_dim"), pyramid: Sequence[int] | None = model_default("pyramid"),
                 bnneck: bool = model_default("bnneck"),
                 input_size: Sequence[int] | None = model_default("input_size")) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if head not in HEAD_TYPES:
            raise ValueError(f"model.head must be one of {HEAD_TYPES}, got {head!r}")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.head_type = head
        self.resize = InputResize(input_size) if input_size else None
        self.part_head: PartHead | None = None
        classify = num_classes > 0 and bnneck
        if head == "single":
            self.head = BNNeckHead(backbone.embedding_dim, num_classes) if classify else None
        else:
            self.part_head = PartHead(backbone.out_channels, backbone.num_stripes, int(part_dim), pyramid)
            self.head = PartBNNeck(self.part_head.num_parts, int(part_dim), num_classes) if classify else None

    @property
    def embedding_dim(self) -> int:
        """D of the embedding (per part for the parts head)."""
        if self.part_head is not None:
            return self.part_head.fcs.weight.shape[2]
        return self.backbone.embedding_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """Embed silhouettes.

        Args:
            x: float (N, 1, T, H, W) in [0, 1].
            lengths: int64 (N,) valid frames per sequence, or None.

        Returns:
            ``embedding`` (N, D) float (single head) or (N, D, P) (parts head), ``parts``
            (N, C, S) stripe features, and ``logits`` (N, K) / (N, K, P) when there is a classifier.

        Raises:
            ValueError: an input the backbone rejects (see :meth:`LSTCBackbone.forward`).
        """
        if self.resize is not None:
            x = self.resize(x)
        out = self.backbone(x, lengths)
        if self.part_head is not None:
            out["embedding"] = self.part_head(out["parts"])
        if self.head is not None:
            out["logits"] = self.head(out["embedding"])
        return out


def build_gait_model(num_classes: int = 0, head: str = "single", part_dim: int = model_default("part_dim"),
                     pyramid: Sequence[int] | None = model_default("pyramid"), bnneck: bool = model_default("bnneck"),
                     input_size: Sequence[int] | None = model_default("input_size"),
                     gaitset_channels: Sequence[int] | None = None, **backbone_kwargs: Any) -> GaitModel:
    """Build a :class:`GaitModel` (LSTC/LSTP backbone + head); the registered variants call it.

    ``head`` defaults to ``single``, the legacy head: a stored config without ``head`` (every
    checkpoint written before part heads existed) is the original single-vector model
    (:data:`lstc_gait.engine.checkpoint.LEGACY_MODEL_DEFAULTS` passes it explicitly). Every other
    default, here and in :class:`LSTCBackbone`, is the typed config's
    (:func:`lstc_gait.config_schema.model_default`).

    Args:
        num_classes: training identities (0: no classifier).
        head: ``single`` or ``parts``.
        part_dim: D per part (parts head).
        pyramid: stripe pyramid levels (parts head), or None.
        bnneck: the (per-part) BNNeck classifier when ``num_classes > 0``.
        input_size: ``(h, w)`` model-input resize, or None.
        gaitset_channels: ignored (GaitSet's key; the schema passes every model key).
        **backbone_kwargs: :class:`LSTCBackbone` keyword arguments (OmegaConf containers are
            turned into plain lists/dicts).

    Returns:
        The model; ``forward(x (N, 1, T, H, W), lengths) -> dict`` with ``embedding``.

    Raises:
        ValueError: an unknown head or invalid sizes.
        TypeError: a key of ``backbone_kwargs`` that :class:`LSTCBackbone` does not take.
    """
    del gaitset_channels
    if head not in HEAD_TYPES:
        raise ValueError(f"model.head must be one of {HEAD_TYPES}, got {head!r}")
    kwargs = {k: _plain(v) for k, v in backbone_kwargs.items()}
    backbone = LSTCBackbone(**kwargs, flat_embedding=head == "single")
    return GaitModel(backbone, int(num_classes), head=head, part_dim=int(part_dim), pyramid=_plain(pyramid) or None,
                     bnneck=bool(bnneck), input_size=_plain(input_size) or None)


def _plain(value: Any) -> Any:
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    try:
        return [_plain(v) for v in value]
    except TypeError:
        return value

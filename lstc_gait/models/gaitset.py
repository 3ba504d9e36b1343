"""GaitSet: a gait sequence as an unordered set of silhouettes (Chao, He, Zhang, Feng, "GaitSet:
Regarding Gait as a Set for Cross-View Gait Recognition", AAAI 2019).

Written from the paper, compact form (no multilayer global pipeline):

- a per-frame 2D CNN: three stages of two 3x3 convolutions (the first 5x5) with LeakyReLU, a
  2x2 max-pool after the first two stages (widths 32-64-128 by default);
- set pooling: the maximum over the frames of a sequence (padded frames never win);
- horizontal pyramid mapping (HPM): the feature map is split into 1, 2, 4, 8, 16 horizontal
  strips, each pooled with mean + max over its rows and columns;
- one separate fully connected layer per strip (31 x ``Linear(128, D)``; D = 256 in the paper,
  the config's ``model.part_dim`` here), giving an
  ``(N, D, P)`` part embedding that is compared part by part and trained with a triplet loss per
  part (batch-all in the paper); an optional per-part BNNeck classifier for a CE term.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..config_schema import model_default
from .heads import InputResize, PartBNNeck, SeparateFCs

# GaitSet's own architecture (the paper's): what ``gaitset_channels=None`` and ``pyramid=None`` mean.
GAITSET_CHANNELS = (32, 64, 128)
GAITSET_BINS = (16, 8, 4, 2, 1)


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)


class GaitSet(nn.Module):
    """GaitSet (Chao et al., AAAI 2019): per-frame CNN, set pooling, horizontal pyramid mapping.

    ``x: (N, 1, T, H, W) float32 -> {"embedding": (N, D, P), "parts": (N, C, P),
    "logits": (N, K, P) with a classifier}``, P = ``sum(bins)``, C = ``channels[2]``.

    ``in_channels``, ``part_dim``, ``bnneck`` and ``input_size`` default to the typed config's
    values (:func:`lstc_gait.config_schema.model_default`); ``channels`` and ``bins`` to the
    paper's (:data:`GAITSET_CHANNELS`, :data:`GAITSET_BINS`).

    Args:
        num_classes: K, training identities (0: no classifier).
        in_channels: silhouette channels (1).
        channels: widths of the three conv stages.
        bins: HPM strip counts; the height after the two pools (``H // 4``) must be divisible by each.
        part_dim: D of every part's FC.
        bnneck: per-part BNNeck classifier when ``num_classes > 0``.
        input_size: ``(h, w)`` model-input resize in pixels, or None.
        frame_chunk: frames per CNN pass at inference (bounds memory on long sequences).

    Raises:
        ValueError: a width, ``in_channels`` or ``part_dim`` below 1, a negative ``num_classes``,
            no bins or a bin below 1, or an ``input_size`` side below 4.
    """

    def __init__(self, num_classes: int = 0, in_channels: int = model_default("in_channels"),
                 channels: Sequence[int] = GAITSET_CHANNELS, bins: Sequence[int] = GAITSET_BINS,
                 part_dim: int = model_default("part_dim"), bnneck: bool = model_default("bnneck"),
                 input_size: Sequence[int] | None = model_default("input_size"), frame_chunk: int = 512) -> None:
        super().__init__()
        c1, c2, c3 = (int(c) for c in channels)
        if min(c1, c2, c3, in_channels, part_dim) < 1 or num_classes < 0:
            raise ValueError(f"GaitSet: bad sizes channels={list(channels)}, part_dim={part_dim}, "
                             f"num_classes={num_classes}")
        self.bins = tuple(int(b) for b in bins)
        if not self.bins or min(self.bins) < 1:
            raise ValueError(f"GaitSet: HPM bins must be positive, got {list(bins)}")
        act = nn.LeakyReLU(0.01, inplace=True)
        self.frame_cnn = nn.Sequential(
            _conv(in_channels, c1, 5), act, _conv(c1, c1, 3), act, nn.MaxPool2d(2),
            _conv(c1, c2, 3), act, _conv(c2, c2, 3), act, nn.MaxPool2d(2),
            _conv(c2, c3, 3), act, _conv(c3, c3, 3), act,
        )
        self.resize = InputResize(input_size) if input_size else None
        self.num_parts = sum(self.bins)
        self.out_channels = c3
        self.num_classes = int(num_classes)
        self.fcs = SeparateFCs(self.num_parts, c3, int(part_dim))
        self.head = PartBNNeck(self.num_parts, int(part_dim), num_classes) if num_classes > 0 and bnneck else None
        self.frame_chunk = int(frame_chunk)

    @property
    def embedding_dim(self) -> int:
        """D per part."""
        return self.fcs.weight.shape[2]

    def _frames(self, x: Tensor) -> Tensor:
        """Per-frame CNN: ``(F, C, H, W) -> (F, c3, H/4, W/4)``, chunked at inference."""
        if self.training or x.shape[0] <= self.frame_chunk:
            return self.frame_cnn(x)
        return torch.cat([self.frame_cnn(x[i:i + self.frame_chunk]) for i in range(0, x.shape[0],
                                                                                     self.frame_chunk)])

    def hpm(self, fmap: Tensor) -> Tensor:
        """Horizontal pyramid mapping (Chao et al., AAAI 2019): mean + max over each strip.

        Args:
            fmap: float (N, C, h, w) set-pooled feature map.

        Returns:
            float (N, C, P), the strips of every bin count in ``bins`` order, top to bottom.

        Raises:
            ValueError: ``h`` is not divisible by a bin count.
        """
        n, c, h, _ = fmap.shape
        out = []
        for b in self.bins:
            if h % b:
                raise ValueError(f"GaitSet: feature height {h} is not divisible by HPM bin count {b}")
            z = fmap.reshape(n, c, b, -1)
            out.append(z.mean(-1) + z.amax(-1))
        return torch.cat(out, dim=2)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """Embed silhouette sets.

        Args:
            x: float (N, 1, T, H, W) in [0, 1]; frames at ``t >= lengths[n]`` are padding.
            lengths: int64 (N,) or None (all frames valid).

        Returns:
            ``embedding`` (N, D, P), ``parts`` (N, C, P) pooled strips, ``logits`` (N, K, P) with a classifier.

        Raises:
            ValueError: ``x`` is not 5-D, or its feature height ``H // 4`` is not divisible by a bin.
        """
        if x.dim() != 5:
            raise ValueError(f"GaitSet expects x of shape (N, C, T, H, W), got {tuple(x.shape)}")
        if self.resize is not None:
            x = self.resize(x)
        n, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(n * t, c, h, w)
        fmap = self._frames(frames)
        fmap = fmap.view(n, t, *fmap.shape[1:])
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=x.device)
            pad = torch.arange(t, device=x.device).view(1, t) >= lengths.view(-1, 1)
            if bool(pad.any()):
                fmap = fmap.masked_fill(pad.view(n, t, 1, 1, 1), float("-inf"))
        pooled = fmap.amax(dim=1)  # set pooling: max over frames, (N, C, h, w)
        parts = self.hpm(pooled)
        out = {"parts": parts, "embedding": self.fcs(parts)}
        if self.head is not None:
            out["logits"] = self.head(out["embedding"])
        return out


def build_gaitset(num_classes: int = 0, in_channels: int = model_default("in_channels"),
                  part_dim: int = model_default("part_dim"), pyramid: Sequence[int] | None = model_default("pyramid"),
                  bnneck: bool = model_default("bnneck"), input_size: Sequence[int] | None = model_default("input_size"),
                  gaitset_channels: Sequence[int] | None = model_default("gaitset_channels"),
                  **ignored: object) -> GaitSet:
    """Build :class:`GaitSet` from the ``model`` config node (the ``gaitset`` variant).

    Defaults are the typed config's (:func:`lstc_gait.config_schema.model_default`).

    Args:
        num_classes: training identities (0: no classifier).
        in_channels: silhouette channels.
        part_dim: D per strip.
        pyramid: HPM bins (None: :data:`GAITSET_BINS`, 16, 8, 4, 2, 1).
        bnneck: per-part BNNeck classifier when ``num_classes > 0``.
        input_size: ``(h, w)`` model-input resize, or None.
        gaitset_channels: the three stage widths (None: :data:`GAITSET_CHANNELS`, 32, 64, 128).
        **ignored: the LSTC-only keys of the model node.

    Returns:
        The model; ``forward(x (N, 1, T, H, W), lengths) -> dict`` with ``embedding`` (N, D, P).

    Raises:
        ValueError: invalid sizes (see :class:`GaitSet`).
    """
    del ignored
    return GaitSet(num_classes=int(num_classes), in_channels=int(in_channels),
                   channels=tuple(gaitset_channels) if gaitset_channels else GAITSET_CHANNELS,
                   bins=tuple(pyramid) if pyramid else GAITSET_BINS, part_dim=int(part_dim), bnneck=bool(bnneck),
                   input_size=tuple(input_size) if input_size else None)

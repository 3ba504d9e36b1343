"""GaitSet: a gait sequence as an unordered set of silhouettes (Chao, He, Zhang, Feng, "GaitSet:
Regarding Gait as a Set for Cross-View Gait Recognition", AAAI 2019).

Written from the paper, compact form (no multilayer global pipeline):

- a per-frame 2D CNN: three stages of two 3x3 convolutions (the first 5x5) with LeakyReLU, a
  2x2 max-pool after the first two stages (widths 32-64-128 by default);
- set pooling: the maximum over the frames of a sequence (padded frames never win);
- horizontal pyramid mapping (HPM): the feature map is split into 1, 2, 4, 8, 16 horizontal
  strips, each pooled with mean + max over its rows and columns;
- one separate fully connected layer per strip (31 x ``Linear(128, 256)`` by default), giving an
  ``(N, D, P)`` part embedding that is compared part by part and trained with a triplet loss per
  part (batch-all in the paper); an optional per-part BNNeck classifier for a CE term.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .heads import InputResize, PartBNNeck, SeparateFCs


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)


class GaitSet(nn.Module):
    """``forward(x (N, 1, T, H, W), lengths=None) -> {"embedding": (N, D, P), "parts": (N, C, P), "logits"?}``.

    Args:
        num_classes: training identities (0: no classifier).
        in_channels: silhouette channels (1).
        channels: widths of the three conv stages.
        bins: HPM strip counts; the height after the two pools must be divisible by each.
        part_dim: D of every part's FC.
        bnneck: per-part BNNeck classifier when ``num_classes > 0``.
        input_size: ``(h, w)`` model-input resize, or None.
        frame_chunk: frames per CNN pass at inference (bounds memory on long sequences).

    Raises:
        ValueError: bad sizes.
    """

    def __init__(self, num_classes: int = 0, in_channels: int = 1, channels: Sequence[int] = (32, 64, 128),
                 bins: Sequence[int] = (16, 8, 4, 2, 1), part_dim: int = 256, bnneck: bool = False,
                 input_size: Sequence[int] | None = None, frame_chunk: int = 512) -> None:
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
        """Horizontal pyramid mapping: ``(N, C, h, w) -> (N, C, P)`` (mean + max per strip)."""
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
            ValueError: a wrongly shaped input.
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


def build_gaitset(num_classes: int = 0, in_channels: int = 1, part_dim: int = 128,
                  pyramid: Sequence[int] | None = None, bnneck: bool = True,
                  input_size: Sequence[int] | None = None, gaitset_channels: Sequence[int] | None = None,
                  **ignored: object) -> GaitSet:
    """Build :class:`GaitSet` from the ``model`` config node (the ``gaitset`` variant).

    Args:
        num_classes: training identities (0: no classifier).
        in_channels: silhouette channels.
        part_dim: D per strip.
        pyramid: HPM bins (None: 16, 8, 4, 2, 1).
        bnneck: per-part BNNeck classifier when ``num_classes > 0``.
        input_size: ``(h, w)`` model-input resize, or None.
        gaitset_channels: the three stage widths (None: 32, 64, 128).
        **ignored: the LSTC-only keys of the model node.

    Returns:
        The model.
    """
    del ignored
    return GaitSet(num_classes=int(num_classes), in_channels=int(in_channels),
                   channels=tuple(gaitset_channels) if gaitset_channels else (32, 64, 128),
                   bins=tuple(pyramid) if pyramid else (16, 8, 4, 2, 1), part_dim=int(part_dim), bnneck=bool(bnneck),
                   input_size=tuple(input_size) if input_size else None)

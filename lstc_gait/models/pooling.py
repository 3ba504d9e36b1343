"""LSTP: local spatio-temporal pooling over height stripes, plus mean / max temporal baselines.

For each of ``S`` height stripes, ``f_s(t)`` is the mean over the stripe's rows and all columns
(``spatial="mean"``, the original LSTP), or that mean plus the maximum over the same pixels
(``spatial="mean_max"``, the strip pooling of GaitSet's horizontal pyramid, Chao et al. 2019, and
GaitPart), giving ``(N, C, T)``. Frames are scored by ``score(t) = sqrt(max(sum_c f_s(t)^2, 1e-6))``.

- ``hard``: mean of ``f_s`` at the ``min(k, L)`` top-scoring valid frames;
- ``soft``: ``sum_t softmax(score / max(1e-6, temperature)) f_s(t)`` over valid frames;
- ``mean`` / ``max``: plain temporal mean / max over valid frames (ablation baselines);
- ``set``: the maximum over valid frames of every *pixel* first, then the stripe's spatial pooling
  (GaitSet's set pooling followed by its strip pooling, Chao et al., AAAI 2019): the stripe keeps
  the envelope of the whole gait cycle rather than its best frames.

``lengths`` (N,) gives each sequence's valid frame count; frames at ``t >= L`` (zero padding at
the end of time) are never selected or averaged. Output: stripe-major ``(N, C*S)`` =
``[stripe 0 channels, stripe 1 channels, ...]`` and the ``(N, C, S)`` parts.

Source: Local Spatio-Temporal Pooling (hard top-k / temperature-weighted soft selection) of the
original lstc-gait project (``lstc/modules.py``; /work/shared/reference/original-lstc-gait-README.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .stripes import check_stripes, stripe_average_matrix, stripe_max

POOLING_MODES = ("hard", "soft", "mean", "max", "set")
SPATIAL_MODES = ("mean", "mean_max")


def frame_mask(lengths: Tensor, num_frames: int) -> Tensor:
    """Valid-frame mask of a padded batch.

    Args:
        lengths: ``(N,)`` integer tensor, valid frames per sequence.
        num_frames: ``T``, the padded length.

    Returns:
        ``(N, T)`` bool, True at valid frames ``t < lengths[n]``, on ``lengths``' device.
    """
    return torch.arange(num_frames, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class LSTP(nn.Module):
    """LSTP: ``x (N, C, T, H, W) float -> (flat (N, C*S), parts (N, C, S))``, pooling per height stripe.

    Source: Local Spatio-Temporal Pooling of the original lstc-gait project (see the module
    docstring for the four modes; ``mean`` / ``max`` are this platform's ablation baselines).

    Args:
        num_stripes: Height stripes ``S >= 1``; inputs need ``H >= S``.
        mode: ``"hard"`` (top-k frames), ``"soft"`` (softmax-weighted), ``"mean"``, ``"max"``, or
            ``"set"`` (per-pixel max over frames, then the stripe pooling).
        topk: ``k >= 1`` frames per stripe for ``hard``.
        temperature: Softmax temperature of ``soft`` (floored at 1e-6).
        spatial: How a stripe is pooled over its pixels in each frame: ``"mean"`` (the original
            LSTP) or ``"mean_max"`` (mean + max, as GaitSet's strips).

    Raises:
        ValueError: When ``mode`` or ``spatial`` is unknown, ``num_stripes < 1``, or ``topk < 1`` with ``hard``.
    """

    def __init__(self, num_stripes: int = 8, mode: str = "hard", topk: int = 2, temperature: float = 1.0,
                 spatial: str = "mean") -> None:
        super().__init__()
        if spatial not in SPATIAL_MODES:
            raise ValueError(f"spatial pooling must be one of {SPATIAL_MODES}, got {spatial!r}")
        self.spatial = spatial
        if mode not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {mode!r}")
        if num_stripes < 1:
            raise ValueError(f"num_stripes must be >= 1, got {num_stripes}")
        if mode == "hard" and topk < 1:
            raise ValueError(f"topk must be >= 1 for hard pooling, got {topk}")
        self.num_stripes, self.mode, self.topk = int(num_stripes), mode, int(topk)
        self.temperature = float(temperature)

    def stripe_features(self, x: Tensor) -> Tensor:
        """Per-frame pooling over each stripe's rows and all columns (mean, or mean + max).

        Args:
            x: ``(N, C, T, H, W)`` float activations, ``H >= S``.

        Returns:
            ``(N, C, T, S)``, ``x``'s dtype.

        Raises:
            ValueError: When ``x`` is not 5-D or ``H < S``.
        """
        if x.dim() != 5:
            raise ValueError(f"LSTP expects (N, C, T, H, W), got shape {tuple(x.shape)}")
        n, c, t, h, w = x.shape
        check_stripes(h, self.num_stripes, where="LSTP input")
        if h % self.num_stripes == 0 and x.is_contiguous(memory_format=torch.channels_last_3d):
            # Equal stripes in channels_last_3d: a reduction over contiguous rows with channels
            # innermost (the generic path reduces W at stride C, several times slower).
            s = self.num_stripes
            z = x.permute(0, 2, 3, 4, 1).reshape(n, t, s, (h // s) * w, c)
            f = z.mean(dim=3) if self.spatial == "mean" else z.mean(dim=3) + z.amax(dim=3)  # (N, T, S, C)
            return f.permute(0, 3, 1, 2)
        rows = x.mean(dim=4)  # (N, C, T, H)
        f = rows @ stripe_average_matrix(h, self.num_stripes, rows.device, rows.dtype)
        if self.spatial == "mean":
            return f
        return f + stripe_max(x.amax(dim=4), self.num_stripes)

    def pool_time(self, f: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Pool stripe features over time with the module's mode.

        Args:
            f: ``(N, C, T, S)`` stripe features (:meth:`stripe_features`).
            lengths: ``(N,)`` integer valid-frame counts in ``[1, T]``; frames ``t >= lengths[n]`` are
                never selected or averaged. None: all ``T`` frames valid.

        Returns:
            ``(N, C, S)``, ``f``'s dtype (frame scores of ``hard`` / ``soft`` computed in float32).

        Raises:
            ValueError: In ``set`` mode, which pools time before space (use :meth:`forward`).
        """
        if self.mode == "set":
            raise ValueError("set pooling takes the max over frames per pixel, before the stripe pooling: "
                             "call the module (forward), not pool_time")
        n, _, t, _ = f.shape
        valid = None if lengths is None else frame_mask(lengths, t).view(n, 1, t, 1)
        if self.mode == "mean":
            if valid is None:
                return f.mean(dim=2)
            return (f * valid).sum(dim=2) / lengths.view(n, 1, 1).to(f.dtype)
        if self.mode == "max":
            return (f if valid is None else f.masked_fill(~valid, float("-inf"))).amax(dim=2)
        score = f.float().pow(2).sum(dim=1, keepdim=True).clamp_min(1e-6).sqrt()  # (N, 1, T, S)
        if valid is not None:
            score = score.masked_fill(~valid, float("-inf"))
        if self.mode == "soft":
            w = torch.softmax(score / max(1e-6, self.temperature), dim=2).to(f.dtype)
            return (w * f).sum(dim=2)
        k = min(self.topk, t)
        idx = score.topk(k, dim=2).indices  # (N, 1, k, S), best first
        picked = f.gather(2, idx.expand(-1, f.shape[1], -1, -1))  # (N, C, k, S)
        if lengths is None:
            return picked.mean(dim=2)
        kk = lengths.clamp(max=k)  # min(k, L) frames per sample
        keep = (torch.arange(k, device=f.device).view(1, 1, k, 1) < kk.view(n, 1, 1, 1)).to(f.dtype)
        return (picked * keep).sum(dim=2) / kk.view(n, 1, 1).to(f.dtype)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Pool each height stripe over space and time.

        Args:
            x: ``(N, C, T, H, W)`` float activations, ``H >= S``.
            lengths: ``(N,)`` integer valid-frame counts in ``[1, T]``, or None (all frames valid).

        Returns:
            ``(flat, parts)``: ``flat`` ``(N, C*S)`` stripe-major (``[stripe 0 channels, stripe 1
            channels, ...]``) and ``parts`` ``(N, C, S)``, ``x``'s dtype.

        Raises:
            ValueError: When ``x`` is not 5-D or ``H < S``.
        """
        if self.mode == "set":
            if lengths is not None:
                pad = ~frame_mask(lengths, x.shape[2])
                x = x.masked_fill(pad.view(x.shape[0], 1, x.shape[2], 1, 1), float("-inf"))
            parts = self.stripe_features(x.amax(dim=2, keepdim=True))[:, :, 0]  # (N, C, S)
        else:
            parts = self.pool_time(self.stripe_features(x), lengths)  # (N, C, S)
        flat = parts.transpose(1, 2).reshape(parts.shape[0], -1)  # stripe-major
        return flat, parts

    def extra_repr(self) -> str:
        """Pooling settings for ``repr(module)``.

        Returns:
            ``"num_stripes=S, mode=..., topk=k, temperature=..."``.
        """
        return (f"num_stripes={self.num_stripes}, mode={self.mode}, topk={self.topk}, "
                f"temperature={self.temperature}, spatial={self.spatial}")

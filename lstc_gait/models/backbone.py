"""LSTCBackbone: stem -> 3 asymmetric blocks (2x spatial max-pool between) -> 1x1x1 head -> LSTP -> embedding.

The LSTC/LSTP gait model of the original lstc-gait project (asymmetric temporal, spatial and
joint spatio-temporal branches per block, then local spatio-temporal pooling over horizontal
stripes), re-implemented for CPU inference; see ``/work/shared/reference`` for the original.

Padding correctness: with ``lengths`` given, padded frames (``t >= L``) are re-zeroed before every
op that looks across time (stem and block inputs), the dynamic gate averages valid frames only,
and pooling never selects padded frames, so a padded batch embeds each sequence exactly as if it
were run alone. With ``lengths=None`` (or all sequences full length) no masking work is done.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config_schema import model_default
from .blocks import AsymmetricBlock
from .convbn import bn_is_folding, bn_scale_shift, conv_bn_relu
from .memory_format import recording_graph, to_channels_last
from .pooling import LSTP, POOLING_MODES
from .stripes import check_stripes

# The original lstc-gait project's fixed block kernels (the compat importer's architecture).
DEFAULT_KERNELS = ((3, 7, 3), (3, 5, 3), (3, 3, 3))
# Inference chunk budget for one full-resolution activation. Small chunks keep a block's working
# set in cache (2.5x faster than one batch-16 pass) and keep every buffer under the size glibc
# serves from its heap rather than fresh, page-faulted mmaps: at 24 MB (4 sequences of base 16)
# some processes settled into faulting 340 MB per forward (383 vs 217 ms), at 12 MB none did.
_CHUNK_BYTES = 12 * 2 ** 20


def feature_rows(input_height: int) -> int:
    """Rows of the feature map the stripes are cut from: the input height after the two 2x spatial poolings.

    Args:
        input_height: Height of the input silhouettes (pixels).

    Returns:
        ``input_height // 2 // 2`` (each pooling drops an odd last row).
    """
    return int(input_height) // 2 // 2


def normalize_kernels(kernels: Sequence[Sequence[int]]) -> tuple[tuple[int, int, int], ...]:
    """Accept nested lists/tuples (e.g. from Hydra) and return three ``(kT, kH, kW)`` tuples.

    Args:
        kernels: three ``(kT, kH, kW)`` kernel sizes, one per asymmetric block; each size odd and
            positive (frames, pixels, pixels).

    Returns:
        The kernels as a tuple of three int triples.

    Raises:
        ValueError: not three triples, or a size that is even or below 1.
    """
    try:
        out = tuple(tuple(int(v) for v in k) for k in kernels)
    except TypeError as exc:
        raise ValueError(f"kernels must be three (kT, kH, kW) triples, got {kernels!r}") from exc
    if len(out) != 3 or any(len(k) != 3 or min(k) < 1 or any(v % 2 == 0 for v in k) for k in out):
        raise ValueError(f"kernels must be three (kT, kH, kW) triples of odd positive ints, got {kernels!r}")
    return out  # type: ignore[return-value]


class LSTCBackbone(nn.Module):
    """The LSTC/LSTP gait backbone (the original lstc-gait project).

    ``x: (N, C, T, H, W) float32 -> {"embedding": (N, D), "parts": (N, 4 * base_channels, S)}``:
    a 3x3x3 conv stem, three asymmetric blocks (LSTC: separate temporal, spatial and joint
    spatio-temporal branches; widths ``base_channels``, 2x, 4x) with a 2x spatial max-pool after
    the first two, a 1x1x1 conv, then LSTP (local spatio-temporal pooling: each of ``S``
    horizontal stripes pooled over space, then over time by top-k or softmax weighting), and,
    with ``flat_embedding``, ``Linear(C3 * S, D) + BatchNorm1d``.

    Every argument is keyword-only; its default is the typed config's
    (:func:`lstc_gait.config_schema.model_default`), the one place model defaults live.

    Args:
        in_channels: C of the input (1 for silhouettes).
        base_channels: width of the stem and first block; the blocks are 1x, 2x, 4x this wide.
        num_stripes: S, horizontal stripes LSTP pools; must divide ``H // 4``.
        embedding_dim: D of the flat embedding.
        kernels: ``(kT, kH, kW)`` of each block's joint branch (odd; frames, pixels, pixels).
        use_temporal: build the blocks' temporal branch.
        use_spatial: build the blocks' spatial branch.
        use_joint: build the blocks' joint spatio-temporal branch.
        joint_type: ``lstc`` (a 3D conv) or ``dynamic`` (a mixture of expert 3D convs).
        branch_width: how a block splits its width over the branches (``half_split``, ...) or an int.
        min_branch_width: the narrowest branch, channels.
        dynamic_experts: experts of a dynamic joint branch.
        dynamic_gate_hidden: hidden width of the dynamic gate (0: a linear gate).
        dynamic_temperature: softmax temperature of the dynamic gate.
        pooling: LSTP's temporal pooling, one of ``POOLING_MODES`` (``hard`` top-k, ``soft``, ...).
        topk: frames the hard LSTP averages per stripe.
        temperature: softmax temperature of the soft LSTP.
        spatial_pooling: how LSTP pools a stripe's pixels per frame: ``mean`` (the original) or
            ``mean_max`` (mean + max, GaitSet's strip pooling).
        flat_embedding: build the ``Linear + BatchNorm1d`` flat head (False for a parts head,
            which then reads ``parts`` and the output has no ``embedding``).

    Raises:
        ValueError: a size below 1, an unknown ``pooling``, or invalid ``kernels``; the blocks and
            LSTP raise ValueError for their own invalid settings (e.g. ``joint_type``).
    """

    def __init__(self, *, in_channels: int = model_default("in_channels"),
                 base_channels: int = model_default("base_channels"),
                 num_stripes: int = model_default("num_stripes"),
                 embedding_dim: int = model_default("embedding_dim"),
                 kernels: Sequence[Sequence[int]] = model_default("kernels"),
                 use_temporal: bool = model_default("use_temporal"), use_spatial: bool = model_default("use_spatial"),
                 use_joint: bool = model_default("use_joint"), joint_type: str = model_default("joint_type"),
                 branch_width: str | int = model_default("branch_width"),
                 min_branch_width: int = model_default("min_branch_width"),
                 dynamic_experts: int = model_default("dynamic_experts"),
                 dynamic_gate_hidden: int = model_default("dynamic_gate_hidden"),
                 dynamic_temperature: float = model_default("dynamic_temperature"),
                 pooling: str = model_default("pooling"), topk: int = model_default("topk"),
                 temperature: float = model_default("temperature"),
                 spatial_pooling: str = model_default("spatial_pooling"), flat_embedding: bool = True) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("base_channels", base_channels),
                            ("num_stripes", num_stripes), ("embedding_dim", embedding_dim)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        kernels = normalize_kernels(kernels)
        branch_width = branch_width if isinstance(branch_width, str) else int(branch_width)
        self.config = {
            "in_channels": int(in_channels), "base_channels": int(base_channels), "num_stripes": int(num_stripes),
            "embedding_dim": int(embedding_dim), "kernels": kernels, "use_temporal": bool(use_temporal),
            "use_spatial": bool(use_spatial), "use_joint": bool(use_joint), "joint_type": joint_type,
            "branch_width": branch_width, "min_branch_width": int(min_branch_width),
            "dynamic_experts": int(dynamic_experts), "dynamic_gate_hidden": int(dynamic_gate_hidden),
            "dynamic_temperature": float(dynamic_temperature), "pooling": pooling, "topk": int(topk),
            "temperature": float(temperature), "spatial_pooling": spatial_pooling,
        }
        c1, c2, c3 = base_channels, 2 * base_channels, 4 * base_channels
        self.in_channels, self.num_stripes, self.embedding_dim = int(in_channels), int(num_stripes), int(embedding_dim)
        self.out_channels = c3
        block_kw = dict(use_temporal=use_temporal, use_spatial=use_spatial, use_joint=use_joint,
                        joint_type=joint_type, num_stripes=num_stripes, branch_width=branch_width,
                        min_branch_width=min_branch_width, dynamic_experts=dynamic_experts,
                        dynamic_gate_hidden=dynamic_gate_hidden, dynamic_temperature=dynamic_temperature)
        self.stem = conv_bn_relu(in_channels, c1, 3, 1)
        self.block1 = AsymmetricBlock(c1, c1, kernels[0], **block_kw)  # each of the first two is followed
        self.block2 = AsymmetricBlock(c1, c2, kernels[1], **block_kw)  # by a 2x2 max-pool (forward)
        self.block3 = AsymmetricBlock(c2, c3, kernels[2], **block_kw)
        self.head = conv_bn_relu(c3, c3, 1)
        self.lstp = LSTP(num_stripes, pooling, topk, temperature, spatial_pooling)
        # The single-vector head (the original model's); a parts head (models.heads.PartHead) reads
        # the stripe features instead and the backbone then has no flat embedding.
        self.flat_embedding = bool(flat_embedding)
        self.fc = nn.Linear(c3 * num_stripes, embedding_dim) if self.flat_embedding else None
        self.bn = nn.BatchNorm1d(embedding_dim) if self.flat_embedding else None
        # Inference runs the batch in chunks whose full-resolution activations fit in cache.
        self.eval_chunk: int | None = None  # None = automatic (see eval_chunk_size), 0 = no chunking

    def _check_input(self, x: Tensor, lengths: Tensor | None) -> Tensor | None:
        if not isinstance(x, Tensor) or x.dim() != 5:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"LSTCBackbone expects x of shape (N, {self.in_channels}, T, H, W), got {shape}")
        n, c, t, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"LSTCBackbone expects {self.in_channels} input channel(s), got x of shape {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise ValueError(f"LSTCBackbone expects a float input in [0, 1], got dtype {x.dtype} "
                             "(convert uint8 silhouettes with x.float().div_(255))")
        if n < 1 or t < 1:
            raise ValueError(f"empty input: x of shape {tuple(x.shape)}")
        if w < 4:
            raise ValueError(f"input width {w} is too small: two 2x spatial poolings need W >= 4")
        check_stripes(feature_rows(h), self.num_stripes, where=f"after two 2x poolings, input height {h} ->")
        if lengths is None:
            return None
        if not isinstance(lengths, Tensor):
            lengths = torch.as_tensor(lengths)
        if lengths.dim() != 1 or lengths.shape[0] != n:
            raise ValueError(f"lengths must have shape ({n},) to match x, got {tuple(lengths.shape)}")
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise ValueError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
        lengths = lengths.to(device=x.device, dtype=torch.long)
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > t:
            raise ValueError(f"lengths must lie in [1, T={t}], got min {lo} and max {hi}")
        return None if lo == t else lengths  # all full length: same as no padding, skip masking

    def eval_chunk_size(self, x: Tensor) -> int:
        """Sequences per inference chunk.

        Args:
            x: the input batch (N, C, T, H, W); only its shape and element size are read.

        Returns:
            ``eval_chunk`` if set (0: no chunking), else as many sequences as keep one
            full-resolution activation (``base_channels x T x H x W`` elements of ``x``'s dtype)
            within ~12 MB, at least 1.
        """
        if self.eval_chunk is not None:
            return int(self.eval_chunk)
        n, _, t, h, w = x.shape
        per_sequence = self.config["base_channels"] * t * h * w * x.element_size()
        return max(1, _CHUNK_BYTES // max(1, per_sequence))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """Embed silhouette sequences; padded frames never change a sequence's embedding.

        In eval mode the batch runs in chunks of :meth:`eval_chunk_size` sequences (exact: BN
        uses running statistics), except while a graph is recorded.

        Args:
            x: float (N, C, T, H, W), silhouettes in [0, 1]; ``H // 4`` divisible by S, ``W >= 4``.
            lengths: int (N,) valid frames per sequence in [1, T] (frames ``t >= lengths[n]`` are
                padding), or None (all T frames valid).

        Returns:
            ``parts``: (N, 4 * base_channels, S) LSTP stripe features, and, with
            ``flat_embedding``, ``embedding``: (N, D), both in ``x``'s float dtype.

        Raises:
            ValueError: ``x`` not 5-D, of the wrong channel count, not floating point, empty, too
                small for two 2x poolings or the stripes; ``lengths`` of the wrong shape, not an
                integer tensor, or outside [1, T].
        """
        lengths = self._check_input(x, lengths)
        # channels_last_3d throughout: oneDNN's native layout and the one that makes the stripe
        # fold a run of memcpys.
        x = to_channels_last(x)
        chunk = 0 if (self.training or recording_graph()) else self.eval_chunk_size(x)
        if chunk < 1 or x.shape[0] <= chunk:
            return self._forward_batch(x, lengths)
        # BN uses running statistics in eval, so every sequence is independent: chunking is exact.
        # Near-equal chunks: a lone 1-sequence tail would fall off oneDNN onto a slower kernel.
        n, pieces = x.shape[0], -(-x.shape[0] // chunk)
        bounds = [(i * n + pieces // 2) // pieces for i in range(pieces + 1)]  # Python ints: no tensor round trip
        outs = [self._forward_batch(x[a:b], None if lengths is None else lengths[a:b])
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        return {key: torch.cat([o[key] for o in outs]) for key in outs[0]}

    def _forward_batch(self, x: Tensor, lengths: Tensor | None) -> dict[str, Tensor]:
        mask = None
        if lengths is not None and int(lengths.min()) < x.shape[2]:
            t = x.shape[2]
            mask = (torch.arange(t, device=x.device).view(1, t) < lengths.view(-1, 1)).to(x.dtype)
            mask = mask.view(-1, 1, t, 1, 1)
            x = x * mask
        else:
            lengths = None
        # The 2x2 max-pools after the first two blocks run inside them, and with every frame
        # valid the stem runs inside the first block too (one op at inference).
        if mask is None:
            y = self.block1(x, None, pool=True, stem=self.stem)
        else:
            # A 1-channel input's layout is ambiguous to the conv, which then answers in the
            # default layout: restore channels_last_3d for everything after the stem.
            y = to_channels_last(self.stem(x))
            y = self.block1(_masked(y, mask, self.block1), mask, pool=True)
        y = self.block2(_masked(y, mask, self.block2), mask, pool=True)
        y = self.block3(_masked(y, mask, self.block3), mask)
        y = self.head(y)
        flat, parts = self.lstp(y, lengths)
        if not self.flat_embedding:
            return {"parts": parts}
        return {"embedding": self._embed(flat), "parts": parts}

    def _embed(self, flat: Tensor) -> Tensor:
        if bn_is_folding(self.bn):  # eval: fold BatchNorm1d into the Linear
            scale, shift = bn_scale_shift(self.bn)
            return F.linear(flat, self.fc.weight * scale.unsqueeze(1), self.fc.bias * scale + shift)
        return self.bn(self.fc(flat))

    def extra_repr(self) -> str:
        """The constructor settings, for ``repr``."""
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


def _masked(y: Tensor, mask: Tensor | None, block: AsymmetricBlock) -> Tensor:
    """Zero padded frames before a block that mixes frames (BN shift + ReLU made them non-zero)."""
    if mask is None or not block.temporal_extent:
        return y
    return y * mask.to(y.dtype)

"""Asymmetric block: temporal-only, spatial-only and joint (LSTC or dynamic) branches fused by 1x1x1.

Keys follow the original checkpoints: ``branch_temporal.0/.1``, ``branch_spatial.0/.1``,
``branch_joint.*`` and ``fuse.0/.1``. Branch outputs are concatenated in the order temporal,
spatial, joint.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ops.library import native_kernels
from .bn_relu import BranchOutput, batch_norm_relu_concat
from .convbn import ConvBNReLU, bn_is_folding, conv_bn_relu, fold_conv_bn
from .dynamic import DynamicConv3d
from .lstc import LSTC, _triple
from .memory_format import recording_graph, to_channels_last
from .spatial_pool import max_pool_hw2

BRANCH_WIDTH_RULES = ("half_split", "full")


def compute_branch_width(out_channels: int, num_branches: int, rule: str | int = "half_split",
                 min_branch_width: int = 8) -> int:
    """Channels per branch of an :class:`AsymmetricBlock`.

    ``"half_split"`` (the original lstc-gait rule): ``max(out // (2n), min_branch_width)``;
    ``"full"``: ``max(out // n, min_branch_width)``; an int: that width for every branch.

    Args:
        out_channels: The block's output channels.
        num_branches: ``n``, the enabled branches (1 to 3).
        rule: ``"half_split"``, ``"full"`` or a positive int (not a bool).
        min_branch_width: Floor of the rule-based widths (ignored for an int rule).

    Returns:
        The branch width ``m`` (channels).

    Raises:
        ValueError: When ``num_branches < 1``, the rule is unknown or a bool, or an int rule is < 1.
    """
    if num_branches < 1:
        raise ValueError("num_branches must be >= 1")
    if isinstance(rule, bool):
        raise ValueError(f"branch_width must be one of {BRANCH_WIDTH_RULES} or a positive int, got {rule!r}")
    if isinstance(rule, int):
        if rule < 1:
            raise ValueError(f"branch_width as an int must be >= 1, got {rule}")
        return rule
    if rule == "half_split":
        return max(out_channels // (2 * num_branches), min_branch_width)
    if rule == "full":
        return max(out_channels // num_branches, min_branch_width)
    raise ValueError(f"branch_width must be one of {BRANCH_WIDTH_RULES} or a positive int, got {rule!r}")


class AsymmetricBlock(nn.Module):
    """Asymmetric block: ``(N, C_in, T, H, W) -> (N, C_out, T, H, W)`` float32 (or autocast dtype).

    Up to three parallel branches of ``m`` channels each (:func:`compute_branch_width`), each
    Conv + BN + ReLU, concatenated in the order temporal, spatial, joint and fused by a 1x1x1
    Conv + BN + ReLU:

    - temporal: ``(kT, 1, 1)`` conv (motion only);
    - spatial: ``(1, kH, kW)`` conv (shape only);
    - joint: :class:`~lstc_gait.models.lstc.LSTC` (stripe-local spatio-temporal conv) or
      :class:`~lstc_gait.models.dynamic.DynamicConv3d` (expert-gated dynamic conv).

    Source: the asymmetric block of the original lstc-gait project (``lstc/modules.py``,
    /work/shared/reference/original-lstc-gait-README.md). State-dict keys as there:
    ``branch_temporal.0/.1``, ``branch_spatial.0/.1``, ``branch_joint.*``, ``fuse.0/.1``.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: ``(kT, kH, kW)``, odd positive ints (frames, rows, columns).
        use_temporal: Build the temporal branch.
        use_spatial: Build the spatial branch.
        use_joint: Build the joint branch.
        joint_type: ``"lstc"`` or ``"dynamic"``.
        num_stripes: Height stripes ``S`` of the LSTC joint branch (input ``H >= S``).
        branch_width: Branch-width rule, see :func:`compute_branch_width`.
        min_branch_width: Floor of the rule-based branch width.
        dynamic_experts: Experts ``E`` of the dynamic joint branch.
        dynamic_gate_hidden: Hidden width of its gate (0: ``max(16, C_in // 2)``).
        dynamic_temperature: Softmax temperature of its gate (> 0).

    Raises:
        ValueError: When no branch is enabled, ``joint_type`` is unknown, ``kernel_size`` is not
            three odd positive ints, the branch-width rule is invalid, or the joint branch's
            arguments are (``num_stripes < 1``, ``dynamic_experts < 1``, ``dynamic_temperature <= 0``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int, int] = (3, 3, 3),
                 use_temporal: bool = True, use_spatial: bool = True, use_joint: bool = True,
                 joint_type: str = "lstc", num_stripes: int = 8, branch_width: str | int = "half_split",
                 min_branch_width: int = 8, dynamic_experts: int = 4, dynamic_gate_hidden: int = 0,
                 dynamic_temperature: float = 1.0) -> None:
        super().__init__()
        flags = {"use_temporal": use_temporal, "use_spatial": use_spatial, "use_joint": use_joint}
        n = sum(bool(v) for v in flags.values())
        if n == 0:
            raise ValueError("AsymmetricBlock needs at least one branch: use_temporal, use_spatial and "
                             "use_joint are all False")
        if joint_type not in ("lstc", "dynamic"):
            raise ValueError(f"joint_type must be 'lstc' or 'dynamic', got {joint_type!r}")
        k_t, k_h, k_w = _triple(kernel_size, "kernel_size")
        self.kernel_size = (k_t, k_h, k_w)
        self.joint_type = joint_type
        m = compute_branch_width(out_channels, n, branch_width, min_branch_width)
        self.branch_channels = m
        self.branch_temporal = (conv_bn_relu(in_channels, m, (k_t, 1, 1), (k_t // 2, 0, 0))
                                if use_temporal else None)
        self.branch_spatial = (conv_bn_relu(in_channels, m, (1, k_h, k_w), (0, k_h // 2, k_w // 2))
                               if use_spatial else None)
        self.branch_joint: nn.Module | None = None
        if use_joint:
            if joint_type == "lstc":
                self.branch_joint = LSTC(in_channels, m, self.kernel_size, num_stripes)
            else:
                self.branch_joint = DynamicConv3d(in_channels, m, self.kernel_size, dynamic_experts,
                                                  dynamic_gate_hidden, dynamic_temperature)
        self.fuse = conv_bn_relu(n * m, out_channels, 1)

    @property
    def temporal_extent(self) -> bool:
        """True when some branch looks across frames (so padded frames must be zeroed first)."""
        return self.kernel_size[0] > 1 and (self.branch_temporal is not None or self.branch_joint is not None)

    def forward(self, x: Tensor, time_mask: Tensor | None = None, pool: bool = False,
                stem: ConvBNReLU | None = None) -> Tensor:
        """Run the branches and the fuse (and the stem before, the 2x2 max-pool after, when given).

        In training the branches' BN + ReLU and the concatenation run as one op node
        (``lstc_gait::batch_norm_relu_concat``); at inference with every BN folded (float32, no
        autocast, not being exported) the whole block with an LSTC joint, pool included, runs as
        ``lstc_gait::lstc_block`` on frames of at least 16 x 16, and otherwise the joint pointwise
        conv, concatenation and fuse run as ``lstc_gait::block_tail``.

        Args:
            x: ``(N, C_in, T, H, W)`` float activations; frames past each sequence's length must
                already be zero.
            time_mask: ``(N, 1, T, 1, 1)`` float mask, 1 at valid frames, 0 at padding (used by the
                dynamic gate's average pool); None: all frames valid.
            pool: Follow with a 2x2 spatial max-pool (:func:`~lstc_gait.models.spatial_pool.max_pool_hw2`).
            stem: The backbone's 1-channel stem, run on ``x`` first (fused into the block op at
                inference); ``x`` is then the ``(N, 1, T, H, W)`` input, every frame valid
                (``time_mask`` None).

        Returns:
            ``(N, C_out, T, H, W)`` (``H // 2, W // 2`` with ``pool``) in channels_last_3d memory
            (except while exporting), ``x``'s dtype.

        Raises:
            ValueError: When ``x`` is not ``(N, C_in, T, H, W)`` (dynamic joint) or ``H`` is smaller
                than ``num_stripes`` (LSTC joint).
            RuntimeError: For other shape mismatches, from the convolutions.
        """
        if stem is not None and time_mask is not None:
            raise ValueError("AsymmetricBlock: a fused stem needs every frame valid (time_mask=None)")
        fused = self._fused_tail(x)  # the stem keeps dtype and device, so this holds for its output too
        if fused and self._whole_block(x) and (stem is None or stem.folds_into_block(x)):
            return self._forward_whole_block(x, pool, stem)
        if stem is not None:
            x = to_channels_last(stem(x))
        y = self._forward_fused_tail(x, time_mask) if fused else self._forward_branches(x, time_mask)
        return max_pool_hw2(y) if pool else y

    def _forward_branches(self, x: Tensor, time_mask: Tensor | None) -> Tensor:
        parts: list[BranchOutput] = []
        if self.branch_temporal is not None:
            parts.append(self.branch_temporal.branch_output(x))
        if self.branch_spatial is not None:
            parts.append(self.branch_spatial.branch_output(x))
        if isinstance(self.branch_joint, DynamicConv3d):
            parts.append(self.branch_joint(x, time_mask))
        elif self.branch_joint is not None:
            parts.append(self.branch_joint.branch_output(x))
        # In training the branches' BN + ReLU and the concatenation run as one node.
        return self.fuse(batch_norm_relu_concat(parts))

    def _fused_tail(self, x: Tensor) -> bool:
        """Inference with every BN folded, float32, no autocast: the op ``lstc_gait::block_tail`` runs
        the joint pointwise conv, the concatenation and the fuse conv in one pass."""
        if (recording_graph() or x.dtype != torch.float32 or torch.is_autocast_enabled(x.device.type)
                or not bn_is_folding(self.fuse[1])):
            return False
        return not (isinstance(self.branch_joint, LSTC) and not bn_is_folding(self.branch_joint.bn))

    def _forward_fused_tail(self, x: Tensor, time_mask: Tensor | None) -> Tensor:
        direct = [branch(x) for branch in (self.branch_temporal, self.branch_spatial) if branch is not None]
        joint = joint_weight = joint_bias = None
        if isinstance(self.branch_joint, LSTC):
            joint = self.branch_joint.stripe_depthwise(x)
            joint_weight, joint_bias = fold_conv_bn(self.branch_joint.pointwise.weight, None, self.branch_joint.bn)
        elif self.branch_joint is not None:
            joint = self.branch_joint(x, time_mask)
        fuse_weight, fuse_bias = fold_conv_bn(self.fuse[0].weight, self.fuse[0].bias, self.fuse[1])
        return torch.ops.lstc_gait.block_tail(direct, joint, joint_weight, joint_bias, fuse_weight, fuse_bias)

    def _whole_block(self, x: Tensor) -> bool:
        """The op ``lstc_gait::lstc_block`` runs the whole block: an LSTC (or no) joint branch, every
        BN folded, C++ kernels for ``x``, and frames of at least 16 x 16 (on 16x11 frames the
        unfused path, with oneDNN's 10-channel convs, measured faster; docs/performance.md)."""
        if isinstance(self.branch_joint, DynamicConv3d) or x.shape[3] < 16 or x.shape[4] < 16:
            return False
        branches = [b for b in (self.branch_temporal, self.branch_spatial) if b is not None]
        return all(bn_is_folding(b[1]) for b in branches) and native_kernels(x)

    def _forward_whole_block(self, x: Tensor, pool: bool, stem: ConvBNReLU | None) -> Tensor:
        folded: list[Tensor | None] = [None, None]
        if stem is not None:
            folded = list(fold_conv_bn(stem[0].weight, stem[0].bias, stem[1]))
        for branch in (self.branch_temporal, self.branch_spatial):
            folded.extend(fold_conv_bn(branch[0].weight, branch[0].bias, branch[1]) if branch is not None
                          else (None, None))
        joint_weight = pw_weight = pw_bias = None
        num_stripes = 1
        if isinstance(self.branch_joint, LSTC):
            joint_weight, num_stripes = self.branch_joint.depthwise.weight, self.branch_joint.num_stripes
            pw_weight, pw_bias = fold_conv_bn(self.branch_joint.pointwise.weight, None, self.branch_joint.bn)
        fuse_weight, fuse_bias = fold_conv_bn(self.fuse[0].weight, self.fuse[0].bias, self.fuse[1])
        return torch.ops.lstc_gait.lstc_block(x, *folded, joint_weight, num_stripes, pw_weight, pw_bias,
                                              fuse_weight, fuse_bias, pool)

"""Training-mode ``cat([relu(bn_i(x_i)), ...])`` as one autograd node, for channels_last_3d activations.

Same math as ``torch.cat([F.relu(bn(x)) for bn, x in branches], dim=1)`` with ``nn.BatchNorm3d``
in training mode (batch statistics, biased variance for normalising, unbiased for the running
estimate, the module's momentum rule); a branch may also be a ready tensor, copied into place
after the normalised ones. A single branch is plain ``relu(bn(x))``.

Why: a full-resolution activation at batch 16 is 43-86 MB, and the library's BN, ReLU,
concatenation and their backward make about ten passes over it and allocate five such buffers.
The op ``torch.ops.lstc_gait.batch_norm_relu_concat`` (``lstc_gait/ops``) makes two passes each
way and writes each branch straight into its channel slice of the concatenated output. The
running statistics are updated here, from the batch mean and variance the op returns.

The op runs in float32 training without autocast for plain ``nn.BatchNorm3d`` layers (not
subclasses such as the DDP GlobalBatchNorm, whose statistics are global); otherwise the library
ops run. Under ``torch.compile`` the op is one graph node and the running-statistics update
traces as buffer mutations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .memory_format import recording_graph

BranchOutput = Tensor | tuple[nn.modules.batchnorm._BatchNorm, Tensor]
_CL = torch.channels_last_3d


def _frame_shape(x: Tensor) -> tuple[int, int, int, int]:
    return x.shape[0], x.shape[2], x.shape[3], x.shape[4]


def _fusable_bn(bn: nn.Module, x: Tensor) -> bool:
    return (type(bn) is nn.BatchNorm3d and bn.training and bn.affine and x.dtype == torch.float32
            and x.dim() == 5 and x.numel() > x.shape[1])


def batch_norm_relu_concat(parts: list[BranchOutput]) -> Tensor:
    """Concatenate activated branch outputs along channels, normalising the ``(bn, x)`` ones.

    Args:
        parts: Per branch either a ready ``(N, C_i, T, H, W)`` tensor or ``(bn, x)`` with a
            BatchNorm to apply to ``x`` (then ReLU).

    Returns:
        ``cat([relu(bn(x)) for (bn, x) parts, t for tensor parts], dim=1)``, one fused op node
        when the normalised parts come first and all are fusable.

    Raises:
        ValueError: When ``parts`` is empty.
    """
    if not parts:
        raise ValueError("batch_norm_relu_concat needs at least one branch")
    normed = [p for p in parts if isinstance(p, tuple)]
    ready = [p for p in parts if not isinstance(p, tuple)]
    shapes = {_frame_shape(p[1] if isinstance(p, tuple) else p) for p in parts}
    fused = (len(shapes) == 1 and normed and all(p is q for p, q in zip(parts, normed)) and not recording_graph()
             and not torch.is_autocast_enabled(normed[0][1].device.type)
             and all(_fusable_bn(bn, x) for bn, x in normed)
             and all(t.dtype == torch.float32 and t.dim() == 5 for t in ready))
    if not fused:
        outs = [F.relu(p[0](p[1]), inplace=True) if isinstance(p, tuple) else p for p in parts]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    out, mean, var = torch.ops.lstc_gait.batch_norm_relu_concat(
        [x for _, x in normed], [bn.weight for bn, _ in normed], [bn.bias for bn, _ in normed],
        [float(bn.eps) for bn, _ in normed], ready)
    count = out.numel() // out.shape[1]
    offset = 0
    for bn, x in normed:
        c = x.shape[1]
        _update_running_stats(bn, mean[offset:offset + c], var[offset:offset + c], count)
        offset += c
    return out


def batch_norm_relu(bn: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """``relu(bn(x))``; the fused op in the cases it covers, the library ops otherwise.

    Args:
        bn: The BatchNorm.
        x: ``(N, C, T, H, W)`` input.

    Returns:
        ``relu(bn(x))``.
    """
    return batch_norm_relu_concat([(bn, x)])


def _update_running_stats(bn: nn.modules.batchnorm._BatchNorm, mean: Tensor, var: Tensor, count: int) -> None:
    """The running-estimate update nn.BatchNorm makes in training (unbiased variance, momentum rule)."""
    if not (bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None):
        return
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        # momentum=None: cumulative average, as a tensor (no host sync, nothing for a compiler to break on)
        m = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked.to(mean.dtype)
        unbiased = var * (count / max(count - 1, 1))
        bn.running_mean.mul_(1 - m).add_(mean * m)
        bn.running_var.mul_(1 - m).add_(unbiased * m)

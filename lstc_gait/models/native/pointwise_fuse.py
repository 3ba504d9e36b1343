"""Inference tail of an asymmetric block (joint pointwise conv, concatenation, fuse conv) in one pass.

At inference, with the BatchNorms folded, a block ends with per-position linear maps: the LSTC
pointwise conv + ReLU on the depthwise output, the concatenation of the branch outputs and the
fuse 1x1x1 conv + ReLU. The library runs them as a conv, a concatenation copy and another conv,
writing two intermediate tensors the size of the activation; the C kernel computes each output
position from the branch outputs directly (tests/test_native.py compares with the module path).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .buffers import empty_channels_last
from .build import load_kernels
from .call_args import pointer, thread_count

_CL = torch.channels_last_3d


def _rows(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=_CL).permute(0, 2, 3, 4, 1).reshape(-1, x.shape[1])


def _matrix_t(w: Tensor) -> Tensor:
    """Conv weight (out, in, 1, 1, 1) or (out, in) -> (in, out) contiguous float32."""
    return w.detach().reshape(w.shape[0], -1).t().contiguous().float()


def pointwise_fuse(direct: list[Tensor], joint: Tensor | None, joint_weight: Tensor | None,
                   joint_bias: Tensor | None, fuse_weight: Tensor, fuse_bias: Tensor) -> Tensor:
    """``relu(conv1x1(cat([*direct, z]), fuse_weight, fuse_bias))`` with ``z = relu(conv1x1(joint,
    joint_weight, joint_bias))`` (or ``z = joint`` when ``joint_weight`` is None); no autograd.

    ``direct`` holds up to two activated branch outputs (N, C_i, T, H, W); channels_last_3d output.
    """
    lib = load_kernels()
    if lib is None or len(direct) > 2:
        raise RuntimeError("pointwise_fuse needs the native kernels and at most two direct branches")
    ref = direct[0] if direct else joint
    n, _, t, h, w = ref.shape
    rows = [_rows(d) for d in direct] + [None] * (2 - len(direct))
    chans = [r.shape[1] if r is not None else 0 for r in rows]
    j_rows = None if joint is None else _rows(joint)
    cj = 0 if j_rows is None else j_rows.shape[1]
    wj = None if joint_weight is None else _matrix_t(joint_weight)
    bj = None if joint_bias is None else joint_bias.detach().float().contiguous()
    cz = cj if wj is None else wj.shape[1]
    wf = _matrix_t(fuse_weight)
    bf = fuse_bias.detach().float().contiguous()
    cout = wf.shape[1]
    if max(wf.shape[0], cj) > 1024:  # the kernel's per-position buffers (MAXC)
        raise ValueError("pointwise_fuse supports at most 1024 concatenated channels")
    if wf.shape[0] != sum(chans) + cz:
        raise ValueError(f"fuse weight takes {wf.shape[0]} channels, branches give {sum(chans) + cz}")
    out = empty_channels_last((n, cout, t, h, w))
    p = n * t * h * w
    lib.pointwise_fuse(pointer(rows[0]), chans[0], pointer(rows[1]), chans[1], pointer(j_rows), cj, pointer(wj), pointer(bj), cz,
                       pointer(wf), pointer(bf), cout, pointer(out), p, thread_count(p))
    return out

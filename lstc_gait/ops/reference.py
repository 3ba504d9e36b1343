"""The PyTorch formulation of every ``lstc_gait`` op: the semantics, and the path that runs where the
C++ kernels do not (CUDA and other devices, dtypes other than float32, no compiler, export).

Every function here is made of ATen ops only, so it runs on any device and dtype, traces,
exports, and is what the op tests compare the kernels with. Outputs are fresh tensors (never an
alias of an input), in ``channels_last_3d`` memory where the op's output is 5-D.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CL = torch.channels_last_3d


def _same_padding(kernel_size) -> list[int]:
    return [int(k) // 2 for k in kernel_size]


def _stripe_height(height: int, num_stripes: int) -> int:
    return max(1, height // num_stripes)


def fold_stripes(x: Tensor, stripes: int, h: int) -> Tensor:
    """Move height stripes into the batch axis.

    Args:
        x: ``(N, C, T, stripes * h, W)`` tensor.
        stripes: Number of stripes of ``h`` rows.
        h: Rows per stripe.

    Returns:
        ``(N * stripes, C, T, h, W)`` in channels_last_3d memory (a run of memcpys when ``x`` is
        channels_last_3d), sample-major.
    """
    n, c, t, _, w = x.shape
    z = x.permute(0, 2, 3, 4, 1).reshape(n, t, stripes, h, w, c)
    z = z.transpose(1, 2).contiguous().view(n * stripes, t, h, w, c)
    return z.permute(0, 4, 1, 2, 3)


def unfold_stripes(y: Tensor, n: int) -> Tensor:
    """Inverse of :func:`fold_stripes`.

    Args:
        y: ``(N * S, C, T, h, W)`` tensor.
        n: The batch size ``N``.

    Returns:
        ``(N, C, T, S * h, W)`` in channels_last_3d memory.
    """
    ns, c, t, h, w = y.shape
    s = ns // n
    z = y.permute(0, 2, 3, 4, 1).reshape(n, s, t, h, w, c)
    z = z.transpose(1, 2).contiguous().view(n, t, s * h, w, c)
    return z.permute(0, 4, 1, 2, 3)


def _stripe_pieces(height: int, num_stripes: int) -> tuple[int, int]:
    """``(folded, h)``: the first ``folded`` stripes have ``h`` rows; a taller last one, if any, follows."""
    h = _stripe_height(height, num_stripes)
    return (num_stripes if h * num_stripes == height else num_stripes - 1), h


def stripe_depthwise_conv3d(x: Tensor, weight: Tensor, num_stripes: int) -> Tensor:
    """Stripe-local 'same' depthwise conv3d (the LSTC joint branch's spatio-temporal part).

    Source: LSTC of the original lstc-gait project (``lstc/modules.py``), which pads every stripe
    on its own so nothing leaks across stripes.

    Stripe ``s`` covers rows ``[s*h, (s+1)*h)`` with ``h = max(1, H // S)``; the last stripe takes
    the leftover rows. Zero padding applies at every stripe edge, so no tap reads another stripe.
    The stripes are folded into the batch axis so one depthwise convolution with ordinary 'same'
    padding handles all equal-height stripes (a taller last stripe runs as a second convolution).

    Args:
        x: ``(N, C, T, H, W)`` input, any float dtype and device.
        weight: ``(C, 1, kT, kH, kW)`` depthwise kernel with odd sizes.
        num_stripes: ``S >= 1``, at most ``H``.

    Returns:
        ``(N, C, T, H, W)`` in channels_last_3d memory.
    """
    n, c, _, height, _ = x.shape
    pad = _same_padding(weight.shape[2:])
    x = x.contiguous(memory_format=CL)
    if num_stripes == 1 or weight.shape[3] == 1:  # no kernel row reaches another stripe
        return F.conv3d(x, weight, padding=pad, groups=c).contiguous(memory_format=CL)
    folded, h = _stripe_pieces(height, num_stripes)
    main = x if folded == num_stripes else x[:, :, :, : folded * h]
    y = unfold_stripes(F.conv3d(fold_stripes(main, folded, h), weight, padding=pad, groups=c), n)
    if folded == num_stripes:
        return y.contiguous(memory_format=CL)
    last = F.conv3d(x[:, :, :, folded * h:], weight, padding=pad, groups=c)
    return torch.cat([y, last], dim=3).contiguous(memory_format=CL)


def _depthwise_weight_grad(x: Tensor, grad_out: Tensor, weight_shape: list[int], pad: list[int]) -> Tensor:
    c = x.shape[1]
    weight = x.new_empty(weight_shape)
    return torch.ops.aten.convolution_backward(grad_out, x, weight, None, [1, 1, 1], pad, [1, 1, 1], False,
                                               [0, 0, 0], c, [False, True, False])[1]


def stripe_depthwise_conv3d_weight_grad(x: Tensor, grad_out: Tensor, kernel_size: list[int],
                                        num_stripes: int) -> Tensor:
    """Gradient of :func:`stripe_depthwise_conv3d` with respect to its kernel.

    Args:
        x: ``(N, C, T, H, W)`` input of the forward.
        grad_out: ``(N, C, T, H, W)`` gradient of its output.
        kernel_size: ``(kT, kH, kW)``, odd.
        num_stripes: The forward's ``S``.

    Returns:
        ``(C, 1, kT, kH, kW)`` contiguous, in ``x``'s dtype.
    """
    n, c, _, height, _ = x.shape
    shape = [c, 1, *[int(k) for k in kernel_size]]
    pad = _same_padding(kernel_size)
    x = x.contiguous(memory_format=CL)
    grad_out = grad_out.to(x.dtype).contiguous(memory_format=CL)
    if num_stripes == 1 or shape[3] == 1:
        return _depthwise_weight_grad(x, grad_out, shape, pad).contiguous()
    folded, h = _stripe_pieces(height, num_stripes)
    rows = folded * h
    gw = _depthwise_weight_grad(fold_stripes(x[:, :, :, :rows], folded, h),
                                fold_stripes(grad_out[:, :, :, :rows], folded, h), shape, pad)
    if folded != num_stripes:
        gw = gw + _depthwise_weight_grad(x[:, :, :, rows:], grad_out[:, :, :, rows:], shape, pad)
    return gw.contiguous()


def stem_conv3d(x: Tensor, weight: Tensor, bias: Tensor | None, relu: bool) -> Tensor:
    """'Same' conv3d of a one-channel input (the backbone's stem), plus bias and ReLU.

    Args:
        x: ``(N, 1, T, H, W)`` input.
        weight: ``(C, 1, kT, kH, kW)`` kernel with odd sizes.
        bias: ``(C,)`` or None.
        relu: Apply a ReLU to the result.

    Returns:
        ``(N, C, T, H, W)`` in channels_last_3d memory.
    """
    y = F.conv3d(x, weight, bias, padding=_same_padding(weight.shape[2:]))
    if relu:
        y = F.relu(y)
    return y.contiguous(memory_format=CL)


def stem_conv3d_weight_grad(x: Tensor, grad_out: Tensor, kernel_size: list[int]) -> Tensor:
    """Gradient of :func:`stem_conv3d` (without its ReLU) with respect to the kernel.

    Args:
        x: ``(N, 1, T, H, W)`` input of the forward.
        grad_out: ``(N, C, T, H, W)`` gradient of the convolution's output (ReLU mask applied).
        kernel_size: ``(kT, kH, kW)``, odd.

    Returns:
        ``(C, 1, kT, kH, kW)`` contiguous.
    """
    weight = x.new_empty([grad_out.shape[1], 1, *[int(k) for k in kernel_size]])
    return torch.ops.aten.convolution_backward(grad_out.to(x.dtype), x, weight, None, [1, 1, 1],
                                               _same_padding(kernel_size), [1, 1, 1], False, [0, 0, 0], 1,
                                               [False, True, False])[1].contiguous()


def max_pool_hw2(x: Tensor) -> Tensor:
    """``F.max_pool3d(x, (1, 2, 2))`` values: 2x2 spatial max-pool, odd last row/column dropped.

    Computed as the elementwise maximum of the four strided sub-grids (NaN propagates like the
    library's): on channels_last_3d CPU data 2-18x faster than the library op, which also
    builds an index tensor (docs/performance.md).

    Args:
        x: ``(N, C, T, H, W)``.

    Returns:
        ``(N, C, T, H // 2, W // 2)`` in channels_last_3d memory.
    """
    x = x.contiguous(memory_format=CL)
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    a = torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2])
    b = torch.maximum(x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2])
    return torch.maximum(a, b).contiguous(memory_format=CL)


def max_pool_hw2_backward(x: Tensor, grad_out: Tensor) -> Tensor:
    """Input gradient of :func:`max_pool_hw2`: each window's gradient goes to its first maximum.

    Args:
        x: ``(N, C, T, H, W)`` input of the forward.
        grad_out: ``(N, C, T, H // 2, W // 2)``.

    Returns:
        ``(N, C, T, H, W)`` in channels_last_3d memory (zero outside the windows' maxima).
    """
    args = ([1, 2, 2], [1, 2, 2], [0, 0, 0], [1, 1, 1], False)
    xc = x.contiguous(memory_format=CL)
    _, indices = torch.ops.aten.max_pool3d_with_indices(xc, *args)
    gx = torch.ops.aten.max_pool3d_with_indices_backward(grad_out.to(x.dtype).contiguous(memory_format=CL), xc,
                                                         *args, indices)
    return gx.contiguous(memory_format=CL)


def _channel_view(v: Tensor) -> Tensor:
    return v.view(1, -1, 1, 1, 1)


def _scale_shift(mean: Tensor, var: Tensor, eps: float, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    invstd = torch.rsqrt(var.double() + eps)
    scale = (weight.double() * invstd).to(weight.dtype)
    shift = bias - mean * scale
    return invstd, scale, shift


def batch_norm_relu_concat(inputs: list[Tensor], weights: list[Tensor], biases: list[Tensor], eps: list[float],
                           passthrough: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """``cat([relu(batch_norm(x_i)) ..., *passthrough], dim=1)`` with batch statistics (training BN).

    Args:
        inputs: ``(N, C_i, T, H, W)`` branch outputs to normalise, all with the same N, T, H, W.
        weights: ``(C_i,)`` BN scales (gamma).
        biases: ``(C_i,)`` BN shifts (beta).
        eps: The BNs' epsilons.
        passthrough: ``(N, P_j, T, H, W)`` tensors appended unchanged after the normalised ones.

    Returns:
        ``(out, mean, var)``: ``out`` ``(N, sum C_i + sum P_j, T, H, W)`` channels_last_3d; ``mean``
        and the biased ``var`` ``(sum C_i,)`` are the batch statistics (for the running estimates).

    Raises:
        ValueError: When ``inputs``, ``weights``, ``biases`` and ``eps`` differ in length.
        IndexError: When ``inputs`` is empty.
    """
    outs, means, variances = [], [], []
    for x, weight, bias, e in zip(inputs, weights, biases, eps, strict=True):
        dims = (0, 2, 3, 4)
        var, mean = torch.var_mean(x.double(), dim=dims, unbiased=False)
        mean, var = mean.to(x.dtype), var.to(x.dtype)
        _, scale, shift = _scale_shift(mean, var, e, weight, bias)
        outs.append(F.relu(x * _channel_view(scale) + _channel_view(shift)))
        means.append(mean)
        variances.append(var)
    out = torch.cat([*outs, *[t.to(outs[0].dtype) for t in passthrough]], dim=1).contiguous(memory_format=CL)
    return out, torch.cat(means), torch.cat(variances)


def batch_norm_relu_concat_backward(grad_out: Tensor, inputs: list[Tensor], weights: list[Tensor],
                                    biases: list[Tensor], mean: Tensor, var: Tensor,
                                    eps: list[float]) -> list[Tensor]:
    """Gradients of :func:`batch_norm_relu_concat` for its normalised inputs and BN parameters.

    With ``xhat = (x - mean) * invstd`` and ``g`` the output gradient where the ReLU passed:
    ``dgamma = sum(g * xhat)``, ``dbeta = sum(g)`` and
    ``dx = gamma * invstd * (g - dbeta / P - xhat * dgamma / P)`` over the ``P = N*T*H*W`` positions.

    Args:
        grad_out: ``(N, C_total, T, H, W)`` gradient of the concatenated output.
        inputs: The forward's normalised inputs.
        weights: Their BN scales.
        biases: Their BN shifts.
        mean: ``(sum C_i,)`` batch means the forward returned.
        var: ``(sum C_i,)`` biased batch variances the forward returned.
        eps: The BNs' epsilons.

    Returns:
        ``[dx_1, ..., dx_k, dgamma, dbeta]``: one ``(N, C_i, T, H, W)`` channels_last_3d gradient per
        input, then the concatenated ``(sum C_i,)`` parameter gradients.

    Raises:
        ValueError: When ``inputs``, ``weights``, ``biases`` and ``eps`` differ in length.
    """
    grads, dgammas, dbetas = [], [], []
    offset = 0
    dims = (0, 2, 3, 4)
    for x, weight, bias, e in zip(inputs, weights, biases, eps, strict=True):
        c = x.shape[1]
        m, v = mean[offset:offset + c], var[offset:offset + c]
        invstd, scale, shift = _scale_shift(m, v, e, weight, bias)
        passed = x * _channel_view(scale) + _channel_view(shift) > 0
        g = torch.where(passed, grad_out[:, offset:offset + c].to(x.dtype), 0.0).double()
        p = x.numel() // c
        sum_g = g.sum(dim=dims)
        dgamma = invstd * (g * (x.double() - _channel_view(m.double()))).sum(dim=dims)
        a = weight.double() * invstd
        b = -a * invstd * dgamma / p
        k = -a * sum_g / p - b * m.double()
        dx = g * _channel_view(a) + x.double() * _channel_view(b) + _channel_view(k)
        grads.append(dx.to(x.dtype).contiguous(memory_format=CL))
        dgammas.append(dgamma.to(x.dtype))
        dbetas.append(sum_g.to(x.dtype))
        offset += c
    return [*grads, torch.cat(dgammas), torch.cat(dbetas)]


def _as_conv1x1(weight: Tensor) -> Tensor:
    return weight.reshape(weight.shape[0], -1, 1, 1, 1)


def block_tail(direct: list[Tensor], joint: Tensor | None, joint_weight: Tensor | None, joint_bias: Tensor | None,
               fuse_weight: Tensor, fuse_bias: Tensor) -> Tensor:
    """Inference tail of an asymmetric block: ``relu(fuse(cat([*direct, z])))``.

    ``z = relu(conv1x1(joint, joint_weight) + joint_bias)`` (the LSTC branch's pointwise conv with
    its BN folded), or ``z = joint`` when ``joint_weight`` is None (the dynamic branch's output).

    Args:
        direct: Activated ``(N, C_i, T, H, W)`` outputs of the temporal/spatial branches.
        joint: ``(N, C_j, T, H, W)`` joint-branch tensor, or None.
        joint_weight: ``(C_z, C_j[, 1, 1, 1])`` or None.
        joint_bias: ``(C_z,)`` or None (required with ``joint_weight``).
        fuse_weight: ``(C_out, sum C_i + C_z[, 1, 1, 1])``, BN folded.
        fuse_bias: ``(C_out,)``.

    Returns:
        ``(N, C_out, T, H, W)`` in channels_last_3d memory.
    """
    parts = list(direct)
    if joint is not None:
        parts.append(joint if joint_weight is None else F.relu(F.conv3d(joint, _as_conv1x1(joint_weight), joint_bias)))
    cat = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return F.relu(F.conv3d(cat, _as_conv1x1(fuse_weight), fuse_bias)).contiguous(memory_format=CL)


def conv3d_same(x: Tensor, weight: Tensor, bias: Tensor | None, relu: bool) -> Tensor:
    """A dense stride-1 conv3d with 'same' zero padding (``k // 2`` per axis), + bias, + ReLU.

    Args:
        x: ``(N, C_in, T, H, W)``.
        weight: ``(C_out, C_in, kT, kH, kW)``, odd kernel sizes.
        bias: ``(C_out,)`` or None.
        relu: Apply a ReLU.

    Returns:
        ``(N, C_out, T, H, W)`` in channels_last_3d memory.
    """
    y = F.conv3d(x, weight, bias, padding=tuple(k // 2 for k in weight.shape[2:]))
    return (F.relu(y) if relu else y).contiguous(memory_format=CL)


def lstc_block(x: Tensor, stem_weight: Tensor | None, stem_bias: Tensor | None, temporal_weight: Tensor | None,
               temporal_bias: Tensor | None, spatial_weight: Tensor | None, spatial_bias: Tensor | None,
               joint_weight: Tensor | None, num_stripes: int, joint_pw_weight: Tensor | None,
               joint_pw_bias: Tensor | None, fuse_weight: Tensor, fuse_bias: Tensor, pool: bool) -> Tensor:
    """An asymmetric block with an LSTC joint branch at inference (BNs folded), as its parts compose.

    With a stem ``x <- stem_conv3d(x, W_stem, b_stem, relu=True)`` first; then
    ``block_tail([relu(conv3d_same(x, W_t) + b_t), relu(conv3d_same(x, W_s) + b_s)],
    stripe_depthwise_conv3d(x, W_j, S), W_pw, b_pw, W_f, b_f)``, absent branches left out, then
    with ``pool`` :func:`max_pool_hw2`.

    Args:
        x: ``(N, C, T, H, W)``, or ``(N, 1, T, H, W)`` with a stem.
        stem_weight: ``(C, 1, kT, kH, kW)`` or None; ``stem_bias`` ``(C,)`` or None.
        stem_bias: See ``stem_weight``.
        temporal_weight: ``(C_t, C, kT, kH, kW)`` (odd sizes) or None; ``temporal_bias`` ``(C_t,)``.
        temporal_bias: See ``temporal_weight``.
        spatial_weight: ``(C_s, C, kT, kH, kW)`` or None; ``spatial_bias`` ``(C_s,)``.
        spatial_bias: See ``spatial_weight``.
        joint_weight: ``(C, 1, kT, kH, kW)`` stripe depthwise kernel, or None (no joint branch).
        num_stripes: ``S`` of the joint branch.
        joint_pw_weight: ``(C_z, C[, 1, 1, 1])`` pointwise conv of the joint branch (with ``joint_weight``).
        joint_pw_bias: ``(C_z,)``.
        fuse_weight: ``(C_out, C_t + C_s + C_z[, 1, 1, 1])``.
        fuse_bias: ``(C_out,)``.
        pool: Follow with the 2x2 spatial max-pool.

    Returns:
        ``(N, C_out, T, H, W)`` (``H // 2, W // 2`` with ``pool``) in channels_last_3d memory.
    """
    if stem_weight is not None:
        x = stem_conv3d(x, stem_weight, stem_bias, True)
    direct = [conv3d_same(x, w, b, True) for w, b in ((temporal_weight, temporal_bias),
                                                       (spatial_weight, spatial_bias)) if w is not None]
    joint = None if joint_weight is None else stripe_depthwise_conv3d(x, joint_weight, num_stripes)
    y = block_tail(direct, joint, joint_pw_weight, joint_pw_bias, fuse_weight, fuse_bias)
    return max_pool_hw2(y) if pool else y

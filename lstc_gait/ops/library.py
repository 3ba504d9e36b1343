"""The ``lstc_gait`` custom ops: schemas, implementations, fake kernels and autograd formulas.

Each op is a :func:`torch.library.custom_op`, so ``torch.compile(fullgraph=True)`` sees it as
one node (its fake kernel gives shapes, dtypes and strides), autograd uses the registered
formula, and ``torch.library.opcheck`` can test it. Implementation: on CPU float32, with the C++
kernels built (``ops/build.py``), the op calls ``torch.ops.lstc_gait_cpu.*``; on every other
device and dtype (CUDA included) and without the kernels it runs the PyTorch formulation of
``ops/reference.py``, which defines the math. The backward ops are ops too (CPU kernels, same
fallback) and have no autograd formula of their own (no double backward).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import reference
from .build import load_library

CL = torch.channels_last_3d

__all__ = [
    "batch_norm_relu_concat",
    "block_tail",
    "batch_norm_relu_concat_backward",
    "max_pool_hw2",
    "max_pool_hw2_backward",
    "conv3d_same",
    "lstc_block",
    "native_kernels",
    "stem_conv3d",
    "stem_conv3d_weight_grad",
    "stripe_depthwise_conv3d",
    "stripe_depthwise_conv3d_weight_grad",
]


def native_kernels(*tensors: Tensor | None) -> bool:
    """Whether the C++ kernels run for these arguments.

    Args:
        *tensors: The op's tensor arguments (None entries are skipped).

    Returns:
        True when every tensor is a CPU float32 tensor and the kernels are built and loaded.
    """
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors if t is not None) and load_library()


def _cl_empty(like: Tensor, shape: Sequence[int]) -> Tensor:
    return torch.empty(tuple(shape), dtype=like.dtype, device=like.device, memory_format=CL)


def _check_odd_kernel(kernel_size: Sequence[int], where: str) -> None:
    if len(kernel_size) != 3 or any(int(k) < 1 or int(k) % 2 == 0 for k in kernel_size):
        raise ValueError(f"{where}: kernel sizes must be three odd positive ints, got {tuple(kernel_size)}")


def _check_depthwise(x: Tensor, weight: Tensor, num_stripes: int) -> None:
    if x.dim() != 5 or weight.dim() != 5 or weight.shape[1] != 1 or weight.shape[0] != x.shape[1]:
        raise ValueError("stripe_depthwise_conv3d expects x (N, C, T, H, W) and weight (C, 1, kT, kH, kW), got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    _check_odd_kernel(weight.shape[2:], "stripe_depthwise_conv3d")
    if not 1 <= num_stripes <= x.shape[3]:
        raise ValueError(f"stripe_depthwise_conv3d needs 1 <= num_stripes <= H, got {num_stripes} for H={x.shape[3]}")


# --------------------------------------------------------------------------- stripe depthwise conv
@torch.library.custom_op("lstc_gait::stripe_depthwise_conv3d", mutates_args=())
def stripe_depthwise_conv3d(x: Tensor, weight: Tensor, num_stripes: int) -> Tensor:
    """Stripe-local 'same' depthwise conv3d (no tap crosses a height-stripe edge).

    Schema: ``lstc_gait::stripe_depthwise_conv3d(Tensor x, Tensor weight, int num_stripes) -> Tensor``.
    Math: :func:`lstc_gait.ops.reference.stripe_depthwise_conv3d`. Source: the depthwise part of
    LSTC (original lstc-gait project, ``lstc/modules.py``).

    Args:
        x: ``(N, C, T, H, W)`` float tensor.
        weight: ``(C, 1, kT, kH, kW)`` kernel, odd sizes, same dtype as ``x``.
        num_stripes: ``S`` in ``[1, H]``; stripe height ``max(1, H // S)``, the last takes the rest.

    Returns:
        ``(N, C, T, H, W)`` in channels_last_3d memory.

    Raises:
        ValueError: For malformed shapes, even kernels or ``S`` outside ``[1, H]``.
    """
    _check_depthwise(x, weight, num_stripes)
    if native_kernels(x, weight):
        return torch.ops.lstc_gait_cpu.stripe_depthwise_conv3d(x, weight, num_stripes)
    return reference.stripe_depthwise_conv3d(x, weight, num_stripes)


@stripe_depthwise_conv3d.register_fake
def _(x: Tensor, weight: Tensor, num_stripes: int) -> Tensor:
    _check_depthwise(x, weight, num_stripes)
    return _cl_empty(x, x.shape)


@torch.library.custom_op("lstc_gait::stripe_depthwise_conv3d_weight_grad", mutates_args=())
def stripe_depthwise_conv3d_weight_grad(x: Tensor, grad_out: Tensor, kernel_size: Sequence[int],
                                        num_stripes: int) -> Tensor:
    """Kernel gradient of ``stripe_depthwise_conv3d``.

    Schema: ``lstc_gait::stripe_depthwise_conv3d_weight_grad(Tensor x, Tensor grad_out, SymInt[] kernel_size,
    int num_stripes) -> Tensor``.

    Args:
        x: ``(N, C, T, H, W)`` forward input.
        grad_out: ``(N, C, T, H, W)`` gradient of the forward output.
        kernel_size: ``(kT, kH, kW)``, odd.
        num_stripes: The forward's ``S``.

    Returns:
        ``(C, 1, kT, kH, kW)`` contiguous, ``x``'s dtype (float64 partial sums on the C++ path).

    Raises:
        ValueError: When ``kernel_size`` is not three odd positive ints.
    """
    _check_odd_kernel(kernel_size, "stripe_depthwise_conv3d_weight_grad")
    if native_kernels(x, grad_out):
        return torch.ops.lstc_gait_cpu.stripe_depthwise_conv3d_weight_grad(x, grad_out, list(kernel_size), num_stripes)
    return reference.stripe_depthwise_conv3d_weight_grad(x, grad_out, list(kernel_size), num_stripes)


@stripe_depthwise_conv3d_weight_grad.register_fake
def _(x: Tensor, grad_out: Tensor, kernel_size: Sequence[int], num_stripes: int) -> Tensor:
    return x.new_empty((x.shape[1], 1, *kernel_size))


def _sdw_setup(ctx, inputs, output) -> None:
    x, weight, num_stripes = inputs
    ctx.save_for_backward(x, weight)
    ctx.num_stripes = num_stripes


def _sdw_backward(ctx, grad: Tensor):
    x, weight = ctx.saved_tensors
    grad = grad.to(x.dtype)
    grad_x = grad_w = None
    if ctx.needs_input_grad[0]:
        # The transpose of this conv is the same conv with the kernel flipped in T, H and W (odd
        # kernels, 'same' padding, and "same stripe" is symmetric).
        grad_x = stripe_depthwise_conv3d(grad, weight.flip((2, 3, 4)), ctx.num_stripes)
    if ctx.needs_input_grad[1]:
        grad_w = stripe_depthwise_conv3d_weight_grad(x, grad, list(weight.shape[2:]), ctx.num_stripes)
    return grad_x, grad_w, None


stripe_depthwise_conv3d.register_autograd(_sdw_backward, setup_context=_sdw_setup)


# --------------------------------------------------------------------------- stem conv
def _check_stem(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    if x.dim() != 5 or x.shape[1] != 1 or weight.dim() != 5 or weight.shape[1] != 1:
        raise ValueError("stem_conv3d expects x (N, 1, T, H, W) and weight (C, 1, kT, kH, kW), got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    _check_odd_kernel(weight.shape[2:], "stem_conv3d")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"stem_conv3d bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")


@torch.library.custom_op("lstc_gait::stem_conv3d", mutates_args=())
def stem_conv3d(x: Tensor, weight: Tensor, bias: Tensor | None, relu: bool) -> Tensor:
    """'Same' conv3d of a one-channel input, + bias, + optional ReLU, written channels_last_3d.

    Schema: ``lstc_gait::stem_conv3d(Tensor x, Tensor weight, Tensor? bias, bool relu) -> Tensor``.
    A one-channel input makes the library conv answer in the default layout (a full-size copy
    follows); the kernel writes channels_last_3d directly and fuses an eval-mode BN's bias + ReLU.

    Args:
        x: ``(N, 1, T, H, W)`` float tensor.
        weight: ``(C, 1, kT, kH, kW)``, odd sizes.
        bias: ``(C,)`` or None.
        relu: Apply a ReLU.

    Returns:
        ``(N, C, T, H, W)`` in channels_last_3d memory.

    Raises:
        ValueError: For malformed shapes or even kernels.
    """
    _check_stem(x, weight, bias)
    if native_kernels(x, weight, bias):
        return torch.ops.lstc_gait_cpu.stem_conv3d(x, weight, bias, relu)
    return reference.stem_conv3d(x, weight, bias, relu)


@stem_conv3d.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None, relu: bool) -> Tensor:
    _check_stem(x, weight, bias)
    return _cl_empty(x, (x.shape[0], weight.shape[0], *x.shape[2:]))


@torch.library.custom_op("lstc_gait::stem_conv3d_weight_grad", mutates_args=())
def stem_conv3d_weight_grad(x: Tensor, grad_out: Tensor, kernel_size: Sequence[int]) -> Tensor:
    """Kernel gradient of ``stem_conv3d`` (the ReLU mask already applied to ``grad_out``).

    Schema: ``lstc_gait::stem_conv3d_weight_grad(Tensor x, Tensor grad_out, SymInt[] kernel_size) -> Tensor``.

    Args:
        x: ``(N, 1, T, H, W)`` forward input.
        grad_out: ``(N, C, T, H, W)``.
        kernel_size: ``(kT, kH, kW)``, odd.

    Returns:
        ``(C, 1, kT, kH, kW)`` contiguous.

    Raises:
        ValueError: When ``kernel_size`` is not three odd positive ints.
    """
    _check_odd_kernel(kernel_size, "stem_conv3d_weight_grad")
    if native_kernels(x, grad_out):
        return torch.ops.lstc_gait_cpu.stem_conv3d_weight_grad(x, grad_out, list(kernel_size))
    return reference.stem_conv3d_weight_grad(x, grad_out, list(kernel_size))


@stem_conv3d_weight_grad.register_fake
def _(x: Tensor, grad_out: Tensor, kernel_size: Sequence[int]) -> Tensor:
    return x.new_empty((grad_out.shape[1], 1, *kernel_size))


def _conv_relu_setup(ctx, inputs, output) -> None:
    """Autograd context of the ``(x, weight, bias, relu)`` conv ops (stem and ``conv3d_same``)."""
    x, weight, bias, relu = inputs
    ctx.save_for_backward(x, weight, output if relu else None)
    ctx.relu, ctx.has_bias = relu, bias is not None


def _conv_relu_saved(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(x, weight, grad)`` with the ReLU's mask applied to ``grad`` (from the saved output)."""
    x, weight, y = ctx.saved_tensors
    grad = grad.to(x.dtype)
    if ctx.relu:
        grad = torch.where(y > 0, grad, 0.0)
    return x, weight, grad


def _stem_backward(ctx, grad: Tensor):
    x, weight, grad = _conv_relu_saved(ctx, grad)
    grad_x = grad_w = grad_b = None
    if ctx.needs_input_grad[0]:
        padding = [k // 2 for k in weight.shape[2:]]
        grad_x = torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1, 1], padding, [1, 1, 1], False,
                                                     [0, 0, 0], 1, [True, False, False])[0]
    if ctx.needs_input_grad[1]:
        grad_w = stem_conv3d_weight_grad(x, grad, list(weight.shape[2:]))
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_b = grad.sum(dim=(0, 2, 3, 4))
    return grad_x, grad_w, grad_b, None


stem_conv3d.register_autograd(_stem_backward, setup_context=_conv_relu_setup)


# --------------------------------------------------------------------------- dense 'same' conv
def _check_conv_same(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    if x.dim() != 5 or weight.dim() != 5 or weight.shape[1] != x.shape[1]:
        raise ValueError("conv3d_same expects x (N, C_in, T, H, W) and weight (C_out, C_in, kT, kH, kW), got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    _check_odd_kernel(weight.shape[2:], "conv3d_same")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"conv3d_same bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")


@torch.library.custom_op("lstc_gait::conv3d_same", mutates_args=())
def conv3d_same(x: Tensor, weight: Tensor, bias: Tensor | None, relu: bool) -> Tensor:
    """A dense stride-1 conv3d with 'same' zero padding (``k // 2``), + bias, + optional ReLU.

    Schema: ``lstc_gait::conv3d_same(Tensor x, Tensor weight, Tensor? bias, bool relu) -> Tensor``.
    The asymmetric blocks' spatial and temporal branches at inference (their BN folded into
    ``weight`` and ``bias``) where ``models.convbn.conv3d_inference`` routes them. oneDNN blocks
    output channels by 16 and runs these narrow convs (8 output channels) at a fraction of its
    speed; the kernel vectorises over output columns (per frame, ``kT == 1``, frames at least 16
    wide, channels in multiples of 8) or over output channels (every other shape). Math:
    :func:`lstc_gait.ops.reference.conv3d_same`.

    Args:
        x: ``(N, C_in, T, H, W)`` float tensor.
        weight: ``(C_out, C_in, kT, kH, kW)``, odd kernel sizes.
        bias: ``(C_out,)`` or None.
        relu: Apply a ReLU.

    Returns:
        ``(N, C_out, T, H, W)`` in channels_last_3d memory.

    Raises:
        ValueError: For malformed shapes or even kernels.
    """
    _check_conv_same(x, weight, bias)
    if native_kernels(x, weight, bias):
        return torch.ops.lstc_gait_cpu.conv3d_same(x, weight, bias, relu)
    return reference.conv3d_same(x, weight, bias, relu)


@conv3d_same.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None, relu: bool) -> Tensor:
    _check_conv_same(x, weight, bias)
    return _cl_empty(x, (x.shape[0], weight.shape[0], *x.shape[2:]))


def _conv_same_backward(ctx, grad: Tensor):
    x, weight, grad = _conv_relu_saved(ctx, grad)
    padding = [k // 2 for k in weight.shape[2:]]
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1, 1], padding, [1, 1, 1], False, [0, 0, 0], 1,
        [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False])
    grad_b = grad.sum(dim=(0, 2, 3, 4)) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return grad_x, grad_w, grad_b, None


conv3d_same.register_autograd(_conv_same_backward, setup_context=_conv_relu_setup)


# --------------------------------------------------------------------------- 2x2 max-pool
def _check_pool(x: Tensor) -> None:
    if x.dim() != 5:
        raise ValueError(f"max_pool_hw2 expects (N, C, T, H, W), got {tuple(x.shape)}")


@torch.library.custom_op("lstc_gait::max_pool_hw2", mutates_args=())
def max_pool_hw2(x: Tensor) -> Tensor:
    """2x2 spatial max-pool, ``F.max_pool3d(x, (1, 2, 2))`` values, no index tensor.

    Schema: ``lstc_gait::max_pool_hw2(Tensor x) -> Tensor``. The backward recomputes each window's
    first maximum from the saved input (NaN propagates, first maximum wins ties, like the library).

    Args:
        x: ``(N, C, T, H, W)`` float tensor.

    Returns:
        ``(N, C, T, H // 2, W // 2)`` in channels_last_3d memory.

    Raises:
        ValueError: When ``x`` is not 5-D.
    """
    _check_pool(x)
    if native_kernels(x):
        return torch.ops.lstc_gait_cpu.max_pool_hw2(x)
    return reference.max_pool_hw2(x)


@max_pool_hw2.register_fake
def _(x: Tensor) -> Tensor:
    _check_pool(x)
    n, c, t, h, w = x.shape
    return _cl_empty(x, (n, c, t, h // 2, w // 2))


@torch.library.custom_op("lstc_gait::max_pool_hw2_backward", mutates_args=())
def max_pool_hw2_backward(x: Tensor, grad_out: Tensor) -> Tensor:
    """Input gradient of ``max_pool_hw2``.

    Schema: ``lstc_gait::max_pool_hw2_backward(Tensor x, Tensor grad_out) -> Tensor``.

    Args:
        x: ``(N, C, T, H, W)`` forward input.
        grad_out: ``(N, C, T, H // 2, W // 2)``.

    Returns:
        ``(N, C, T, H, W)`` channels_last_3d: each window's gradient at its first maximum, zero elsewhere.
    """
    if native_kernels(x, grad_out):
        return torch.ops.lstc_gait_cpu.max_pool_hw2_backward(x, grad_out)
    return reference.max_pool_hw2_backward(x, grad_out)


@max_pool_hw2_backward.register_fake
def _(x: Tensor, grad_out: Tensor) -> Tensor:
    return _cl_empty(x, x.shape)


def _pool_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])


def _pool_backward(ctx, grad: Tensor):
    (x,) = ctx.saved_tensors
    return max_pool_hw2_backward(x, grad.to(x.dtype))


max_pool_hw2.register_autograd(_pool_backward, setup_context=_pool_setup)


# --------------------------------------------------------------------------- BN + ReLU + concat
def _check_bn(inputs: Sequence[Tensor], weights: Sequence[Tensor], biases: Sequence[Tensor], eps: Sequence[float],
              passthrough: Sequence[Tensor]) -> None:
    if not inputs or not len(inputs) == len(weights) == len(biases) == len(eps):
        raise ValueError("batch_norm_relu_concat needs >= 1 input and one weight, bias and eps per input")
    ref = inputs[0]
    frame = (ref.shape[0], *ref.shape[2:])
    for t in (*inputs, *passthrough):
        if t.dim() != 5 or (t.shape[0], *t.shape[2:]) != frame:
            raise ValueError(f"batch_norm_relu_concat: all tensors must be (N, C_i, T, H, W) with N, T, H, W = "
                             f"{tuple(frame)}, got {tuple(t.shape)}")
    for x, w, b in zip(inputs, weights, biases, strict=True):
        if tuple(w.shape) != (x.shape[1],) or tuple(b.shape) != (x.shape[1],):
            raise ValueError("batch_norm_relu_concat: weights[i] and biases[i] must be (C_i,)")


@torch.library.custom_op("lstc_gait::batch_norm_relu_concat", mutates_args=())
def batch_norm_relu_concat(inputs: Sequence[Tensor], weights: Sequence[Tensor], biases: Sequence[Tensor],
                           eps: Sequence[float], passthrough: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Training BatchNorm + ReLU of several branches, written into their concatenation, in one node.

    Schema: ``lstc_gait::batch_norm_relu_concat(Tensor[] inputs, Tensor[] weights, Tensor[] biases,
    float[] eps, Tensor[] passthrough) -> (Tensor, Tensor, Tensor)``. On the C++ path: one pass for
    the per-channel sums (shifted by the first row against cancellation, float64 totals) and one
    pass writing ``relu(x * scale + shift)`` into the output's channel slice; the backward
    recomputes the ReLU mask from ``x`` so the output is not kept. Running statistics are not
    touched: the caller updates them from the returned ``mean`` and ``var``.

    Args:
        inputs: ``(N, C_i, T, H, W)`` tensors to normalise with batch statistics.
        weights: ``(C_i,)`` BN scales.
        biases: ``(C_i,)`` BN shifts.
        eps: One epsilon per input.
        passthrough: ``(N, P_j, T, H, W)`` tensors copied after the normalised channels.

    Returns:
        ``(out, mean, var)``: ``out`` ``(N, sum C_i + sum P_j, T, H, W)`` channels_last_3d, the
        ``(sum C_i,)`` batch means and biased variances (not differentiable).

    Raises:
        ValueError: When the lists disagree in length or the tensors in N, T, H, W.
    """
    _check_bn(inputs, weights, biases, eps, passthrough)
    if native_kernels(*inputs, *weights, *biases, *passthrough):
        return torch.ops.lstc_gait_cpu.batch_norm_relu_concat(list(inputs), list(weights), list(biases), list(eps),
                                                              list(passthrough))
    return reference.batch_norm_relu_concat(list(inputs), list(weights), list(biases), list(eps), list(passthrough))


@batch_norm_relu_concat.register_fake
def _(inputs, weights, biases, eps, passthrough):
    _check_bn(inputs, weights, biases, eps, passthrough)
    ref = inputs[0]
    bn = sum(x.shape[1] for x in inputs)
    total = bn + sum(t.shape[1] for t in passthrough)
    return (_cl_empty(ref, (ref.shape[0], total, *ref.shape[2:])), ref.new_empty((bn,)), ref.new_empty((bn,)))


@torch.library.custom_op("lstc_gait::batch_norm_relu_concat_backward", mutates_args=())
def batch_norm_relu_concat_backward(grad_out: Tensor, inputs: Sequence[Tensor], weights: Sequence[Tensor],
                                    biases: Sequence[Tensor], mean: Tensor, var: Tensor,
                                    eps: Sequence[float]) -> list[Tensor]:
    """Gradients of ``batch_norm_relu_concat`` for the normalised inputs and the BN parameters.

    Schema: ``lstc_gait::batch_norm_relu_concat_backward(Tensor grad_out, Tensor[] inputs, Tensor[] weights,
    Tensor[] biases, Tensor mean, Tensor var, float[] eps) -> Tensor[]``.

    Args:
        grad_out: ``(N, C_total, T, H, W)`` gradient of the concatenated output.
        inputs: The forward's normalised inputs.
        weights: Their BN scales.
        biases: Their BN shifts.
        mean: ``(sum C_i,)`` means the forward returned.
        var: ``(sum C_i,)`` biased variances the forward returned.
        eps: The BNs' epsilons.

    Returns:
        ``[dx_1, ..., dx_k, dgamma, dbeta]``: per-input channels_last_3d gradients, then the
        concatenated ``(sum C_i,)`` parameter gradients.
    """
    if native_kernels(grad_out, *inputs, *weights, *biases, mean, var):
        grads, dgamma, dbeta = torch.ops.lstc_gait_cpu.batch_norm_relu_concat_backward(
            grad_out, list(inputs), list(weights), list(biases), mean, var, list(eps))
        return [*grads, dgamma, dbeta]
    return reference.batch_norm_relu_concat_backward(grad_out, list(inputs), list(weights), list(biases), mean, var,
                                                     list(eps))


@batch_norm_relu_concat_backward.register_fake
def _(grad_out, inputs, weights, biases, mean, var, eps):
    return [*(_cl_empty(x, x.shape) for x in inputs), mean.new_empty(mean.shape), mean.new_empty(mean.shape)]


def _bnr_setup(ctx, inputs, output) -> None:
    xs, weights, biases, eps, passthrough = inputs
    _, mean, var = output
    ctx.k = len(xs)
    ctx.eps = list(eps)
    ctx.passthrough_channels = [t.shape[1] for t in passthrough]
    ctx.save_for_backward(*xs, *weights, *biases, mean, var)
    ctx.mark_non_differentiable(mean, var)


def _bnr_backward(ctx, grad_out: Tensor, _grad_mean, _grad_var):
    k = ctx.k
    saved = ctx.saved_tensors
    xs, weights, biases = list(saved[:k]), list(saved[k:2 * k]), list(saved[2 * k:3 * k])
    mean, var = saved[3 * k], saved[3 * k + 1]
    grad_out = grad_out.to(xs[0].dtype)
    grads = batch_norm_relu_concat_backward(grad_out, xs, weights, biases, mean, var, ctx.eps)
    grad_x, dgamma, dbeta = grads[:k], grads[k], grads[k + 1]
    grad_w, grad_b, offset = [], [], 0
    for x in xs:
        c = x.shape[1]
        grad_w.append(dgamma[offset:offset + c])
        grad_b.append(dbeta[offset:offset + c])
        offset += c
    grad_pass = []
    for c in ctx.passthrough_channels:
        grad_pass.append(grad_out[:, offset:offset + c])
        offset += c
    return grad_x, grad_w, grad_b, None, grad_pass


batch_norm_relu_concat.register_autograd(_bnr_backward, setup_context=_bnr_setup)


# --------------------------------------------------------------------------------------------- block tail
def _check_tail(direct: Sequence[Tensor], joint: Tensor | None, joint_weight: Tensor | None,
                joint_bias: Tensor | None, fuse_weight: Tensor, fuse_bias: Tensor) -> tuple[int, int]:
    if not direct and joint is None:
        raise ValueError("block_tail needs at least one branch")
    ref = direct[0] if direct else joint
    frame = (ref.shape[0], *ref.shape[2:])
    for t in (*direct, *([joint] if joint is not None else [])):
        if t.dim() != 5 or (t.shape[0], *t.shape[2:]) != frame:
            raise ValueError(f"block_tail: branch outputs must share N, T, H, W = {tuple(frame)}, got {tuple(t.shape)}")
    cz = 0
    if joint is not None:
        cz = joint.shape[1]
        if joint_weight is not None:
            if joint_bias is None or joint_weight.shape[1] != joint.shape[1]:
                raise ValueError("block_tail: joint_weight must be (C_z, C_joint, ...) and comes with joint_bias")
            cz = joint_weight.shape[0]
    k = sum(t.shape[1] for t in direct) + cz
    if fuse_weight.shape[1] != k or fuse_bias.shape != (fuse_weight.shape[0],):
        raise ValueError(f"block_tail: fuse_weight takes {fuse_weight.shape[1]} channels, the branches give {k}")
    return k, fuse_weight.shape[0]


@torch.library.custom_op("lstc_gait::block_tail", mutates_args=())
def block_tail(direct: Sequence[Tensor], joint: Tensor | None, joint_weight: Tensor | None,
               joint_bias: Tensor | None, fuse_weight: Tensor, fuse_bias: Tensor) -> Tensor:
    """Inference tail of a block in one pass: joint pointwise conv + ReLU, concatenation, fuse conv + ReLU.

    Schema: ``lstc_gait::block_tail(Tensor[] direct, Tensor? joint, Tensor? joint_weight, Tensor? joint_bias,
    Tensor fuse_weight, Tensor fuse_bias) -> Tensor``. Math: :func:`lstc_gait.ops.reference.block_tail`.
    The C++ kernel computes each output position from the branch outputs directly (register-blocked
    8-position matrix products), writing neither ``z`` nor the concatenation.

    Args:
        direct: Activated ``(N, C_i, T, H, W)`` temporal/spatial branch outputs.
        joint: ``(N, C_j, T, H, W)`` joint-branch tensor, or None.
        joint_weight: ``(C_z, C_j, 1, 1, 1)`` folded pointwise weight, or None (``z = joint``).
        joint_bias: ``(C_z,)`` folded bias, or None.
        fuse_weight: ``(C_out, sum C_i + C_z, 1, 1, 1)`` folded fuse weight.
        fuse_bias: ``(C_out,)``.

    Returns:
        ``(N, C_out, T, H, W)`` in channels_last_3d memory.

    Raises:
        ValueError: When the channel counts or frame shapes disagree.
    """
    k, _ = _check_tail(direct, joint, joint_weight, joint_bias, fuse_weight, fuse_bias)
    tensors = (*direct, joint, joint_weight, joint_bias, fuse_weight, fuse_bias)
    if native_kernels(*tensors) and k <= 4096:
        return torch.ops.lstc_gait_cpu.block_tail(list(direct), joint, joint_weight, joint_bias, fuse_weight,
                                                  fuse_bias)
    return reference.block_tail(list(direct), joint, joint_weight, joint_bias, fuse_weight, fuse_bias)


@block_tail.register_fake
def _(direct, joint, joint_weight, joint_bias, fuse_weight, fuse_bias):
    _, cout = _check_tail(direct, joint, joint_weight, joint_bias, fuse_weight, fuse_bias)
    ref = direct[0] if direct else joint
    return _cl_empty(ref, (ref.shape[0], cout, *ref.shape[2:]))


def _tail_setup(ctx, inputs, output) -> None:
    direct, joint, joint_weight, joint_bias, fuse_weight, fuse_bias = inputs
    ctx.k = len(direct)
    ctx.has_joint, ctx.has_jw = joint is not None, joint_weight is not None
    ctx.save_for_backward(*direct, joint, joint_weight, joint_bias, fuse_weight, output)


def _conv1x1_backward(grad: Tensor, x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(grad_x, grad_weight shaped like ``weight``, grad_bias) of ``conv1x1(x, weight) + bias``."""
    w = weight.reshape(weight.shape[0], -1)
    grad_x = torch.einsum("nothw,oi->nithw", grad, w).contiguous(memory_format=CL)
    grad_w = torch.einsum("nothw,nithw->oi", grad, x).reshape(weight.shape)
    return grad_x, grad_w, grad.sum(dim=(0, 2, 3, 4))


def _tail_backward(ctx, grad: Tensor):
    saved = ctx.saved_tensors
    k = ctx.k
    direct = list(saved[:k])
    joint, joint_weight, joint_bias, fuse_weight, out = saved[k:]
    parts = list(direct)
    z = None
    if ctx.has_joint:
        z = joint if not ctx.has_jw else torch.relu(torch.nn.functional.conv3d(
            joint, joint_weight.reshape(joint_weight.shape[0], -1, 1, 1, 1), joint_bias))
        parts.append(z)
    cat = torch.cat(parts, dim=1)
    g = torch.where(out > 0, grad.to(out.dtype), 0.0)
    grad_cat, grad_fw, grad_fb = _conv1x1_backward(g, cat, fuse_weight)
    widths = [t.shape[1] for t in parts]
    pieces = list(torch.split(grad_cat, widths, dim=1))
    grad_direct = pieces[:k]
    grad_joint = grad_jw = grad_jb = None
    if ctx.has_joint:
        grad_z = pieces[k]
        if ctx.has_jw:
            grad_z = torch.where(z > 0, grad_z, 0.0)
            grad_joint, grad_jw, grad_jb = _conv1x1_backward(grad_z, joint, joint_weight)
        else:
            grad_joint = grad_z
    return grad_direct, grad_joint, grad_jw, grad_jb, grad_fw, grad_fb


block_tail.register_autograd(_tail_backward, setup_context=_tail_setup)


# --------------------------------------------------------------------------- whole block
def _check_block(x: Tensor, stem_weight, stem_bias, temporal_weight, temporal_bias, spatial_weight, spatial_bias,
                 joint_weight, num_stripes: int, joint_pw_weight, joint_pw_bias, fuse_weight: Tensor,
                 fuse_bias: Tensor) -> int:
    if x.dim() != 5:
        raise ValueError(f"lstc_block expects x (N, C, T, H, W), got {tuple(x.shape)}")
    if stem_weight is not None:
        _check_stem(x, stem_weight, stem_bias)
        # the block's input: the stem's output (shape only)
        x = torch.empty((x.shape[0], stem_weight.shape[0], *x.shape[2:]), device="meta")
    width = 0
    for w, b in ((temporal_weight, temporal_bias), (spatial_weight, spatial_bias)):
        if w is not None:
            _check_conv_same(x, w, b)
            width += w.shape[0]
    if joint_weight is not None:
        _check_depthwise(x, joint_weight, num_stripes)
        if (joint_pw_weight is None or joint_pw_bias is None or joint_pw_weight.shape[1] != x.shape[1]
                or tuple(joint_pw_bias.shape) != (joint_pw_weight.shape[0],)):
            raise ValueError("lstc_block: joint_pw_weight must be (C_z, C, 1, 1, 1) with joint_pw_bias (C_z,) "
                             "when joint_weight is given")
        width += joint_pw_weight.shape[0]
    if width == 0:
        raise ValueError("lstc_block needs at least one branch")
    if fuse_weight.shape[1] != width or tuple(fuse_bias.shape) != (fuse_weight.shape[0],):
        raise ValueError(f"lstc_block: fuse_weight takes {fuse_weight.shape[1]} channels, the branches give {width}")
    return fuse_weight.shape[0]


@torch.library.custom_op("lstc_gait::lstc_block", mutates_args=())
def lstc_block(x: Tensor, stem_weight: Tensor | None, stem_bias: Tensor | None, temporal_weight: Tensor | None,
               temporal_bias: Tensor | None, spatial_weight: Tensor | None, spatial_bias: Tensor | None,
               joint_weight: Tensor | None, num_stripes: int, joint_pw_weight: Tensor | None,
               joint_pw_bias: Tensor | None, fuse_weight: Tensor, fuse_bias: Tensor, pool: bool) -> Tensor:
    """An asymmetric block with an LSTC joint branch at inference (every BN folded), in one op.

    Schema: ``lstc_gait::lstc_block(Tensor x, Tensor? stem_weight, Tensor? stem_bias,
    Tensor? temporal_weight, Tensor? temporal_bias, Tensor? spatial_weight, Tensor? spatial_bias,
    Tensor? joint_weight, SymInt num_stripes, Tensor? joint_pw_weight, Tensor? joint_pw_bias,
    Tensor fuse_weight, Tensor fuse_bias, bool pool) -> Tensor``. The composition of, with a
    stem, ``stem_conv3d`` (+ ReLU), then ``conv3d_same`` (temporal and spatial branches, ReLU),
    ``stripe_depthwise_conv3d`` (joint), ``block_tail`` and, with ``pool``, ``max_pool_hw2``:
    :func:`lstc_gait.ops.reference.lstc_block`. The C++ kernel runs it one frame at a time with
    the frame's branch outputs (and the stem's output frames it reads) in per-thread scratch, so
    the block writes only its (pooled) output; fresh intermediate tensors cost a page fault per
    4 KiB at first touch (docs/performance.md). The gradient is the composition's (recomputed in
    the backward).

    Args:
        x: ``(N, C, T, H, W)`` float block input, frames past each sequence's length already zero;
            with a stem its ``(N, 1, T, H, W)`` input (every frame valid).
        stem_weight: ``(C, 1, kT, kH, kW)`` stem conv (BN folded, odd sizes), or None.
        stem_bias: ``(C,)`` or None.
        temporal_weight: ``(C_t, C, kT, kH, kW)`` (odd sizes, 'same' padding) or None.
        temporal_bias: ``(C_t,)`` or None.
        spatial_weight: ``(C_s, C, kT, kH, kW)`` or None.
        spatial_bias: ``(C_s,)`` or None.
        joint_weight: ``(C, 1, kT, kH, kW)`` stripe depthwise kernel, or None (no joint branch).
        num_stripes: ``S``, ``1 <= S <= H``.
        joint_pw_weight: ``(C_z, C, 1, 1, 1)`` joint pointwise conv (BN folded), with ``joint_weight``.
        joint_pw_bias: ``(C_z,)``.
        fuse_weight: ``(C_out, C_t + C_s + C_z, 1, 1, 1)`` (BN folded).
        fuse_bias: ``(C_out,)``.
        pool: Follow with a 2x2 spatial max-pool (odd last row/column dropped).

    Returns:
        ``relu(fuse(cat(branches)))``, ``(N, C_out, T, H, W)`` (``(N, C_out, T, H // 2, W // 2)``
        with ``pool``) in channels_last_3d memory.

    Raises:
        ValueError: For malformed shapes, even kernels, a bad ``num_stripes`` or no branch.
    """
    args = (x, stem_weight, stem_bias, temporal_weight, temporal_bias, spatial_weight, spatial_bias, joint_weight,
            num_stripes, joint_pw_weight, joint_pw_bias, fuse_weight, fuse_bias, pool)
    _check_block(*args[:-1])
    if native_kernels(*(a for a in args if isinstance(a, Tensor))):
        return torch.ops.lstc_gait_cpu.lstc_block(*args)
    return reference.lstc_block(*args)


@lstc_block.register_fake
def _(x, stem_weight, stem_bias, temporal_weight, temporal_bias, spatial_weight, spatial_bias, joint_weight,
      num_stripes, joint_pw_weight, joint_pw_bias, fuse_weight, fuse_bias, pool):
    cout = _check_block(x, stem_weight, stem_bias, temporal_weight, temporal_bias, spatial_weight, spatial_bias,
                        joint_weight, num_stripes, joint_pw_weight, joint_pw_bias, fuse_weight, fuse_bias)
    n, _, t, h, w = x.shape
    return _cl_empty(x, (n, cout, t, h // 2, w // 2) if pool else (n, cout, t, h, w))


_BLOCK_ARGS = 14  # lstc_block's arguments; num_stripes and pool (slots 8 and 13) are not tensors


def _block_setup(ctx, inputs, output) -> None:
    ctx.num_stripes, ctx.pool = inputs[8], inputs[13]
    ctx.tensor_slots = [i for i, a in enumerate(inputs) if isinstance(a, Tensor)]
    ctx.save_for_backward(*(inputs[i] for i in ctx.tensor_slots))


def _block_backward(ctx, grad: Tensor):
    a: list = [None] * _BLOCK_ARGS
    for slot, t in zip(ctx.tensor_slots, ctx.saved_tensors, strict=True):
        a[slot] = t.detach().requires_grad_(ctx.needs_input_grad[slot])
    wanted = [i for i in ctx.tensor_slots if ctx.needs_input_grad[i]]
    grads: list = [None] * _BLOCK_ARGS
    with torch.enable_grad():
        # the op's gradient is its composition's: the parts' ops and their autograd formulas
        x = a[0] if a[1] is None else stem_conv3d(a[0], a[1], a[2], True)
        direct = [conv3d_same(x, a[w], a[w + 1], True) for w in (3, 5) if a[w] is not None]
        joint = None if a[7] is None else stripe_depthwise_conv3d(x, a[7], ctx.num_stripes)
        out = block_tail(direct, joint, a[9], a[10], a[11], a[12])
        if ctx.pool:
            out = max_pool_hw2(out)
        found = torch.autograd.grad(out, [a[i] for i in wanted], grad, allow_unused=True)
    for i, g in zip(wanted, found, strict=True):
        grads[i] = g
    return tuple(grads)


lstc_block.register_autograd(_block_backward, setup_context=_block_setup)

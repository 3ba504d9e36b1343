"""Custom ops of the LSTC model family, in the ``torch.ops.lstc_gait`` namespace.

=====================================================  ==================================================
op                                                      schema
=====================================================  ==================================================
``stripe_depthwise_conv3d``                             ``(Tensor x, Tensor weight, SymInt num_stripes) -> Tensor``
``stripe_depthwise_conv3d_weight_grad``                 ``(Tensor x, Tensor grad_out, SymInt[] kernel_size, SymInt num_stripes) -> Tensor``
``stem_conv3d``                                         ``(Tensor x, Tensor weight, Tensor? bias, bool relu) -> Tensor``
``stem_conv3d_weight_grad``                             ``(Tensor x, Tensor grad_out, SymInt[] kernel_size) -> Tensor``
``conv3d_same``                                         ``(Tensor x, Tensor weight, Tensor? bias, bool relu) -> Tensor``
``max_pool_hw2``                                        ``(Tensor x) -> Tensor``
``max_pool_hw2_backward``                               ``(Tensor x, Tensor grad_out) -> Tensor``
``batch_norm_relu_concat``                              ``(Tensor[] inputs, Tensor[] weights, Tensor[] biases, float[] eps, Tensor[] passthrough) -> (Tensor, Tensor, Tensor)``
``batch_norm_relu_concat_backward``                     ``(Tensor grad_out, Tensor[] inputs, Tensor[] weights, Tensor[] biases, Tensor mean, Tensor var, float[] eps) -> Tensor[]``
``block_tail``                                          ``(Tensor[] direct, Tensor? joint, Tensor? joint_weight, Tensor? joint_bias, Tensor fuse_weight, Tensor fuse_bias) -> Tensor``
``lstc_block``                                          ``(Tensor x, Tensor? temporal_weight, Tensor? temporal_bias, Tensor? spatial_weight, Tensor? spatial_bias, Tensor? joint_weight, SymInt num_stripes, Tensor? joint_pw_weight, Tensor? joint_pw_bias, Tensor fuse_weight, Tensor fuse_bias) -> Tensor``
=====================================================  ==================================================

The forward ops have fake kernels and autograd formulas (their backward is made of the
``*_weight_grad`` / ``*_backward`` ops and ATen ops). On CPU float32 they run C++ kernels built
just in time (:mod:`lstc_gait.ops.build`); everywhere else (CUDA, other dtypes, no compiler,
``LSTC_GAIT_NATIVE=0``) they run the PyTorch formulation in :mod:`lstc_gait.ops.reference`.
Importing this package registers the ops; the kernels are built on first CPU use.
"""

from __future__ import annotations

from . import reference
from .build import load_library, native_enabled
from .library import (
    batch_norm_relu_concat,
    batch_norm_relu_concat_backward,
    block_tail,
    conv3d_same,
    lstc_block,
    max_pool_hw2,
    max_pool_hw2_backward,
    native_kernels,
    stem_conv3d,
    stem_conv3d_weight_grad,
    stripe_depthwise_conv3d,
    stripe_depthwise_conv3d_weight_grad,
)

OP_NAMES = (
    "stripe_depthwise_conv3d",
    "stripe_depthwise_conv3d_weight_grad",
    "stem_conv3d",
    "stem_conv3d_weight_grad",
    "conv3d_same",
    "max_pool_hw2",
    "max_pool_hw2_backward",
    "batch_norm_relu_concat",
    "batch_norm_relu_concat_backward",
    "block_tail",
    "lstc_block",
)

__all__ = [
    "OP_NAMES",
    "batch_norm_relu_concat",
    "batch_norm_relu_concat_backward",
    "block_tail",
    "conv3d_same",
    "load_library",
    "lstc_block",
    "max_pool_hw2",
    "max_pool_hw2_backward",
    "native_enabled",
    "native_kernels",
    "reference",
    "stem_conv3d",
    "stem_conv3d_weight_grad",
    "stripe_depthwise_conv3d",
    "stripe_depthwise_conv3d_weight_grad",
]

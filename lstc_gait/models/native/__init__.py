"""Run-time compiled C kernels for the CPU hot spots, with PyTorch fallbacks (see build.py)."""

from .build import load_kernels, native_enabled
from .max_pool import native_max_pool_available, native_max_pool_hw2
from .pointwise_fuse import pointwise_fuse
from .stem_conv import native_stem_available, native_stem_conv3d, stem_forward
from .stripe_depthwise import native_stripe_depthwise_available, native_stripe_depthwise_conv3d

__all__ = [
    "load_kernels",
    "native_enabled",
    "native_max_pool_available",
    "native_max_pool_hw2",
    "native_stem_available",
    "native_stem_conv3d",
    "native_stripe_depthwise_available",
    "native_stripe_depthwise_conv3d",
    "pointwise_fuse",
    "stem_forward",
]

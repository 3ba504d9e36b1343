"""Run-time compiled C kernels for the CPU hot spots, with PyTorch fallbacks (see build.py)."""

from .build import load_kernels, native_enabled
from .stem_conv import native_stem_available, native_stem_conv3d, stem_forward
from .stripe_depthwise import native_stripe_depthwise_available, native_stripe_depthwise_conv3d

__all__ = ["load_kernels", "native_enabled", "native_stem_available", "native_stem_conv3d", "stem_forward",
           "native_stripe_depthwise_available", "native_stripe_depthwise_conv3d"]

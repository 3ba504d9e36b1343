"""The LSTC/LSTP model family: stripe-local convolution, asymmetric blocks, stripe pooling, backbone, heads."""

from .backbone import LSTCBackbone
from .blocks import AsymmetricBlock
from .dynamic import DynamicConv3d
from .heads import BNNeckHead, GaitModel, build_gait_model
from .lstc import LSTC
from .pooling import LSTP
from .registry import build_model, model_names, register_model

__all__ = ["LSTCBackbone", "GaitModel", "BNNeckHead", "build_gait_model", "AsymmetricBlock", "LSTC",
           "DynamicConv3d", "LSTP", "build_model", "model_names", "register_model"]

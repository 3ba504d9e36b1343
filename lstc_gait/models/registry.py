"""Model variants registered by name: ``model=<name>`` picks one, its keyword arguments come from the config.

A variant is a named function ``(num_classes, **backbone_kwargs) -> GaitModel`` that fixes what makes
the variant itself (today: the joint branch of the asymmetric block) and takes everything else from
the ``model`` config node, whose defaults live once, in :class:`lstc_gait.config_schema.ModelConfig`.
``conf/model/<name>.yaml`` then only says ``variant: <name>``. Register a new variant with::

    @register_model("my_variant")
    def my_variant(num_classes: int = 0, **kwargs) -> GaitModel:
        return build_gait_model(num_classes, **{**kwargs, "joint_type": "lstc"})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .backbone import feature_rows
from .heads import GaitModel, build_gait_model

ModelBuilder = Callable[..., GaitModel]
# (input height in pixels, the model node's keyword arguments) -> feature rows the stripes are cut from
FeatureRows = Callable[[int, Mapping[str, Any]], "int | None"]
_VARIANTS: dict[str, ModelBuilder] = {}
_FEATURE_ROWS: dict[str, FeatureRows] = {}


def register_model(name: str, feature_rows: FeatureRows | None = None) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering a model builder under ``name``.

    Args:
        name: The variant's name, as used by ``model.variant`` (and the ``conf/model/<name>.yaml`` option).
        feature_rows: ``(input_height, model_kwargs) -> rows`` of the feature map the variant cuts into
            ``num_stripes`` height stripes (None as result, or no function: the variant has no stripes).
            :func:`lstc_gait.pipelines.train.validate_run_config` refuses more stripes than rows.

    Returns:
        The decorator; it returns the function unchanged.

    Raises:
        ValueError: ``name`` is already registered to another function.
    """

    def decorator(fn: ModelBuilder) -> ModelBuilder:
        if name in _VARIANTS and _VARIANTS[name] is not fn:
            raise ValueError(f"model variant {name!r} is already registered")
        _VARIANTS[name] = fn
        if feature_rows is not None:
            _FEATURE_ROWS[name] = feature_rows
        return fn

    return decorator


def stripe_rows(variant: str, input_height: int, model_kwargs: Mapping[str, Any]) -> int | None:
    """Rows of the feature map a variant cuts into ``num_stripes`` stripes, for frames ``input_height`` high.

    Args:
        variant: A registered name.
        input_height: Height of the input silhouettes (pixels).
        model_kwargs: The rest of the ``model`` node (``num_stripes``, ...).

    Returns:
        The number of rows, or None when the variant does not cut stripes (or does not say).

    Raises:
        ValueError: ``variant`` is not registered.
    """
    if variant not in _VARIANTS:
        raise ValueError(f"model.variant={variant!r} is not one of: {', '.join(model_names())}")
    fn = _FEATURE_ROWS.get(variant)
    rows = fn(int(input_height), model_kwargs) if fn is not None else None
    return None if rows is None else int(rows)


def model_names() -> tuple[str, ...]:
    """Names of the registered variants, sorted.

    Returns:
        The names.
    """
    return tuple(sorted(_VARIANTS))


def build_model(variant: str = "lstc", num_classes: int = 0, **kwargs: Any) -> GaitModel:
    """Hydra ``_target_`` of the ``model`` node: build the named variant.

    Args:
        variant: A registered name (:func:`model_names`).
        num_classes: Training identities for the BNNeck classifier (0: embedding only).
        **kwargs: ``LSTCBackbone`` keyword arguments (the rest of the ``model`` node).

    Returns:
        The model, in training mode.

    Raises:
        ValueError: ``variant`` is not registered, or the arguments describe an invalid model.
    """
    if variant not in _VARIANTS:
        raise ValueError(f"model.variant={variant!r} is not one of: {', '.join(model_names())}")
    return _VARIANTS[variant](int(num_classes), **kwargs)


def _with_joint(kwargs: dict[str, Any], default: str) -> dict[str, Any]:
    joint = kwargs.pop("joint_type", None)
    return {**kwargs, "joint_type": joint or default}


def _backbone_rows(input_height: int, model_kwargs: Mapping[str, Any]) -> int:
    """LSTCBackbone: LSTC's stripe-local convolutions and LSTP's stripes see the input after two 2x poolings."""
    return feature_rows(input_height)


@register_model("lstc", feature_rows=_backbone_rows)
def lstc(num_classes: int = 0, **kwargs: Any) -> GaitModel:
    """LSTC: the asymmetric block's joint branch is the stripe-local depthwise 3D conv + pointwise mix.

    Args:
        num_classes: Training identities for the BNNeck classifier (0: embedding only).
        **kwargs: Other ``LSTCBackbone`` keyword arguments; ``joint_type`` defaults to ``"lstc"``.

    Returns:
        The model.
    """
    return build_gait_model(num_classes, **_with_joint(dict(kwargs), "lstc"))


@register_model("dynamic", feature_rows=_backbone_rows)
def dynamic(num_classes: int = 0, **kwargs: Any) -> GaitModel:
    """Dynamic: the joint branch is an expert-gated dynamic 3D conv (experts mixed per sample).

    The gate follows Dynamic Convolution (Chen et al. 2020; see :mod:`lstc_gait.models.dynamic`).

    Args:
        num_classes: Training identities for the BNNeck classifier (0: embedding only).
        **kwargs: Other ``LSTCBackbone`` keyword arguments; ``joint_type`` defaults to ``"dynamic"``.

    Returns:
        The model.
    """
    return build_gait_model(num_classes, **_with_joint(dict(kwargs), "dynamic"))


@register_model("gaitset")
def gaitset(num_classes: int = 0, **kwargs: Any) -> Any:
    """GaitSet (Chao et al., AAAI 2019): per-frame 2D CNN, max set pooling, HPM, part FCs.

    Args:
        num_classes: Training identities for the per-part BNNeck classifier (0: embedding only).
        **kwargs: The ``model`` node; GaitSet reads ``in_channels``, ``part_dim``, ``pyramid`` (HPM
            bins), ``bnneck``, ``input_size``, ``gaitset_channels`` and ignores the LSTC keys.

    Returns:
        A :class:`~lstc_gait.models.gaitset.GaitSet`.
    """
    from .gaitset import build_gaitset

    return build_gaitset(num_classes, **kwargs)


__all__ = ["FeatureRows", "build_model", "model_names", "register_model", "stripe_rows"]

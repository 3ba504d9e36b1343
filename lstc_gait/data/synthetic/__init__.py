"""SynthGait: a synthetic, CASIA-B-like silhouette dataset (see docs/synthetic.md).

Specified by /work/shared/docs/SYNTHGAIT.md; it writes the raw layout of CASIA-B (Yu et al. 2006).

Public API: :class:`SynthParams`, :func:`generate_raw` (raw CASIA-B tree of PNGs) and
:func:`ensure_synthetic` (generate + prepare once per parameter set, return the cache dir).
"""

from .generate import (
    ALL_TYPES,
    ALL_VIEWS,
    DEFAULT_VIEWS,
    GENERATOR_VERSION,
    SynthParams,
    casia_b_train_count,
    ensure_synthetic,
    generate_raw,
    generate_walk,
    instance_dir,
)

__all__ = [
    "ALL_TYPES",
    "ALL_VIEWS",
    "DEFAULT_VIEWS",
    "GENERATOR_VERSION",
    "SynthParams",
    "casia_b_train_count",
    "ensure_synthetic",
    "generate_raw",
    "generate_walk",
    "instance_dir",
]

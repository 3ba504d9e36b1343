"""The height-stripe rule shared by LSTC (stripe-local convolution) and LSTP (stripe pooling).

``S`` stripes over ``H`` rows: every stripe is ``max(1, H // S)`` rows high except the last one,
which takes all leftover rows. ``H < S`` is rejected because some stripe would be empty.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor


def check_stripes(height: int, num_stripes: int, where: str = "input") -> None:
    """Check that ``height`` rows can be cut into ``num_stripes`` non-empty stripes.

    Args:
        height: ``H``, rows of the input.
        num_stripes: ``S``.
        where: What is checked, for the error message (e.g. ``"LSTC input"``).

    Raises:
        ValueError: When ``S < 1`` or ``H < S``.
    """
    if num_stripes < 1:
        raise ValueError(f"num_stripes must be >= 1, got {num_stripes}")
    if height < num_stripes:
        raise ValueError(
            f"{where} height {height} is smaller than num_stripes={num_stripes}: "
            "every height stripe needs at least one row (use fewer stripes or taller frames)"
        )


def _bounds(height: int, num_stripes: int) -> tuple[tuple[int, int], ...]:
    check_stripes(height, num_stripes)
    step = max(1, height // num_stripes)
    bounds = [(s * step, (s + 1) * step) for s in range(num_stripes - 1)]
    bounds.append(((num_stripes - 1) * step, height))
    return tuple(bounds)


@lru_cache(maxsize=256)
def stripe_bounds(height: int, num_stripes: int) -> tuple[tuple[int, int], ...]:
    """Row ranges of the stripes, top to bottom (cached).

    Args:
        height: ``H``.
        num_stripes: ``S``.

    Returns:
        ``S`` ``(start, stop)`` pairs: ``h = max(1, H // S)`` rows each, the last one to ``H``.

    Raises:
        ValueError: When ``S < 1`` or ``H < S``.
    """
    return _bounds(height, num_stripes)


@lru_cache(maxsize=256)
def _stripe_average_cpu(height: int, num_stripes: int) -> Tensor:
    avg = torch.zeros(height, num_stripes, dtype=torch.float64)
    for s, (a, b) in enumerate(_bounds(height, num_stripes)):
        avg[a:b, s] = 1.0 / (b - a)
    return avg


def stripe_average_matrix(height: int, num_stripes: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Stripe-averaging matrix: ``(rows @ A)[..., s]`` is the mean of the rows of stripe ``s``.

    Args:
        height: ``H``.
        num_stripes: ``S``.
        device: Device of the result.
        dtype: Float dtype of the result.

    Returns:
        ``(H, S)`` matrix ``A`` with ``A[r, s] = 1 / rows(s)`` for the rows ``r`` of stripe ``s``, else 0.

    Raises:
        ValueError: When ``S < 1`` or ``H < S``.
    """
    if torch.compiler.is_compiling():  # a constant to the compiler; the cache is for eager mode
        avg = torch.zeros(height, num_stripes, dtype=dtype, device=device)
        for s, (a, b) in enumerate(_bounds(height, num_stripes)):
            avg[a:b, s] = 1.0 / (b - a)
        return avg
    return _stripe_average_cpu(height, num_stripes).to(device=device, dtype=dtype)


def stripe_max(rows: Tensor, num_stripes: int) -> Tensor:
    """Maximum over each stripe's rows (the unequal-stripe path of LSTP's ``mean_max`` pooling).

    Args:
        rows: ``(..., H)`` float, one value per row (e.g. already maximised over the columns).
        num_stripes: ``S``.

    Returns:
        ``(..., S)``, ``rows``' dtype: the maximum over the rows of each stripe (:func:`stripe_bounds`).

    Raises:
        ValueError: When ``S < 1`` or ``H < S``.
    """
    bounds = _bounds(rows.shape[-1], num_stripes)  # not the cached one: a constant under torch.compile
    return torch.stack([rows[..., a:b].amax(dim=-1) for a, b in bounds], dim=-1)

"""The field's standard silhouette pretreatment (as used for published CASIA-B / OU-MVLP numbers).

Per frame: drop it when nearly empty (pixel sum <= 10000 on a 0/255 image); crop rows to the
person's top and bottom; resize to height 64 keeping the aspect ratio; take the median column of
the foreground mass as the horizontal centre; cut (or zero-pad) a 64x64 window around it.
Models later use the central 64x44 (see :func:`center_crop_width`), which the datasets do, not
the cache. Files are decoded into 0/255 masks by :mod:`lstc_gait.data.frames` (the one reader).

Source: the pretreatment of /work/shared/docs/PROTOCOLS.md ("Pretreatment of raw silhouettes"),
OpenGait's, which the published CASIA-B (Yu et al. 2006) and OU-MVLP (Takemura et al. 2018)
numbers assume.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from lstc_gait.errors import UserError

FRAME_SIZE = 64
EMPTY_THRESHOLD = 10000


class FrameError(UserError, ValueError):
    """One frame or pickle cannot be used; the message names the file and the reason.

    Args:
        message: The full message, naming the file and the reason.
        cause: A short, file-independent reason (stored as :attr:`cause`).

    Attributes:
        cause: A short, file-independent reason (e.g. ``"unreadable image"``) that prepare's
            summary groups skips by.
    """

    def __init__(self, message: str, cause: str = "unusable frame"):
        super().__init__(message)
        self.cause = cause


def centre_columns(img: np.ndarray, size: int = FRAME_SIZE) -> np.ndarray:
    """Cut (or zero-pad) a ``size``-wide window centred on the median column of the foreground mass.

    The median column is the first column where the running column mass passes half of the total;
    it lands on column ``size // 2``. A frame without mass is centred on its middle column.
    Source: PROTOCOLS.md, "Pretreatment of raw silhouettes" (OpenGait's centring).

    Args:
        img: ``(H, W)`` uint8 frame (any width), 0/255.
        size: Width of the window, in pixels.

    Returns:
        ``(H, size)`` uint8 array, a new array (columns outside ``img`` are 0).

    Raises:
        ValueError: ``img`` is not 2-D (its shape does not unpack into ``H, W``).
    """
    h, w = img.shape
    cum = np.cumsum(img.sum(axis=0, dtype=np.int64))
    total = int(cum[-1]) if w else 0
    centre = int(np.searchsorted(cum, total / 2.0, side="right")) if total else w // 2
    left = centre - size // 2
    out = np.zeros((h, size), dtype=np.uint8)
    src_l, src_r = max(left, 0), min(left + size, w)
    if src_r > src_l:
        out[:, src_l - left : src_r - left] = img[:, src_l:src_r]
    return out


def pretreat_frame(
    img: np.ndarray, size: int = FRAME_SIZE, empty_threshold: int = EMPTY_THRESHOLD
) -> np.ndarray | None:
    """Pretreat one raw silhouette as published CASIA-B/OU-MVLP numbers assume.

    Source: PROTOCOLS.md, "Pretreatment of raw silhouettes" (the OpenGait pretreatment used for
    CASIA-B, Yu et al. 2006, and OU-MVLP, Takemura et al. 2018).

    Args:
        img: ``(H, W)`` uint8 mask, 0/255 (see :func:`lstc_gait.data.frames.read_mask`).
        size: Output height and width, in pixels.
        empty_threshold: A frame whose pixel sum (on the 0/255 scale) is at most this is nearly
            empty (OpenGait: 10000).

    Returns:
        ``(size, size)`` uint8 frame (rows cropped to the person, bicubic resize to height
        ``size`` keeping the aspect ratio, centred on the median column of the mass), or None for
        a nearly empty frame (also when the resized frame has no foreground left).

    Raises:
        ValueError: ``img`` is not 2-D.
    """
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D silhouette, got shape {img.shape}")
    row_mass = img.sum(axis=1, dtype=np.int64)
    if int(row_mass.sum()) <= empty_threshold:
        return None
    rows = np.flatnonzero(row_mass)
    crop = img[rows[0] : rows[-1] + 1]
    h, w = crop.shape
    new_w = max(1, int(round(w * size / h)))
    resized = np.asarray(Image.fromarray(crop).resize((new_w, size), Image.BICUBIC), dtype=np.uint8)
    if not resized.any():
        return None
    return centre_columns(resized, size)


def center_crop_width(frames: np.ndarray, width: int = 44) -> np.ndarray:
    """Keep the central ``width`` columns of frames (64 -> 44 cuts 10 columns a side).

    The models' 64x44 input of PROTOCOLS.md ("Pretreatment of raw silhouettes"). With an odd
    number of columns to cut, the right side loses one more.

    Args:
        frames: ``(..., H, W)`` array of any dtype (numpy; the datasets pass ``(T, 64, 64)`` uint8).
        width: Columns to keep, 1..W.

    Returns:
        ``(..., H, width)`` view of ``frames`` (no copy).

    Raises:
        ValueError: ``width`` outside 1..W.
    """
    full = frames.shape[-1]
    if width > full or width <= 0:
        raise ValueError(f"width {width} must be in 1..{full}")
    left = (full - width) // 2
    return frames[..., left : left + width]

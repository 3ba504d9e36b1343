"""The field's standard silhouette pretreatment (as used for published CASIA-B / OU-MVLP numbers).

Per frame: drop it when nearly empty (pixel sum <= 10000 on a 0/255 image); crop rows to the
person's top and bottom; resize to height 64 keeping the aspect ratio; take the median column of
the foreground mass as the horizontal centre; cut (or zero-pad) a 64x64 window around it.
Models later use the central 64x44 (see :func:`center_crop_width`), which the datasets do, not
the cache.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, UnidentifiedImageError

FRAME_SIZE = 64
EMPTY_THRESHOLD = 10000
# Modes that convert to a single grey channel without losing the silhouette.
ACCEPTED_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA"})


class FrameError(ValueError):
    """One frame cannot be used; the message names the file and the reason."""


def read_silhouette(path: str) -> np.ndarray:
    """Decode one image file into a 2-D uint8 array (0..255); FrameError naming the path otherwise."""
    try:
        with Image.open(path) as im:
            if im.mode not in ACCEPTED_MODES:
                raise FrameError(f"{path}: unexpected image mode {im.mode!r} (expected one of "
                                 f"{', '.join(sorted(ACCEPTED_MODES))})")
            im.load()
            if im.mode != "L":
                im = im.convert("L")
            arr = np.asarray(im, dtype=np.uint8)
    except FrameError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise FrameError(f"{path}: unreadable or corrupt image ({exc.__class__.__name__}: {exc})") from exc
    # Some tools save masks as 0/1; the empty-frame threshold assumes 0/255.
    if arr.size and arr.max() == 1:
        arr = arr * np.uint8(255)
    return arr


def pretreat_frame(
    img: np.ndarray, size: int = FRAME_SIZE, empty_threshold: int = EMPTY_THRESHOLD
) -> np.ndarray | None:
    """One raw silhouette (H, W) uint8 -> (size, size) uint8, or None when the frame is nearly empty."""
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
    cum = np.cumsum(resized.sum(axis=0, dtype=np.int64))
    total = int(cum[-1])
    if total == 0:
        return None
    # Median column of the foreground mass: the first column where the running mass passes half.
    centre = int(np.searchsorted(cum, total / 2.0, side="right"))
    half = size // 2
    left, right = centre - half, centre - half + size
    out = np.zeros((size, size), dtype=np.uint8)
    src_l, src_r = max(left, 0), min(right, new_w)
    if src_r > src_l:
        out[:, src_l - left : src_r - left] = resized[:, src_l:src_r]
    return out


def center_crop_width(frames: np.ndarray, width: int = 44) -> np.ndarray:
    """Keep the central ``width`` columns of (..., H, W) frames (64 -> 44 cuts 10 columns a side)."""
    full = frames.shape[-1]
    if width > full or width <= 0:
        raise ValueError(f"width {width} must be in 1..{full}")
    left = (full - width) // 2
    return frames[..., left : left + width]

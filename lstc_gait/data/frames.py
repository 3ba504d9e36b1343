"""The one reader of silhouette masks: image files, decoded images or arrays, and OpenGait pickles.

Every layout goes through this module, so a mask means the same whatever its encoding:

- **Which values.** Where an alpha channel varies (RGBA, LA, PA, or a PNG transparency key), the
  alpha channel *is* the mask, whatever the colour underneath. An opaque image (no alpha, or a
  constant one) is read through its grey values; a colour image through its brightest channel, so
  a grey, white, red or blue figure on black all count.
- **Which range.** The encoding gives the maximum: 1 for 1-bit, 255 for 8-bit (L, P, RGB, JPEG),
  65535 for 16-bit (``I;16``, ``I;16B``, ``I;16L``) and for ``I`` images whose values fit in 16 bits,
  1.0 for float images holding [0, 1]. An image whose values are all 0 or 1 is a 0/1 mask: its
  maximum is 1 (for a sequence, :func:`read_masks`: unless other frames go higher).
- **Binary before the crop.** A pixel is foreground when ``value >= threshold * maximum`` (the
  default threshold 0.5 gives 128 for 8-bit and 32768 for 16-bit). So soft edges, faint
  background values and JPEG ringing never move the crop. The result is 0/255 uint8, the form
  :func:`lstc_gait.data.pretreat.pretreat_frame` expects.

OpenGait pickles are already pretreated (cropped, resized, centred), so they are not binarised,
only brought to uint8 0..255: float [0, 1] is scaled by 255, uint8 0/1 by 255, uint8 0..255 is
kept. ``(T, 64, 44)`` pickles are centred into the 64x64 frame the cache stores, by the
pretreatment's own rule (median column of the mass), so the datasets' central 64x44 gives them
back. Any other shape is refused with the shape and the file named.
"""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
from PIL import Image, ImageChops, UnidentifiedImageError

from .pretreat import FRAME_SIZE, FrameError, centre_columns

DEFAULT_MASK_THRESHOLD = 0.5
# Bumped whenever the reader's output for the same file changes: caches record it and are redone.
READER_VERSION = 2
# Image modes the reader accepts (Pillow names); anything else (CMYK, YCbCr, LAB, HSV, ...) is refused.
IMAGE_MODES: frozenset[str] = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
)
# Pickle frame shapes: OpenGait's 64x64, and the 64x44 several releases ship (centred into 64x64).
PICKLE_WIDTHS: tuple[int, ...] = (FRAME_SIZE, 44)

__all__ = [
    "DEFAULT_MASK_THRESHOLD",
    "IMAGE_MODES",
    "FrameError",
    "check_mask_threshold",
    "read_mask",
    "read_masks",
    "read_pickle_sequence",
    "to_mask",
]


def check_mask_threshold(threshold: float, key: str = "mask_threshold") -> float:
    """Validate a mask threshold (a share of the encoding's maximum).

    Args:
        threshold: The share, strictly between 0 and 1.
        key: The setting's name, used in the error message (e.g. ``dataset.mask_threshold``).

    Returns:
        The threshold as a float.

    Raises:
        ValueError: When it is not a number strictly between 0 and 1; the message names ``key``.
    """
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={threshold!r} must be a number between 0 and 1 (exclusive)") from None
    if not 0.0 < value < 1.0:  # also refuses NaN
        raise ValueError(
            f"{key}={threshold!r} must be between 0 and 1 (exclusive): it is the share of the mask "
            "encoding's maximum a pixel must reach to be foreground (0.5: 128 of 255, 32768 of 65535)"
        )
    return value


def _encoding(values: np.ndarray, what: str) -> tuple[float, float]:
    """(maximum of the encoding ``values`` come in, largest value present), before the 0/1 rule."""
    vmax = float(values.max()) if values.size else 0.0
    if values.dtype == np.bool_:
        return 1.0, vmax
    if values.dtype == np.uint8:
        return 255.0, vmax
    if values.dtype == np.uint16:
        return 65535.0, vmax
    if values.dtype.kind == "f":
        if not math.isfinite(vmax):
            raise FrameError(f"{what}: the mask holds NaN or infinite values", cause="bad mask values")
        for limit in (1.0, 255.0, 65535.0):
            if vmax <= limit:
                return limit, vmax
    elif values.dtype.kind in "iu":
        for limit in (255.0, 65535.0):  # other integer arrays: the narrowest encoding that holds them
            if vmax <= limit:
                return limit, vmax
    raise FrameError(f"{what}: mask values up to {vmax:g} ({values.dtype}) fit no known mask encoding "
                     "(1-bit, 8-bit, 16-bit or float [0, 1])", cause="bad mask values")


def _looks_zero_one(values: np.ndarray, encoding: tuple[float, float]) -> bool:
    """Integer values of a wider encoding that are all 0 or 1 (a 0/1 mask, or faint noise)."""
    maximum, vmax = encoding
    return maximum > 1.0 and values.dtype.kind in "iu" and values.size > 0 and vmax <= 1


def _binarise(values: np.ndarray, threshold: float, what: str, zero_one: bool | None = None,
              encoding: tuple[float, float] | None = None) -> np.ndarray:
    """0/255 mask of ``values``; ``zero_one``: scale 0/1 values first (None: when they look so)."""
    encoding = encoding or _encoding(values, what)
    maximum = encoding[0]
    if zero_one if zero_one is not None else _looks_zero_one(values, encoding):
        maximum = 1.0  # a 0/1 mask: scaled first, so its 1s count
    # integer values: value >= ceil(threshold * maximum), i.e. value >= threshold * maximum
    cut = math.ceil(threshold * maximum) if values.dtype.kind in "biu" else threshold * maximum
    out = np.greater_equal(values, cut).view(np.uint8)
    out *= np.uint8(255)
    return out


def _mask_values(arr: np.ndarray, what: str) -> np.ndarray:
    """The one channel that carries the mask: a varying alpha, else grey / brightest colour channel."""
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise FrameError(f"{what}: expected a (H, W) or (H, W, 1-4 channels) mask, got shape {tuple(arr.shape)}",
                         cause="bad mask shape")
    if arr.shape[2] in (2, 4):
        alpha = arr[..., -1]
        if alpha.size and alpha.min() != alpha.max():
            return alpha  # transparency is the mask wherever it varies
        arr = arr[..., :-1]  # opaque (constant alpha): read the colour/grey values
    out = arr[..., 0]
    for c in range(1, arr.shape[2]):
        out = np.maximum(out, arr[..., c])
    return out


def _pil_values(image: Image.Image, name: str) -> np.ndarray:
    """:func:`_mask_values` for a Pillow image, with the channel work done by Pillow (faster)."""
    mode = image.mode
    if mode not in IMAGE_MODES:
        raise FrameError(f"{name}: unsupported image mode {mode!r} (a mask is one of "
                         f"{', '.join(sorted(IMAGE_MODES))})", cause=f"unsupported image mode {mode}")
    if mode in ("La", "PA") or (mode in ("L", "P", "RGB") and "transparency" in image.info):
        image = image.convert("LA" if mode in ("L", "La") else "RGBA")  # transparency -> alpha
    elif mode in ("RGBa", "RGBX"):
        image = image.convert("RGBA" if mode == "RGBa" else "RGB")
    elif mode == "P":
        image = image.convert("RGB")  # palette -> its colours
    if image.mode in ("LA", "RGBA"):
        alpha = image.getchannel("A")
        lo, hi = alpha.getextrema()
        if lo != hi:
            return np.asarray(alpha)  # transparency is the mask wherever it varies
        image = image.convert("L" if image.mode == "LA" else "RGB")  # opaque: the grey/colour values
    if image.mode == "RGB":
        r, g, b = image.split()
        image = ImageChops.lighter(ImageChops.lighter(r, g), b)  # the brightest channel
    arr = np.asarray(image)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))  # I;16B
    if mode == "I":  # Pillow's 32-bit container for 16-bit greys (PNG, PGM, TIFF): 16-bit range
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise FrameError(f"{name}: 32-bit image with values from {arr.min()} to {arr.max()} is not a "
                             "16-bit mask", cause="bad mask values")
        arr = arr.astype(np.uint16)
    return arr


def to_mask(image: Image.Image | np.ndarray, threshold: float = DEFAULT_MASK_THRESHOLD, *, name: str = "mask") -> np.ndarray:
    """Turn one decoded silhouette into a binary 0/255 mask (see the module docstring for the rules).

    Args:
        image: A Pillow image in one of :data:`IMAGE_MODES`, or an array: ``(H, W)`` grey,
            ``(H, W, 2)`` grey + alpha, ``(H, W, 3)`` colour, ``(H, W, 4)`` colour + alpha; dtype
            bool, uint8, uint16, another integer type or float (these two are read in the narrowest
            range that holds their values: ``[0, 1]`` for floats, then 8-bit, then 16-bit). Channels are last; colour order does not matter.
        threshold: Share of the encoding's maximum a pixel must reach to be foreground, in (0, 1).
        name: What to call the input in error messages (the file path when reading files).

    Returns:
        ``(H, W)`` uint8 array holding only 0 and 255.

    Raises:
        FrameError: Unsupported image mode, array shape or values (message starts with ``name``).
        ValueError: ``threshold`` outside (0, 1).
    """
    threshold = check_mask_threshold(threshold, "threshold")
    return _binarise(_decode(image, name), threshold, name)


def _decode(image: Image.Image | np.ndarray, name: str) -> np.ndarray:
    """The one channel that carries the mask, in its encoding's dtype (see :func:`to_mask`)."""
    if isinstance(image, Image.Image):
        return _pil_values(image, name)
    return _mask_values(np.asarray(image), name)


def read_mask(path: str | os.PathLike, threshold: float = DEFAULT_MASK_THRESHOLD) -> np.ndarray:
    """Read one mask image file (PNG, JPEG, BMP, TIFF, ...; first frame of a multi-frame file).

    Args:
        path: The image file.
        threshold: Share of the encoding's maximum a pixel must reach to be foreground, in (0, 1);
            the default 0.5 means 128 for 8-bit and 32768 for 16-bit images.

    Returns:
        ``(H, W)`` uint8 array holding only 0 and 255 (255 = the person).

    Raises:
        FrameError: The file is unreadable or corrupt, or its mode or values are not a mask; the
            message starts with the path and ``.cause`` is a short reason for grouping.
        ValueError: ``threshold`` outside (0, 1).
    """
    threshold = check_mask_threshold(threshold, "threshold")
    return _binarise(_read_values(os.fspath(path)), threshold, os.fspath(path))


def _read_values(path: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            return _decode(im, path)
    except FrameError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise FrameError(f"{path}: unreadable or corrupt image ({exc.__class__.__name__}: {exc})",
                         cause="unreadable image") from exc


def read_masks(paths: list[str], threshold: float = DEFAULT_MASK_THRESHOLD) -> list[np.ndarray | FrameError]:
    """Read the frames of one sequence, as :func:`read_mask` does, with the 0/1 rule per sequence.

    A frame whose values are all 0 or 1 is a 0/1 mask only when no frame of its sequence goes
    higher: in a 0..255 (or 16-bit) sequence it is an empty frame with faint noise, and its 1s stay
    background instead of becoming a figure.

    Args:
        paths: The sequence's image files, in order.
        threshold: Share of the encoding's maximum a pixel must reach to be foreground, in (0, 1).

    Returns:
        One item per path: its ``(H, W)`` uint8 0/255 mask, or the :class:`FrameError` saying why
        it cannot be read.

    Raises:
        ValueError: ``threshold`` outside (0, 1).
    """
    threshold = check_mask_threshold(threshold, "threshold")
    out: list[np.ndarray | FrameError] = []
    suspects: list[tuple[int, np.ndarray]] = []  # 0/1-looking frames, decided once all are read
    higher = False
    for i, path in enumerate(map(os.fspath, paths)):
        try:
            values = _read_values(path)
            encoding = _encoding(values, path)
            if _looks_zero_one(values, encoding):
                suspects.append((i, values, encoding))
                out.append(FrameError(f"{path}: undecided", cause="undecided"))  # replaced below
                continue
            higher = higher or (values.dtype.kind in "iu" and encoding[1] > 1)
            out.append(_binarise(values, threshold, path, zero_one=False, encoding=encoding))
        except FrameError as exc:
            out.append(exc)
    for i, values, encoding in suspects:
        out[i] = _binarise(values, threshold, os.fspath(paths[i]), zero_one=not higher, encoding=encoding)
    return out


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays only: a pickle naming any other callable is refused, not run."""

    def find_class(self, module: str, name: str):
        if module == "numpy" or module.startswith("numpy.") or (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name} (only numpy arrays are accepted)")


def _pickle_to_uint8(arr: np.ndarray, path: str) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if arr.dtype.kind not in "iuf":
        raise FrameError(f"{path}: array is {arr.dtype} {tuple(arr.shape)}, expected numbers (uint8 0..255, "
                         "uint8 0/1 or float [0, 1])", cause="bad pickle dtype")
    if arr.size == 0:
        return arr.astype(np.uint8)
    vmin, vmax = float(arr.min()), float(arr.max())
    if not (math.isfinite(vmin) and math.isfinite(vmax)) or vmin < 0:
        raise FrameError(f"{path}: array {arr.dtype} {tuple(arr.shape)} holds values from {vmin:g} to {vmax:g}; "
                         "expected uint8 0..255, uint8 0/1 or float [0, 1]", cause="bad pickle values")
    if arr.dtype.kind == "f":
        scale = 255.0 if vmax <= 1.0 else 1.0 if vmax <= 255.0 else None
    else:
        scale = 255.0 if vmax <= 1 else 1.0 if vmax <= 255 else None
    if scale is None:
        raise FrameError(f"{path}: array {arr.dtype} {tuple(arr.shape)} holds values up to {vmax:g}; expected "
                         "uint8 0..255, uint8 0/1 or float [0, 1]", cause="bad pickle values")
    if arr.dtype == np.uint8 and scale == 1.0:
        return arr
    return np.clip(np.rint(arr.astype(np.float32) * np.float32(scale)), 0, 255).astype(np.uint8)


def read_pickle_sequence(path: str | os.PathLike) -> np.ndarray:
    """Read one OpenGait silhouette pickle into the cache's frame form.

    Only numpy arrays are unpickled (a pickle naming any other callable is refused, not run).
    Values are brought to uint8 0..255 (float [0, 1] and uint8 0/1 are scaled by 255, uint8
    0..255 is kept, bool is 0/255); they are not binarised, as the frames are already pretreated.
    ``(T, 64, 44)`` frames are centred into 64x64 by the pretreatment's rule (the median column of
    the mass goes to column 32), so the datasets' central 64x44 returns them.

    Args:
        path: The ``.pkl`` file.

    Returns:
        ``(T, 64, 64)`` uint8 array, C-contiguous.

    Raises:
        FrameError: Unreadable or refused pickle, not an array, or an array whose shape is not
            ``(T, 64, 64)`` / ``(T, 64, 44)`` or whose values are not a mask; the message names
            the file and the shape.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FrameError(f"{path}: folder holds no .pkl file", cause="no pickle in folder")
    try:
        with open(path, "rb") as fh:
            arr = _ArrayUnpickler(fh).load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt or refused file
        raise FrameError(f"{path}: unreadable pickle ({exc.__class__.__name__}: {exc})",
                         cause="unreadable pickle") from exc
    if not isinstance(arr, np.ndarray):
        raise FrameError(f"{path}: pickle holds {type(arr).__name__}, expected a numpy array [T, 64, 64] "
                         "or [T, 64, 44]", cause="pickle is not an array")
    widths = " or ".join(f"[T, {FRAME_SIZE}, {w}]" for w in PICKLE_WIDTHS)
    if arr.ndim != 3 or arr.shape[1] != FRAME_SIZE or arr.shape[2] not in PICKLE_WIDTHS:
        raise FrameError(f"{path}: array has shape {tuple(arr.shape)} ({arr.dtype}), expected {widths} "
                         "(OpenGait's pretreated silhouettes)", cause="bad pickle shape")
    frames = _pickle_to_uint8(arr, path)
    if frames.shape[2] != FRAME_SIZE:
        frames = np.stack([centre_columns(f, FRAME_SIZE) for f in frames]) if len(frames) else (
            np.zeros((0, FRAME_SIZE, FRAME_SIZE), np.uint8))
    return np.ascontiguousarray(frames)

"""A small synthetic walk (numpy + PIL only) written in every mask encoding the reader accepts.

Shared by tests/test_frames.py and tests/test_mask_encodings.py. Not a test module (no ``test_``
prefix); imported as ``from mask_walk import ...`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def walk_frame(t: int, h: int = 120, w: int = 96) -> np.ndarray:
    """A 0/255 uint8 walking figure (head, torso, two swinging legs) at step ``t``."""
    yy, xx = np.mgrid[0:h, 0:w]
    cx = w // 2 + int(round(5 * np.sin(t / 3.0)))
    img = np.zeros((h, w), np.uint8)
    top, head_r = int(h * 0.1), 7
    img[(yy - (top + head_r)) ** 2 + (xx - cx) ** 2 <= head_r**2] = 255
    torso_top, torso_bot = top + 2 * head_r, int(h * 0.55)
    img[torso_top:torso_bot, cx - 8 : cx + 8] = 255
    swing = 9 * np.sin(t / 2.0)
    for sign in (-1, 1):
        for y in range(torso_bot, int(h * 0.92)):
            frac = (y - torso_bot) / (int(h * 0.92) - torso_bot)
            x = cx + sign * int(round(swing * frac)) + sign * 3
            img[y, max(0, x - 4) : min(w, x + 4)] = 255
    return img


def soft(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """A segmentation-style soft mask: blurred edges plus faint background values 1-3."""
    blurred = np.asarray(Image.fromarray(mask).filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32)
    faint = np.random.default_rng(seed).integers(1, 4, mask.shape).astype(np.float32)
    return np.clip(np.maximum(blurred, faint), 0, 255).astype(np.uint8)


def _rgba(mask: np.ndarray, rgb: int) -> Image.Image:
    arr = np.full((*mask.shape, 4), rgb, np.uint8)
    arr[..., 3] = mask
    return Image.fromarray(arr, "RGBA")


def _palette_transparent(mask: np.ndarray) -> Image.Image:
    # Every palette colour is white; only the tRNS key (index 0 transparent) carries the figure.
    im = Image.fromarray((mask > 0).astype(np.uint8), "P")
    im.putpalette([255, 255, 255] * 256)
    im.info["transparency"] = 0
    return im


def _big_endian_16(mask: np.ndarray) -> Image.Image:
    # 40000 (0x9C40): a byte-swapped read (0x409C = 16540) would fall under the 32768 threshold.
    values = (mask > 0).astype(np.uint16) * 40000
    return Image.frombytes("I;16B", mask.shape[::-1], values.astype(">u2").tobytes())


# name -> (file suffix, writer(mask, path)). "L" is the clean reference.
def _save(im: Image.Image, path: Path, **kw) -> None:
    im.save(path, **kw)


ENCODINGS = {
    "L": (".png", lambda m, p: _save(Image.fromarray(m), p)),
    "1bit": (".png", lambda m, p: _save(Image.fromarray(m).convert("1"), p)),
    "P": (".png", lambda m, p: _save(Image.fromarray(m).convert("P"), p)),
    "P_transparency": (".png", lambda m, p: _save(_palette_transparent(m), p)),
    "RGB": (".png", lambda m, p: _save(Image.fromarray(m).convert("RGB"), p)),
    "RGB_red_figure": (".png", lambda m, p: _save(Image.fromarray(np.stack([m, 0 * m, 0 * m], -1)), p)),
    "BMP": (".bmp", lambda m, p: _save(Image.fromarray(m), p)),
    "JPEG_L": (".jpg", lambda m, p: _save(Image.fromarray(m), p, quality=75)),
    "JPEG_RGB": (".jpg", lambda m, p: _save(Image.fromarray(m).convert("RGB"), p, quality=60)),
    "LA_opaque": (".png", lambda m, p: _save(Image.fromarray(m).convert("LA"), p)),
    "LA_alpha": (".png", lambda m, p: _save(Image.merge("LA", [Image.new("L", m.shape[::-1], 255),
                                                              Image.fromarray(m)]), p)),
    "RGBA_opaque": (".png", lambda m, p: _save(Image.fromarray(m).convert("RGBA"), p)),
    "RGBA_alpha_only": (".png", lambda m, p: _save(_rgba(m, 0), p)),
    "RGBA_white_bg": (".png", lambda m, p: _save(_rgba(m, 255), p)),
    "zero_one": (".png", lambda m, p: _save(Image.fromarray((m > 0).astype(np.uint8)), p)),
    "soft": (".png", lambda m, p: _save(Image.fromarray(soft(m)), p)),
    "I16_png": (".png", lambda m, p: _save(Image.fromarray(m.astype(np.uint16) * 257), p)),
    "I16_soft_png": (".png", lambda m, p: _save(Image.fromarray(soft(m).astype(np.uint16) * 257), p)),
    "I16_zero_one": (".png", lambda m, p: _save(Image.fromarray((m > 0).astype(np.uint16)), p)),
    "I16B_tiff": (".tif", lambda m, p: _save(_big_endian_16(m), p)),
    "I32_tiff": (".tif", lambda m, p: _save(Image.fromarray(m.astype(np.int32) * 257), p)),
    "F_tiff": (".tif", lambda m, p: _save(Image.fromarray(m.astype(np.float32) / 255.0), p)),
}


def write_walk(folder: Path, encoding: str, frames: int = 8) -> list[Path]:
    """Write the walk's ``frames`` frames in ``encoding`` into ``folder``; returns the files."""
    suffix, writer = ENCODINGS[encoding]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in range(frames):
        path = folder / f"{t + 1:03d}{suffix}"
        writer(walk_frame(t), path)
        paths.append(path)
    return paths


def mode_of(path: Path) -> str:
    """The mode Pillow reports when it opens ``path`` again."""
    with Image.open(io.BytesIO(Path(path).read_bytes())) as im:
        return im.mode


def binary_iou(a: np.ndarray, b: np.ndarray, level: int = 128) -> float:
    """IoU of two uint8 frames binarised at ``level`` (1.0 when both are empty)."""
    x, y = a >= level, b >= level
    union = int((x | y).sum())
    return 1.0 if union == 0 else int((x & y).sum()) / union

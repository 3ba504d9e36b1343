"""SynthGait walkers filmed by a static camera: RGB clips with their true masks, for tests and measurements.

A SynthGait walk (noise-free masks from :func:`lstc_gait.data.synthetic.generate_walk`) is painted with
clothing colours (skin head, shirt, trousers, each with a fixed texture) over a textured scene (a wall
with structure above a ground plane), optionally preceded by empty lead-in frames, then sensor noise is
added to every frame. :func:`write_video` stores the clip with OpenCV (``mp4v`` by default), so the
silhouette extraction sees real codec artefacts.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_CLOTHES = np.array([  # RGB: shirts, jackets, trousers people wear
    (40, 50, 90), (30, 30, 35), (200, 200, 205), (150, 30, 35), (40, 100, 60), (120, 90, 60),
    (90, 110, 150), (60, 60, 65), (170, 150, 110), (20, 60, 110), (110, 40, 100), (210, 170, 60),
], dtype=np.float32)
_SKIN = np.array([(225, 180, 150), (190, 140, 110), (140, 95, 70), (90, 60, 45)], dtype=np.float32)


@dataclass
class SynthClip:
    """An RGB clip and its truth.

    Attributes:
        frames: uint8 (T, H, W, 3) RGB frames.
        masks: bool (T, H, W) true silhouettes (all False in lead-in frames).
        background: uint8 (H, W, 3) the empty scene without sensor noise.
        fps: frames per second.
    """

    frames: np.ndarray
    masks: np.ndarray
    background: np.ndarray
    fps: float


def textured_background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A static scene (H, W, 3) uint8: multi-scale noise on a wall with panels above a ground plane."""
    import cv2

    base = rng.uniform(70, 170, size=3).astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[:] = base
    for cells, amp in ((4, 28.0), (12, 16.0), (40, 9.0), (width // 3, 6.0)):
        small = rng.normal(0.0, 1.0, size=(max(2, cells * height // width), max(2, cells), 3)).astype(np.float32)
        img += amp * cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    horizon = int(height * rng.uniform(0.55, 0.7))
    ground = rng.uniform(60, 150, size=3).astype(np.float32)
    img[horizon:] = 0.5 * img[horizon:] + 0.5 * ground
    for _ in range(int(rng.integers(4, 9))):  # panels, windows, posters
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, max(1, horizon - 8)))
        w, h = int(rng.integers(6, width // 4)), int(rng.integers(6, height // 4))
        img[y0:y0 + h, x0:x0 + w] = 0.4 * img[y0:y0 + h, x0:x0 + w] + 0.6 * rng.uniform(30, 220, size=3)
    return np.clip(img, 0, 255).astype(np.uint8)


def _paint_walker(frame: np.ndarray, mask: np.ndarray, colours: np.ndarray, texture: np.ndarray) -> None:
    """Paint one walker's mask in place: head skin, shirt to the hips, trousers below (by bbox height)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return
    top, bottom = rows[0], rows[-1] + 1
    h = bottom - top
    bands = (top, top + int(0.13 * h), top + int(0.50 * h), bottom)
    for k in range(3):
        r0, r1 = bands[k], bands[k + 1]
        m = mask[r0:r1]
        col = colours[k] + texture[r0:r1]
        frame[r0:r1][m] = col[m]


def render_clip(subjects: Sequence[int] = (1,), view: str = "090", frames: int = 40, lead_in: int = 6,
                seq_type: str = "nm-01", seed: int = 0, width: int = 320, height: int = 240,
                noise_sigma: float = 4.0, scene_seed: int | None = None, pan_px_per_frame: float = 0.0,
                fps: float = 25.0) -> SynthClip:
    """Render SynthGait walkers of ``seed`` over a textured scene.

    Args:
        subjects: SynthGait subject ids (1-based); more than one renders several people in one clip.
        view: camera angle as SynthGait spells it (``"000"`` facing, ``"090"`` side, ``"180"`` behind).
        frames: frames of walking (after the lead-in).
        lead_in: empty-scene frames before the walker appears.
        seq_type: SynthGait sequence type (``nm-01`` .. ``cl-02``); another type is another walk.
        seed: SynthGait instance seed (subjects' bodies and walks).
        width: frame width in pixels.
        height: frame height in pixels.
        noise_sigma: standard deviation of the Gaussian sensor noise, in grey levels.
        scene_seed: seed of the scene and clothing (default: derived from subject, type, view).
        pan_px_per_frame: > 0 pans the camera (the scene slides); a moving-camera test case.
        fps: frame rate.

    Returns:
        A :class:`SynthClip` of ``lead_in + frames`` frames.
    """
    from lstc_gait.data.synthetic import SynthParams, generate_walk

    params = SynthParams(num_subjects=max(subjects), frames=max(frames, 1), seed=seed, width=width, height=height,
                         fps=fps, noise_edge=0.0, noise_hole=0.0, noise_speck=0.0, noise_shadow=0.0).validate()
    if scene_seed is None:
        scene_seed = zlib.crc32(f"{list(subjects)}/{seq_type}/{view}/{seed}".encode())
    rng = np.random.default_rng(scene_seed)
    pad = int(np.ceil(abs(pan_px_per_frame) * (frames + lead_in))) + 1
    scene = textured_background(width + pad, height, rng)
    background = scene[:, :width].copy()
    total = lead_in + frames
    out = np.empty((total, height, width, 3), np.float32)
    masks = np.zeros((total, height, width), bool)
    for t in range(total):
        x0 = int(round(pan_px_per_frame * t))
        out[t] = scene[:, x0:x0 + width]
    for k, s in enumerate(subjects if frames > 0 else ()):
        walk = generate_walk(params, int(s), seq_type, [view])[view] > 0
        if k:  # a second person walks the other way, a little offset
            walk = walk[:, :, ::-1]
        colours = np.stack([_SKIN[rng.integers(len(_SKIN))], *_CLOTHES[rng.choice(len(_CLOTHES), 2, replace=False)]])
        texture = rng.normal(0, 6, size=(height, width, 3)).astype(np.float32)
        for t in range(frames):
            frame = out[lead_in + t]
            _paint_walker(frame, walk[t], colours, texture)
            masks[lead_in + t] |= walk[t]
    out += rng.normal(0.0, noise_sigma, size=out.shape).astype(np.float32)
    return SynthClip(np.clip(np.rint(out), 0, 255).astype(np.uint8), masks, background, fps)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 25.0, fourcc: str = "mp4v") -> Path:
    """Write RGB (T, H, W, 3) or grey (T, H, W) uint8 frames as a video file with OpenCV.

    Args:
        path: output file (``.mp4``, ``.avi``).
        frames: uint8 frames, RGB or grey.
        fps: frame rate.
        fourcc: codec tag (``mp4v``, ``MJPG``).

    Returns:
        The path written.

    Raises:
        RuntimeError: OpenCV cannot open a writer for this codec and container.
    """
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (int(w), int(h)))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {fourcc} video to {path}")
    try:
        for f in frames:
            if f.ndim == 2:
                f = np.repeat(f[:, :, None], 3, axis=2)
            writer.write(np.ascontiguousarray(f[:, :, ::-1]))
    finally:
        writer.release()
    return path

"""Rasterise projected body primitives into binary 0/255 frames and add segmentation noise.

Pillow draws the polygons and discs (tapered capsules, torso outlines); numpy adds the kind of
errors background subtraction makes: ragged edges, occasional holes, specks and a ground shadow.
All randomness comes from the sequence's own RNG, never from the subject's. See SYNTHGAIT.md,
"Rendering".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .camera import Camera
from .pose import Body


@dataclass(frozen=True)
class NoiseLevels:
    """Segmentation noise strength (probabilities per frame unless stated).

    Attributes:
        edge: Share of boundary pixels flipped in ragged patches.
        hole: Per-frame probability of a hole inside the body.
        speck: Per-frame probability of 1-2 background specks near the person.
        shadow: Per-sequence probability of a ground shadow around the feet.
    """

    edge: float = 0.35  # share of boundary pixels flipped in ragged patches
    hole: float = 0.06
    speck: float = 0.08
    shadow: float = 0.15  # per sequence


def _capsule_shapes(u0, v0, u1, v1, r0, r1):
    """Vectorised outline quads of tapered capsules: returns (T, 4, 2) polygons."""
    du, dv = u1 - u0, v1 - v0
    n = np.hypot(du, dv)
    n = np.where(n < 1e-6, 1.0, n)
    nu, nv = -dv / n, du / n
    return np.stack([
        np.stack([u0 + nu * r0, v0 + nv * r0], -1),
        np.stack([u1 + nu * r1, v1 + nv * r1], -1),
        np.stack([u1 - nu * r1, v1 - nv * r1], -1),
        np.stack([u0 - nu * r0, v0 - nv * r0], -1),
    ], axis=1)


def _hull_outline(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Projected sections ``u, v (T, S, P)`` -> silhouette outline polygons (T, 2S, 2)."""
    il = np.argmin(u, axis=-1)[..., None]
    ir = np.argmax(u, axis=-1)[..., None]
    left = np.stack([np.take_along_axis(u, il, -1)[..., 0], np.take_along_axis(v, il, -1)[..., 0]], -1)
    right = np.stack([np.take_along_axis(u, ir, -1)[..., 0], np.take_along_axis(v, ir, -1)[..., 0]], -1)
    return np.concatenate([left, right[:, ::-1]], axis=1)


def render_frames(body_world: Body, cam: Camera, rng: np.random.Generator,
                  noise: NoiseLevels | None = None) -> np.ndarray:
    """Draw every frame of a walk already placed in world coordinates, with segmentation noise.

    Args:
        body_world: The walk in world coordinates (metres), at least one capsule.
        cam: The camera; its ``width`` and ``height`` set the frame size.
        rng: The sequence's generator (shadow, then per-frame noise draws).
        noise: Noise strengths (the defaults of :class:`NoiseLevels` when None).

    Returns:
        ``(T, H, W)`` uint8 frames, 0/255.

    Raises:
        IndexError: ``body_world`` has no capsule.
    """
    noise = noise or NoiseLevels()
    W, H = cam.width, cam.height
    caps = []
    for c in body_world.capsules:
        u0, v0, d0 = cam.project(c.p0)
        u1, v1, d1 = cam.project(c.p1)
        r0, r1 = cam.focal * c.r0 / d0, cam.focal * c.r1 / d1
        caps.append((_capsule_shapes(u0, v0, u1, v1, r0, r1), np.stack([u0, v0, r0], -1),
                     np.stack([u1, v1, r1], -1)))
    hulls = []
    for h in body_world.hulls:
        u, v, _ = cam.project(h.points)
        hulls.append((_hull_outline(u, v), np.stack([u, v], -1)))
    T = caps[0][0].shape[0]
    shadow = None
    if rng.random() < noise.shadow and body_world.feet is not None:
        # flat ellipse on the ground around the feet, a bit towards one side (sun direction)
        ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        off = rng.normal(0.0, 0.15, size=2)
        ring = np.stack([0.35 * np.cos(ang) + off[0], 0.22 * np.sin(ang) + off[1], np.zeros_like(ang)], -1)
        centre = body_world.feet.mean(axis=1)  # (T, 3)
        su, sv, _ = cam.project(centre[:, None, :] + ring[None])
        shadow = np.stack([su, sv], -1)

    # per-frame bounding box of everything drawn (+ margin for noise), from the geometry itself
    us = [np.concatenate([e0[:, None, 0] - e0[:, None, 2], e0[:, None, 0] + e0[:, None, 2],
                          e1[:, None, 0] - e1[:, None, 2], e1[:, None, 0] + e1[:, None, 2]], 1)
          for _, e0, e1 in caps] + [sec[..., 0].reshape(T, -1) for _, sec in hulls]
    vs = [np.concatenate([e0[:, None, 1] - e0[:, None, 2], e0[:, None, 1] + e0[:, None, 2],
                          e1[:, None, 1] - e1[:, None, 2], e1[:, None, 1] + e1[:, None, 2]], 1)
          for _, e0, e1 in caps] + [sec[..., 1].reshape(T, -1) for _, sec in hulls]
    if shadow is not None:
        us.append(shadow[..., 0])
        vs.append(shadow[..., 1])
    u_all, v_all = np.concatenate(us, 1), np.concatenate(vs, 1)
    boxes = np.stack([np.floor(u_all.min(1)) - 4, np.floor(v_all.min(1)) - 4,
                      np.ceil(u_all.max(1)) + 5, np.ceil(v_all.max(1)) + 5], 1)
    boxes = np.clip(boxes, 0, [W, H, W, H]).astype(int).tolist()

    # flat coordinate lists once per sequence: Pillow takes [x0, y0, x1, y1, ...]
    draw_list = []
    if shadow is not None:
        draw_list.append(("p", shadow.reshape(T, -1).tolist()))
    for outline, sections in hulls:
        draw_list.append(("p", outline.reshape(T, -1).tolist()))
        for k in range(sections.shape[1]):
            draw_list.append(("p", sections[:, k].reshape(T, -1).tolist()))
    for quads, e0, e1 in caps:
        draw_list.append(("p", quads.reshape(T, -1).tolist()))
        for e in (e0, e1):
            box = np.stack([e[:, 0] - e[:, 2], e[:, 1] - e[:, 2], e[:, 0] + e[:, 2], e[:, 1] + e[:, 2]], 1)
            draw_list.append(("e", box.tolist()))

    frames = np.zeros((T, H, W), dtype=np.uint8)
    for i in range(T):
        img = Image.new("L", (W, H), 0)
        draw = ImageDraw.Draw(img)
        for kind, coords in draw_list:
            if kind == "p":
                draw.polygon(coords[i], fill=255)
            else:
                draw.ellipse(coords[i], fill=255)
        frame = np.asarray(img).copy()
        _segmentation_noise(frame, boxes[i], rng, noise)
        frames[i] = frame
    return frames


def _segmentation_noise(frame: np.ndarray, box: list[int], rng: np.random.Generator,
                        noise: NoiseLevels) -> None:
    """Ragged edges, holes and specks, in place, inside ``box`` = [x0, y0, x1, y1] around the person."""
    x0, y0, x1, y1 = box
    crop = frame[y0:y1, x0:x1]
    m = crop > 0
    h, w = m.shape
    if h < 3 or w < 3:
        return
    inner = m.copy()
    inner[1:-1, 1:-1] &= m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    outer = m.copy()
    outer[1:-1, 1:-1] |= m[:-2, 1:-1] | m[2:, 1:-1] | m[1:-1, :-2] | m[1:-1, 2:]
    # ragged patches: a coarse random field decides where the edge grows or shrinks by a pixel
    cell = 3
    field = rng.random(((h + cell - 1) // cell, (w + cell - 1) // cell))
    field = np.repeat(np.repeat(field, cell, 0), cell, 1)[:h, :w]
    grow = (field < noise.edge / 2) & outer & ~m
    shrink = (field > 1 - noise.edge / 2) & m & ~inner
    m = (m | grow) & ~shrink
    if rng.random() < noise.hole:
        # a blob the background subtraction missed, inside the body
        iy, ix = np.nonzero(inner)
        if len(iy):
            k = rng.integers(len(iy))
            ry, rx = rng.uniform(1.5, 5.0, size=2)
            yy, xx = np.ogrid[:h, :w]
            m &= ((yy - iy[k]) / ry) ** 2 + ((xx - ix[k]) / rx) ** 2 > 1.0
    if rng.random() < noise.speck:
        for _ in range(int(rng.integers(1, 3))):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            r = rng.uniform(0.8, 2.0)
            yy, xx = np.ogrid[:h, :w]
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    crop[...] = np.where(m, 255, 0).astype(np.uint8)

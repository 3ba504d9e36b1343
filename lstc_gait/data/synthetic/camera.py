"""Pinhole camera about 1.1 m high looking at a walker who crosses its field at a given view angle.

World frame: X to the camera's right, Y away from the camera (depth), Z up; the camera sits at
``(0, 0, height)`` pitched down a little. View angle 0: the walker faces the camera (walks towards
it), 90: side view (walks to the right), 180: seen from behind. See SYNTHGAIT.md, "Camera"; the
view angles are CASIA-B's (Yu et al. 2006).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """Pinhole camera at ``(0, 0, cam_height)`` looking along +Y, pitched down by ``pitch``.

    Attributes:
        width: Image width, pixels.
        height: Image height, pixels.
        focal: Focal length, pixels.
        cam_height: Height of the optical centre above the ground, metres.
        pitch: Downward tilt, radians.
    """

    width: int
    height: int
    focal: float  # pixels
    cam_height: float = 1.1  # metres
    pitch: float = np.radians(5.0)  # looking down

    @classmethod
    def for_image(cls, width: int, height: int) -> Camera:
        """The camera for a frame size: focal length 290 px per 240 rows (1.1 m high, 5 degrees down).

        Args:
            width: Image width, pixels.
            height: Image height, pixels.

        Returns:
            The camera.
        """
        # focal length chosen so a 1.7 m walker 4-5.5 m away is 85-125 px tall in a 240-row frame
        return cls(width=width, height=height, focal=290.0 * height / 240.0)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project world points into the image.

        Args:
            points: ``(..., 3)`` float world points (X right, Y away, Z up), metres.

        Returns:
            ``(u, v, depth)``, each ``(...)`` float64: pixel column, pixel row (down) and depth
            along the optical axis in metres (clamped to at least 0.05 m).
        """
        x = points[..., 0]
        y = points[..., 1]
        z = points[..., 2] - self.cam_height
        c, s = np.cos(self.pitch), np.sin(self.pitch)
        depth = np.maximum(y * c - z * s, 0.05)
        down = -y * s - z * c
        u = 0.5 * self.width + self.focal * x / depth
        v = 0.5 * self.height + self.focal * down / depth
        return u, v, depth


def heading(view_deg: float) -> np.ndarray:
    """Walking direction in the ground plane (X, Y) for a view angle in degrees.

    Args:
        view_deg: View angle, degrees (0: towards the camera, 90: to the right, 180: away).

    Returns:
        ``(2,)`` float64 unit vector ``(sin a, -cos a)``.
    """
    a = np.radians(view_deg)
    return np.array([np.sin(a), -np.cos(a)])


def place_walk(view_deg: float, path_length: float, distance: float, cam: Camera,
               rng: np.random.Generator, max_offset: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Choose where the walk happens: returns (walker origin at the middle of the walk (3,), heading (2,)).

    The middle of the walk sits ``distance`` ahead of the camera (moved further out when the walk would
    come too close or not fit the frame) and at a random lateral offset that keeps the walker inside
    the frame, so the person is not centred and drifts across it. The offset is at most
    ``max_offset`` metres: further out the camera would see the walker from a noticeably other angle.

    Args:
        view_deg: View angle, degrees.
        path_length: Length of the walk, metres.
        distance: Wanted depth of the walk's middle, metres (a lower bound).
        cam: The camera.
        rng: The sequence's generator; one draw is taken when an offset range exists.
        max_offset: Largest lateral offset, metres.

    Returns:
        ``(origin, heading)``: ``(3,)`` float64 world point of the walk's middle on the ground,
        and the ``(2,)`` heading of :func:`heading`.
    """
    h = heading(view_deg)
    half = 0.5 * path_length
    # near end of the walk at least 3 m away; whole lateral sweep (+ body) within 85% of the width
    depth = max(distance, 3.0 + half * abs(h[1]))
    sweep = path_length * abs(h[0]) + 0.9
    depth = max(depth, cam.focal * sweep / (0.85 * cam.width) + half * abs(h[1]))
    # lateral offset range so both ends of the walk stay in frame (0.45 m body half-width margin)
    lo, hi = -max_offset, max_offset
    for end in (-half, half):
        x_rel = end * h[0]
        z = depth + end * h[1]
        limit = (0.5 * cam.width / cam.focal) * z - 0.45
        lo = max(lo, -limit - x_rel)
        hi = min(hi, limit - x_rel)
    x0 = float(rng.uniform(lo, hi)) if hi > lo else 0.5 * (lo + hi)
    return np.array([x0, depth, 0.0]), h


def walker_to_world(points: np.ndarray, origin: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Walker frame (x forward, y left, z up) -> world, walker origin placed at ``origin``.

    Args:
        points: ``(..., 3)`` points in the walker frame, metres.
        origin: ``(3,)`` world position of the walker frame's origin, metres.
        head: ``(2,)`` unit heading in the ground plane (see :func:`heading`).

    Returns:
        ``(..., 3)`` float64 world points.
    """
    hx, hy = head
    x, y = points[..., 0], points[..., 1]
    # left of the heading (hx, hy) is (-hy, hx)
    wx = x * hx - y * hy + origin[0]
    wy = x * hy + y * hx + origin[1]
    return np.stack([wx, wy, points[..., 2] + origin[2]], axis=-1)

"""Normative walking curves: Fourier joint-angle series interpolated at any walking speed.

The coefficients ship as package data (``lstc_gait/data/gait_kinematics.json``): published group-mean
joint angles at five speed classes, each a 4-harmonic Fourier series over one gait cycle (source:
Schwartz, Rozumalski and Trost 2008, as named in the file's ``source`` entry; use as in
/work/shared/docs/SYNTHGAIT.md, "Body and motion").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

JOINTS: tuple[str, ...] = ("pel_tilt", "pel_obl", "pel_rot", "hip_flex", "hip_add", "knee_flex", "ank_dors")
HARMONICS = 4
KINEMATICS_FILE = Path(__file__).resolve().parent.parent / "gait_kinematics.json"


@dataclass(frozen=True)
class KinematicsTable:
    """Fourier coefficients ``(speed_class, joint, 9)`` and the dimensionless speed of each class.

    Attributes:
        speeds: ``(S,)`` float64 dimensionless speeds ``v / sqrt(g * leg)``, increasing.
        coeffs: ``(S, J, 9)`` float64 ``[c0, a1, b1, .., a4, b4]`` per class and joint, degrees.
        between_subject_sd: ``(J,)`` float64 between-subject SD at free speed, degrees.
    """

    speeds: np.ndarray  # (S,) increasing
    coeffs: np.ndarray  # (S, J, 1 + 2 * HARMONICS)
    between_subject_sd: np.ndarray  # (J,) degrees


@lru_cache(maxsize=1)
def load_kinematics(path: str | None = None) -> KinematicsTable:
    """Read and validate the kinematics JSON (cached per process).

    Args:
        path: The JSON file; the packaged ``gait_kinematics.json`` when None.

    Returns:
        The table, joints in the order of :data:`JOINTS`.

    Raises:
        RuntimeError: The file cannot be read or decoded, lacks a key, has a coefficient array
            of the wrong shape, or its speeds do not increase.
        ValueError: The joints' coefficient arrays differ in shape from one another.
    """
    file = Path(path) if path is not None else KINEMATICS_FILE
    try:
        raw = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RuntimeError(f"cannot read gait kinematics from {file}: {exc}") from exc
    try:
        speeds = np.asarray(raw["dimensionless_speed_approx"], dtype=np.float64)
        coeffs = np.stack([np.asarray(raw["coefficients"][j], dtype=np.float64) for j in JOINTS], axis=1)
        sd = np.asarray([raw["between_subject_sd_deg_free_speed"][j] for j in JOINTS], dtype=np.float64)
    except KeyError as exc:
        raise RuntimeError(f"{file}: missing key {exc}") from exc
    if coeffs.shape != (len(speeds), len(JOINTS), 1 + 2 * HARMONICS):
        raise RuntimeError(f"{file}: coefficient array has shape {coeffs.shape}, expected "
                           f"({len(speeds)}, {len(JOINTS)}, {1 + 2 * HARMONICS})")
    if np.any(np.diff(speeds) <= 0):
        raise RuntimeError(f"{file}: dimensionless_speed_approx must increase")
    return KinematicsTable(speeds=speeds, coeffs=coeffs, between_subject_sd=sd)


def coefficients_at(speed: float, table: KinematicsTable | None = None) -> np.ndarray:
    """Fourier coefficients ``(J, 9)`` linearly interpolated between speed classes (clamped at the ends).

    Args:
        speed: Dimensionless walking speed ``v / sqrt(g * leg)``.
        table: The table (the packaged one when None).

    Returns:
        ``(J, 9)`` float64 coefficients, degrees.

    Raises:
        RuntimeError: ``table`` is None and the packaged table cannot be read.
    """
    table = table or load_kinematics()
    s = float(np.clip(speed, table.speeds[0], table.speeds[-1]))
    hi = int(np.searchsorted(table.speeds, s, side="right"))
    hi = min(max(hi, 1), len(table.speeds) - 1)
    lo = hi - 1
    w = (s - table.speeds[lo]) / (table.speeds[hi] - table.speeds[lo])
    return (1.0 - w) * table.coeffs[lo] + w * table.coeffs[hi]


def evaluate_series(coeffs: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Evaluate Fourier series ``coeffs (J, 9)`` at cycle phases ``phase (...)``.

    Args:
        coeffs: ``(J, 9)`` coefficients ``[c0, a1, b1, .., a4, b4]``, degrees.
        phase: Array-like of gait-cycle phases, cycles (1.0 is a whole cycle, from heel strike).

    Returns:
        ``(..., J)`` float64 angles, degrees: every joint's series at every phase.
    """
    phase = np.asarray(phase, dtype=np.float64)[..., None]
    k = np.arange(1, HARMONICS + 1, dtype=np.float64)
    ang = 2.0 * np.pi * phase[..., None] * k  # (..., 1, K)
    a = coeffs[:, 1::2]  # (J, K)
    b = coeffs[:, 2::2]
    return coeffs[:, 0] + (a * np.cos(ang) + b * np.sin(ang)).sum(axis=-1)

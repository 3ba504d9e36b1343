"""Per-subject traits (body proportions, walking signature, carried bag, coat) and per-walk jitter.

Everything identity-bearing lives here and is drawn from the subject's own RNG stream only, so a
subject looks and walks the same in every sequence, whatever else is generated alongside it. The
distributions are those of /work/shared/docs/SYNTHGAIT.md ("Body and motion").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kinematics import JOINTS, load_kinematics

BAG_KINDS: tuple[str, ...] = ("backpack", "shoulder", "handbag")


@dataclass(frozen=True)
class SubjectTraits:
    """Body (lengths in metres) and gait signature of one synthetic subject.

    Built by :func:`sample_subject`; each field's unit is given beside it. ``J`` is the number of
    joints of :data:`lstc_gait.data.synthetic.kinematics.JOINTS` (7); ``(J,)`` arrays are float64.
    """

    male: bool
    stature: float
    width_scale: float  # sqrt(BMI / 22): scales every width and depth
    leg: float  # hip joint to ground
    thigh: float
    shank: float
    foot: float
    upper_arm: float
    forearm: float
    head: float  # head height
    half_shoulder: float
    half_hip: float
    chest_depth: float
    belly: float  # extra front depth at the waist
    trunk_lean: float  # degrees forward
    head_forward: float  # degrees
    speed: float  # dimensionless walking speed v / sqrt(g * leg)
    cadence_factor: float  # personal cadence offset (x)
    joint_offset: np.ndarray  # (J,) degrees
    joint_gain: np.ndarray  # (J,)
    joint_phase: np.ndarray  # (J,) cycles
    asym_offset: np.ndarray  # (J,) degrees, + on the left, - on the right
    asym_gain: float  # relative, + on the left
    arm_swing: float  # degrees amplitude
    arm_mean: float  # degrees
    elbow: float  # degrees flexion
    arm_abduction: float  # degrees
    toe_out: float  # degrees
    step_width: float  # metres between the feet
    bag: str  # one of BAG_KINDS
    bag_side: int  # +1 left, -1 right
    bag_size: float  # scale of the bag
    coat_width: float  # width factor for torso, thighs, upper arms when in a coat
    coat_hem: float  # metres below the hip joint
    coat_length_arm: float  # sleeve bulk factor on the forearm


def subject_rng(seed: int, subject: int) -> np.random.Generator:
    """RNG for a subject's traits: a pure function of (seed, subject).

    Args:
        seed: The instance's seed.
        subject: The subject's 1-based id.

    Returns:
        A fresh generator (SeedSequence spawn key ``(0, subject)``).
    """
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(0, int(subject))))


def sample_subject(seed: int, subject: int) -> SubjectTraits:
    """Draw one subject's body and walking style.

    Source: SYNTHGAIT.md, "Body and motion" (body proportions, walking signature, bag kind, coat),
    with the between-subject SD of the kinematics table.

    Args:
        seed: The instance's seed.
        subject: The subject's 1-based id.

    Returns:
        The subject's traits (lengths in metres, angles in degrees).

    Raises:
        RuntimeError: The kinematics table cannot be read (see
            :func:`lstc_gait.data.synthetic.kinematics.load_kinematics`).
    """
    rng = subject_rng(seed, subject)
    male = bool(rng.random() < 0.5)
    stature = float(rng.normal(1.75 if male else 1.62, 0.07))
    bmi = float(np.exp(rng.normal(np.log(23.5), 0.15)))
    width_scale = float(np.sqrt(bmi / 22.0))
    leg = float(rng.normal(0.53, 0.015)) * stature
    thigh_share = float(rng.normal(0.50, 0.015))
    # the foot has a height too (ankle ~4% of stature above ground), the rest is thigh + shank
    ankle_h = 0.04 * stature
    thigh = (leg - ankle_h) * thigh_share
    shank = (leg - ankle_h) * (1.0 - thigh_share)
    arm = float(rng.normal(0.44, 0.012)) * stature
    head = float(rng.normal(0.13, 0.006)) * stature
    half_shoulder = float(rng.normal(0.130 if male else 0.118, 0.007)) * stature * width_scale
    half_hip = float(rng.normal(0.095 if male else 0.102, 0.006)) * stature * width_scale
    chest_depth = float(rng.normal(0.065, 0.005)) * stature * width_scale
    belly = max(0.0, float(rng.normal(0.35, 0.25))) * max(0.0, bmi - 21.0) * 0.006
    sd = load_kinematics().between_subject_sd
    n = len(JOINTS)
    bag_kind = BAG_KINDS[int(rng.integers(len(BAG_KINDS)))]
    return SubjectTraits(
        male=male,
        stature=stature,
        width_scale=width_scale,
        leg=leg,
        thigh=thigh,
        shank=shank,
        foot=0.15 * stature,
        upper_arm=0.45 * arm,
        forearm=0.55 * arm,
        head=head,
        half_shoulder=half_shoulder,
        half_hip=half_hip,
        chest_depth=chest_depth,
        belly=belly,
        trunk_lean=float(rng.normal(4.0, 3.0)),
        head_forward=float(rng.normal(8.0, 5.0)),
        speed=float(np.clip(rng.normal(0.41, 0.06), 0.2, 0.62)),
        cadence_factor=float(1.0 + rng.normal(0.0, 0.04)),
        joint_offset=rng.normal(0.0, 0.7 * sd, size=n),
        joint_gain=np.exp(rng.normal(0.0, 0.10, size=n)),
        joint_phase=rng.normal(0.0, 0.02, size=n),
        asym_offset=rng.normal(0.0, 1.5, size=n) / 2.0,
        asym_gain=float(rng.normal(0.0, 0.01)) / 2.0,
        arm_swing=float(np.clip(rng.normal(18.0, 7.0), 3.0, 40.0)),
        arm_mean=float(rng.normal(-4.0, 4.0)),
        elbow=float(np.clip(rng.normal(22.0, 8.0), 2.0, 60.0)),
        arm_abduction=float(np.clip(rng.normal(8.0, 3.0), 1.0, 20.0)),
        toe_out=float(rng.normal(8.0, 5.0)),
        step_width=float(np.clip(rng.normal(0.09, 0.025), 0.02, 0.18)),
        bag=bag_kind,
        bag_side=1 if rng.random() < 0.5 else -1,
        bag_size=float(np.exp(rng.normal(0.0, 0.15))),
        coat_width=float(rng.uniform(1.15, 1.4)),
        coat_hem=float(rng.uniform(0.05, 0.30)),
        coat_length_arm=float(rng.uniform(1.05, 1.25)),
    )


@dataclass(frozen=True)
class WalkJitter:
    """What changes between two walks of the same subject (shared by every camera of one walk).

    ``J`` is the number of joints (7); see SYNTHGAIT.md, "Per sequence jitter".
    """

    speed: float  # multiplier
    cadence: float  # multiplier
    joint_offset: np.ndarray  # (J,) degrees
    start_phase: float  # cycles


def walk_rng(seed: int, subject: int, type_index: int) -> np.random.Generator:
    """RNG of one walk (subject, sequence type): all views of a walk see the same motion, like CASIA-B.

    Args:
        seed: The instance's seed.
        subject: The subject's 1-based id.
        type_index: The sequence type's position in ``ALL_TYPES`` (``nm-01`` is 0).

    Returns:
        A fresh generator (SeedSequence spawn key ``(1, subject, type_index)``).
    """
    return np.random.default_rng(
        np.random.SeedSequence(entropy=int(seed), spawn_key=(1, int(subject), int(type_index))))


def sample_walk(rng: np.random.Generator) -> WalkJitter:
    """Draw one walk's jitter (SYNTHGAIT.md, "Per sequence jitter").

    Speed x e^N(0, .05), cadence x e^N(0, .02), per-joint offsets U(-1, 1) degrees and a start
    phase U(0, 1) cycles.

    Args:
        rng: The walk's generator (see :func:`walk_rng`); drawn from in a fixed order.

    Returns:
        The walk's jitter.
    """
    return WalkJitter(
        speed=float(np.exp(rng.normal(0.0, 0.05))),
        cadence=float(np.exp(rng.normal(0.0, 0.02))),
        joint_offset=rng.uniform(-1.0, 1.0, size=len(JOINTS)),
        start_phase=float(rng.random()),
    )

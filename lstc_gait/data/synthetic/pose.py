"""3-D body of one walk, frame by frame, as renderable primitives in the walker's own frame.

Walker frame: x forward, y to the walker's left, z up, metres; the lowest foot point touches z = 0 in
every frame (this is what makes the body bounce) and the pelvis advances along x at walking speed.
The body model, joint-angle signatures and conditions are SYNTHGAIT.md's ("Body and motion").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .body import SubjectTraits, WalkJitter
from .kinematics import JOINTS, coefficients_at, evaluate_series

G = 9.81
J = {name: i for i, name in enumerate(JOINTS)}


@dataclass
class Capsule:
    """Tapered capsule from ``p0`` to ``p1`` (each ``(T, 3)``) with end radii in metres."""

    p0: np.ndarray
    p1: np.ndarray
    r0: float
    r1: float


@dataclass
class Hull:
    """Stack of horizontal-ish cross-sections ``(T, S, P, 3)``: drawn as the outline of its projection."""

    points: np.ndarray


@dataclass
class Body:
    """Every renderable primitive of one walk, in one frame of reference (metres).

    Attributes:
        capsules: Limbs, neck, head and bag straps.
        hulls: Torso, coat hem and bags.
        feet: ``(T, 2, 3)`` ground contact points of both feet (for shadows), or None.
    """

    capsules: list[Capsule] = field(default_factory=list)
    hulls: list[Hull] = field(default_factory=list)
    feet: np.ndarray | None = None  # (T, 2, 3) ground contact points of both feet (for shadows)


def _rot_z(points: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Rotate ``points (T, ..., 3)`` about z by ``yaw (T,)`` radians."""
    c = np.cos(yaw).reshape((-1,) + (1,) * (points.ndim - 2))
    s = np.sin(yaw).reshape(c.shape)
    x, y = points[..., 0], points[..., 1]
    return np.stack([c * x - s * y, s * x + c * y, points[..., 2]], axis=-1)


def _ellipse_ring(a: float, b: float, n: int = 10) -> np.ndarray:
    """``n`` points of an ellipse with half-depth ``a`` (x) and half-width ``b`` (y), shape (n, 2)."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([a * np.cos(t), b * np.sin(t)], axis=-1)


def _box_ring(dx: float, dy: float) -> np.ndarray:
    return np.array([[dx, dy], [dx, -dy], [-dx, -dy], [-dx, dy]], dtype=np.float64)


def _sections(rings: list[np.ndarray], centres: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Place 2-D rings at ``centres (T, S, 3)``, all rotated by ``yaw (T, S)``; returns (T, S, P, 3)."""
    ring = np.stack(rings)  # (S, P, 2)
    c, s = np.cos(yaw)[..., None], np.sin(yaw)[..., None]
    x = c * ring[None, :, :, 0] - s * ring[None, :, :, 1]
    y = s * ring[None, :, :, 0] + c * ring[None, :, :, 1]
    z = np.zeros_like(x)
    return np.stack([x, y, z], axis=-1) + centres[:, :, None, :]


def _limb_dir(pitch_deg: np.ndarray, lateral: np.ndarray) -> np.ndarray:
    """Unit-ish direction of a limb hanging down, pitched forward by ``pitch`` and out by ``lateral`` (m/m)."""
    p = np.radians(pitch_deg)
    return np.stack([np.sin(p), lateral, -np.cos(p)], axis=-1)


def build_body(traits: SubjectTraits, walk: WalkJitter, condition: str, times: np.ndarray) -> Body:
    """All primitives of one walk at ``times``, in the walker frame.

    Joint angles are the speed-interpolated normative curves (:mod:`.kinematics`) with the
    subject's signature and the walk's jitter; segment pitch as in SYNTHGAIT.md (thigh = hip_flex -
    pel_tilt, shank = thigh - knee_flex, foot = shank + ank_dors). ``bg`` adds the subject's bag,
    ``cl`` the coat (wider torso, thighs and upper arms, a hem, arm swing x 0.8).

    Args:
        traits: The subject (see :func:`lstc_gait.data.synthetic.body.sample_subject`).
        walk: The walk's jitter.
        condition: ``"nm"``, ``"bg"`` or ``"cl"`` (any other value is walked as ``nm``).
        times: ``(T,)`` float times of the frames, seconds (:func:`~lstc_gait.data.synthetic.generate.generate_walk`
            centres them on 0).

    Returns:
        The body: every primitive holds ``(T, ...)`` points, metres; the lowest foot point is at
        z = 0 in every frame and the body advances along +x.

    Raises:
        RuntimeError: The kinematics table cannot be read.
    """
    t = traits
    H = t.stature
    coat = condition == "cl"
    bag = t.bag if condition == "bg" else None
    speed = t.speed * walk.speed
    coef = coefficients_at(speed)
    cadence = (0.5 + 1.1 * speed) * t.cadence_factor * walk.cadence  # strides per second
    v = speed * np.sqrt(G * t.leg)  # m/s
    phase_l = walk.start_phase + cadence * times
    phase = {1: phase_l, -1: phase_l + 0.5}
    mean0 = coef[:, 0]

    def angles(side: int) -> np.ndarray:
        raw = evaluate_series(coef, phase[side][:, None] + t.joint_phase[None, :])  # (T, J, J) -> diag
        raw = np.einsum("tjj->tj", raw)
        gain = t.joint_gain * (1.0 + side * t.asym_gain)
        return mean0 + gain * (raw - mean0) + t.joint_offset + walk.joint_offset + side * t.asym_offset

    ang = {1: angles(1), -1: angles(-1)}
    T = len(times)
    tilt = 0.5 * (ang[1][:, J["pel_tilt"]] + ang[-1][:, J["pel_tilt"]])
    obl = np.radians(ang[1][:, J["pel_obl"]])
    rot = np.radians(ang[1][:, J["pel_rot"]])  # + : left side forward

    body = Body()
    hip_joint = 0.62 * t.half_hip
    # a constant adduction so that the feet land step_width apart although the hips are wider
    add_mean = 0.5 * (ang[1][:, J["hip_add"]].mean() + ang[-1][:, J["hip_add"]].mean())
    add0 = np.degrees(np.arctan2(hip_joint - 0.5 * t.step_width, t.leg)) - add_mean
    sway = 0.022 * np.cos(2 * np.pi * (phase_l - 0.3))  # pelvis shifts over the stance leg

    radius_scale = H * t.width_scale
    coat_w = t.coat_width if coat else 1.0
    ankle_h = 0.04 * H
    foot_r = 0.018 * H
    joints: dict[str, np.ndarray] = {}
    low_points = []
    feet = []
    for side in (1, -1):
        a = ang[side]
        hip = np.zeros((T, 3))
        hip[:, 1] = side * hip_joint
        hip = _rot_z(hip, -rot)  # pelvis rotation brings the left hip forward when rot > 0
        hip[:, 2] += side * hip_joint * np.sin(obl)
        hip[:, 1] += sway
        lateral = -side * np.sin(np.radians(a[:, J["hip_add"]] + add0))
        thigh_pitch = a[:, J["hip_flex"]] - tilt
        shank_pitch = thigh_pitch - a[:, J["knee_flex"]]
        knee = hip + t.thigh * _limb_dir(thigh_pitch, lateral)
        ankle = knee + t.shank * _limb_dir(shank_pitch, lateral)
        alpha = np.radians(shank_pitch + a[:, J["ank_dors"]])
        toe_yaw = np.radians(side * t.toe_out)
        fdir = np.stack([np.cos(alpha) * np.cos(toe_yaw), np.cos(alpha) * np.sin(toe_yaw), np.sin(alpha)], -1)
        down = np.stack([np.sin(alpha), np.zeros(T), -np.cos(alpha)], axis=-1)
        sole = ankle + (ankle_h - foot_r) * down
        heel = sole - 0.22 * t.foot * fdir
        toe = sole + (0.78 * t.foot - foot_r) * fdir
        low_points += [heel[:, 2] - foot_r, toe[:, 2] - foot_r]
        feet.append(0.5 * (heel + toe))
        joints[f"hip{side}"], joints[f"knee{side}"], joints[f"ankle{side}"] = hip, knee, ankle
        joints[f"heel{side}"], joints[f"toe{side}"] = heel, toe
        thigh_r = 0.046 * radius_scale
        body.capsules.append(Capsule(hip, knee, thigh_r * coat_w, 0.030 * radius_scale))
        body.capsules.append(Capsule(knee, ankle, 0.030 * radius_scale, 0.019 * radius_scale))
        body.capsules.append(Capsule(heel, toe, foot_r, 0.8 * foot_r))

    # torso: elliptical sections from the buttocks to the shoulders, twisting against the pelvis
    lean = np.radians(t.trunk_lean + 0.5 * (tilt - tilt.mean()))
    levels = np.array([-0.055, 0.0, 0.10, 0.19, 0.255, 0.29]) * H
    hw = np.array([0.93 * t.half_hip, t.half_hip, 0.84 * t.half_hip + 0.25 * t.belly,
                   0.86 * t.half_shoulder, 0.97 * t.half_shoulder, 0.72 * t.half_shoulder])
    cd = t.chest_depth
    hd = np.array([0.85 * cd, 0.92 * cd, 0.82 * cd + t.belly, cd, 0.82 * cd, 0.6 * cd])
    fwd = np.array([-0.15 * cd, 0.0, 0.5 * t.belly, 0.05 * cd, 0.0, 0.0])
    twist = np.linspace(1.0, -0.6, len(levels))
    if coat:
        hw = hw * np.r_[np.full(5, coat_w), 0.5 * (1 + coat_w)]
        hd = hd * np.r_[np.full(5, coat_w), 0.5 * (1 + coat_w)]
    centres = np.zeros((T, len(levels), 3))
    centres[:, :, 0] = fwd[None, :] + levels[None, :] * np.sin(lean)[:, None]
    centres[:, :, 2] = levels[None, :] * np.cos(lean)[:, None]
    centres[:, :, 1] = sway[:, None]
    yaw = -rot[:, None] * twist[None, :]
    rings = [_ellipse_ring(hd[i], hw[i]) for i in range(len(levels))]
    torso = _sections(rings, centres, yaw)
    body.hulls.append(Hull(torso))
    if coat:
        # skirt-like hem from the hip down to coat_hem below it, flaring a little
        hem_levels = np.array([0.0, -t.coat_hem])
        hem_hw = np.array([hw[1], hw[1] * 1.08 + 0.02])
        hem_hd = np.array([hd[1], hd[1] * 1.15 + 0.03])
        c2 = np.zeros((T, 2, 3))
        c2[:, :, 1] = sway[:, None]
        c2[:, :, 2] = hem_levels[None, :]
        c2[:, :, 0] = hem_levels[None, :] * np.sin(np.radians(0.5 * (ang[1][:, J["hip_flex"]] + ang[-1][
            :, J["hip_flex"]]) - tilt))[:, None]
        hem = _sections([_ellipse_ring(hem_hd[i], hem_hw[i]) for i in range(2)], c2, -rot[:, None] * 0.8)
        body.hulls.append(Hull(hem))

    # neck and head
    top = centres[:, -1, :]
    neck_top = top + 0.05 * H * np.stack([np.sin(lean), np.zeros(T), np.cos(lean)], -1)
    body.capsules.append(Capsule(top, neck_top, 0.03 * radius_scale * (1.35 if coat else 1.0), 0.027 * H))
    head_r = 0.34 * t.head
    hf = np.radians(t.head_forward) + 0.5 * lean
    head_dir = np.stack([np.sin(hf), np.zeros(T), np.cos(hf)], -1)
    head_base = neck_top + head_r * head_dir + np.array([0.15 * head_r, 0, 0])
    head_top = neck_top + (t.head - head_r) * head_dir + np.array([0.15 * head_r, 0, 0])
    body.capsules.append(Capsule(head_base, head_top, head_r * 0.97, head_r))

    # arms swing opposite the same-side leg: driven by the other leg's normalised hip flexion
    shoulder_level = centres[:, 4, :]
    swing_scale = 0.8 if coat else 1.0
    for side in (1, -1):
        hf_other = ang[-side][:, J["hip_flex"]]
        g = (hf_other - hf_other.mean()) / max(1e-6, 0.5 * (hf_other.max() - hf_other.min()))
        amp = t.arm_swing * swing_scale * (0.3 if bag == "handbag" and side == t.bag_side else 1.0)
        upper_pitch = t.arm_mean + amp * g
        elbow = t.elbow + 0.5 * amp * np.clip(g, 0, None)
        sh = np.zeros((T, 3))
        sh[:, 1] = side * (0.86 * t.half_shoulder * (coat_w if coat else 1.0))
        sh = _rot_z(sh, yaw[:, 4]) + shoulder_level - np.array([0, 0, 0.02 * H])
        lat = side * np.sin(np.radians(t.arm_abduction))
        elbow_p = sh + t.upper_arm * _limb_dir(upper_pitch, np.full(T, lat))
        hand = elbow_p + t.forearm * _limb_dir(upper_pitch + elbow, np.full(T, 0.5 * lat))
        ua_r = 0.025 * radius_scale
        fa_w = t.coat_length_arm if coat else 1.0
        body.capsules.append(Capsule(sh, elbow_p, ua_r * coat_w * 1.05, 0.021 * radius_scale * coat_w))
        body.capsules.append(Capsule(elbow_p, hand, 0.019 * radius_scale * fa_w, 0.015 * H))
        joints[f"hand{side}"] = hand
        joints[f"shoulder{side}"] = sh

    if bag is not None:
        s = t.bag_side
        k = t.bag_size
        if bag == "backpack":
            c = np.zeros((T, 2, 3))
            lv = np.array([0.07, 0.25]) * H * np.sqrt(k)
            c[:, :, 0] = -(hd[3] + 0.07 * k) + lv[None, :] * np.sin(lean)[:, None]
            c[:, :, 2] = lv[None, :] * np.cos(lean)[:, None]
            c[:, :, 1] = sway[:, None]
            body.hulls.append(Hull(_sections([_box_ring(0.07 * k, 0.14 * k)] * 2, c, yaw[:, [3, 3]])))
        elif bag == "shoulder":
            swing = 0.045 * np.sin(2 * np.pi * 4.0 * phase_l)  # twice the step frequency
            c = np.zeros((T, 2, 3))
            c[:, :, 0] = 0.02 + swing[:, None]
            c[:, :, 1] = s * (t.half_hip * coat_w + 0.06 * k) + sway[:, None]
            c[:, :, 2] = np.array([-0.17 * k, 0.06])[None, :]
            body.hulls.append(Hull(_sections([_box_ring(0.11 * k, 0.045 * k)] * 2, c, -0.5 * rot[:, None]
                                             * np.ones((1, 2)))))
            strap_top = joints[f"shoulder{-s}"]
            body.capsules.append(Capsule(strap_top, c[:, 1, :] + np.array([0, 0, 0.0]), 0.012, 0.012))
        else:  # handbag hanging from the wrist
            hand = joints[f"hand{s}"]
            c = np.stack([hand + np.array([0, 0, -0.02]), hand + np.array([0, 0, -0.22 * k])], axis=1)
            body.hulls.append(Hull(_sections([_box_ring(0.11 * k, 0.045 * k)] * 2, c, np.zeros((T, 2)))))

    # ground contact: lift everything so the lowest foot point touches z = 0; walk forward along x
    lift = -np.min(np.stack(low_points), axis=0)  # (T,)
    shift = np.stack([v * times, np.zeros(T), lift], axis=-1)
    for cap in body.capsules:
        cap.p0 = cap.p0 + shift
        cap.p1 = cap.p1 + shift
    for hull in body.hulls:
        hull.points = hull.points + shift[:, None, None, :]
    body.feet = np.stack(feet, axis=1) + shift[:, None, :]
    body.feet[:, :, 2] = 0.0
    return body

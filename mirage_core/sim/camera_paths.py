"""Camera paths through a simulated scene that come back to what they saw.

Conventions: the sim world of :mod:`mirage_core.sim.pybullet_scene` (**Z up**, metres). Poses
are OpenCV ``T_world_cam`` (+X right, +Y down, +Z forward), float64. A camera's heading is
``yaw`` (radians, from world +X towards +Y) and ``pitch`` (radians, positive looks up); there is
no roll, so image up is always world +Z.

Path families (:data:`PATH_FAMILIES`; ``t = i / (F - 1)`` runs from 0 to 1 over the ``F``
frames; ``s`` = :attr:`SceneLayout.scale`, 1 in rooms and 3 outdoors). The revisiting ones
(:data:`REVISIT_FAMILIES`) end near their start pose, and the middle of the clip looks
elsewhere, so the last frames show content that only the clip's earlier frames (the memory)
can supply:

* ``loop``: a closed ellipse (semi-axes ``a <= 2 s``, ``b = 0.35..1 a``, any orientation) at
  constant speed, at most ``0.1 s`` m per frame (so the loop grows with ``F``). Heading
  ``tangent`` (70 %: looks along the motion plus a fixed offset up to 75 degrees, so it
  turns through 360 degrees) or ``fixed`` (one direction swaying 45-100 degrees to one side
  and then the other).
* ``out_and_back``: a straight line of length ``distance`` (up to ``3.5 s`` m, peak step
  ``0.1 s`` m): walks out looking ahead, turns 180 degrees while slowing at the far end
  (``t`` 0.28-0.58), walks back looking towards the start and turns again (back, or on round
  to 360 degrees) while slowing at the start (``t`` 0.72-1).
* ``orbit``: circles a point of interest (an object centre when one fits, else a free
  point) at ``radius`` 0.7-2.2 ``s`` m looking at it; radii whose peak step stays under
  ``0.15 s`` m are tried first. ``full``: 360 degrees at constant speed; ``arc_back``:
  180-270 degrees out and the same arc back.
* ``turn_away_back``: pans ``pan_deg`` (90-200) away from the start heading until ``t = 0.45``
  and back from ``t = 0.55``, with an optional drift of up to ``0.6 s`` m out and back.
* ``segments`` (does not revisit): 1-2 chained named motions (:func:`random_trajectory`)
  from a random level start; the older synthetic clips' paths.

Heights are drawn in ``z_range`` (with an optional gentle bob) and pitch in -20..8 degrees
(orbits: towards the object) with a small nod. Every revisiting family then adds a small
*return error*: a position/yaw/pitch offset ramped in smoothly over the clip (at most
``0.15 s`` m across, 5 cm up/down, 6 and 3 degrees), so the end pose is near, not exactly
at, the start pose.

Paths are drawn by rejection: random parameters, then a place for the path (64 candidate
offsets; orbits search the radius instead), until every camera centre keeps
:attr:`SceneLayout.clearance` from the walls (``bounds_xy``) and from every obstacle footprint
(static objects and the areas swept by moving objects), and stays in ``z_range``. A layout
that cannot hold the family in ``max_tries`` draws raises :class:`PathPlanningError`.
Clips shorter than 65 frames keep the same geometry at higher speed (33 frames: up to about
25 degrees per frame).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from mirage_core.errors import MirageInputError

__all__ = [
    "PATH_FAMILIES",
    "REVISIT_FAMILIES",
    "SEGMENT_MOTIONS",
    "CameraPath",
    "PathPlanningError",
    "SceneLayout",
    "pose_from_yaw_pitch",
    "random_trajectory",
    "sample_camera_path",
]

REVISIT_FAMILIES: tuple[str, ...] = ("loop", "out_and_back", "orbit", "turn_away_back")
PATH_FAMILIES: tuple[str, ...] = (*REVISIT_FAMILIES, "segments")

# speed caps used to size paths (scaled by SceneLayout.scale): metres per frame
_MAX_STEP = 0.10  # mean step of loops; peak step of out_and_back
_MAX_ORBIT_STEP = 0.15  # peak step of orbits (preferred, not enforced: see _orbit)

#: ``segments`` motions -> (min, max) speed: metres/frame for translations, degrees/frame for
#: rotations (scaled by nothing: the older synthetic clips' values)
SEGMENT_MOTIONS: dict[str, tuple[float, float]] = {
    "push_in": (0.01, 0.05), "pull_out": (0.01, 0.04), "move_left": (0.01, 0.04),
    "move_right": (0.01, 0.04), "pan_left": (0.3, 2.0), "pan_right": (0.3, 2.0),
    "orbit_left": (0.3, 1.5), "orbit_right": (0.3, 1.5),
}


class PathPlanningError(MirageInputError):
    """No path of the requested family fits the scene layout (too crowded or too small)."""


@dataclass(frozen=True)
class SceneLayout:
    """Free space of a scene, for planning camera paths (sim world, Z up, metres).

    Attributes:
        bounds_xy: ``(xmin, xmax, ymin, ymax)``: walls of a room, or the edge of the usable
            ground outdoors.
        z_range: ``(zmin, zmax)`` allowed camera heights.
        obstacles: ``[N, 3]`` float64 footprint discs ``(x, y, radius)`` of static objects and
            of the areas moving objects sweep.
        targets: ``[M, 3]`` float64 points of interest (object centres) that orbits circle.
        clearance: minimum distance from a camera centre to a wall or footprint.
        scale: size of path features (1 in a room, larger outdoors).
    """

    bounds_xy: tuple[float, float, float, float]
    z_range: tuple[float, float]
    obstacles: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    targets: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    clearance: float = 0.4
    scale: float = 1.0

    def __post_init__(self) -> None:
        xmin, xmax, ymin, ymax = map(float, self.bounds_xy)
        if not (xmax > xmin and ymax > ymin):
            raise MirageInputError(f"bounds_xy must be (xmin, xmax, ymin, ymax) with min < max, "
                                   f"got {self.bounds_xy}")
        if not self.z_range[1] >= self.z_range[0]:
            raise MirageInputError(f"z_range must be (zmin, zmax) with zmin <= zmax, "
                                   f"got {self.z_range}")
        obs = np.asarray(self.obstacles, dtype=np.float64).reshape(-1, 3)
        tgt = np.asarray(self.targets, dtype=np.float64).reshape(-1, 3)
        if self.clearance < 0 or self.scale <= 0:
            raise MirageInputError(f"need clearance >= 0 and scale > 0, got {self.clearance}, "
                                   f"{self.scale}")
        object.__setattr__(self, "obstacles", obs)
        object.__setattr__(self, "targets", tgt)

    def margin(self, centres: np.ndarray) -> np.ndarray:
        """Distance (m) of each camera centre ``[N, 3]`` to the nearest wall or footprint
        edge -> ``[N]`` (negative inside an obstacle or outside the bounds)."""
        c = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
        xmin, xmax, ymin, ymax = self.bounds_xy
        d = np.minimum.reduce([c[:, 0] - xmin, xmax - c[:, 0], c[:, 1] - ymin, ymax - c[:, 1]])
        if len(self.obstacles):
            o = self.obstacles
            dist = np.hypot(c[:, None, 0] - o[None, :, 0], c[:, None, 1] - o[None, :, 1])
            d = np.minimum(d, (dist - o[None, :, 2]).min(axis=1))
        return d

    def fits(self, centres: np.ndarray) -> bool:
        """True if every centre ``[N, 3]`` keeps :attr:`clearance` and lies in ``z_range``."""
        c = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
        if not np.isfinite(c).all():
            return False
        z_ok = (c[:, 2] >= self.z_range[0] - 1e-9) & (c[:, 2] <= self.z_range[1] + 1e-9)
        return bool(z_ok.all() and (self.margin(c) >= self.clearance).all())


@dataclass
class CameraPath:
    """A planned camera path.

    Attributes:
        family: one of :data:`PATH_FAMILIES`.
        T_world_cam: ``[F, 4, 4]`` float64 OpenCV camera-to-world poses in the sim world.
        params: the family's drawn parameters (JSON-friendly floats and strings).
    """

    family: str
    T_world_cam: np.ndarray
    params: dict


def pose_from_yaw_pitch(centres: np.ndarray, yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """OpenCV ``T_world_cam`` ``[F, 4, 4]`` float64 from centres ``[F, 3]`` and headings
    ``yaw``, ``pitch`` ``[F]`` (radians; Z-up world, no roll: image up is world +Z).

    Camera axes: forward ``z = (cos p cos y, cos p sin y, sin p)``, right
    ``x = (sin y, -cos y, 0)``, down ``y = z x x``.
    """
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
    y, p = np.asarray(yaw, dtype=np.float64), np.asarray(pitch, dtype=np.float64)
    if not (y.shape == p.shape == (len(c),)):
        raise MirageInputError(f"yaw and pitch must be [F] = [{len(c)}], got {y.shape}, "
                               f"{p.shape}")
    if np.any(np.abs(p) >= np.pi / 2 - 1e-6):
        raise MirageInputError("pitch must stay inside (-90, 90) degrees")
    fwd = np.stack([np.cos(p) * np.cos(y), np.cos(p) * np.sin(y), np.sin(p)], axis=-1)
    right = np.stack([np.sin(y), -np.cos(y), np.zeros_like(y)], axis=-1)
    down = np.cross(fwd, right)
    T = np.tile(np.eye(4), (len(c), 1, 1))
    T[:, :3, 0], T[:, :3, 1], T[:, :3, 2], T[:, :3, 3] = right, down, fwd, c
    return T


# --------------------------------------------------------------------------- helpers


def _smooth(x: np.ndarray) -> np.ndarray:
    """Smoothstep ``3x^2 - 2x^3`` of ``x`` clipped to ``[0, 1]`` (zero slope at both ends)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _ramp(t: np.ndarray, a: float, b: float) -> np.ndarray:
    """0 before ``a``, smoothly to 1 at ``b``, 1 after."""
    return _smooth((t - a) / max(b - a, 1e-9))


def _place(rng: np.random.Generator, layout: SceneLayout, rel_xy: np.ndarray,
           tries: int = 64) -> np.ndarray:
    """An offset ``[2]`` such that ``rel_xy + offset`` (``[F, 2]``) keeps the clearance
    everywhere: the first of ``tries`` uniform candidates that fits.

    Raises:
        PathPlanningError: the shape is larger than the bounds or no candidate fitted.
    """
    xmin, xmax, ymin, ymax = layout.bounds_xy
    c = layout.clearance
    lo, hi = rel_xy.min(axis=0), rel_xy.max(axis=0)
    ox = (xmin + c - lo[0], xmax - c - hi[0])
    oy = (ymin + c - lo[1], ymax - c - hi[1])
    if ox[0] > ox[1] or oy[0] > oy[1]:
        raise PathPlanningError("the path is larger than the free area")
    cand = np.column_stack([rng.uniform(*ox, size=tries), rng.uniform(*oy, size=tries)])
    for off in cand:
        xy = rel_xy + off[None]
        if (layout.margin(np.column_stack([xy, np.zeros(len(xy))])) >= c).all():
            return off
    raise PathPlanningError("no free place for the path among the obstacles")


def _view_distance(layout: SceneLayout, xy: np.ndarray, yaw: float) -> float:
    """Distance (m) from ``xy`` along heading ``yaw`` to the bounds."""
    xmin, xmax, ymin, ymax = layout.bounds_xy
    d = np.array([math.cos(yaw), math.sin(yaw)])
    ts = []
    for k, (lo, hi) in enumerate(((xmin, xmax), (ymin, ymax))):
        if abs(d[k]) > 1e-9:
            ts.append(((hi if d[k] > 0 else lo) - xy[k]) / d[k])
    return float(min(ts))


def _heights(rng: np.random.Generator, layout: SceneLayout, t: np.ndarray) -> np.ndarray:
    """Camera heights ``[F]``: a random level with a gentle periodic bob inside ``z_range``."""
    zmin, zmax = layout.z_range
    z0 = rng.uniform(zmin, zmax)
    bob = min(0.1 * layout.scale, (zmax - zmin) / 2)
    amp = rng.uniform(0, bob) * (1.0 if rng.random() < 0.5 else 0.0)
    z = z0 + amp * np.sin(2 * np.pi * t + rng.uniform(0, 2 * np.pi))
    return np.clip(z, zmin, zmax)


def _pitches(rng: np.random.Generator, t: np.ndarray, base: float | None = None) -> np.ndarray:
    """Pitch ``[F]`` (radians): a random tilt (-20..8 degrees) with a small periodic nod."""
    p0 = math.radians(rng.uniform(-20.0, 8.0)) if base is None else base
    nod = math.radians(rng.uniform(0.0, 5.0))
    return p0 + nod * np.sin(2 * np.pi * t + rng.uniform(0, 2 * np.pi))


# --------------------------------------------------------------------------- families
# Each family gets the return error's horizontal part ``dxy [F, 2]`` (added before placing the
# path, so the placed path is the one validated) and returns absolute ``xy [F, 2]``,
# ``yaw [F]``, ``pitch [F]`` and its parameters.


def _loop(rng, layout: SceneLayout, t: np.ndarray, dxy: np.ndarray):
    s, F = layout.scale, len(t)
    ratio = rng.uniform(0.35, 1.0)  # b / a
    around = 2 * np.pi * math.sqrt((1 + ratio * ratio) / 2)  # perimeter / a (approximately)
    longest = min(2.0 * s * around, _MAX_STEP * s * (F - 1))  # a <= 2 s, mean step <= cap
    a = rng.uniform(0.55, 1.0) * longest / around
    b = ratio * a
    theta, phi0 = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    u = phi0 + sign * 2 * np.pi * t
    R = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    rel = np.stack([a * np.cos(u), b * np.sin(u)], axis=-1) @ R.T + dxy
    xy = rel + _place(rng, layout, rel)[None]
    mode = "tangent" if rng.random() < 0.7 else "fixed"
    if mode == "tangent":
        vel = np.stack([-a * np.sin(u), b * np.cos(u)], axis=-1) @ R.T * sign
        offset = math.radians(rng.uniform(-75.0, 75.0))
        yaw = np.unwrap(np.arctan2(vel[:, 1], vel[:, 0])) + offset
    else:
        offset = rng.uniform(0, 2 * np.pi)
        sway = math.radians(rng.uniform(45.0, 100.0)) * (1.0 if rng.random() < 0.5 else -1.0)
        yaw = offset + sway * np.sin(2 * np.pi * t)
    params = {"mode": mode, "a": a, "b": b, "theta_deg": math.degrees(theta),
              "direction": "ccw" if sign > 0 else "cw", "heading_offset_deg": math.degrees(offset)}
    return xy, yaw, _pitches(rng, t), params


def _out_and_back(rng, layout: SceneLayout, t: np.ndarray, dxy: np.ndarray):
    s, F = layout.scale, len(t)
    out_frac = 0.42
    longest = min(3.5 * s, _MAX_STEP * s * out_frac * (F - 1) / 1.5)  # smoothstep peaks 1.5x
    distance = rng.uniform(0.55, 1.0) * longest
    psi = rng.uniform(0, 2 * np.pi)
    d = np.array([math.cos(psi), math.sin(psi)])
    # the turns overlap the slowing down at either end (gentler than turning on the spot);
    # the second turn goes either way (back the way it came, or on round to 360 degrees)
    go = _ramp(t, 0.0, out_frac) - _ramp(t, 0.5, 0.92)
    s1 = 1.0 if rng.random() < 0.5 else -1.0
    s2 = s1 if rng.random() < 0.5 else -s1
    offset = math.radians(rng.uniform(-20.0, 20.0))
    yaw = psi + offset + s1 * np.pi * _ramp(t, 0.28, 0.58) + s2 * np.pi * _ramp(t, 0.72, 1.0)
    rel = distance * go[:, None] * d[None] + dxy
    xy = rel + _place(rng, layout, rel)[None]
    if _view_distance(layout, xy[0], psi + offset) < 1.0 * s:
        raise PathPlanningError("the first frame faces a nearby wall")
    params = {"distance": distance, "direction_deg": math.degrees(psi),
              "heading_offset_deg": math.degrees(offset),
              "turns": "back" if s1 != s2 else "round"}
    return xy, yaw, _pitches(rng, t), params


def _orbit(rng, layout: SceneLayout, t: np.ndarray, dxy: np.ndarray):
    s = layout.scale
    mode = "full" if rng.random() < 0.5 else "arc_back"
    sign = 1.0 if rng.random() < 0.5 else -1.0
    alpha0 = rng.uniform(0, 2 * np.pi)
    if mode == "full":
        sweep, g = 2 * np.pi, t
    else:
        sweep = math.radians(rng.uniform(180.0, 270.0))
        g = _ramp(t, 0.0, 0.5) - _ramp(t, 0.5, 1.0)
    alpha = alpha0 + sign * sweep * g
    unit = np.stack([np.cos(alpha), np.sin(alpha)], axis=-1)
    # radii from 0.7 to 2.2 (x scale), those within the orbit speed cap first (peak step of
    # the arc: full orbits run at constant speed, arc_back covers 2 sweeps with 1.5x peaks)
    radii = rng.permutation(np.linspace(0.7, 2.2, 16) * s)
    peak = radii * sweep * (1.0 if mode == "full" else 3.0) / max(len(t) - 1, 1)
    radii = np.concatenate([radii[peak <= _MAX_ORBIT_STEP * s],
                            np.sort(radii[peak > _MAX_ORBIT_STEP * s])])
    targets = layout.targets
    if len(targets) and rng.random() < 0.85:  # circle an object: search a radius that fits
        poi = targets[int(rng.integers(len(targets)))].copy()
        for radius in radii:
            xy = poi[None, :2] + radius * unit + dxy
            if (layout.margin(np.column_stack([xy, np.zeros(len(xy))])) >= layout.clearance).all():
                break
        else:
            raise PathPlanningError("no orbit radius fits around the chosen object")
    else:  # circle a free point: search a place for the circle
        radius = radii[0]
        rel = radius * unit + dxy
        off = _place(rng, layout, rel)
        xy = rel + off[None]
        poi = np.array([off[0], off[1], rng.uniform(0.3, 1.0) * s])
    offset = math.radians(rng.uniform(-15.0, 15.0))
    yaw = alpha + np.pi + offset
    z0 = 0.5 * (layout.z_range[0] + layout.z_range[1])
    pitch = np.clip(math.atan2(poi[2] - z0, radius), math.radians(-35), math.radians(15))
    params = {"mode": mode, "radius": float(radius), "sweep_deg": math.degrees(sweep),
              "centre": [float(v) for v in poi], "direction": "ccw" if sign > 0 else "cw"}
    return xy, yaw, pitch + _pitches(rng, t, base=0.0), params


def _turn_away_back(rng, layout: SceneLayout, t: np.ndarray, dxy: np.ndarray):
    s = layout.scale
    yaw0 = rng.uniform(0, 2 * np.pi)
    pan = math.radians(rng.uniform(90.0, 200.0)) * (1.0 if rng.random() < 0.5 else -1.0)
    h0, h1 = rng.uniform(0.0, 0.1), rng.uniform(0.0, 0.1)
    away = _ramp(t, h0, 0.45) - _ramp(t, 0.55, 1.0 - h1)
    drift_len = rng.uniform(0.0, 0.6) * s if rng.random() < 0.6 else 0.0
    psi = rng.uniform(0, 2 * np.pi)
    rel = drift_len * away[:, None] * np.array([[math.cos(psi), math.sin(psi)]]) + dxy
    xy = rel + _place(rng, layout, rel)[None]
    if _view_distance(layout, xy[0], yaw0) < 1.5 * s:
        raise PathPlanningError("the first frame faces a nearby wall")
    params = {"pan_deg": math.degrees(pan), "drift": drift_len, "hold_start": h0,
              "hold_end": h1}
    return xy, yaw0 + pan * away, _pitches(rng, t), params


def random_trajectory(rng: np.random.Generator, num_frames: int,
                      max_segments: int = 2) -> torch.Tensor:
    """``[num_frames, 4, 4]`` float64 ``T_world_cam`` (OpenCV), first pose the identity.

    Composes ``1..max_segments`` named motions of :func:`~mirage_core.trajectory.make_trajectory`
    (:data:`SEGMENT_MOTIONS`, random speeds); segment ``k`` is applied relative to the last pose
    of segment ``k - 1``, so the path is continuous. World = first camera (OpenCV, -Y up).
    """
    from mirage_core.trajectory import make_trajectory

    n_seg = int(rng.integers(1, max_segments + 1))
    cuts = np.sort(rng.choice(np.arange(1, num_frames - 1), size=n_seg - 1, replace=False)) \
        if n_seg > 1 and num_frames > n_seg else np.array([], dtype=int)
    bounds = [0, *cuts.tolist(), num_frames - 1]
    names = list(SEGMENT_MOTIONS)
    poses = [torch.eye(4, dtype=torch.float64)]
    for a, b in itertools.pairwise(bounds):
        name = names[int(rng.integers(len(names)))]
        lo, hi = SEGMENT_MOTIONS[name]
        seg = make_trajectory(name, num_frames=b - a + 1, speed=float(rng.uniform(lo, hi)))
        base = poses[-1]
        poses.extend(base @ T for T in seg.T_world_cam[1:])
    return torch.stack(poses)


def _segments(rng, layout: SceneLayout, t: np.ndarray):
    F = len(t)
    rel = random_trajectory(rng, F, 2).numpy()  # [F, 4, 4], first = I, OpenCV world
    yaw0 = rng.uniform(0, 2 * np.pi)
    # level start: the motions' pans and orbits turn about the first camera's Y axis, so a
    # pitched start would roll the camera
    R0 = pose_from_yaw_pitch(np.zeros((1, 3)), np.array([yaw0]), np.zeros(1))[0]
    T = R0[None] @ rel  # rotated, still starting at the origin
    off = _place(rng, layout, T[:, :2, 3])
    z0 = rng.uniform(*layout.z_range)
    T[:, :3, 3] += np.array([off[0], off[1], z0])[None]
    return T, {"start": [float(off[0]), float(off[1]), float(z0)],
               "yaw_deg": math.degrees(yaw0)}


_FAMILY_FNS = {"loop": _loop, "out_and_back": _out_and_back, "orbit": _orbit,
               "turn_away_back": _turn_away_back}


def _return_error(rng, layout: SceneLayout, t: np.ndarray):
    """Small end offsets ramped in over the whole clip: ``(dxyz [F, 3], dyaw [F], dpitch [F])``."""
    w = _smooth(t)
    r = rng.uniform(0.0, 0.15) * layout.scale
    ang = rng.uniform(0, 2 * np.pi)
    dz = rng.uniform(-0.05, 0.05)
    dxyz = np.outer(w, [r * math.cos(ang), r * math.sin(ang), dz])
    dyaw = math.radians(rng.uniform(-6.0, 6.0)) * w
    dpitch = math.radians(rng.uniform(-3.0, 3.0)) * w
    return dxyz, dyaw, dpitch


def sample_camera_path(family: str, layout: SceneLayout, num_frames: int,
                       rng: np.random.Generator, max_tries: int = 100) -> CameraPath:
    """Draw a path of ``family`` that fits ``layout`` (see the module docstring).

    Args:
        family: one of :data:`PATH_FAMILIES`.
        layout: the scene's free space.
        num_frames: ``F >= 2`` poses.
        rng: source of all randomness (the path is a pure function of its state).
        max_tries: parameter draws before giving up.
    Returns:
        :class:`CameraPath` with ``T_world_cam`` ``[F, 4, 4]`` float64 in the sim world.
    Raises:
        MirageInputError: unknown family (lists the valid ones) or ``num_frames < 2``.
        PathPlanningError: no draw fitted the layout in ``max_tries`` tries.
    """
    if family not in PATH_FAMILIES:
        raise MirageInputError(
            f"unknown path family {family!r}; valid families: {', '.join(PATH_FAMILIES)}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 2:
        raise MirageInputError(f"num_frames must be an integer >= 2, got {num_frames!r}")
    t = np.linspace(0.0, 1.0, num_frames)
    last = "no draw"
    for _ in range(max_tries):
        try:
            if family == "segments":
                T, params = _segments(rng, layout, t)
                if not layout.fits(T[:, :3, 3]):
                    last = "a camera centre left the allowed heights"
                    continue
                return CameraPath(family, T, params)
            dxyz, dyaw, dpitch = _return_error(rng, layout, t)
            xy, yaw, pitch, params = _FAMILY_FNS[family](rng, layout, t, dxyz[:, :2])
            z = np.clip(_heights(rng, layout, t) + dxyz[:, 2], *layout.z_range)
            centres = np.column_stack([xy, z])
            yaw = yaw + dyaw
            pitch = np.clip(pitch + dpitch, math.radians(-40), math.radians(30))
        except PathPlanningError as e:
            last = str(e)
            continue
        if not layout.fits(centres):  # placement already checked; this is the final guard
            last = "a camera centre came too close to a wall or object"
            continue
        params = {k: (float(v) if isinstance(v, (float, np.floating)) else v)
                  for k, v in params.items()}
        return CameraPath(family, pose_from_yaw_pitch(centres, yaw, pitch), params)
    raise PathPlanningError(
        f"no {family!r} path fits this scene in {max_tries} tries (last reason: {last}); "
        f"bounds {layout.bounds_xy}, {len(layout.obstacles)} obstacles, clearance "
        f"{layout.clearance} m")

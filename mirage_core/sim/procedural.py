"""Procedurally varied scenes: a :class:`SceneSpec` is a pure function of ``(preset, seed,
n_dynamic)`` (numpy only; :class:`~mirage_core.sim.pybullet_scene.PyBulletScene` builds it).

Sim world: **Z up**, metres, floor at ``z = 0``, scene centred on the origin.

``room``: a closed box room of random size (5-9 m x 4.5-7.5 m x 2.6-3.4 m) whose floor,
ceiling and walls carry random procedural textures (:mod:`mirage_core.sim.textures`; all walls
share one texture or each has its own), with posters and a door on the walls, ceiling lamps,
and 4-11 textured objects: boxes, cylinders, spheres (some on plinths), tables, stacked boxes
and tall cabinets, mostly along the walls so the middle stays open for the camera.

``outdoor``: a large textured ground (grass, paving, tiles) under a random sky colour with
buildings (window, brick or plain facades), trees, pillars, crates and spheres; a ring of
distant buildings fills the horizon. Camera paths use the central area only
(:attr:`SceneLayout.bounds_xy`).

Moving objects (``n_dynamic``, drawn after the static scene from their own random stream, so
the static room does not depend on ``n_dynamic`` and mover ``k`` is the same whatever
``n_dynamic > k``): textured spheres, boxes or cylinders that circle, slide back and forth or
bounce along a line, in free floor space away from the static objects. A mover that finds no
free space is left out, so a crowded room may get fewer than asked.

:attr:`SceneSpec.layout` lists the free space for camera paths: the walls, every static
object's footprint disc and the discs swept by the moving objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mirage_core.errors import MirageInputError
from mirage_core.sim.camera_paths import SceneLayout
from mirage_core.sim.textures import TextureSpec, hsv_to_rgb, random_colour

__all__ = ["BodySpec", "MoverSpec", "SceneSpec", "body_mesh", "make_scene_spec"]

SHAPES = ("box", "sphere", "cylinder")
MOTIONS = ("circle", "line", "bounce")


@dataclass(frozen=True)
class BodySpec:
    """One static or moving rigid body.

    Attributes:
        name: label in :attr:`PyBulletScene.body_names` (e.g. ``"wall_+x"``, ``"box3"``).
        shape: ``"box"`` (``size`` = half extents ``(hx, hy, hz)``), ``"sphere"`` (``(r,)``)
            or ``"cylinder"`` (``(r, half_height)``, axis along world Z).
        size: see ``shape``; metres.
        pos: centre ``(x, y, z)`` in metres (movers: replaced by the motion).
        yaw: rotation about world Z, radians.
        texture: its texture, or ``None`` (flat colour ``rgb``).
        uv_period: metres of surface per texture repeat.
        rgb: colour multiplied with the texture, ``[0, 1]``.
    """

    name: str
    shape: str
    size: tuple[float, ...]
    pos: tuple[float, float, float]
    yaw: float = 0.0
    texture: TextureSpec | None = None
    uv_period: float = 1.0
    rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def footprint(self) -> float:
        """Radius (m) of a disc about ``pos`` that covers the body seen from above."""
        if self.shape == "box":
            return float(math.hypot(self.size[0], self.size[1]))
        return float(self.size[0])


@dataclass(frozen=True)
class MoverSpec:
    """A body moved kinematically with time (no physics).

    Attributes:
        body: the body (``body.pos`` is unused).
        motion: ``"circle"``, ``"line"`` (back and forth) or ``"bounce"`` (back and forth
            while hopping).
        centre: ``(x, y, z)`` of the motion; ``z`` is the body's resting height.
        amplitude: circle radius or half length of the line (m).
        heading: direction of the line in the XY plane (radians).
        omega: angular rate (rad/s) of the circle or of the sinusoid along the line.
        phase: radians at ``t = 0``.
        hop: bounce height (m); 0 for the other motions.
        spin: yaw rate of the body about Z (rad/s).
    """

    body: BodySpec
    motion: str
    centre: tuple[float, float, float]
    amplitude: float
    heading: float = 0.0
    omega: float = 1.0
    phase: float = 0.0
    hop: float = 0.0
    spin: float = 0.0

    def position(self, time: float) -> np.ndarray:
        """Centre ``[3]`` (m) of the body at ``time`` (s)."""
        a = self.omega * time + self.phase
        c = np.asarray(self.centre, dtype=np.float64)
        if self.motion == "circle":
            return c + self.amplitude * np.array([math.cos(a), math.sin(a), 0.0])
        d = np.array([math.cos(self.heading), math.sin(self.heading), 0.0])
        p = c + self.amplitude * math.sin(a) * d
        if self.motion == "bounce":
            p[2] += self.hop * abs(math.sin(2.0 * a))
        return p

    def yaw(self, time: float) -> float:
        """Yaw (radians) of the body at ``time``."""
        return self.body.yaw + self.spin * time

    def sweep(self) -> np.ndarray:
        """``[K, 3]`` footprint discs ``(x, y, r)`` covering every place the body visits."""
        r = self.body.footprint
        if self.motion == "circle":
            n = max(8, math.ceil(2 * math.pi * self.amplitude / max(r * 0.5, 1e-3)))
            a = np.linspace(0, 2 * math.pi, n, endpoint=False)
            xy = np.asarray(self.centre[:2])[None] + self.amplitude * np.stack(
                [np.cos(a), np.sin(a)], axis=-1)
        else:
            n = max(3, math.ceil(2 * self.amplitude / max(r * 0.5, 1e-3)) + 1)
            s = np.linspace(-self.amplitude, self.amplitude, n)
            d = np.array([math.cos(self.heading), math.sin(self.heading)])
            xy = np.asarray(self.centre[:2])[None] + s[:, None] * d[None]
        return np.column_stack([xy, np.full(len(xy), r)])


@dataclass(frozen=True)
class SceneSpec:
    """Everything needed to build a scene; a pure function of ``(preset, seed, n_dynamic)``.

    Attributes:
        preset: ``"room"`` or ``"outdoor"``.
        seed: scene seed.
        extent: room ``(sx, sy, sz)`` (m); outdoors the ground's ``(sx, sy, 0)``.
        bodies: static bodies.
        movers: moving bodies.
        layout: free space for camera paths.
        sky_rgb: colour of pixels with no geometry, uint8 RGB.
        light_direction: direction towards the light (PyBullet ``lightDirection``).
        light_ambient, light_diffuse: TinyRenderer lighting coefficients.
    """

    preset: str
    seed: int
    extent: tuple[float, float, float]
    bodies: tuple[BodySpec, ...]
    movers: tuple[MoverSpec, ...]
    layout: SceneLayout
    sky_rgb: tuple[int, int, int]
    light_direction: tuple[float, float, float]
    light_ambient: float
    light_diffuse: float


# --------------------------------------------------------------------------- meshes


def body_mesh(body: BodySpec, segments: int = 16):
    """Triangle mesh of ``body`` in its own frame (centred, unrotated).

    Returns:
        ``(vertices [V, 3], indices [3 T], uvs [V, 2], normals [V, 3])`` as Python lists for
        ``p.createVisualShape(p.GEOM_MESH, ...)``; UVs are metres / ``body.uv_period`` so the
        texture keeps its size on every face (it tiles). Triangles wind counter-clockwise seen
        from outside.
    """
    per = float(body.uv_period)
    V, N, UV, idx = [], [], [], []

    def quad(p0, du, dv, normal, su, sv):
        """Face with corner ``p0`` spanned by ``du``, ``dv`` (``du x dv`` along ``normal``)."""
        base = len(V)
        for a, b in ((0, 0), (1, 0), (1, 1), (0, 1)):
            V.append([p0[k] + a * du[k] + b * dv[k] for k in range(3)])
            N.append(list(normal))
            UV.append([a * su / per, b * sv / per])
        idx.extend([base, base + 1, base + 2, base, base + 2, base + 3])

    if body.shape == "box":
        hx, hy, hz = body.size
        X, Y, Z = 2 * hx, 2 * hy, 2 * hz
        quad((hx, -hy, -hz), (0, Y, 0), (0, 0, Z), (1, 0, 0), Y, Z)
        quad((-hx, hy, -hz), (0, -Y, 0), (0, 0, Z), (-1, 0, 0), Y, Z)
        quad((hx, hy, -hz), (-X, 0, 0), (0, 0, Z), (0, 1, 0), X, Z)
        quad((-hx, -hy, -hz), (X, 0, 0), (0, 0, Z), (0, -1, 0), X, Z)
        quad((-hx, -hy, hz), (X, 0, 0), (0, Y, 0), (0, 0, 1), X, Y)
        quad((-hx, hy, -hz), (X, 0, 0), (0, -Y, 0), (0, 0, -1), X, Y)
    elif body.shape == "sphere":
        r = float(body.size[0])
        n_lat, n_lon = max(4, segments // 2), segments
        for i in range(n_lat + 1):
            th = math.pi * i / n_lat  # from the north pole
            for j in range(n_lon + 1):
                ph = 2 * math.pi * j / n_lon
                n = (math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph), math.cos(th))
                V.append([r * n[0], r * n[1], r * n[2]])
                N.append(list(n))
                UV.append([ph * r / per, (math.pi - th) * r / per])
        for i in range(n_lat):
            for j in range(n_lon):
                a, b = i * (n_lon + 1) + j, (i + 1) * (n_lon + 1) + j
                idx.extend([a, b, b + 1, a, b + 1, a + 1])
    elif body.shape == "cylinder":
        r, h = float(body.size[0]), float(body.size[1])
        base = len(V)
        for j in range(segments + 1):
            ph = 2 * math.pi * j / segments
            c, s = math.cos(ph), math.sin(ph)
            for z in (-h, h):
                V.append([r * c, r * s, z])
                N.append([c, s, 0.0])
                UV.append([ph * r / per, (z + h) / per])
        for j in range(segments):
            a = base + 2 * j
            idx.extend([a, a + 2, a + 3, a, a + 3, a + 1])
        for z, nz in ((h, 1.0), (-h, -1.0)):
            centre = len(V)
            V.append([0.0, 0.0, z])
            N.append([0.0, 0.0, nz])
            UV.append([0.0, 0.0])
            for j in range(segments + 1):
                ph = 2 * math.pi * j / segments
                V.append([r * math.cos(ph), r * math.sin(ph), z])
                N.append([0.0, 0.0, nz])
                UV.append([r * math.cos(ph) / per, r * math.sin(ph) / per])
            for j in range(segments):
                a, b = centre + 1 + j, centre + 2 + j
                idx.extend([centre, a, b] if nz > 0 else [centre, b, a])
    else:
        raise MirageInputError(f"unknown shape {body.shape!r}; valid shapes: {SHAPES}")
    return V, idx, UV, N


# --------------------------------------------------------------------------- helpers

_WALL_KINDS = ("plain", "noise", "stripes", "bricks", "tiles", "dots", "checker", "wood")
_WALL_P = (0.15, 0.2, 0.15, 0.15, 0.1, 0.1, 0.05, 0.1)
_FLOOR_KINDS = ("checker", "tiles", "wood", "noise", "stripes", "bricks", "plain")
_FLOOR_P = (0.2, 0.2, 0.2, 0.15, 0.1, 0.1, 0.05)
_OBJECT_KINDS = ("plain", "noise", "checker", "stripes", "bricks", "tiles", "dots", "wood")


def _tex(rng: np.random.Generator, kinds, p=None, light: bool = False,
         contrast: bool = True, size: int = 64) -> TextureSpec:
    """A random ``size``-pixel texture of one of ``kinds`` with a random pair of colours."""
    kind = str(rng.choice(kinds, p=p))
    v = (0.65, 0.95) if light else (0.3, 0.95)
    a = random_colour(rng, v_range=v)
    if contrast:
        b = random_colour(rng, v_range=v)
    else:  # a darker or lighter shade of the same hue
        b = tuple(float(np.clip(c * rng.uniform(0.55, 0.85), 0, 1)) for c in a)
    return TextureSpec(kind, a, b, seed=int(rng.integers(2**31)), size=size)


class _Placer:
    """Non-overlapping footprint discs inside a rectangle."""

    def __init__(self, bounds, gap: float):
        self.bounds, self.gap = bounds, gap
        self.discs: list[tuple[float, float, float]] = []

    def free(self, x: float, y: float, r: float, gap: float | None = None) -> bool:
        xmin, xmax, ymin, ymax = self.bounds
        g = self.gap if gap is None else gap
        if not (xmin + r <= x <= xmax - r and ymin + r <= y <= ymax - r):
            return False
        return all(math.hypot(x - cx, y - cy) >= r + cr + g for cx, cy, cr in self.discs)

    def spot(self, rng, r: float, near_wall: bool, tries: int = 60):
        xmin, xmax, ymin, ymax = self.bounds
        for _ in range(tries):
            if near_wall:
                side = int(rng.integers(4))
                off = r + rng.uniform(0.02, 0.5)
                if side < 2:
                    x = xmin + off if side == 0 else xmax - off
                    y = rng.uniform(ymin + r, ymax - r)
                else:
                    y = ymin + off if side == 2 else ymax - off
                    x = rng.uniform(xmin + r, xmax - r)
            else:
                x, y = rng.uniform(xmin + r, xmax - r), rng.uniform(ymin + r, ymax - r)
            if self.free(x, y, r):
                self.discs.append((x, y, r))
                return x, y
        return None


def _object(rng, k: int, placer: _Placer, scale: float, near_wall_p: float) -> list[BodySpec]:
    """One random object (possibly several bodies) placed by ``placer``; [] if no room."""
    kind = str(rng.choice(["box", "cylinder", "sphere", "table", "stack", "cabinet"],
                          p=[0.28, 0.2, 0.16, 0.14, 0.1, 0.12]))
    tex = _tex(rng, _OBJECT_KINDS)
    per = rng.uniform(0.2, 0.8) * scale
    yaw = float(rng.uniform(0, np.pi))
    near = rng.random() < near_wall_p
    s = scale
    if kind in ("box", "cabinet", "stack"):
        lo, hi = ([0.12, 0.12, 0.1], [0.5, 0.5, 0.6]) if kind != "cabinet" else \
            ([0.25, 0.15, 0.6], [0.6, 0.3, 1.1])
        he = rng.uniform(lo, hi) * s
        spot = placer.spot(rng, float(math.hypot(he[0], he[1])), near)
        if spot is None:
            return []
        out = [BodySpec(f"{kind}{k}", "box", tuple(he), (*spot, he[2]), yaw, tex, per)]
        if kind == "stack":
            he2 = he * rng.uniform([0.4, 0.4, 0.5], [0.9, 0.9, 1.2])
            out.append(BodySpec(f"{kind}{k}", "box", tuple(he2), (*spot, 2 * he[2] + he2[2]),
                                yaw + float(rng.uniform(-0.6, 0.6)), _tex(rng, _OBJECT_KINDS),
                                per))
        return out
    if kind == "cylinder":
        r, h = rng.uniform(0.08, 0.35) * s, rng.uniform(0.2, 1.0) * s
        spot = placer.spot(rng, r, near)
        return [] if spot is None else [BodySpec(f"cylinder{k}", "cylinder", (r, h),
                                                 (*spot, h), 0.0, tex, per)]
    if kind == "sphere":
        r = rng.uniform(0.12, 0.45) * s
        spot = placer.spot(rng, r, near)
        if spot is None:
            return []
        if rng.random() < 0.4:  # on a plinth
            ph = rng.uniform(0.2, 0.5) * s
            plinth = BodySpec(f"plinth{k}", "box", (r * 0.8, r * 0.8, ph), (*spot, ph), yaw,
                              _tex(rng, _OBJECT_KINDS, contrast=False), per)
            return [plinth, BodySpec(f"sphere{k}", "sphere", (r,), (*spot, 2 * ph + r), 0.0,
                                     tex, per)]
        return [BodySpec(f"sphere{k}", "sphere", (r,), (*spot, r), 0.0, tex, per)]
    # table: top + 4 legs
    hx, hy = rng.uniform(0.35, 0.7) * s, rng.uniform(0.3, 0.5) * s
    h = rng.uniform(0.5, 0.85) * s
    spot = placer.spot(rng, float(math.hypot(hx, hy)), near)
    if spot is None:
        return []
    x, y = spot
    c, sn = math.cos(yaw), math.sin(yaw)
    out = [BodySpec(f"table{k}", "box", (hx, hy, 0.03 * s), (x, y, h - 0.03 * s), yaw, tex, per)]
    leg_tex = _tex(rng, ("plain", "wood", "noise"), contrast=False)
    for dx in (-1, 1):
        for dy in (-1, 1):
            lx, ly = dx * (hx - 0.05 * s), dy * (hy - 0.05 * s)
            q = (x + c * lx - sn * ly, y + sn * lx + c * ly, (h - 0.06 * s) / 2)
            out.append(BodySpec(f"table{k}", "box", (0.03 * s, 0.03 * s, (h - 0.06 * s) / 2),
                                q, yaw, leg_tex, per))
    return out


def _movers(rng, n: int, placer: _Placer, scale: float) -> list[MoverSpec]:
    out: list[MoverSpec] = []
    for k in range(n):
        shape = str(rng.choice(SHAPES, p=[0.5, 0.25, 0.25]))
        r = rng.uniform(0.15, 0.35) * scale
        if shape == "box":  # z: resting height of the centre
            size = (r, r * rng.uniform(0.6, 1.0), r * rng.uniform(0.6, 1.0))
            z = size[2]
        elif shape == "cylinder":
            size = (r * 0.8, r * rng.uniform(0.8, 1.6))
            z = size[1]
        else:
            size, z = (r,), r
        body = BodySpec(f"mover{k}", shape, tuple(float(v) for v in size), (0.0, 0.0, 0.0),
                        float(rng.uniform(0, np.pi)), _tex(rng, _OBJECT_KINDS),
                        float(rng.uniform(0.15, 0.5) * scale))
        motion = str(rng.choice(MOTIONS))
        amp = float(rng.uniform(0.4, 1.3) * scale)
        omega = float(rng.uniform(0.6, 1.5) * (1 if rng.random() < 0.5 else -1))
        spin = float(rng.uniform(-1.0, 1.0)) if shape != "sphere" else 0.0
        hop = float(rng.uniform(0.2, 0.6) * scale) if motion == "bounce" else 0.0
        heading, phase = float(rng.uniform(0, np.pi)), float(rng.uniform(0, 2 * np.pi))
        for _ in range(80):
            c = (float(rng.uniform(placer.bounds[0], placer.bounds[1])),
                 float(rng.uniform(placer.bounds[2], placer.bounds[3])), float(z))
            m = MoverSpec(body, motion, c, amp, heading, omega, phase, hop, spin)
            sw = m.sweep()
            if all(placer.free(x, y, rr, gap=0.05 * scale) for x, y, rr in sw):
                placer.discs.extend(map(tuple, sw))
                out.append(m)
                break
    return out


def _light(rng) -> tuple[tuple[float, float, float], float, float]:
    el, az = math.radians(rng.uniform(30, 80)), rng.uniform(0, 2 * math.pi)
    d = (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))
    return d, float(rng.uniform(0.45, 0.7)), float(rng.uniform(0.3, 0.55))


# --------------------------------------------------------------------------- presets


def _room(seed: int, n_dynamic: int) -> SceneSpec:
    rng = np.random.default_rng([seed, 1])
    sx, sy, sz = rng.uniform(5.0, 9.0), rng.uniform(4.5, 7.5), rng.uniform(2.6, 3.4)
    t = 0.05
    bodies: list[BodySpec] = []
    floor = _tex(rng, _FLOOR_KINDS, _FLOOR_P, size=128)
    bodies.append(BodySpec("floor", "box", (sx / 2 + 2 * t, sy / 2 + 2 * t, t), (0, 0, -t),
                           texture=floor, uv_period=rng.uniform(0.6, 2.5)))
    ceil = _tex(rng, ("plain", "noise", "tiles"), light=True, contrast=False, size=128)
    bodies.append(BodySpec("ceiling", "box", (sx / 2 + 2 * t, sy / 2 + 2 * t, t), (0, 0, sz + t),
                           texture=ceil, uv_period=rng.uniform(0.8, 2.0)))
    shared = rng.random() < 0.5
    wall_tex = _tex(rng, _WALL_KINDS, _WALL_P, size=128)
    wall_per = rng.uniform(0.5, 2.5)
    walls = [("wall_+x", (sx / 2 + t, 0, sz / 2), (t, sy / 2 + 2 * t, sz / 2)),
             ("wall_-x", (-sx / 2 - t, 0, sz / 2), (t, sy / 2 + 2 * t, sz / 2)),
             ("wall_+y", (0, sy / 2 + t, sz / 2), (sx / 2 + 2 * t, t, sz / 2)),
             ("wall_-y", (0, -sy / 2 - t, sz / 2), (sx / 2 + 2 * t, t, sz / 2))]
    for name, c, he in walls:
        tex, per = (wall_tex, wall_per) if shared else \
            (_tex(rng, _WALL_KINDS, _WALL_P, size=128), rng.uniform(0.5, 2.5))
        bodies.append(BodySpec(name, "box", he, c, texture=tex, uv_period=per))
    # wall decorations: a door and posters (thin textured boxes, not overlapping on a wall)
    used: dict[int, list[tuple[float, float, float, float]]] = {0: [], 1: [], 2: [], 3: []}
    n_deco = int(rng.integers(3, 11))
    for k in range(n_deco + 1):
        door = k == 0
        if door and rng.random() < 0.5:
            continue
        wall = int(rng.integers(4))
        length = sy if wall < 2 else sx
        w, h = (0.45, 1.0) if door else (rng.uniform(0.15, 0.7), rng.uniform(0.15, 0.55))
        zc = h if door else rng.uniform(0.4 + h, sz - 0.2 - h)
        for _ in range(20):
            u = rng.uniform(-length / 2 + w + 0.1, length / 2 - w - 0.1)
            if all(abs(u - u2) > w + w2 + 0.05 or abs(zc - z2) > h + h2 + 0.05
                   for u2, z2, w2, h2 in used[wall]):
                break
        else:
            continue
        used[wall].append((u, zc, w, h))
        d = 0.015
        sign = 1 if wall in (0, 2) else -1
        if wall < 2:
            pos, he = (sign * (sx / 2 - d), u, zc), (d, w, h)
        else:
            pos, he = (u, sign * (sy / 2 - d), zc), (w, d, h)
        tex = _tex(rng, ("wood", "plain", "noise")) if door else _tex(rng, _OBJECT_KINDS)
        bodies.append(BodySpec("door" if door else "poster", "box", he, pos, texture=tex,
                               uv_period=rng.uniform(0.3, 1.0) * max(w, h) * 2))
    for _k in range(int(rng.integers(0, 7))):
        q = (rng.uniform(-sx / 2 + 0.5, sx / 2 - 0.5), rng.uniform(-sy / 2 + 0.5, sy / 2 - 0.5))
        lamp = TextureSpec("plain", hsv_to_rgb(rng.uniform(0.08, 0.17), rng.uniform(0, 0.4), 1.0),
                           (1.0, 1.0, 1.0), seed=int(rng.integers(2**31)), size=16)
        bodies.append(BodySpec("lamp", "box", (rng.uniform(0.15, 0.4), rng.uniform(0.1, 0.3),
                                               0.01), (*q, sz - 0.01), texture=lamp))
    # objects, mostly along the walls; stop when a fifth of the floor is covered
    placer = _Placer((-sx / 2, sx / 2, -sy / 2, sy / 2), gap=0.1)
    area = 0.0
    for k in range(int(rng.integers(4, 12))):
        objs = _object(rng, k, placer, 1.0, near_wall_p=0.65)
        if objs:
            area += math.pi * placer.discs[-1][2] ** 2
        bodies.extend(objs)
        if area > 0.2 * sx * sy:
            break
    static_discs = list(placer.discs)
    sky = (150, 195, 235)
    light = _light(rng)
    movers = _movers(np.random.default_rng([seed, 2]), n_dynamic, placer, 1.0)
    layout = SceneLayout(
        bounds_xy=(-sx / 2, sx / 2, -sy / 2, sy / 2),
        z_range=(0.9, float(min(1.8, sz - 0.5))),
        obstacles=np.array(static_discs + [d for m in movers for d in m.sweep()]).reshape(-1, 3),
        targets=_targets(bodies),
        clearance=0.4, scale=1.0)
    return SceneSpec("room", seed, (float(sx), float(sy), float(sz)), tuple(bodies),
                     tuple(movers), layout, sky, *light)


_SKIP_TARGETS = ("floor", "ground", "ceiling", "wall", "door", "poster", "lamp", "distant",
                 "plinth")


def _targets(bodies) -> np.ndarray:
    """Object centres ``[M, 3]`` (one per named object: its first body) for orbits."""
    seen, out = set(), []
    for b in bodies:
        if b.name.startswith(_SKIP_TARGETS) or b.name in seen:
            continue
        seen.add(b.name)
        out.append(b.pos)
    return np.asarray(out, dtype=np.float64).reshape(-1, 3)


def _outdoor(seed: int, n_dynamic: int) -> SceneSpec:
    rng = np.random.default_rng([seed, 3])
    s = 3.0  # size of things relative to a room
    half = rng.uniform(14.0, 20.0)  # camera paths stay within +-half
    ground = str(rng.choice(["grass", "paving", "tiles", "sand"]))
    if ground == "grass":
        gtex = TextureSpec("noise", hsv_to_rgb(rng.uniform(0.2, 0.33), 0.6, 0.55),
                           hsv_to_rgb(rng.uniform(0.12, 0.3), 0.7, 0.35), int(rng.integers(2**31)))
    elif ground == "sand":
        gtex = TextureSpec("noise", hsv_to_rgb(rng.uniform(0.08, 0.13), 0.35, 0.8),
                           hsv_to_rgb(rng.uniform(0.05, 0.12), 0.45, 0.6), int(rng.integers(2**31)))
    else:
        gtex = _tex(rng, ("tiles", "bricks", "checker") if ground == "tiles" else ("tiles",),
                    contrast=ground == "tiles", size=128)
    bodies = [BodySpec("ground", "box", (80.0, 80.0, 0.05), (0, 0, -0.05), texture=gtex,
                       uv_period=rng.uniform(2.0, 6.0))]
    placer = _Placer((-half - 10, half + 10, -half - 10, half + 10), gap=0.5)
    k = 0
    for _ in range(int(rng.integers(6, 15))):  # buildings
        he = rng.uniform([1.5, 1.5, 2.0], [4.0, 4.0, 8.0])
        spot = placer.spot(rng, float(math.hypot(he[0], he[1])), near_wall=rng.random() < 0.5)
        if spot:
            tex = _tex(rng, ("windows", "bricks", "plain", "noise", "stripes"),
                       p=(0.45, 0.2, 0.1, 0.15, 0.1), size=128)
            bodies.append(BodySpec(f"building{k}", "box", tuple(he), (*spot, he[2]),
                                   float(rng.uniform(0, np.pi)), tex, rng.uniform(2.0, 6.0)))
        k += 1
    for _ in range(int(rng.integers(4, 15))):  # trees
        spot = placer.spot(rng, 1.2, near_wall=False)
        if spot:
            trunk = rng.uniform(1.0, 2.0)
            bark = TextureSpec("wood", hsv_to_rgb(0.08, 0.5, rng.uniform(0.3, 0.5)),
                               hsv_to_rgb(0.07, 0.6, 0.2), int(rng.integers(2**31)), 64)
            leaves = TextureSpec("noise", hsv_to_rgb(rng.uniform(0.2, 0.38), 0.7, 0.55),
                                 hsv_to_rgb(rng.uniform(0.2, 0.38), 0.8, 0.3),
                                 int(rng.integers(2**31)), 64)
            crown = rng.uniform(0.8, 1.4)
            bodies.append(BodySpec(f"tree{k}", "cylinder", (0.2, trunk), (*spot, trunk), 0.0,
                                   bark, 0.8))
            bodies.append(BodySpec(f"tree{k}", "sphere", (crown,), (*spot, 2 * trunk + crown * 0.7),
                                   0.0, leaves, 1.5))
        k += 1
    for _ in range(int(rng.integers(3, 10))):  # pillars, crates, spheres
        objs = _object(rng, k, placer, s * 0.6, near_wall_p=0.0)
        bodies.extend(objs)
        k += 1
    static_discs = list(placer.discs)
    for j in range(int(rng.integers(10, 18))):  # distant ring (horizon)
        a = 2 * math.pi * (j + rng.uniform(-0.3, 0.3)) / 14
        rad = rng.uniform(42.0, 60.0)
        he = rng.uniform([2.0, 2.0, 3.0], [6.0, 6.0, 14.0])
        bodies.append(BodySpec("distant", "box", tuple(he),
                               (rad * math.cos(a), rad * math.sin(a), he[2]),
                               float(rng.uniform(0, np.pi)),
                               _tex(rng, ("windows", "plain", "noise")), rng.uniform(3.0, 8.0)))
    sky = tuple(int(v) for v in np.clip(np.array(hsv_to_rgb(
        rng.uniform(0.52, 0.62), rng.uniform(0.1, 0.45), rng.uniform(0.8, 0.97))) * 255, 0, 255))
    light = _light(rng)
    inner = _Placer((-half, half, -half, half), gap=0.5)
    inner.discs = list(placer.discs)
    movers = _movers(np.random.default_rng([seed, 4]), n_dynamic, inner, s)
    layout = SceneLayout(
        bounds_xy=(-half, half, -half, half), z_range=(1.2, 2.6),
        obstacles=np.array(static_discs + [d for m in movers for d in m.sweep()]).reshape(-1, 3),
        targets=np.array([p for p in _targets(bodies) if max(abs(p[0]), abs(p[1])) < half])
        .reshape(-1, 3),
        clearance=1.0, scale=s)
    return SceneSpec("outdoor", seed, (160.0, 160.0, 0.0), tuple(bodies), tuple(movers), layout,
                     sky, *light)  # type: ignore[arg-type]


def make_scene_spec(preset: str, seed: int, n_dynamic: int = 0) -> SceneSpec:
    """The procedural scene ``preset`` number ``seed`` with up to ``n_dynamic`` moving objects.

    Args:
        preset: ``"room"`` or ``"outdoor"``.
        seed: any integer >= 0; the scene is a pure function of ``(preset, seed, n_dynamic)``,
            and the static part of it of ``(preset, seed)`` alone.
        n_dynamic: moving objects wanted (>= 0; fewer if they do not fit).
    Raises:
        MirageInputError: unknown preset, negative seed or ``n_dynamic``.
    """
    if preset not in ("room", "outdoor"):
        raise MirageInputError(f"unknown preset {preset!r}; expected 'room' or 'outdoor'")
    for name, v in (("seed", seed), ("n_dynamic", n_dynamic)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise MirageInputError(f"{name} must be an integer >= 0, got {v!r}")
    return _room(int(seed), int(n_dynamic)) if preset == "room" else \
        _outdoor(int(seed), int(n_dynamic))

"""A simulated RGB-D camera with ground truth, rendered on the CPU by PyBullet.

PyBullet runs in ``p.DIRECT`` mode with its software ``ER_TINY_RENDERER`` (no GL context, no
display). Each :class:`PyBulletScene` owns its own physics client, so several scenes can
coexist in one process.

Conventions (see :mod:`mirage_core.geometry`):

* The sim world is PyBullet's: **Z up**, metres.
* ``T_world_cam`` passed to :meth:`PyBulletScene.render` is an **OpenCV** camera-to-world pose
  (+X right, +Y down, +Z forward). It is converted here to PyBullet's OpenGL view matrix.
* ``K`` is any pinhole intrinsic matrix of the ``height x width`` image with pixel centres at
  ``+1/2`` (``cx = W / 2`` is a centred principal point). The OpenGL projection matrix is
  built from ``K``, so principal-point offsets, ``fx != fy`` and skew are honoured.
* ``depth`` is metric camera z (not ray length); pixels where nothing was hit are ``inf``.
* Clip planes: geometry nearer than ``near`` (default :data:`DEFAULT_NEAR` = 0.05 m) or
  farther than ``far`` (default :data:`DEFAULT_FAR` = 100 m) is clipped and reads as
  background (``inf``, segmentation -1).

PyBullet is an optional dependency (``pip install -e .[demo]``); it is imported lazily, so
``mirage_core`` imports without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mirage_core.errors import ShapeError
from mirage_core.geometry import GL_FROM_CV, check_intrinsics, check_se3

DEFAULT_NEAR = 0.05
DEFAULT_FAR = 100.0
PRESETS = ("room", "outdoor")
# PyBullet's TinyRenderer samples pixel (u, v) (row v from the top) at the continuous image
# point (u, v + 1) of a standard GL projection instead of the pixel centre (u + 1/2, v + 1/2).
# render() shifts the principal point by this much before building the projection so that
# every pixel is sampled at its centre (pinned by the floor-depth test).
TINY_RENDERER_PP_SHIFT = (-0.5, 0.5)
# Colour painted into sky/background pixels (no geometry); constant, so it is view-consistent.
SKY_RGB = (150, 195, 235)
# (lightDirection, ambient, diffuse) of the fixed presets; procedural scenes draw their own
LEGACY_LIGHT = ([0.4, -0.3, 1.0], 0.55, 0.5)


def _import_pybullet():
    try:
        import pybullet
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "mirage_core.sim needs PyBullet, an optional dependency. Install it with "
            "`pip install -e .[demo]` (or `pip install pybullet`)."
        ) from e
    return pybullet


@dataclass
class SimFrame:
    """One rendered RGB-D frame with ground truth.

    Attributes:
        rgb: ``[H, W, 3]`` uint8.
        depth: ``[H, W]`` float32 metric z-depth (camera z); ``inf`` where nothing was hit.
        segmentation: ``[H, W]`` int32 object id (PyBullet body id), -1 for background.
        dynamic_mask: ``[H, W]`` bool, pixels of objects flagged dynamic.
        sky_mask: ``[H, W]`` bool, pixels with no geometry (``depth == inf``).
        T_world_cam: ``[4, 4]`` float64 OpenCV camera-to-world pose (sim world, Z up).
        K: ``[3, 3]`` float64 pixel intrinsics.
        time: scene time in seconds at which the frame was rendered.
    """

    rgb: np.ndarray
    depth: np.ndarray
    segmentation: np.ndarray
    dynamic_mask: np.ndarray
    sky_mask: np.ndarray
    T_world_cam: np.ndarray
    K: np.ndarray
    time: float


def pose_looking_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenCV ``T_world_cam`` ``[4, 4]`` float64 of a camera at ``eye`` looking at ``target``.

    ``up`` is the world direction that appears up in the image (camera ``-Y``); the default
    suits the Z-up sim world. Camera axes: ``z = normalize(target - eye)``,
    ``x = normalize(z x up)`` (right), ``y = z x x`` (down).
    """
    eye_v = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye_v
    if np.linalg.norm(z) < 1e-12:
        raise ValueError("pose_looking_at: eye and target coincide")
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("pose_looking_at: viewing direction is parallel to up")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = eye_v
    return T


def view_matrix_from_pose(T_world_cam: np.ndarray) -> list[float]:
    """PyBullet view matrix (16 floats, column-major) of an OpenCV camera-to-world pose ``[4, 4]``.

    The OpenGL view matrix is world-to-camera of the OpenGL camera (+Y up, +Z back).
    """
    T = check_se3(T_world_cam, "T_world_cam").numpy()
    T_gl = T @ GL_FROM_CV
    view = np.linalg.inv(T_gl)
    return view.flatten(order="F").tolist()


def projection_matrix_from_K(
    K: np.ndarray, height: int, width: int, near: float = DEFAULT_NEAR, far: float = DEFAULT_FAR
) -> list[float]:
    """OpenGL projection matrix (16 floats, column-major) equivalent to pinhole ``K`` ``[3, 3]``.

    Derivation: with OpenCV pixel coords ``x = fx X/Z + s Y/Z + cx`` (pixel centres at +1/2)
    and GL window coords ``x_w = (x_ndc + 1) W / 2``, ``y_w = (1 - y_ndc) H / 2`` measured from
    the top row, and GL camera ``(X, -Y, -Z)``, this gives the matrix below. Depth maps the
    GL camera z in ``[-near, -far]`` to NDC ``[-1, 1]`` as ``glFrustum`` does.
    """
    K = check_intrinsics(K).numpy()
    if not 0 < near < far:
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    fx, s, cx = K[0]
    fy, cy = K[1, 1], K[1, 2]
    W, H = float(width), float(height)
    P = np.zeros((4, 4))
    P[0, 0] = 2.0 * fx / W
    P[0, 1] = -2.0 * s / W
    P[0, 2] = 1.0 - 2.0 * cx / W
    P[1, 1] = 2.0 * fy / H
    P[1, 2] = 2.0 * cy / H - 1.0
    P[2, 2] = -(far + near) / (far - near)
    P[2, 3] = -2.0 * far * near / (far - near)
    P[3, 2] = -1.0
    return P.flatten(order="F").tolist()


def depth_from_buffer(buf: np.ndarray, near: float, far: float) -> np.ndarray:
    """Non-linear OpenGL depth buffer ``[H, W]`` in ``[0, 1]`` -> metric z ``[H, W]`` float32.

    ``z = far * near / (far - (far - near) * d)``; far-plane hits (``d >= 1``) become ``inf``.
    """
    d = np.asarray(buf, dtype=np.float64)
    z = far * near / (far - (far - near) * d)
    z[d >= 1.0 - 1e-7] = np.inf
    return z.astype(np.float32)


def _rgba(rgb, a: float = 1.0) -> list[float]:
    return [float(rgb[0]), float(rgb[1]), float(rgb[2]), a]


class PyBulletScene:
    """A procedural, colourful scene rendered by PyBullet's CPU renderer.

    Presets:
        ``"room"``: a closed 8 m x 6 m x 3 m room centred on the world origin (floor at z = 0):
            checkerboard tile floor, differently coloured walls covered with a mosaic of
            coloured panels, a ceiling with lamp panels, and seeded furniture (boxes, tables,
            cylinders, spheres).
        ``"outdoor"``: a 60 m x 60 m checkerboard ground with seeded buildings, trees and
            pillars, and open sky (``depth = inf`` and ``sky_mask`` above the horizon).

    With ``dynamic=True`` one ball (radius :attr:`ball_radius`) moves on a horizontal circle
    (:attr:`ball_center`, :attr:`ball_orbit_radius`, angular speed :attr:`ball_omega` rad/s);
    its body id is in :attr:`dynamic_ids`.

    With ``procedural=True`` the scene is instead
    :func:`~mirage_core.sim.procedural.make_scene_spec` ``(preset, seed, n_dynamic)``: random
    room size, procedural textures on every surface, random object sets and layouts, random
    lighting and sky colour, and ``n_dynamic`` moving objects (default 1 if ``dynamic`` else
    0); :attr:`spec` holds it. Either way, :attr:`movers` lists the moving objects (their
    body ids are :attr:`dynamic_ids`, in the same order) and :attr:`layout` the free space
    for camera paths (:class:`~mirage_core.sim.camera_paths.SceneLayout`).

    All bodies are static (mass 0); ``render(time=t)`` places the dynamic objects
    kinematically at time ``t``; no physics is stepped. The scene is a pure function of its
    arguments.

    Raises:
        ValueError: unknown preset, or ``n_dynamic`` without ``procedural=True``.
        ImportError: PyBullet is not installed (with the install command).
    """

    def __init__(self, preset: str = "room", seed: int = 0, dynamic: bool = True, *,
                 procedural: bool = False, n_dynamic: int | None = None):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
        if n_dynamic is not None and not procedural:
            raise ValueError("n_dynamic needs procedural=True; the fixed presets have one "
                             "ball (dynamic=True) or none")
        self._p = _import_pybullet()
        self.preset = preset
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._cid = self._p.connect(self._p.DIRECT)
        self.body_names: dict[int, str] = {}
        self.dynamic_ids: list[int] = []
        self.movers: list = []  # MoverSpec per dynamic id
        self._shape_cache: dict[tuple, int] = {}
        self.spec = None
        self.sky_rgb = SKY_RGB
        self.light_direction, self.light_ambient, self.light_diffuse = LEGACY_LIGHT
        if procedural:
            from mirage_core.sim.procedural import make_scene_spec

            n = (1 if dynamic else 0) if n_dynamic is None else n_dynamic
            self.spec = make_scene_spec(preset, seed, n)
            self._build_spec(self.spec)
        else:
            self._footprints: list[tuple[float, float, float]] = []
            if preset == "room":
                self.extent = (8.0, 6.0, 3.0)  # x, y, z size of the room
                self._build_room()
            else:
                self.extent = (60.0, 60.0, 0.0)
                self._build_outdoor()
            if dynamic:
                self._build_dynamic()
            self.layout = self._legacy_layout()
        self.dynamic = bool(self.dynamic_ids)
        self._set_time(0.0)

    # ----------------------------------------------------------------- building

    def _visual(self, kind: str, size, rgb) -> int:
        """Visual shape id of a box (half extents) / sphere (radius) / cylinder (r, length)."""
        p = self._p
        key = (kind, tuple(np.round(np.atleast_1d(size), 5)), tuple(np.round(rgb, 4)))
        if key in self._shape_cache:
            return self._shape_cache[key]
        common = dict(rgbaColor=_rgba(rgb), specularColor=[0, 0, 0], physicsClientId=self._cid)
        if kind == "box":
            vid = p.createVisualShape(p.GEOM_BOX, halfExtents=list(size), **common)
        elif kind == "sphere":
            vid = p.createVisualShape(p.GEOM_SPHERE, radius=float(size), **common)
        elif kind == "cylinder":
            vid = p.createVisualShape(p.GEOM_CYLINDER, radius=size[0], length=size[1], **common)
        else:  # pragma: no cover
            raise ValueError(kind)
        self._shape_cache[key] = vid
        return vid

    def _add(self, name: str, kind: str, size, rgb, pos, yaw: float = 0.0) -> int:
        p = self._p
        orn = p.getQuaternionFromEuler([0.0, 0.0, yaw])
        bid = p.createMultiBody(
            baseMass=0.0,
            baseVisualShapeIndex=self._visual(kind, size, rgb),
            basePosition=list(map(float, pos)),
            baseOrientation=orn,
            physicsClientId=self._cid,
        )
        self.body_names[bid] = name
        return bid

    def _add_batch(self, name: str, half_extents, rgb, positions) -> list[int]:
        """Many equal boxes in one call (fast for tiles)."""
        p = self._p
        ids = p.createMultiBody(
            baseMass=0.0,
            baseVisualShapeIndex=self._visual("box", half_extents, rgb),
            batchPositions=[list(map(float, q)) for q in positions],
            physicsClientId=self._cid,
        )
        ids = list(ids) if isinstance(ids, (list, tuple)) else [ids]
        for bid in ids:
            self.body_names[bid] = name
        return ids

    def _checker_floor(
        self, sx: float, sy: float, tile: float, c0, c1, z: float = 0.0, name: str = "floor"
    ) -> None:
        nx, ny = round(sx / tile), round(sy / tile)
        thick = 0.02
        even, odd = [], []
        for i in range(nx):
            for j in range(ny):
                q = (-sx / 2 + (i + 0.5) * tile, -sy / 2 + (j + 0.5) * tile, z - thick)
                (even if (i + j) % 2 == 0 else odd).append(q)
        half = (tile / 2, tile / 2, thick)
        self._add_batch(name, half, c0, even)
        self._add_batch(name, half, c1, odd)

    def _random_colour(self) -> np.ndarray:
        """A saturated random colour in [0, 1]^3 (HSV with high S, V)."""
        h = self._rng.uniform(0, 1)
        s = self._rng.uniform(0.55, 0.95)
        v = self._rng.uniform(0.6, 1.0)
        i = int(h * 6) % 6
        f = h * 6 - int(h * 6)
        a, b, c = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
        return np.array([(v, c, a), (b, v, a), (a, v, c), (a, b, v), (c, a, v), (v, a, b)][i])

    def _build_room(self) -> None:
        sx, sy, sz = self.extent
        t = 0.05  # wall thickness (half extent)
        self._checker_floor(sx, sy, 0.5, (0.92, 0.9, 0.82), (0.25, 0.3, 0.45))
        # ceiling
        self._add("ceiling", "box", (sx / 2, sy / 2, t), (0.85, 0.85, 0.8), (0, 0, sz + t))
        for i in range(4):
            for j in range(3):
                q = (-sx / 2 + (i + 0.5) * sx / 4, -sy / 2 + (j + 0.5) * sy / 3, sz - 0.01)
                self._add("lamp", "box", (0.35, 0.2, 0.01), (1.0, 0.95, 0.6), q)
        # walls: (centre, half extents, colour, inward normal axis)
        walls = [
            ("wall_+x", (sx / 2 + t, 0, sz / 2), (t, sy / 2 + 2 * t, sz / 2), (0.75, 0.35, 0.3)),
            ("wall_-x", (-sx / 2 - t, 0, sz / 2), (t, sy / 2 + 2 * t, sz / 2), (0.3, 0.6, 0.35)),
            ("wall_+y", (0, sy / 2 + t, sz / 2), (sx / 2 + 2 * t, t, sz / 2), (0.35, 0.45, 0.75)),
            ("wall_-y", (0, -sy / 2 - t, sz / 2), (sx / 2 + 2 * t, t, sz / 2), (0.8, 0.7, 0.3)),
        ]
        for name, c, he, col in walls:
            self._add(name, "box", he, col, c)
        # mosaic panels on the walls (texture-like detail for reprojection checks)
        panel, gap, depth_off = 0.4, 0.1, 0.01
        for axis, sign, length in ((0, 1, sy), (0, -1, sy), (1, 1, sx), (1, -1, sx)):
            n_u = int(length // (panel + gap))
            n_v = int((sz - 0.3) // (panel + gap))
            off_u = -(n_u * (panel + gap)) / 2 + (panel + gap) / 2
            for a in range(n_u):
                for b in range(n_v):
                    if self._rng.uniform() < 0.35:
                        continue
                    u = off_u + a * (panel + gap)
                    v = 0.3 + (panel + gap) / 2 + b * (panel + gap)
                    w = self._rng.uniform(0.6, 1.0) * panel / 2
                    hgt = self._rng.uniform(0.6, 1.0) * panel / 2
                    if axis == 0:
                        pos = (sign * (sx / 2 - depth_off), u, v)
                        he = (depth_off, w, hgt)
                    else:
                        pos = (u, sign * (sy / 2 - depth_off), v)
                        he = (w, depth_off, hgt)
                    self._add("panel", "box", he, self._random_colour(), pos)
        self._place_furniture()

    def _build_spec(self, spec) -> None:
        """Create the bodies of a :class:`~mirage_core.sim.procedural.SceneSpec`."""
        import tempfile

        from PIL import Image

        from mirage_core.sim.procedural import body_mesh
        from mirage_core.sim.textures import make_texture

        p = self._p
        self.extent = spec.extent
        self.layout = spec.layout
        self.sky_rgb = spec.sky_rgb
        self.light_direction = list(spec.light_direction)
        self.light_ambient, self.light_diffuse = spec.light_ambient, spec.light_diffuse
        textures: dict = {}
        with tempfile.TemporaryDirectory(prefix="mirage_tex_") as tmp:

            def texture_id(tex) -> int:  # PyBullet loads textures from files only
                if tex not in textures:
                    path = f"{tmp}/{len(textures)}.bmp"  # uncompressed: fastest to write
                    Image.fromarray(make_texture(tex)).save(path)
                    textures[tex] = p.loadTexture(path, physicsClientId=self._cid)
                return textures[tex]

            def add(body, pos, yaw) -> int:
                V, idx, UV, N = body_mesh(body)
                vid = p.createVisualShape(p.GEOM_MESH, vertices=V, indices=idx, uvs=UV, normals=N,
                                          rgbaColor=_rgba(body.rgb), specularColor=[0, 0, 0],
                                          physicsClientId=self._cid)
                bid = p.createMultiBody(
                    baseMass=0.0, baseVisualShapeIndex=vid, basePosition=list(map(float, pos)),
                    baseOrientation=p.getQuaternionFromEuler([0.0, 0.0, float(yaw)]),
                    physicsClientId=self._cid)
                if body.texture is not None:
                    p.changeVisualShape(bid, -1, textureUniqueId=texture_id(body.texture),
                                        physicsClientId=self._cid)
                self.body_names[bid] = body.name
                return bid

            for body in spec.bodies:
                add(body, body.pos, body.yaw)
            for mover in spec.movers:
                self.dynamic_ids.append(add(mover.body, mover.position(0.0), mover.yaw(0.0)))
                self.movers.append(mover)

    def _legacy_layout(self):
        """Free space of the fixed presets (their furniture and the ball's circle)."""
        from mirage_core.sim.camera_paths import SceneLayout

        discs = list(self._footprints)
        if self.preset == "room":
            sx, sy, _ = self.extent
            bounds, z_range, clearance, scale = (-sx / 2, sx / 2, -sy / 2, sy / 2), \
                (0.9, 1.9), 0.4, 1.0
        else:
            bounds, z_range, clearance, scale = (-20.0, 20.0, -20.0, 20.0), (1.2, 2.6), 1.0, 3.0
        for m in self.movers:
            discs.extend(map(tuple, m.sweep()))
        return SceneLayout(bounds, z_range, np.asarray(discs, dtype=np.float64).reshape(-1, 3),
                           np.asarray([(x, y, 0.5) for x, y, _ in self._footprints]).reshape(-1, 3),
                           clearance, scale)

    def _free_spot(self, placed, radius, lo, hi, keep_clear) -> tuple[float, float] | None:
        for _ in range(200):
            x = self._rng.uniform(lo[0] + radius, hi[0] - radius)
            y = self._rng.uniform(lo[1] + radius, hi[1] - radius)
            if any(np.hypot(x - cx, y - cy) < radius + r + 0.15 for cx, cy, r in placed):
                continue
            if any(np.hypot(x - cx, y - cy) < radius + r for cx, cy, r in keep_clear):
                continue
            placed.append((x, y, radius))
            self._footprints.append((float(x), float(y), float(radius)))
            return x, y
        return None

    def _place_furniture(self) -> None:
        sx, sy, _ = self.extent
        lo, hi = (-sx / 2 + 0.1, -sy / 2 + 0.1), (sx / 2 - 0.1, sy / 2 - 0.1)
        # keep the default camera spot and the ball's orbit clear
        keep = [(-sx / 2 + 1.0, 0.0, 0.9), (0.0, 0.0, 1.55)]
        placed: list[tuple[float, float, float]] = []
        kinds = [
            "box",
            "table",
            "cylinder",
            "sphere",
            "box",
            "table",
            "cylinder",
            "box",
            "sphere",
            "box",
        ]
        for k, kind in enumerate(kinds):
            col = self._random_colour()
            if kind == "box":
                he = self._rng.uniform([0.15, 0.15, 0.2], [0.45, 0.45, 0.7])
                spot = self._free_spot(placed, float(np.hypot(he[0], he[1])), lo, hi, keep)
                if spot:
                    yaw = self._rng.uniform(0, np.pi)
                    self._add(f"box{k}", "box", he, col, (*spot, he[2]), yaw)
            elif kind == "table":
                he = (self._rng.uniform(0.35, 0.6), self._rng.uniform(0.3, 0.45))
                h = self._rng.uniform(0.55, 0.8)
                spot = self._free_spot(placed, float(np.hypot(*he)), lo, hi, keep)
                if spot:
                    x, y = spot
                    self._add(f"table{k}", "box", (he[0], he[1], 0.03), col, (x, y, h - 0.03))
                    leg = col * 0.6
                    for dx in (-1, 1):
                        for dy in (-1, 1):
                            q = (x + dx * (he[0] - 0.05), y + dy * (he[1] - 0.05), (h - 0.06) / 2)
                            self._add(f"table{k}", "box", (0.03, 0.03, (h - 0.06) / 2), leg, q)
            elif kind == "cylinder":
                r, length = self._rng.uniform(0.12, 0.3), self._rng.uniform(0.5, 1.8)
                spot = self._free_spot(placed, r, lo, hi, keep)
                if spot:
                    self._add(f"cylinder{k}", "cylinder", (r, length), col, (*spot, length / 2))
            else:
                r = self._rng.uniform(0.15, 0.35)
                spot = self._free_spot(placed, r, lo, hi, keep)
                if spot:
                    self._add(f"sphere{k}", "sphere", r, col, (*spot, r))

    def _build_outdoor(self) -> None:
        sx, sy, _ = self.extent
        self._checker_floor(sx, sy, 2.5, (0.45, 0.65, 0.35), (0.3, 0.5, 0.25), name="ground")
        lo, hi = (-sx / 2 + 2, -sy / 2 + 2), (sx / 2 - 2, sy / 2 - 2)
        keep = [(-10.0, 0.0, 3.0), (0.0, 0.0, 2.5)]
        placed: list[tuple[float, float, float]] = []
        for k in range(14):
            col = self._random_colour()
            he = self._rng.uniform([1.0, 1.0, 1.5], [3.0, 3.0, 6.0])
            spot = self._free_spot(placed, float(np.hypot(he[0], he[1])), lo, hi, keep)
            if spot:
                self._add(f"building{k}", "box", he, col, (*spot, he[2]), self._rng.uniform(0, 1.5))
        for k in range(12):
            spot = self._free_spot(placed, 1.0, lo, hi, keep)
            if spot:
                trunk = self._rng.uniform(1.0, 2.0)
                self._add(
                    f"tree{k}", "cylinder", (0.15, trunk), (0.45, 0.3, 0.15), (*spot, trunk / 2)
                )
                crown = self._rng.uniform(0.7, 1.2)
                green = (0.1, self._rng.uniform(0.45, 0.75), 0.15)
                self._add(f"tree{k}", "sphere", crown, green, (*spot, trunk + crown * 0.8))
        for k in range(8):
            spot = self._free_spot(placed, 0.4, lo, hi, keep)
            if spot:
                hgt = self._rng.uniform(1.0, 3.0)
                self._add(
                    f"pillar{k}", "cylinder", (0.3, hgt), self._random_colour(), (*spot, hgt / 2)
                )

    def _build_dynamic(self) -> None:
        if self.preset == "room":
            self.ball_radius, self.ball_orbit_radius = 0.25, 1.0
            self.ball_center = np.array([0.0, 0.0, 0.6])
        else:
            self.ball_radius, self.ball_orbit_radius = 0.6, 2.0
            self.ball_center = np.array([0.0, 0.0, 1.2])
        self.ball_omega = 1.0
        bid = self._add("ball", "sphere", self.ball_radius, (1.0, 0.2, 0.6), self.ball_center)
        self.dynamic_ids.append(bid)
        from mirage_core.sim.procedural import BodySpec, MoverSpec

        ball = BodySpec("ball", "sphere", (self.ball_radius,), tuple(self.ball_center))
        self.movers.append(MoverSpec(ball, "circle", tuple(self.ball_center),
                                     self.ball_orbit_radius, omega=self.ball_omega))

    # ----------------------------------------------------------------- API

    def ball_position(self, time: float) -> np.ndarray:
        """World position ``[3]`` of the first moving object (the fixed presets' ball) at
        ``time``; raises ``ValueError`` if the scene has none."""
        if not self.movers:
            raise ValueError("this scene has no moving objects")
        return self.movers[0].position(time)

    def object_positions(self, time: float) -> np.ndarray:
        """World positions ``[N, 3]`` of the moving objects at ``time`` (order of
        :attr:`dynamic_ids`)."""
        return np.asarray([m.position(time) for m in self.movers]).reshape(-1, 3)

    def _set_time(self, time: float) -> None:
        for bid, m in zip(self.dynamic_ids, self.movers, strict=True):
            yaw = m.yaw(time)
            orn = [0, 0, 0, 1] if yaw == 0.0 else self._p.getQuaternionFromEuler([0, 0, yaw])
            self._p.resetBasePositionAndOrientation(
                bid, m.position(time).tolist(), orn, physicsClientId=self._cid)

    def default_start_pose(self) -> np.ndarray:
        """OpenCV ``T_world_cam`` ``[4, 4]`` float64 looking horizontally along +x; image up is
        world +Z. Fixed presets: 1.5 m above the floor near the -x wall (room) or at
        ``(-10, 0)`` (outdoor). Procedural scenes: at 1.5 m over the free floor point farthest
        from walls and objects (:attr:`layout`)."""
        if self.spec is not None:
            xmin, xmax, ymin, ymax = self.layout.bounds_xy
            gx, gy = np.meshgrid(np.linspace(xmin, xmax, 41), np.linspace(ymin, ymax, 41))
            pts = np.column_stack([gx.ravel(), gy.ravel(), np.full(gx.size, 1.5)])
            x, y, _ = pts[int(np.argmax(self.layout.margin(pts)))]
            return pose_looking_at((x, y, 1.5), (x + 1.0, y, 1.5))
        if self.preset == "room":
            eye = (-self.extent[0] / 2 + 1.0, 0.0, 1.5)
        else:
            eye = (-10.0, 0.0, 1.5)
        target = (eye[0] + 1.0, eye[1], eye[2])
        return pose_looking_at(eye, target)

    def render(
        self,
        T_world_cam,
        K,
        height: int,
        width: int,
        time: float = 0.0,
        near: float = DEFAULT_NEAR,
        far: float = DEFAULT_FAR,
    ) -> SimFrame:
        """Render the scene at ``time`` from an OpenCV camera.

        Args:
            T_world_cam: ``[4, 4]`` OpenCV camera-to-world pose in the sim world (Z up); numpy
                or torch.
            K: ``[3, 3]`` pinhole intrinsics of the ``height x width`` image (pixel centres at
                +1/2); numpy or torch.
            height, width: image size in pixels.
            time: scene time in seconds (places dynamic objects).
            near, far: clip planes in metres; geometry outside ``[near, far]`` is background.
        Returns:
            :class:`SimFrame` with ``[height, width]`` images. Background (sky) pixels have
            ``depth = inf``, ``segmentation = -1``, ``sky_mask = True`` and colour
            :attr:`sky_rgb` (:data:`SKY_RGB` for the fixed presets).
        """
        p = self._p
        if int(height) <= 0 or int(width) <= 0:
            raise ShapeError(f"height and width must be positive, got {height}x{width}")
        height, width = int(height), int(width)
        T = check_se3(T_world_cam, "T_world_cam").numpy()
        Kn = check_intrinsics(K).numpy()
        self._set_time(time)
        K_render = Kn.copy()
        K_render[0, 2] += TINY_RENDERER_PP_SHIFT[0]
        K_render[1, 2] += TINY_RENDERER_PP_SHIFT[1]
        _, _, rgba, dbuf, seg = p.getCameraImage(
            width,
            height,
            viewMatrix=view_matrix_from_pose(T),
            projectionMatrix=projection_matrix_from_K(K_render, height, width, near, far),
            renderer=p.ER_TINY_RENDERER,
            shadow=0,
            lightDirection=list(self.light_direction),
            lightAmbientCoeff=self.light_ambient,
            lightDiffuseCoeff=self.light_diffuse,
            lightSpecularCoeff=0.0,
            physicsClientId=self._cid,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[..., :3].copy()
        seg = np.asarray(seg, dtype=np.int32).reshape(height, width)
        depth = depth_from_buffer(np.asarray(dbuf).reshape(height, width), near, far)
        sky = (seg < 0) | ~np.isfinite(depth)
        depth[sky] = np.inf
        seg[sky] = -1
        rgb[sky] = self.sky_rgb
        dyn = np.isin(seg, self.dynamic_ids) if self.dynamic_ids else np.zeros_like(sky)
        return SimFrame(
            rgb=rgb,
            depth=depth,
            segmentation=seg,
            dynamic_mask=dyn,
            sky_mask=sky,
            T_world_cam=T.astype(np.float64),
            K=Kn.astype(np.float64),
            time=float(time),
        )

    def close(self) -> None:
        """Disconnect this scene's PyBullet client (idempotent)."""
        if getattr(self, "_cid", None) is not None:
            try:
                self._p.disconnect(physicsClientId=self._cid)
            except Exception:  # already disconnected
                pass
            self._cid = None

    def __enter__(self) -> PyBulletScene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # best effort
        try:
            self.close()
        except Exception:
            pass

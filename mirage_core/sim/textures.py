"""Procedural, tileable RGB textures made with numpy (no files, no downloads).

A texture is a pure function of its :class:`TextureSpec` (kind, colours, seed): the same spec
always gives the same pixels. Every texture tiles seamlessly (noise is made periodic in the
Fourier domain; grids use whole numbers of cells), so a surface can repeat it with UV
coordinates greater than 1 (:mod:`mirage_core.sim.procedural` sets UVs in metres divided by
the texture's period).

Kinds (:data:`TEXTURE_KINDS`): ``plain`` (colour with faint grain), ``noise`` (two colours
blended by smooth noise: concrete, marble, grass), ``checker``, ``stripes``, ``bricks``,
``tiles`` (grout lines, per-tile shade), ``dots``, ``wood`` (wavy bands), ``windows`` (a grid
of window panes on a facade).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mirage_core.errors import MirageInputError

__all__ = ["TEXTURE_KINDS", "TextureSpec", "hsv_to_rgb", "make_texture", "random_colour"]

TEXTURE_KINDS: tuple[str, ...] = (
    "plain", "noise", "checker", "stripes", "bricks", "tiles", "dots", "wood", "windows",
)


@dataclass(frozen=True)
class TextureSpec:
    """What a texture looks like; :func:`make_texture` turns it into pixels.

    Attributes:
        kind: one of :data:`TEXTURE_KINDS`.
        colour_a: main colour, RGB in ``[0, 1]``.
        colour_b: second colour (pattern, grout, window panes), RGB in ``[0, 1]``.
        seed: seeds the pattern's own randomness (cell counts, noise, jitter).
        size: side of the square texture in pixels (a power of two is fastest).
    """

    kind: str
    colour_a: tuple[float, float, float]
    colour_b: tuple[float, float, float]
    seed: int
    size: int = 128

    def __post_init__(self) -> None:
        if self.kind not in TEXTURE_KINDS:
            raise MirageInputError(
                f"unknown texture kind {self.kind!r}; valid kinds: {', '.join(TEXTURE_KINDS)}")
        if not isinstance(self.size, int) or self.size < 8:
            raise MirageInputError(f"texture size must be an integer >= 8, got {self.size!r}")
        for name in ("colour_a", "colour_b"):
            c = np.asarray(getattr(self, name), dtype=np.float64)
            if c.shape != (3,) or not np.all((c >= 0) & (c <= 1)):
                raise MirageInputError(f"{name} must be 3 values in [0, 1], got {c.tolist()}")


def hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    """HSV (all in ``[0, 1]``) -> RGB in ``[0, 1]``."""
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    a, b, c = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, bl = [(v, c, a), (b, v, a), (a, v, c), (a, b, v), (c, a, v), (v, a, b)][i]
    return float(r), float(g), float(bl)


def random_colour(rng: np.random.Generator, s_range=(0.15, 0.9),
                  v_range=(0.35, 0.95)) -> tuple[float, float, float]:
    """A random RGB colour in ``[0, 1]^3``: uniform hue, saturation and value in the ranges."""
    return hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*s_range), rng.uniform(*v_range))


def _periodic_noise(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """``[n, n]`` tileable noise in ``[0, 1]``: white noise filtered by ``1 / f^beta``."""
    white = rng.standard_normal((n, n))
    f = np.fft.fftfreq(n)
    rad = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    rad[0, 0] = 1.0
    spec = np.fft.fft2(white) / rad**beta
    spec[0, 0] = 0.0
    x = np.real(np.fft.ifft2(spec))
    x -= x.min()
    return x / max(float(x.max()), 1e-12)


def _mix(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Blend colours ``a``, ``b`` ``[3]`` by weights ``w`` ``[n, n]`` -> ``[n, n, 3]``."""
    return a[None, None] * (1 - w[..., None]) + b[None, None] * w[..., None]


def make_texture(spec: TextureSpec) -> np.ndarray:
    """The pixels of ``spec``: ``[size, size, 3]`` uint8, tileable in both directions.

    Raises:
        MirageInputError: (from :class:`TextureSpec`) unknown kind, bad size or colours.
    """
    n = spec.size
    rng = np.random.default_rng(spec.seed)
    a = np.asarray(spec.colour_a, dtype=np.float64)
    b = np.asarray(spec.colour_b, dtype=np.float64)
    v, u = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
    grain = _periodic_noise(rng, n, 1.0) - 0.5  # fine grain shared by all kinds
    kind = spec.kind
    if kind == "plain":
        img = _mix(a, a, np.zeros((n, n)))
    elif kind == "noise":
        w = _periodic_noise(rng, n, rng.uniform(1.6, 2.6))
        w = np.clip((w - 0.5) * rng.uniform(1.5, 3.0) + 0.5, 0, 1)
        img = _mix(a, b, w)
    elif kind == "checker":
        k = int(rng.choice([1, 2, 3, 4]))  # checks per side = 2 k (even, so it tiles)
        w = ((np.floor(u * 2 * k) + np.floor(v * 2 * k)) % 2).astype(np.float64)
        img = _mix(a, b, w)
    elif kind == "stripes":
        k = int(rng.integers(2, 9))
        duty = rng.uniform(0.2, 0.6)
        coord = u if rng.random() < 0.5 else v
        if rng.random() < 0.3:  # diagonal (still tiles: whole periods along both axes)
            coord = (u + v) % 1.0
        w = ((coord * k) % 1.0 < duty).astype(np.float64)
        img = _mix(a, b, w)
    elif kind in ("bricks", "tiles"):
        rows = int(rng.integers(3, 9))
        cols = int(rng.integers(1, 5)) if kind == "bricks" else rows
        shift = (np.floor(v * rows) % 2) * 0.5 if kind == "bricks" else 0.0
        cu, cv = (u * cols + shift) % cols, v * rows
        gap = rng.uniform(0.008, 0.02)  # grout width as a fraction of the texture side
        grout = ((cu % 1.0) < gap * cols) | ((cv % 1.0) < gap * rows)
        cell = (np.floor(cu) + cols * np.floor(cv)).astype(int) % (rows * cols)
        shade = rng.uniform(-0.12, 0.12, size=rows * cols)[cell]
        img = np.clip(a[None, None] * (1 + shade[..., None]), 0, 1)
        img[grout] = b
    elif kind == "dots":
        k = int(rng.integers(2, 7))
        r = rng.uniform(0.15, 0.4)
        du, dv = (u * k) % 1.0 - 0.5, (v * k) % 1.0 - 0.5
        w = (np.hypot(du, dv) < r).astype(np.float64)
        img = _mix(a, b, w)
    elif kind == "wood":
        k = int(rng.integers(3, 10))
        warp = _periodic_noise(rng, n, 2.5) - 0.5
        w = 0.5 + 0.5 * np.sin(2 * np.pi * (k * v + rng.uniform(0.5, 1.5) * warp))
        img = _mix(a, b, w**2)
    else:  # windows
        rows, cols = int(rng.integers(2, 5)), int(rng.integers(2, 5))
        mu, mv = rng.uniform(0.2, 0.35), rng.uniform(0.2, 0.4)  # margins of each cell
        fu, fv = (u * cols) % 1.0, (v * rows) % 1.0
        w = ((fu > mu / 2) & (fu < 1 - mu / 2) & (fv > mv / 2) & (fv < 1 - mv / 2))
        img = _mix(a, b, w.astype(np.float64))
    img = img * (1.0 + 0.12 * grain[..., None])
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)

"""Checking a rollout's inputs (image, camera, trajectory) before any model is loaded.

Every check raises a :class:`~mirage_core.errors.MirageInputError` subclass with a message that
says what was given and what is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.geometry import check_intrinsics, resize_intrinsics
from mirage_core.trajectory import Trajectory

log = logging.getLogger(__name__)

__all__ = ["ASPECT_TOL", "RESOLUTION_MULTIPLE", "check_camera", "check_image", "load_image"]

#: Relative difference of aspect ratios still taken for a plain resize (1024x576 from
#: 1920x1080 differs by 0; rounding a resize to multiples of 32 stays well under 2 %).
ASPECT_TOL = 0.02

#: H and W must be multiples of 32: VAE stride 16 times the DiT's 2x2 patch.
RESOLUTION_MULTIPLE = 32


def load_image(path: str | Path) -> torch.Tensor:
    """Read an 8-bit RGB image file as ``[3, H, W]`` float32 in ``[0, 1]``.

    Raises:
        MirageInputError: unreadable file, or a mode other than RGB (RGBA, grey, palette,
            16-bit...); the message says how to convert it.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        what = "is a directory, not an image file" if path.is_dir() else "does not exist"
        raise MirageInputError(f"image {str(path)!r} {what}")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode != "RGB":
                raise MirageInputError(
                    f"image {str(path)!r} has mode {mode!r}; Mirage needs 8-bit RGB. Convert it, "
                    f"e.g. PIL: Image.open(p).convert('RGB').save(q)"
                    + (" (the alpha channel is dropped)" if "A" in mode else "")
                )
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise MirageInputError(f"cannot read image {str(path)!r}: {e}") from e
    return check_image(arr)


def check_image(image) -> torch.Tensor:
    """Validate an image and return it as ``[3, H, W]`` float32 in ``[0, 1]``.

    Accepts ``[H, W, 3]`` uint8 (numpy or torch) or ``[3, H, W]`` float in ``[0, 1]``.
    ``H`` and ``W`` must be multiples of :data:`RESOLUTION_MULTIPLE` (32).
    """
    x = torch.from_numpy(np.array(image)) if isinstance(image, np.ndarray) else image
    if not isinstance(x, torch.Tensor):
        raise MirageInputError(f"image must be an array or tensor, got {type(image).__name__}")
    if x.dtype == torch.uint8:
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ShapeError(f"a uint8 image must be [H, W, 3] RGB, got {tuple(x.shape)}")
        x = x.permute(2, 0, 1).to(torch.float32) / 255.0
    elif x.is_floating_point():
        if x.ndim != 3 or x.shape[0] != 3:
            raise ShapeError(f"a float image must be [3, H, W] RGB, got {tuple(x.shape)}")
        x = x.to(torch.float32)
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise MirageInputError("a float image must be finite with values in [0, 1]")
    else:
        raise MirageInputError(f"image dtype {x.dtype} not supported (uint8 or float)")
    H, W = x.shape[-2:]
    if H % RESOLUTION_MULTIPLE or W % RESOLUTION_MULTIPLE or H == 0 or W == 0:
        raise ShapeError(
            f"image is {H}x{W}; height and width must be multiples of {RESOLUTION_MULTIPLE} "
            f"(VAE stride 16 x DiT patch 2), e.g. 704x1280. Resize or crop it first and scale "
            f"the intrinsics to match"
        )
    return x.contiguous()


def _fxy(K: torch.Tensor) -> str:
    return ", ".join(f"{float(v):.6g}" for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))


def check_camera(trajectory: Trajectory, image_hw: tuple[int, int], K=None) -> torch.Tensor:
    """Intrinsics for the rollout, checked against the image.

    ``K`` (``[3, 3]``) overrides the trajectory's. When the trajectory's ``image_hw`` differs
    from the image's, its intrinsics are scaled to the image (the image is taken to be its
    frames resized) if the aspect ratios agree within :data:`ASPECT_TOL`, and refused
    otherwise; the principal point must lie inside the image; per-frame intrinsics must all
    be equal (one camera).

    Raises:
        ShapeError: intrinsics for an image of another aspect ratio.
        MirageInputError: no intrinsics, differing per-frame intrinsics, a principal point
            outside the image.

    Returns:
        ``[3, 3]`` float64 intrinsics.
    """
    H, W = (int(v) for v in image_hw)
    if K is None:
        if trajectory.K is None:
            raise MirageInputError(
                "no intrinsics: the trajectory has none and none were given (pass K, or "
                "--fov for generated trajectories)"
            )
        Kt = trajectory.K
        if trajectory.image_hw is not None and tuple(trajectory.image_hw) != (H, W):
            # the input image is the file's frames resized (e.g. 1920x1080 -> 1024x576):
            # scale K with it; another aspect ratio means a crop we cannot know
            h0, w0 = (int(v) for v in trajectory.image_hw)
            if abs((W / w0) / (H / h0) - 1.0) > ASPECT_TOL:
                raise ShapeError(
                    f"the trajectory's intrinsics are for {h0}x{w0} images but the image is "
                    f"{H}x{W}, another aspect ratio ({w0 / h0:.4f} vs {W / H:.4f}): resize "
                    f"the image to {h0}x{w0}'s aspect ratio (a crop changes cx, cy by an "
                    f"unknown amount)"
                )
            log.info("scaling the trajectory's %dx%d intrinsics to the %dx%d image",
                     h0, w0, H, W)
            Kt = resize_intrinsics(Kt, (h0, w0), (H, W))
        if Kt.ndim == 3:
            same = torch.isclose(Kt, Kt[0:1].expand_as(Kt)).flatten(1).all(dim=1)
            if not bool(same.all()):
                i = int((~same).nonzero()[0])
                raise MirageInputError(
                    f"per-frame intrinsics differ: frame {i} has fx, fy, cx, cy = "
                    f"{_fxy(Kt[i])} but frame 0 has {_fxy(Kt[0])}; a rollout uses one camera "
                    f"(zoom is not supported)"
                )
            Kt = Kt[0]
        K = Kt
    K = check_intrinsics(torch.as_tensor(K, dtype=torch.float64), "K")
    cx, cy = float(K[0, 2]), float(K[1, 2])
    if not (0 < cx < W and 0 < cy < H):
        raise MirageInputError(
            f"principal point ({cx:.1f}, {cy:.1f}) lies outside the {H}x{W} image: the "
            f"intrinsics do not belong to this image"
        )
    return K

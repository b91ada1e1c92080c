"""Exception types. Every one is a ``ValueError`` so callers can catch bad input broadly.

Each message says what was passed and what was expected.
"""

from __future__ import annotations


class MirageInputError(ValueError):
    """Bad input to a mirage_core function (shape, dtype, value range)."""


class ShapeError(MirageInputError):
    """A tensor argument has the wrong shape or its shape disagrees with another argument."""


class PoseError(MirageInputError):
    """A pose is not a valid SE(3) transform (non-finite, non-orthonormal, det != +1, ...)."""


class DepthError(MirageInputError):
    """A depth map holds NaN, inf or negative values, or has the wrong resolution."""


class TrajectoryFileError(MirageInputError):
    """A trajectory/camera file cannot be parsed; the message names the file and line."""


class MemoryFileError(MirageInputError):
    """A saved memory file is corrupt, truncated, or does not match the memory it is loaded into."""


class WeightsNotFoundError(FileNotFoundError):
    """A local weights directory is missing or incomplete. Nothing is ever downloaded."""

"""The compute device a user asked for, checked once (``--device``, ``device:=``).

``None`` or ``""`` picks CUDA when this torch build sees a GPU, else the CPU. Anything else
is parsed by :class:`torch.device` and must exist here, so a typo or ``cuda`` on a CPU-only
build is one clear :class:`~mirage_core.errors.MirageInputError` before anything loads, not a
traceback from deep inside a model load.
"""

from __future__ import annotations

import torch

from mirage_core.errors import MirageInputError

__all__ = ["compute_device"]


def compute_device(device: str | torch.device | None = None) -> torch.device:
    """The checked device for ``device`` (module docstring).

    Raises:
        MirageInputError: not a device name torch knows, CUDA asked for where torch sees no
            GPU (a CPU-only build or no driver), or a CUDA index past the GPUs there are.
    """
    if device is None or (isinstance(device, str) and not device.strip()):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError) as e:
        raise MirageInputError(
            f"unknown device {device!r}: use cpu, cuda or cuda:N ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MirageInputError(
                f"device {device!r} asked for, but this torch ({torch.__version__}) sees no "
                "CUDA GPU: use cpu, or install a CUDA build of torch on a GPU host")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MirageInputError(
                f"device {device!r}: there are {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise MirageInputError(f"device {device!r} is not supported: use cpu, cuda or cuda:N")
    return dev

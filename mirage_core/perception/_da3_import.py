"""The one place that imports depth-anything-3 (PyPI ``depth-anything-3==0.1.1``).

Only :mod:`mirage_core.perception.da3` calls :func:`import_da3`, lazily, when a
``DepthAnything3Depth`` is constructed; ``import mirage_core`` and
``import mirage_core.perception`` never import depth_anything_3 (a test checks ``sys.modules``).

Install hazards, and how they are handled (measured; ``docs/perception.md`` has the figures):

* ``pip install depth-anything-3==0.1.1`` resolves 152 packages: it downgrades numpy to 1.26
  (``numpy<2`` pin), *replaces torch 2.13.0+cpu by torch 2.15 with the CUDA 13 stack*, and adds
  xformers, open3d, pycolmap, a gradio-free web stack, etc. Never run it in the project venv.
* The only ``torchvision`` that matches torch 2.13.0 on the package index (0.28.0) is a CUDA
  build. On a CPU-only torch its ops library cannot load, ``import torchvision`` fails
  ("operator torchvision::nms does not exist"), and because ``transformers`` imports
  torchvision whenever it is installed, *every* ``transformers`` model import (hence
  ``diffusers``' Wan models) fails in that venv unless two op schemas are registered first in
  each process. A lazy fix in this adapter could not guarantee that ordering, so the project
  does **not** install torchvision at all.
* Without torchvision, ``depth_anything_3.api`` (its ``DepthAnything3`` wrapper with
  ``from_pretrained``/``inference``) cannot be imported: its input processor imports
  ``torchvision.transforms``. The network itself does not need it: ``depth_anything_3.cfg``,
  ``depth_anything_3.registry`` and ``depth_anything_3.model`` import only torch, numpy,
  omegaconf, addict and einops. So ``scripts/install_da3.sh`` installs
  ``depth-anything-3==0.1.1`` with ``--no-deps`` plus exactly those three packages (~600 KB),
  and :mod:`mirage_core.perception.da3` builds the network from the package's own config,
  loads ``model.safetensors`` itself, and reimplements the 0.1.1 input processing
  (``upper_bound_resize``, ImageNet normalisation) and the metric conversion.
* numpy 2: the modules above work with numpy 2 (the ``numpy<2`` pin is for the export tools
  we do not import). ``pip check`` will list depth-anything-3's unmet pins; that is expected.
* Importing ``depth_anything_3.cfg`` registers an OmegaConf ``eval`` resolver (a global side
  effect; we only load the package's own YAML configs) and emits an omegaconf deprecation
  warning, which is suppressed here. Its stdout logger is set to WARN unless ``DA3_LOG_LEVEL``
  is set.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from typing import Any

from mirage_core.perception.base import MissingDependencyError

__all__ = ["DA3_VERSION", "INSTALL_HINT", "DA3Modules", "import_da3"]

#: The depth-anything-3 release whose input processing and metric conversion we mirror.
DA3_VERSION = "0.1.1"

INSTALL_HINT = (
    "Install it the project's way: `scripts/install_da3.sh` (or `scripts/install_da3.sh VENV`), "
    "which runs `pip install --no-deps depth-anything-3==0.1.1` plus omegaconf, addict and "
    "einops. Do NOT `pip install depth-anything-3` with its dependencies: it downgrades numpy, "
    "replaces the CPU torch with a CUDA build and installs a torchvision that breaks "
    "transformers/diffusers imports on CPU machines (docs/perception.md)."
)


@dataclass(frozen=True)
class DA3Modules:
    """The pieces of depth-anything-3 (and OpenCV) the adapter uses."""

    create_object: Any  # depth_anything_3.cfg.create_object(DictConfig) -> nn.Module
    load_config: Any  # depth_anything_3.cfg.load_config(path) -> DictConfig
    registry: Any  # module depth_anything_3.registry (MODEL_REGISTRY: name -> yaml path)
    cv2: Any  # OpenCV, for the 0.1.1 input resizing
    version: str | None  # installed depth-anything-3 version


@functools.cache
def import_da3() -> DA3Modules:
    """Import the torchvision-free parts of depth-anything-3.

    Raises:
        MissingDependencyError: depth-anything-3 (or omegaconf/addict/einops/OpenCV) is not
            installed; the message says how to install it.
    """
    try:
        with warnings.catch_warnings():
            # omegaconf 2.4 deprecates register_new_resolver, which depth_anything_3.cfg calls.
            warnings.filterwarnings("ignore", message=r".*register_new_resolver.*")
            # depth_anything_3.utils.geometry decorates a function with torch.jit.script
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*")
            # the network modules: a missing omegaconf/addict/einops fails here, early
            import depth_anything_3.model.da3  # noqa: F401
            from depth_anything_3 import cfg, registry
            from depth_anything_3.utils import logger as da3_logger
    except ImportError as e:
        raise MissingDependencyError(
            f"depth-anything-3 is not importable ({e}). {INSTALL_HINT}"
        ) from e
    try:
        import cv2
    except ImportError as e:
        raise MissingDependencyError(
            f"DA3 input processing needs OpenCV ({e}). Install opencv-python-headless "
            f"(`pip install -e .[demo]`, or scripts/install_da3.sh)."
        ) from e
    if "DA3_LOG_LEVEL" not in os.environ:
        da3_logger.logger.level = da3_logger.LOG_LEVELS["WARN"]
    try:
        from importlib.metadata import version

        ver = version("depth-anything-3")
    except Exception:  # not installed as a distribution (e.g. a source checkout on sys.path)
        ver = None
    if ver is not None and ver != DA3_VERSION:
        warnings.warn(
            f"depth-anything-3 {ver} is installed; mirage mirrors the input processing of "
            f"{DA3_VERSION}. Check docs/perception.md before relying on it.",
            stacklevel=2,
        )
    return DA3Modules(
        create_object=cfg.create_object,
        load_config=cfg.load_config,
        registry=registry,
        cv2=cv2,
        version=ver,
    )

"""Depth (and sky) from Depth Anything 3, loaded from a local weights directory.

Weights: a directory with the Hugging Face layout of the ``depth-anything/DA3*`` repositories,
``config.json`` (``{"model_name": "da3metric-large"}``, the name of a config shipped in the
``depth_anything_3`` package) and ``model.safetensors`` (keys prefixed ``model.``, as
``DepthAnything3.save_pretrained`` writes them). Nothing is downloaded at run time.

Models (``model_name`` -> kind, Hugging Face repository):

=========================  =================================  ===============================
``da3-small|base``         relative (any-view, no sky)        ``depth-anything/DA3-SMALL|BASE``
``da3-large|giant``        relative (any-view, no sky)        ``depth-anything/DA3-LARGE-1.1``,
                                                              ``depth-anything/DA3-GIANT-1.1``
``da3mono-large``          relative (monocular, sky)          ``depth-anything/DA3MONO-LARGE``
``da3metric-large``        metric: ``z = focal * out / 300``  ``depth-anything/DA3METRIC-LARGE``
                           (monocular, sky)
``da3nested-giant-large``  metric (any-view + metric branch,  ``depth-anything/DA3NESTED-``
                           sky from the metric branch)        ``GIANT-LARGE-1.1``
=========================  =================================  ===============================

Processing mirrors ``depth_anything_3.api.DepthAnything3.inference`` of release 0.1.1 (which we
cannot import without torchvision; see :mod:`mirage_core.perception._da3_import`):

1. ``upper_bound_resize``: the longer image side is resized to ``process_res`` (OpenCV area
   filter when shrinking, bicubic when enlarging), then each side to the nearest multiple of
   the 14-pixel patch; ImageNet normalisation. Frames of one call go through the network
   together (the any-view models treat them as views of one scene), or in groups of
   ``batch_size``.
2. The network runs in float32 on CPU (upstream autocasts to float16 even on CPU); on CUDA it
   autocasts to bfloat16 (float16 without bf16 support) as upstream does.
3. ``da3metric-large``: metric depth = ``raw * f / 300`` with ``f`` the mean focal length of
   ``K`` scaled to the processed resolution (the model card's rule; the nested model applies it
   internally).
4. Depth and the sky probability are resized back to ``H x W`` (bilinear); sky is
   ``prob >= 0.5`` (upstream's threshold); sky and invalid pixels get depth 0.
5. The scale policy (:mod:`mirage_core.perception.scale`) is applied per frame.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from mirage_core.errors import MirageInputError, WeightsNotFoundError
from mirage_core.perception.base import (
    DepthEstimate,
    DepthProvider,
    check_perception_inputs,
    check_reference_depth,
)
from mirage_core.perception.scale import SCALE_POLICIES, ScaleAligner

__all__ = [
    "DA3_MODELS",
    "DepthAnything3Depth",
    "da3_preprocess_size",
    "metric_from_focal",
]

log = logging.getLogger(__name__)

#: model_name -> (kind, Hugging Face repository). kind: "relative", "metric_focal" (the
#: network output times focal/300 is metric) or "metric" (the network output is metric).
DA3_MODELS: dict[str, tuple[str, str]] = {
    "da3-small": ("relative", "depth-anything/DA3-SMALL"),
    "da3-base": ("relative", "depth-anything/DA3-BASE"),
    "da3-large": ("relative", "depth-anything/DA3-LARGE-1.1"),
    "da3-giant": ("relative", "depth-anything/DA3-GIANT-1.1"),
    "da3mono-large": ("relative", "depth-anything/DA3MONO-LARGE"),
    "da3metric-large": ("metric_focal", "depth-anything/DA3METRIC-LARGE"),
    "da3nested-giant-large": ("metric", "depth-anything/DA3NESTED-GIANT-LARGE-1.1"),
}
#: upstream DepthAnything3's default model_name when config.json does not name one
DEFAULT_MODEL_NAME = "da3-large"
PATCH_SIZE = 14
METRIC_CANONICAL_FOCAL = 300.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SKY_THRESHOLD = 0.5
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def model_kind(model_name: str) -> str:
    """``"relative"``, ``"metric_focal"`` or ``"metric"`` for a DA3 ``model_name``.

    Names outside :data:`DA3_MODELS` (custom configs) are classified by prefix like the
    official ones: ``da3metric*`` -> metric_focal, ``da3nested*`` -> metric, else relative.
    """
    if model_name in DA3_MODELS:
        return DA3_MODELS[model_name][0]
    if model_name.startswith("da3metric"):
        return "metric_focal"
    if model_name.startswith("da3nested"):
        return "metric"
    return "relative"


def _download_hint(path: Path, model_name: str | None = None) -> str:
    repo = DA3_MODELS.get(model_name or "", (None, "depth-anything/DA3METRIC-LARGE"))[1]
    repos = ", ".join(r for _, r in DA3_MODELS.values())
    return (
        f"Get the files on a machine with internet access, e.g. "
        f"`hf download {repo} --local-dir {path}` (huggingface_hub >= 1.0; older versions: "
        f"`huggingface-cli download {repo} --local-dir {path}`), and copy the directory here. "
        f"Repositories: {repos}. Nothing is downloaded at run time."
    )


def read_da3_dir(weights_dir) -> tuple[Path, str]:
    """Check a DA3 weights directory; return ``(path, model_name)`` without loading weights.

    Raises:
        WeightsNotFoundError: the directory, ``config.json`` or ``model.safetensors`` is
            missing, or ``config.json`` is not valid JSON; the message names the directory and
            how to get the files.
    """
    p = Path(weights_dir).expanduser()
    if not p.is_dir():
        raise WeightsNotFoundError(
            f"depth-anything-3 weights directory {str(p)!r} does not exist (expected "
            f"{CONFIG_FILE} and {WEIGHTS_FILE} in it). {_download_hint(p)}"
        )
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (p / f).is_file()]
    if missing:
        have = sorted(x.name for x in p.iterdir())[:10]
        raise WeightsNotFoundError(
            f"depth-anything-3 weights directory {str(p)!r} lacks {', '.join(missing)} (has "
            f"{have}). {_download_hint(p)}"
        )
    try:
        cfg = json.loads((p / CONFIG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise WeightsNotFoundError(
            f"{str(p / CONFIG_FILE)!r} is not valid JSON ({e}). {_download_hint(p)}"
        ) from e
    if not isinstance(cfg, dict):
        raise WeightsNotFoundError(f"{str(p / CONFIG_FILE)!r} must hold a JSON object")
    name = cfg.get("model_name", DEFAULT_MODEL_NAME)
    if not isinstance(name, str):
        raise WeightsNotFoundError(f"{str(p / CONFIG_FILE)!r}: model_name must be a string")
    return p, name


def da3_preprocess_size(H: int, W: int, process_res: int) -> tuple[int, int, int, int]:
    """Sizes of DA3 0.1.1's ``upper_bound_resize``: ``(h1, w1, h2, w2)``.

    ``(h1, w1)``: longer side scaled to ``process_res`` (``round``); ``(h2, w2)``: each side
    rounded to the nearest multiple of 14 (ties up).
    """
    longest = max(H, W)
    if longest == process_res:
        h1, w1 = H, W
    else:
        s = process_res / float(longest)
        h1, w1 = max(1, round(H * s)), max(1, round(W * s))

    def nearest(x: int) -> int:
        down = (x // PATCH_SIZE) * PATCH_SIZE
        up = down + PATCH_SIZE
        return up if abs(up - x) <= abs(x - down) else down

    return h1, w1, max(1, nearest(h1)), max(1, nearest(w1))


def metric_from_focal(raw: torch.Tensor, K: torch.Tensor, proc_hw, image_hw) -> torch.Tensor:
    """``DA3METRIC-LARGE`` output -> metres: ``raw * f / 300``, ``f`` the mean of ``fx, fy`` of
    ``K`` (an ``image_hw`` camera) scaled to the processed size ``proc_hw``."""
    (hp, wp), (H, W) = proc_hw, image_hw
    f = 0.5 * (float(K[0, 0]) * wp / W + float(K[1, 1]) * hp / H)
    return raw * (f / METRIC_CANONICAL_FOCAL)


class DepthAnything3Depth(DepthProvider):
    """Depth (and sky, for the mono/metric/nested models) from Depth Anything 3.

    Args:
        weights_dir: local directory with ``config.json`` and ``model.safetensors`` (see the
            module docstring for the models and where to get them).
        device: torch device for the network.
        process_res: the longer side of the network input (DA3 default 504); H x W outputs.
        scale_policy: ``"auto"`` (default: ``"metric"`` for a metric model, else
            ``"align_to_memory"``), ``"metric"`` (requires ``da3metric-large`` or
            ``da3nested-giant-large``; raises otherwise), ``"align_to_memory"`` (per-frame
            scale = median(reference / predicted) over latent cells valid in both, see
            :mod:`mirage_core.perception.scale`), or ``"none"`` (the model's output without
            alignment: metric for metric models; for relative ones arbitrary, with a warning).
        initial_scale: ``align_to_memory`` scale before the memory holds anything (the first
            frame of a rollout); it fixes the world unit of a relative model.
        min_cells: ``align_to_memory``: fewest overlapping latent cells for an alignment; with
            fewer, the last scale is carried over.
        downsample: ``align_to_memory``: how the prediction is brought to the latent grid
            (the memory's modes; default bilinear, as the memory's default).
        batch_size: frames per network call; ``None`` (default) runs all frames of a call
            together (the any-view models then treat them as views of one scene). Set it to
            bound memory on long chunks.
    Raises:
        WeightsNotFoundError: missing/incomplete weights directory (at construction) or weights
            that do not match ``model_name`` (at :meth:`load`).
        MissingDependencyError: depth-anything-3 is not installed (an ``ImportError``).
        MirageInputError: unknown ``model_name``, policy, or ``"metric"`` with a relative model.

    The weights load on first use (or :meth:`load`); :meth:`unload` frees them. Call
    :meth:`reset` between rollouts to forget the carried ``align_to_memory`` scale.
    """

    name = "da3"

    def __init__(
        self,
        weights_dir,
        device: str | torch.device = "cpu",
        process_res: int = 504,
        scale_policy: str = "auto",
        initial_scale: float = 1.0,
        min_cells: int = 16,
        downsample: str = "bilinear",
        batch_size: int | None = None,
    ):
        if scale_policy not in SCALE_POLICIES:
            raise MirageInputError(
                f"scale_policy must be one of {SCALE_POLICIES}, got {scale_policy!r}"
            )
        if isinstance(process_res, bool) or not isinstance(process_res, int) or process_res < 14:
            raise MirageInputError(f"process_res must be an int >= 14, got {process_res!r}")
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise MirageInputError(f"batch_size must be None or >= 1, got {batch_size!r}")
        self.batch_size = None if batch_size is None else int(batch_size)
        self.weights_dir, self.model_name = read_da3_dir(weights_dir)
        from mirage_core.perception._da3_import import import_da3

        self._da3 = import_da3()
        if self.model_name not in self._da3.registry.MODEL_REGISTRY:
            raise MirageInputError(
                f"{str(self.weights_dir / CONFIG_FILE)!r} names model {self.model_name!r}, which "
                f"depth-anything-3 {self._da3.version} does not know (known: "
                f"{sorted(self._da3.registry.MODEL_REGISTRY)})"
            )
        self.kind = model_kind(self.model_name)
        metric = self.kind != "relative"
        if scale_policy == "auto":
            scale_policy = "metric" if metric else "align_to_memory"
        if scale_policy == "metric" and not metric:
            raise MirageInputError(
                f"scale_policy='metric' needs a metric model (da3metric-large or "
                f"da3nested-giant-large); {str(self.weights_dir)!r} holds {self.model_name!r}, "
                f"which predicts relative depth. Use scale_policy='align_to_memory'."
            )
        self.scale_policy = scale_policy
        self.device = torch.device(device)
        self.process_res = process_res
        self.aligner = ScaleAligner(initial_scale, min_cells, downsample)
        self._net: torch.nn.Module | None = None
        self._warned_none = False

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> None:
        """Build the network from the package config and load ``model.safetensors``."""
        if self._net is not None:
            return
        from safetensors.torch import load_file

        da3 = self._da3
        net = da3.create_object(da3.load_config(da3.registry.MODEL_REGISTRY[self.model_name]))
        state = load_file(str(self.weights_dir / WEIGHTS_FILE), device="cpu")
        if state and all(k.startswith("model.") for k in state):
            state = {k[len("model."):]: v for k, v in state.items()}
        res = net.load_state_dict(state, strict=False)
        # save_pretrained (safetensors) stores a parameter shared by several modules once; its
        # other names are "missing" but are loaded through the shared tensor.
        own = net.state_dict(keep_vars=True)
        loaded_ptrs = {own[k].data_ptr() for k in state if k in own}
        missing = [k for k in res.missing_keys if own[k].data_ptr() not in loaded_ptrs]
        if missing or res.unexpected_keys:
            raise WeightsNotFoundError(
                f"{str(self.weights_dir / WEIGHTS_FILE)!r} does not match model "
                f"{self.model_name!r} named in config.json: {len(missing)} missing "
                f"keys (e.g. {missing[:3]}), {len(res.unexpected_keys)} unexpected "
                f"(e.g. {res.unexpected_keys[:3]}). "
                f"{_download_hint(self.weights_dir, self.model_name)}"
            )
        self._net = net.eval().to(self.device)

    def unload(self) -> None:
        """Free the network (reloaded on next use)."""
        self._net = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def reset(self) -> None:
        """Start of a new rollout: forget the carried ``align_to_memory`` scale."""
        self.aligner.reset()

    # ------------------------------------------------------------------ inference
    def _preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [0, 1] -> ``[1, N, 3, h, w]`` normalised network input."""
        cv2 = self._da3.cv2
        H, W = frames.shape[-2:]
        h1, w1, h2, w2 = da3_preprocess_size(H, W, self.process_res)
        out = []
        for img in frames.permute(0, 2, 3, 1).cpu().numpy():  # [H, W, 3] float32
            if (h1, w1) != (H, W):
                interp = cv2.INTER_CUBIC if self.process_res > max(H, W) else cv2.INTER_AREA
                img = cv2.resize(img, (w1, h1), interpolation=interp).clip(0.0, 1.0)
            if (h2, w2) != (h1, w1):
                interp = cv2.INTER_CUBIC if (h2 > h1 or w2 > w1) else cv2.INTER_AREA
                img = cv2.resize(img, (w2, h2), interpolation=interp).clip(0.0, 1.0)
            out.append(torch.from_numpy(img.copy()))
        x = torch.stack(out).permute(0, 3, 1, 2).to(torch.float32)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return ((x - mean) / std)[None]

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Network on ``[1, N, 3, h, w]`` -> raw depth ``[N, h, w]`` and sky probability
        ``[N, h, w]`` (``None`` for models without sky)."""
        net = self._net
        captured: dict[str, torch.Tensor] = {}
        hook = None
        metric_branch = getattr(net, "da3_metric", None)
        if metric_branch is not None:  # nested model: the sky comes from the metric branch

            def grab(_m, _i, out):
                if "sky" in out:
                    captured["sky"] = out["sky"]

            hook = metric_branch.register_forward_hook(grab)
        x = x.to(self.device)
        cuda = self.device.type == "cuda"
        dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
        try:
            with torch.no_grad(), torch.autocast(self.device.type, dtype, enabled=cuda):
                out = net(x, None, None, [], False, False, "saddle_balanced")
        finally:
            if hook is not None:
                hook.remove()
        depth = out["depth"].float()[0]
        sky = out["sky"] if "sky" in out else captured.get("sky")
        if sky is not None:
            sky = sky.float()[0]
        return depth, sky

    def estimate(self, frames, K, T_world_cam, frame_indices, reference_depth=None):
        frames, K, _, _ = check_perception_inputs(frames, K, T_world_cam, frame_indices)
        N, _, H, W = frames.shape
        ref = check_reference_depth(reference_depth, N)
        self.load()
        bs = self.batch_size or N
        raws, skies = [], []
        for b0 in range(0, N, bs):
            x = self._preprocess(frames[b0:b0 + bs])
            r, s = self._forward(x)
            raws.append(r)
            skies.append(s)
        hp, wp = x.shape[-2:]
        raw = torch.cat(raws)
        sky_prob = None if skies[0] is None else torch.cat(skies)
        if self.kind == "metric_focal":
            raw = metric_from_focal(raw, K, (hp, wp), (H, W))
        depth = F.interpolate(raw[:, None], size=(H, W), mode="bilinear", align_corners=False)
        depth = depth[:, 0].cpu()
        sky = None
        if sky_prob is not None:
            sky = F.interpolate(sky_prob[:, None], size=(H, W), mode="bilinear",
                                align_corners=False)[:, 0].cpu() >= SKY_THRESHOLD
        invalid = ~torch.isfinite(depth) | (depth <= 0)
        if sky is not None:
            invalid |= sky
        depth = torch.where(invalid, torch.zeros((), dtype=depth.dtype), depth)

        desc = f"depth-anything-3 {self.model_name} ({self.weights_dir})"
        scales = [1.0] * N
        if self.scale_policy == "metric":
            how = "metric (net x focal/300)" if self.kind == "metric_focal" else "metric"
            source = f"{desc}: {how}"
        elif self.scale_policy == "none":
            if self.kind == "relative":
                if not self._warned_none:
                    warnings.warn(
                        f"{desc}: scale_policy='none' returns relative depth of arbitrary "
                        f"scale; the memory's geometry will not match the trajectory's units",
                        stacklevel=2,
                    )
                    self._warned_none = True
                source = f"{desc}: raw output, relative, arbitrary scale (scale_policy='none')"
            else:
                source = f"{desc}: model output, metric, not aligned (scale_policy='none')"
        else:
            hows = []
            for i in range(N):
                s, how = self.aligner.scale_for(
                    depth[i], None if ref is None else ref[i], None if sky is None else sky[i]
                )
                depth[i] *= s
                scales[i] = s
                hows.append(f"{how}: {s:.4g}")
            kind = "metric" if self.kind != "relative" else "relative"
            source = f"{desc}: {kind} x per-frame scale aligned to memory [{'; '.join(hows)}]"
        log.debug("%s", source)
        return DepthEstimate(depth=depth.to(torch.float32), sky=sky, source=source, scale=scales)

"""Dynamic-object masks from SAM3 (``transformers`` ``Sam3Model``), text-prompted.

The paper masks dynamic objects with SAM3 before writing a frame into the memory. Here each
prompt (``"person"``, ``"car"``, ...) is an open-vocabulary instance query; every instance that
scores above ``score_threshold`` for any prompt is masked, and the union is the dynamic mask.

Weights: a local directory in the Hugging Face layout of ``facebook/sam3`` (``config.json``,
``model.safetensors``, the tokenizer files and ``processor_config.json`` or
``preprocessor_config.json``). Nothing is downloaded at run time.

Torchvision: ``Sam3Model`` runs without torchvision (text prompts never reach the box-prompt
``roi_align``), but ``Sam3Processor``'s image processor is a torchvision backend, and the
project installs no torchvision (see :mod:`mirage_core.perception._da3_import`). So this
adapter loads the tokenizer with ``AutoTokenizer`` and reproduces the two processor steps it
needs from the saved processor config:

* images: resize to ``size`` (bilinear with antialiasing, as torchvision's tensor resize), then
  ``(x - image_mean) / image_std`` (frames are already in ``[0, 1]``, i.e. rescaled);
* text: ``tokenizer(prompt, padding="max_length", max_length=32)`` as ``Sam3Processor`` does;
* outputs: ``Sam3Processor.post_process_instance_segmentation``: score =
  ``sigmoid(pred_logits) * sigmoid(presence_logits)``, keep ``score > score_threshold``, masks
  = ``sigmoid(pred_masks)`` resized bilinearly to ``H x W``, ``> mask_threshold``.

The vision features of each frame are computed once and reused for every prompt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from mirage_core.errors import MirageInputError, WeightsNotFoundError
from mirage_core.perception.base import (
    MaskProvider,
    MissingDependencyError,
    check_perception_inputs,
)

__all__ = ["DEFAULT_PROMPTS", "SAM3_REPO", "Sam3Masks", "read_sam3_dir"]

SAM3_REPO = "facebook/sam3"
#: Things that move in RealEstate10K-like and street scenes.
DEFAULT_PROMPTS: tuple[str, ...] = (
    "person",
    "car",
    "bicycle",
    "motorcycle",
    "bus",
    "truck",
    "animal",
)
#: Sam3Processor pads every text prompt to 32 tokens.
TEXT_MAX_LENGTH = 32
#: Sam3ImageProcessor defaults, used for keys a saved config leaves out.
_IMAGE_DEFAULTS = {
    "size": {"height": 1008, "width": 1008},
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "do_normalize": True,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "resample": 2,
}
#: PIL resample codes -> torch interpolate modes
_RESAMPLE = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}


def _hint(path: Path) -> str:
    return (
        f"Get the files on a machine with internet access (the repository is gated: accept its "
        f"licence on huggingface.co and log in first), e.g. `hf download {SAM3_REPO} "
        f"--local-dir {path}` (older huggingface_hub: `huggingface-cli download ...`), and copy "
        f"the directory here. Nothing is downloaded at run time."
    )


def read_sam3_dir(weights_dir) -> tuple[Path, dict]:
    """Check a SAM3 directory; return ``(path, image processor config)`` without loading.

    Raises:
        WeightsNotFoundError naming the directory, the missing files and how to get them.
    """
    p = Path(weights_dir).expanduser()
    if not p.is_dir():
        raise WeightsNotFoundError(
            f"SAM3 weights directory {str(p)!r} does not exist (expected config.json, "
            f"model.safetensors, tokenizer files and processor_config.json). {_hint(p)}"
        )
    needs = {
        "config.json": ("config.json",),
        "model weights": ("model.safetensors", "model.safetensors.index.json"),
        "tokenizer": ("tokenizer.json", "vocab.json"),
        "processor config": ("processor_config.json", "preprocessor_config.json"),
    }
    missing = [
        f"{what} ({' or '.join(files)})"
        for what, files in needs.items()
        if not any((p / f).is_file() for f in files)
    ]
    if missing:
        raise WeightsNotFoundError(
            f"SAM3 weights directory {str(p)!r} lacks {', '.join(missing)}. {_hint(p)}"
        )
    try:
        if (p / "preprocessor_config.json").is_file():
            cfg = json.loads((p / "preprocessor_config.json").read_text())
        else:
            cfg = json.loads((p / "processor_config.json").read_text()).get("image_processor", {})
    except (OSError, ValueError, AttributeError) as e:
        raise WeightsNotFoundError(f"cannot read the processor config in {str(p)!r}: {e}") from e
    img = {**_IMAGE_DEFAULTS, **{k: v for k, v in cfg.items() if k in _IMAGE_DEFAULTS}}
    size = img["size"]
    if not (isinstance(size, dict) and "height" in size and "width" in size):
        raise WeightsNotFoundError(
            f"{str(p)!r}: processor size must be {{'height': h, 'width': w}}, got {size!r}"
        )
    if img["resample"] not in _RESAMPLE:
        raise WeightsNotFoundError(f"{str(p)!r}: unsupported resample {img['resample']!r}")
    return p, img


class Sam3Masks(MaskProvider):
    """Dynamic-object masks: union of SAM3 instances for a list of text prompts.

    Args:
        weights_dir: local ``facebook/sam3``-layout directory (see the module docstring).
        prompts: noun phrases of things that move; each is one SAM3 query.
        score_threshold: keep an instance when ``sigmoid(logit) * sigmoid(presence)`` exceeds it.
        mask_threshold: binarise ``sigmoid(mask logits)`` at this value.
        device: torch device.
        batch_size: frames per vision-encoder pass.
    Raises:
        WeightsNotFoundError: missing/incomplete directory (at construction).
        MissingDependencyError: transformers without ``Sam3Model`` (needs transformers >= 5).
    """

    name = "sam3"

    def __init__(
        self,
        weights_dir,
        prompts: Sequence[str] = DEFAULT_PROMPTS,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        device: str | torch.device = "cpu",
        batch_size: int = 2,
    ):
        if isinstance(prompts, str):
            prompts = (prompts,)
        prompts = tuple(prompts)
        if not prompts or not all(isinstance(q, str) and q.strip() for q in prompts):
            raise MirageInputError(f"prompts must be non-empty strings, got {prompts!r}")
        for name, v in (("score_threshold", score_threshold), ("mask_threshold", mask_threshold)):
            if not 0.0 <= float(v) < 1.0:
                raise MirageInputError(f"{name} must be in [0, 1), got {v!r}")
        if int(batch_size) < 1:
            raise MirageInputError(f"batch_size must be >= 1, got {batch_size!r}")
        self.weights_dir, self._image_cfg = read_sam3_dir(weights_dir)
        self.prompts = prompts
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self._model = None
        self._text: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> None:
        """Load the model and tokenizer from the local directory; tokenise the prompts."""
        if self._model is not None:
            return
        try:
            from transformers import AutoTokenizer, Sam3Model
        except ImportError as e:
            raise MissingDependencyError(
                f"SAM3 masks need transformers >= 5 with Sam3Model ({e}); install "
                f"`pip install 'transformers>=5'`"
            ) from e
        d = str(self.weights_dir)
        try:
            model = Sam3Model.from_pretrained(d, local_files_only=True)
            tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
        except OSError as e:
            raise WeightsNotFoundError(
                f"cannot load SAM3 from {d!r}: {e}. {_hint(self.weights_dir)}"
            ) from e
        max_len = min(
            TEXT_MAX_LENGTH,
            int(getattr(model.config.text_config, "max_position_embeddings", TEXT_MAX_LENGTH)),
        )
        self._text = []
        for q in self.prompts:
            enc = tok(q, padding="max_length", max_length=max_len, truncation=True,
                      return_tensors="pt")
            self._text.append((enc["input_ids"], enc["attention_mask"]))
        self._model = model.eval().to(self.device)

    def unload(self) -> None:
        self._model = None
        self._text = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ inference
    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [0, 1] -> ``pixel_values`` ``[N, 3, h, w]`` as Sam3ImageProcessor."""
        c = self._image_cfg
        size = (int(c["size"]["height"]), int(c["size"]["width"]))
        mode = _RESAMPLE[c["resample"]]
        x = frames.to(torch.float32)
        if tuple(x.shape[-2:]) != size:
            aa = {"antialias": True} if mode in ("bilinear", "bicubic") else {}
            kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
            x = F.interpolate(x, size=size, mode=mode, **aa, **kw)
        # frames are x_uint8 / 255; the processor computes x_uint8 * rescale_factor
        x = x * (255.0 * float(c["rescale_factor"]) if c["do_rescale"] else 255.0)
        if c["do_normalize"]:
            mean = torch.tensor(c["image_mean"], dtype=x.dtype).view(1, -1, 1, 1)
            std = torch.tensor(c["image_std"], dtype=x.dtype).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x

    def masks(self, frames, K, T_world_cam, frame_indices):
        frames, *_ = check_perception_inputs(frames, K, T_world_cam, frame_indices)
        self.load()
        N, _, H, W = frames.shape
        out = torch.zeros((N, H, W), dtype=torch.bool)
        model = self._model
        dtype = next(model.parameters()).dtype
        for b0 in range(0, N, self.batch_size):
            px = self.preprocess(frames[b0:b0 + self.batch_size]).to(self.device, dtype)
            n = px.shape[0]
            with torch.no_grad():
                vision = model.get_vision_features(pixel_values=px)
                for ids, am in self._text:
                    res = model(
                        vision_embeds=vision,
                        input_ids=ids.expand(n, -1).to(self.device),
                        attention_mask=am.expand(n, -1).to(self.device),
                    )
                    scores = res.pred_logits.float().sigmoid()  # [n, Q]
                    if res.presence_logits is not None:
                        scores = scores * res.presence_logits.float().sigmoid()  # [n, 1]
                    probs = res.pred_masks.float().sigmoid()  # [n, Q, h, w]
                    for j in range(n):
                        keep = scores[j] > self.score_threshold
                        if not keep.any():
                            continue
                        m = F.interpolate(probs[j, keep][None], size=(H, W), mode="bilinear",
                                          align_corners=False)[0]
                        out[b0 + j] |= (m > self.mask_threshold).any(0).cpu()
        return out

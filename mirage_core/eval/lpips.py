"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), version 0.1 ("lin": linearly calibrated), in plain torch, from local weights only.

Definition (per image pair; ``x0``, ``x1`` ``[N, 3, H, W]`` float RGB in ``[0, 1]``):

1. ``x -> 2 x - 1`` (to ``[-1, 1]``), then the LPIPS scaling layer ``(x - SHIFT) / SCALE`` per
   channel, ``SHIFT = (-0.030, -0.088, -0.188)``, ``SCALE = (0.458, 0.448, 0.450)``.
2. The backbone's ``features`` stack, tapped after five ReLUs (``TAPS``):
   VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (indices 3, 8, 15, 22, 29; channels
   64, 128, 256, 512, 512); AlexNet relu1 .. relu5 (indices 1, 4, 7, 9, 11; channels
   64, 192, 384, 256, 256). Layer indices are torchvision's, so a torchvision state dict
   (``features.N.weight`` / ``features.N.bias``; ``classifier.*`` ignored) loads as-is.
3. Per tap ``l`` with features ``f [N, C_l, H_l, W_l]``: unit-normalise along channels,
   ``f / (sqrt(sum_c f^2) + 1e-10)``; squared difference of the two images' normalised
   features; weighted sum over channels with the learned linear weights ``w_l [1, C_l, 1, 1]``
   (a 1 x 1 convolution without bias; the v0.1 weights are non-negative and used as given);
   mean over the ``H_l x W_l`` positions.
4. ``d(x0, x1) = sum_l`` of those five numbers: ``[N]``, 0 for identical images.

Weights (nothing is downloaded; :class:`~mirage_core.errors.WeightsNotFoundError` otherwise):

* the **backbone**: torchvision's ImageNet checkpoint, ``vgg16-397923af.pth`` or
  ``alexnet-owt-7be5be79.pth`` (torchvision's model zoo, ``download.pytorch.org/models/``);
* the **linear layers**: ``vgg.pth`` / ``alex.pth`` from the ``lpips`` PyPI package's
  ``lpips/weights/v0.1/`` (keys ``lin{l}.model.1.weight``, shape ``[1, C_l, 1, 1]``).

:meth:`LPIPS.from_file` takes either a directory holding both files, or one ``.safetensors``
/ ``.pth`` file holding both key sets, as written by
``python -m mirage_core.eval.lpips pack --net vgg --backbone vgg16-397923af.pth
--linear vgg.pth --out lpips_vgg.safetensors``. ``python -m mirage_core.eval.lpips score
--weights PATH --net vgg A.png B.png`` prints the distance of two images.

:class:`LPIPS` (``forward``) is the fast path; :func:`lpips_reference` computes the same
distance in float64 with explicit loops over pixels and channels for tests on tiny images.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mirage_core.errors import MirageInputError, ShapeError, WeightsNotFoundError

__all__ = [
    "BACKBONE_GLOB",
    "CHANNELS",
    "LINEAR_FILE",
    "LPIPS",
    "MIN_SIDE",
    "NETS",
    "SCALE",
    "SHIFT",
    "TAPS",
    "alexnet_features",
    "check_state_dict",
    "expected_shapes",
    "load_state_dict",
    "lpips_reference",
    "main",
    "pack",
    "vgg16_features",
]

NETS = ("vgg", "alex")
SHIFT = (-0.030, -0.088, -0.188)  # LPIPS scaling layer, applied to [-1, 1] RGB
SCALE = (0.458, 0.448, 0.450)
TAPS = {"vgg": (3, 8, 15, 22, 29), "alex": (1, 4, 7, 9, 11)}  # features indices (after ReLU)
CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}
MIN_SIDE = {"vgg": 16, "alex": 31}  # smallest H, W for which every tap is non-empty
EPS = 1e-10  # added to the channel norm before dividing
BACKBONE_GLOB = {"vgg": "vgg16*.pth", "alex": "alexnet*.pth"}  # in a weights directory
LINEAR_FILE = {"vgg": "vgg.pth", "alex": "alex.pth"}
_BACKBONE_SOURCE = {
    "vgg": "vgg16-397923af.pth from torchvision's model zoo "
           "(https://download.pytorch.org/models/vgg16-397923af.pth)",
    "alex": "alexnet-owt-7be5be79.pth from torchvision's model zoo "
            "(https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)",
}
_IGNORED_PREFIXES = ("classifier.",)  # torchvision checkpoint keys LPIPS does not use


def _linear_key(i: int) -> str:
    """Key of tap ``i``'s linear weights ``[1, C_i, 1, 1]`` in the lpips v0.1 files."""
    return f"lin{i}.model.1.weight"


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` (no batch norm), same indices 0 .. 30."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, v, kernel_size=3, padding=1), nn.ReLU()]
            c_in = v
    return nn.Sequential(*layers)


def alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features``, same indices 0 .. 12."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(),  # 0, 1
        nn.MaxPool2d(kernel_size=3, stride=2),  # 2
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(),  # 3, 4
        nn.MaxPool2d(kernel_size=3, stride=2),  # 5
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),  # 6, 7
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),  # 8, 9
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),  # 10, 11
        nn.MaxPool2d(kernel_size=3, stride=2),  # 12
    )


class _Linear(nn.Module):
    """One tap's linear layer. ``model[0]`` stands for the lpips package's Dropout (identity
    at evaluation) so that the parameter key is the v0.1 files' ``lin{i}.model.1.weight``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))


def _check_net(net: str) -> str:
    if net not in NETS:
        raise MirageInputError(f"net must be one of {NETS}, got {net!r}")
    return net


class LPIPS(nn.Module):
    """LPIPS v0.1 distance (module docstring). Build with :meth:`from_file`; ``LPIPS(net)``
    alone has random weights (tests).

    State dict keys: ``features.N.weight`` / ``features.N.bias`` (torchvision's) and
    ``lin{l}.model.1.weight`` ``[1, C_l, 1, 1]`` (lpips v0.1's), nothing else.
    """

    def __init__(self, net: str = "vgg") -> None:
        super().__init__()
        self.net = _check_net(net)
        self.features = vgg16_features() if net == "vgg" else alexnet_features()
        for i, c in enumerate(CHANNELS[net]):
            self.add_module(f"lin{i}", _Linear(c))
        self.eval()
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | Path, net: str = "vgg") -> LPIPS:
        """Load backbone + linear weights from a directory or a single file (see
        :func:`load_state_dict`). Returns the model on the CPU in eval mode, no gradients."""
        sd = {k: v.to(torch.float32).contiguous() for k, v in load_state_dict(path, net).items()}
        with torch.device("meta"):  # no random init of parameters that are replaced anyway
            model = cls(net)
        model.load_state_dict(sd, assign=True)
        return model.eval().requires_grad_(False)

    def linear_weights(self) -> list[torch.Tensor]:
        """The five linear weights, ``[1, C_l, 1, 1]`` each."""
        return [getattr(self, f"lin{i}").model[1].weight for i in range(len(TAPS[self.net]))]

    def check_inputs(self, x0: torch.Tensor, x1: torch.Tensor) -> None:
        """Raise :class:`ShapeError` / :class:`MirageInputError` unless ``x0``, ``x1`` are
        floating ``[N, 3, H, W]`` of one shape in ``[0, 1]`` with ``H, W >= MIN_SIDE[net]``."""
        for name, x in (("x0", x0), ("x1", x1)):
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                raise MirageInputError(
                    f"{name} must be a floating torch tensor [N, 3, H, W] in [0, 1], got "
                    f"{type(x).__name__} {getattr(x, 'dtype', '')}"
                )
            if x.ndim != 4 or x.shape[0] < 1:
                raise ShapeError(f"{name} must have shape [N, 3, H, W], got {tuple(x.shape)}")
            if x.shape[1] != 3:
                raise ShapeError(f"{name} must have 3 (RGB) channels in dim 1 ([N, 3, H, W]), "
                                 f"got shape {tuple(x.shape)}")
        if x0.shape != x1.shape:
            raise ShapeError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and "
                             f"{tuple(x1.shape)}")
        h, w = x0.shape[2:]
        m = MIN_SIDE[self.net]
        if h < m or w < m:
            raise ShapeError(f"LPIPS-{self.net} needs images of at least {m} x {m}, got "
                             f"H x W = {h} x {w}")
        for name, x in (("x0", x0), ("x1", x1)):
            lo, hi = float(x.min()), float(x.max())
            if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
                raise MirageInputError(f"{name} has values in [{lo:.6g}, {hi:.6g}]; LPIPS takes "
                                       "images in [0, 1] (divide uint8 by 255)")

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone activations at ``TAPS`` for scaled inputs ``[N, 3, H, W]``:
        ``[N, C_l, H_l, W_l]`` for ``l = 0 .. 4``."""
        taps, last = TAPS[self.net], TAPS[self.net][-1]
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                out.append(x)
            if i == last:
                break
        return out

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image pair.

        Args:
            x0, x1: ``[N, 3, H, W]`` float RGB in ``[0, 1]``, ``H, W >= MIN_SIDE[net]``.
        Returns:
            ``[N]`` in the module's dtype (float32 unless converted).
        """
        self.check_inputs(x0, x1)
        n = x0.shape[0]
        p = next(self.parameters())
        x = torch.cat([x0, x1]).to(p.device, p.dtype)  # one backbone pass for both: [2N, 3, H, W]
        shift = torch.tensor(SHIFT, dtype=p.dtype, device=p.device).view(1, 3, 1, 1)
        scale = torch.tensor(SCALE, dtype=p.dtype, device=p.device).view(1, 3, 1, 1)
        x = (2.0 * x - 1.0 - shift) / scale
        d = torch.zeros(n, dtype=p.dtype, device=p.device)
        for f, w in zip(self.taps(x), self.linear_weights(), strict=True):
            f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)  # [2N, C_l, H_l, W_l]
            diff = (f[:n] - f[n:]).pow(2)
            d = d + F.conv2d(diff, w).mean(dim=(1, 2, 3))  # [N, 1, H_l, W_l] -> [N]
        return d


def lpips_reference(model: LPIPS, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Slow, obvious LPIPS: float64, explicit loops over images, taps, pixels and channels.

    Same arguments and result as ``model(x0, x1)`` (``[N, 3, H, W]`` in ``[0, 1]`` -> ``[N]``,
    here float64). The backbone convolutions are the model's layers run in float64; the input
    scaling, normalisation, weighting and averaging are written out element by element. Use
    only on tiny images (tests).
    """
    model.check_inputs(x0, x1)
    net = model.net
    layers = copy.deepcopy(model.features).cpu().double()
    weights = [w.detach().double().cpu().view(-1) for w in model.linear_weights()]  # [C_l]
    n = x0.shape[0]
    result = torch.zeros(n, dtype=torch.float64)
    for i in range(n):
        feats = []
        for img in (x0[i], x1[i]):
            x = img.detach().double().cpu().clone()  # [3, H, W]
            for c in range(3):
                x[c] = ((2.0 * x[c] - 1.0) - SHIFT[c]) / SCALE[c]
            h = x[None]
            taps = []
            for k, layer in enumerate(layers[:TAPS[net][-1] + 1]):
                h = layer(h)
                if k in TAPS[net]:
                    taps.append(h[0])  # [C_l, H_l, W_l]
            feats.append(taps)
        total = 0.0
        for t in range(len(TAPS[net])):
            c_l, h_l, w_l = feats[0][t].shape
            fa, fb, w = feats[0][t].tolist(), feats[1][t].tolist(), weights[t].tolist()
            acc = 0.0
            for y in range(h_l):
                for q in range(w_l):
                    na = sum(fa[c][y][q] ** 2 for c in range(c_l)) ** 0.5 + EPS
                    nb = sum(fb[c][y][q] ** 2 for c in range(c_l)) ** 0.5 + EPS
                    acc += sum(w[c] * (fa[c][y][q] / na - fb[c][y][q] / nb) ** 2
                               for c in range(c_l))
            total += acc / (h_l * w_l)
        result[i] = total
    return result


# ------------------------------------------------------------------ weights


def expected_shapes(net: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of every tensor an LPIPS-``net`` state dict must hold."""
    with torch.device("meta"):  # shapes only, no memory, no init
        model = LPIPS(_check_net(net))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _read_tensor_file(path: Path, net: str) -> dict[str, torch.Tensor]:
    """``.safetensors`` or ``.pth`` -> ``{key: tensor}``; a safetensors file's ``net`` metadata
    (if any) must equal ``net``."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types
            raise MirageInputError(f"{path}: cannot read as safetensors: {e}") from e
        if "net" in meta and meta["net"] != net:
            raise MirageInputError(f"{path} holds LPIPS-{meta['net']} weights (metadata "
                                   f"net={meta['net']!r}), but net={net!r} was asked for")
        return sd
    if suffix in (".pth", ".pt"):
        try:
            sd = torch.load(str(path), weights_only=True, map_location="cpu")
        except Exception as e:  # pickle / zip errors, or a non-weights pickle
            raise MirageInputError(f"{path}: cannot load as a torch state dict "
                                   f"(torch.load weights_only=True): {e}") from e
        if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor)
                                                  for v in sd.values()):
            raise MirageInputError(f"{path}: expected a state dict {{key: tensor}}, got "
                                   f"{type(sd).__name__}")
        return dict(sd)
    raise MirageInputError(f"{path}: unknown weights file type {suffix!r}; expected "
                           ".safetensors or .pth")


def _missing_message(net: str, where: Path, what: str) -> str:
    return (
        f"{what} for LPIPS-{net} in {where}. A weights directory must hold (1) the torchvision "
        f"backbone {BACKBONE_GLOB[net]!r}: {_BACKBONE_SOURCE[net]}, and (2) the linear layers "
        f"{LINEAR_FILE[net]!r}: from the `lpips` PyPI package, lpips/weights/v0.1/"
        f"{LINEAR_FILE[net]}. Or pass one file packed with `python -m mirage_core.eval.lpips "
        f"pack`. Nothing is downloaded."
    )


def _find_in_dir(d: Path, net: str) -> tuple[Path, Path]:
    """(backbone file, linear file) in directory ``d``."""
    backbone = sorted(p for p in d.glob(BACKBONE_GLOB[net])
                      if p.is_file() and "_bn" not in p.name)  # vgg16_bn is another network
    if not backbone:
        raise WeightsNotFoundError(_missing_message(net, d, f"no backbone file "
                                                            f"{BACKBONE_GLOB[net]!r}"))
    if len(backbone) > 1:
        raise MirageInputError(f"{d}: several backbone files match {BACKBONE_GLOB[net]!r}: "
                               f"{[p.name for p in backbone]}; keep one")
    linear = d / LINEAR_FILE[net]
    if not linear.is_file():
        raise WeightsNotFoundError(_missing_message(net, d, f"no linear-layer file "
                                                            f"{LINEAR_FILE[net]!r}"))
    return backbone[0], linear


def check_state_dict(sd: Mapping[str, torch.Tensor], net: str, source: str) -> dict:
    """Validate ``sd`` against :func:`expected_shapes` (``classifier.*`` keys are dropped);
    return the cleaned dict. Raises :class:`MirageInputError` naming missing / unexpected /
    mis-shaped keys and ``source``."""
    exp = expected_shapes(net)
    sd = {k: v for k, v in sd.items() if not k.startswith(_IGNORED_PREFIXES)}
    missing = [k for k in exp if k not in sd]
    extra = [k for k in sd if k not in exp]
    shapes = [f"{k}: {tuple(sd[k].shape)} (expected {exp[k]})" for k in exp
              if k in sd and tuple(sd[k].shape) != exp[k]]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if extra:
        problems.append(f"unexpected keys {extra}")
    if shapes:
        problems.append(f"wrong shapes {shapes}")
    if problems:
        raise MirageInputError(
            f"{source}: not LPIPS-{net} weights: {'; '.join(problems)}. Expected torchvision "
            f"'features.N.weight/bias' keys and lpips v0.1 'lin{{l}}.model.1.weight' "
            f"[1, C, 1, 1] keys (net={net!r}: is the net right?)"
        )
    return sd


def load_state_dict(path: str | Path, net: str = "vgg") -> dict[str, torch.Tensor]:
    """LPIPS-``net`` state dict from ``path``.

    Args:
        path: a directory holding the torchvision backbone (``BACKBONE_GLOB[net]``) and the
            lpips linear file (``LINEAR_FILE[net]``), or one ``.safetensors`` / ``.pth`` file
            holding both key sets.
        net: ``"vgg"`` or ``"alex"``.
    Returns:
        ``{key: tensor}`` with exactly the keys of ``LPIPS(net).state_dict()``.
    Raises:
        WeightsNotFoundError: ``path`` does not exist, or the directory lacks a file.
        MirageInputError: bad net name, unreadable file, missing / extra / mis-shaped keys.
    """
    net = _check_net(net)
    p = Path(path).expanduser()
    if not p.exists():
        raise WeightsNotFoundError(_missing_message(net, p, "weights path does not exist"))
    if p.is_dir():
        backbone, linear = _find_in_dir(p, net)
        sd = _read_tensor_file(backbone, net)
        lin = _read_tensor_file(linear, net)
        both = set(sd) & set(lin)
        if both:
            raise MirageInputError(f"{backbone} and {linear} share keys {sorted(both)}")
        sd.update(lin)
        source = f"{backbone} + {linear}"
    else:
        sd = _read_tensor_file(p, net)
        source = str(p)
    return check_state_dict(sd, net, source)


def pack(net: str, backbone: str | Path, linear: str | Path, out: str | Path) -> Path:
    """Write the single-file form: both key sets in one safetensors file (metadata ``net``)."""
    from safetensors.torch import save_file

    net = _check_net(net)
    sd: dict[str, torch.Tensor] = {}
    for f in (backbone, linear):
        f = Path(f)
        if not f.is_file():
            raise WeightsNotFoundError(_missing_message(net, f, "no such file"))
        sd.update(_read_tensor_file(f, net))
    sd = check_state_dict(sd, net, f"{backbone} + {linear}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to(torch.float32).contiguous() for k, v in sd.items()}, str(out),
              metadata={"net": net, "lpips_version": "0.1"})
    return out


# ------------------------------------------------------------------ CLI


def _load_image(path: str | Path) -> torch.Tensor:
    """An image file -> ``[1, 3, H, W]`` float32 in ``[0, 1]``."""
    import numpy as np
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise MirageInputError(f"image {str(p)!r} does not exist")
    with Image.open(p) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0  # [H, W, 3]
    return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mirage_core.eval.lpips {pack,score} ...``."""
    ap = argparse.ArgumentParser(prog="python -m mirage_core.eval.lpips",
                                 description="LPIPS v0.1 from local weights (docs/evaluation.md).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="write backbone + linear weights as one safetensors file")
    pk.add_argument("--net", choices=NETS, default="vgg")
    pk.add_argument("--backbone", required=True,
                    help="torchvision checkpoint, e.g. vgg16-397923af.pth")
    pk.add_argument("--linear", required=True, help="lpips/weights/v0.1/vgg.pth (or alex.pth)")
    pk.add_argument("--out", required=True, help="output .safetensors")
    sc = sub.add_parser("score", help="print the LPIPS distance of two images of one size")
    sc.add_argument("--weights", required=True, help="weights directory or packed file")
    sc.add_argument("--net", choices=NETS, default="vgg")
    sc.add_argument("--device", default="cpu")
    sc.add_argument("images", nargs=2)
    a = ap.parse_args(argv)
    if a.cmd == "pack":
        print(f"wrote {pack(a.net, a.backbone, a.linear, a.out)}")
        return 0
    model = LPIPS.from_file(a.weights, net=a.net).to(a.device)
    with torch.no_grad():
        d = model(_load_image(a.images[0]), _load_image(a.images[1]))
    print(f"{float(d[0]):.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How much of the latent memory's coverage gap a one-cell hole fill closes (docs/model_card.md).

The latent readout leaves holes where one memory point per cell spreads out over the target
view (``scripts/readout_grid.py``). This fills each uncovered cell that has covered
4-neighbours with their mean latent (a post-process the project does *not* apply: the model
is trained on the readout with its holes, as in the paper) and reports, for chunk ``--chunk``'s
training readouts of the first ``--clips`` clips of a held-out store (memory of ground-truth
frames, ``chunk_inputs``, shipped codec):

- the share of target cells covered by the latent readout, by it after the fill, and by the
  RGB cache's readout;
- the latent mean squared error against the target latents: of the latent readout on its
  cells; of the filled cells and of the RGB cache on the filled cells the RGB cache covers;
  of the filled cells and of predicting zero (the latents' mean) on those it does not cover.

    python scripts/readout_holefill.py WEIGHTS STORE [--clips 16] [--chunk 1]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F


def fill_holes(z: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill uncovered cells from their covered 4-neighbours.

    Args:
        z: ``[C, n, h, w]`` readout latents.
        mask: ``[n, h, w]`` bool, True where the readout covers the cell.
    Returns:
        ``(z_filled [C, n, h, w], filled [n, h, w] bool)``: ``z`` with each uncovered cell
        that has at least one covered 4-neighbour set to their mean, and which cells those are.
    """
    m = mask.float()[:, None]  # [n, 1, h, w]
    ker = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    count = F.conv2d(m, ker, padding=1)[:, 0]  # [n, h, w]
    zm = (z.permute(1, 0, 2, 3) * m).reshape(-1, 1, *z.shape[-2:])  # [n*C, 1, h, w]
    total = F.conv2d(zm, ker, padding=1).reshape(z.shape[1], z.shape[0], *z.shape[-2:])
    filled = ~mask & (count > 0)
    mean = (total / count.clamp(min=1)[:, None]).permute(1, 0, 2, 3)
    return torch.where(filled[None], mean, z), filled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", help="weights directory whose codec encoded the store")
    ap.add_argument("store", help="held-out store (mirage data synth --held-out)")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=1)
    a = ap.parse_args()
    from readout_grid import paired_readouts

    from mirage_core.data.lmdb_store import ClipStore
    from mirage_core.generator.loading import load_models

    codec = load_models(a.weights, device="cpu", load_text_encoder=False).vae
    n = {k: 0 for k in ("cells", "latent", "filled", "rgb", "fill_rgb", "fill_only")}
    sq = {k: 0.0 for k in ("latent", "fill_rgb", "rgb_on_fill", "fill_only", "zero_on_fill")}
    with ClipStore(a.store) as st:
        for ci in range(min(a.clips, len(st))):
            inp, k = paired_readouts(st[ci], codec, a.chunk)
            x0 = inp["latent"].targets[0]  # [C, n, h, w]
            z, m = inp["latent"].readout[0, :, k:], inp["latent"].mask[0, k:] > 0
            zr, mr = inp["rgb_cache"].readout[0, :, k:], inp["rgb_cache"].mask[0, k:] > 0
            zf, filled = fill_holes(z, m)

            def err(y: torch.Tensor, x0: torch.Tensor = x0) -> torch.Tensor:
                return ((y - x0) ** 2).mean(0)  # [n, h, w]

            n["cells"] += m.numel()
            n["latent"] += int(m.sum())
            n["filled"] += int(filled.sum())
            n["rgb"] += int(mr.sum())
            n["fill_rgb"] += int((filled & mr).sum())
            n["fill_only"] += int((filled & ~mr).sum())
            sq["latent"] += float(err(z)[m].sum())
            sq["fill_rgb"] += float(err(zf)[filled & mr].sum())
            sq["rgb_on_fill"] += float(err(zr)[filled & mr].sum())
            sq["fill_only"] += float(err(zf)[filled & ~mr].sum())
            sq["zero_on_fill"] += float((x0**2).mean(0)[filled & ~mr].sum())
    c = n["cells"]
    print(f"covered: latent {n['latent'] / c:.1%}, "
          f"latent + fill {(n['latent'] + n['filled']) / c:.1%}, RGB cache {n['rgb'] / c:.1%}")
    print(f"MSE: latent on its cells {sq['latent'] / max(n['latent'], 1):.3f}")
    print(f"MSE on the {n['fill_rgb']} filled cells the RGB cache covers: fill "
          f"{sq['fill_rgb'] / max(n['fill_rgb'], 1):.3f}, RGB cache "
          f"{sq['rgb_on_fill'] / max(n['fill_rgb'], 1):.3f}")
    print(f"MSE on the {n['fill_only']} filled cells it does not: fill "
          f"{sq['fill_only'] / max(n['fill_only'], 1):.3f}, zero "
          f"{sq['zero_on_fill'] / max(n['fill_only'], 1):.3f}")


if __name__ == "__main__":
    with torch.no_grad():
        main()

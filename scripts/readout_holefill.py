"""How much of the latent memory's coverage gap a one-cell hole fill closes (docs/model_card.md).

The latent readout leaves holes where one memory point per cell spreads out over the target
view (``scripts/readout_grid.py``). This fills each uncovered cell that has covered
4-neighbours with their mean latent (one pass of ``mirage_core.memory.hole_fill``, the
readout option ``MemoryConfig.hole_fill``; off by default, as in the paper) and reports, for
chunk ``--chunk``'s training readouts of the first ``--clips`` clips of a held-out store
(memory of ground-truth frames, ``chunk_inputs``, shipped codec):

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
    from mirage_core.memory.hole_fill import fill_holes

    codec = load_models(a.weights, device="cpu", load_text_encoder=False).vae
    n = {k: 0 for k in ("cells", "latent", "filled", "rgb", "fill_rgb", "fill_only")}
    sq = {k: 0.0 for k in ("latent", "fill_rgb", "rgb_on_fill", "fill_only", "zero_on_fill")}
    with ClipStore(a.store) as st:
        for ci in range(min(a.clips, len(st))):
            inp, k = paired_readouts(st[ci], codec, a.chunk)
            x0 = inp["latent"].targets[0]  # [C, n, h, w]
            z, m = inp["latent"].readout[0, :, k:], inp["latent"].mask[0, k:] > 0
            zr, mr = inp["rgb_cache"].readout[0, :, k:], inp["rgb_cache"].mask[0, k:] > 0
            no_depth = torch.zeros_like(m, dtype=z.dtype)
            zf, _, _, filled = fill_holes(z.permute(1, 0, 2, 3), m, no_depth, 1)  # [n, C, h, w]
            zf = zf.permute(1, 0, 2, 3)  # [C, n, h, w]

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

"""Latent memory against the RGB cache with ground-truth frames, at several latent grid sizes.

Why the RGB cache beat the latent memory at 64 x 96 (docs/model_card.md): is it the coarse
8 x 12 latent grid? For each store (held-out clips made by ``mirage data synth --held-out``
with the model's codec, at one resolution each), it builds chunk ``--chunk``'s training
readout both ways (:func:`~mirage_core.train.readouts.chunk_inputs`, ``conditioning``
``"latent"`` and ``"rgb_cache"``: the memory holds the clip's ground-truth frames, as in
training) and prints, per resolution:

- the share of target latent cells each readout covers;
- on the cells both cover, the latent mean squared error of each readout against the target
  latents, and the PSNR of each readout decoded as images (``codec.decode``) against the
  target latents decoded the same way (so codec error is left out).

    python scripts/readout_grid.py WEIGHTS STORE [STORE ...] [--clips 8] [--chunk 1]
"""

from __future__ import annotations

import argparse
import math

import torch

#: the two readouts compared (``chunk_inputs``'s ``conditioning``)
MODES = ("latent", "rgb_cache")


def paired_readouts(clip, codec, chunk: int) -> tuple[dict, int]:
    """Chunk ``chunk``'s training inputs of ``clip`` under each of :data:`MODES` (the memory
    holds the clip's ground-truth frames, as in training), and the number ``k`` of clean
    (overlap) latents before the targets: ``readout[0, :, k:]`` is ``[C, n, h, w]`` and
    ``mask[0, k:]`` ``[n, h, w]`` for the ``n`` target latents."""
    from mirage_core.train.readouts import chunk_inputs

    inp = {m: chunk_inputs(clip, codec.channels, codec.stride, "cpu", 9, True, chunk=chunk,
                           conditioning=m, codec=codec)
           for m in MODES}
    return inp, inp["latent"].clean.shape[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", help="weights directory whose codec encoded the stores")
    ap.add_argument("stores", nargs="+", help="held-out stores, one resolution each")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=1)
    a = ap.parse_args()
    from mirage_core.data.lmdb_store import ClipStore
    from mirage_core.generator.loading import load_models

    codec = load_models(a.weights, device="cpu", load_text_encoder=False).vae
    s = codec.stride
    print("| resolution | latent grid | covered: latent | covered: RGB cache | latent MSE both: "
          "latent | RGB cache | decoded PSNR both (dB): latent | RGB cache |")
    print("|---|---|---|---|---|---|---|---|")
    for path in a.stores:
        cov = dict.fromkeys(MODES, 0.0)
        mse = dict.fromkeys(MODES, 0.0)
        sq = dict.fromkeys(MODES, 0.0)
        cells = px = both_cells = 0.0
        with ClipStore(path) as st:
            for ci in range(min(a.clips, len(st))):
                inp, k = paired_readouts(st[ci], codec, a.chunk)
                x0 = inp["latent"].targets[0].permute(1, 0, 2, 3)  # [n, C, h, w]
                masks = {m: v.mask[0, k:] > 0 for m, v in inp.items()}  # [n, h, w]
                both = masks["latent"] & masks["rgb_cache"]
                cells += both.numel()
                both_cells += float(both.sum())
                up = both.repeat_interleave(s, 1).repeat_interleave(s, 2)[:, None]  # [n,1,H,W]
                gt = codec.decode(x0).clamp(0, 1)
                for m, v in inp.items():
                    z = v.readout[0, :, k:].permute(1, 0, 2, 3)
                    cov[m] += float(masks[m].sum())
                    mse[m] += float(((z - x0) ** 2).mean(1)[both].sum())
                    img = codec.decode(z).clamp(0, 1)
                    sq[m] += float((((img - gt) ** 2) * up).sum()) / 3
                px += float(up.sum())
        h, w = x0.shape[-2:]
        row = [f"{h * s} x {w * s}", f"{h} x {w}"]
        row += [f"{100 * cov[m] / cells:.0f} %" for m in cov]
        row += [f"{mse[m] / max(both_cells, 1):.3f}" for m in mse]
        row += [f"{10 * math.log10(1 / max(sq[m] / max(px, 1), 1e-12)):.2f}" for m in sq]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    with torch.no_grad():
        main()

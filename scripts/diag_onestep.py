"""Diagnose a trained small model: its one-step x0 estimates by noise level (docs/model_card.md).

For chunks 0 and 1 of the first N clips of a held-out store encoded with the model's codec,
at noise levels sigma, it noises the target latents (``x_t = (1 - sigma) x0 + sigma eps``),
asks the model for ``v`` (with the memory readout, and with ``conditioning_scale`` 0 = no
memory; the readout with the hole fill the model runs with) and reports, in the codec's
normalised latent units:

- ``v-loss``: the training loss ``mean((v - (eps - x0))^2)``;
- ``x0-MSE``: of the one-step estimate ``x0_hat = x_t - sigma v``;
- ``prior``: the x0-MSE of the best linear estimate that knows nothing but ``x_t`` and each
  channel's variance ``v`` over these chunks, the mean over channels of
  ``v sigma^2 / ((1 - sigma)^2 v + sigma^2)`` (a model above it has learnt nothing useful);
- once: the readout's MSE against ``x0`` on the cells it covers, unweighted and weighted by
  each channel's decoded pixel energy (the codec's ``scale^2``), relative to the signal.

    python scripts/diag_onestep.py WEIGHTS_DIR STORE [--clips 4]
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", help="exported small model (python -m mirage_core.train.export)")
    ap.add_argument("store", help="held-out store encoded with the model's codec")
    ap.add_argument("--clips", type=int, default=4)
    a = ap.parse_args()
    from mirage_core.data.lmdb_store import ClipStore
    from mirage_core.generator.loading import load_models
    from mirage_core.memory import MemoryConfig
    from mirage_core.train.loop import encode_empty_prompt
    from mirage_core.train.readouts import chunk_inputs

    m = load_models(a.weights, device="cpu")
    clf = m.chunk_latent_frames
    C, s = m.vae.channels, m.vae.stride
    w = getattr(m.vae, "scale", torch.ones(C)).pow(2).view(1, C, 1, 1, 1)
    text = encode_empty_prompt(m)
    g = torch.Generator().manual_seed(0)
    rows: dict = {}
    sq = torch.zeros(C, dtype=torch.float64)
    count = 0
    ro_err = ro_w = sig_w = cells = 0.0
    n = 0
    with ClipStore(a.store) as st:
        for ci in range(min(a.clips, len(st))):
            for chunk in (0, 1):
                inp = chunk_inputs(st[ci], C, s, "cpu", clf, True, chunk=chunk,
                                   memory_config=MemoryConfig(hole_fill=m.readout_hole_fill))
                x0, k = inp.targets, inp.clean.shape[2]
                sq += x0.double().pow(2).sum(dim=(0, 2, 3, 4))
                count += x0[0, 0].numel()
                ro, mk = inp.readout[:, :, k:], inp.mask[:, k:].unsqueeze(1)
                ro_err += float(((ro - x0) ** 2 * mk).sum()) / C
                ro_w += float((w * (ro - x0) ** 2 * mk).sum())
                sig_w += float((w * x0**2 * mk).sum())
                cells += float(mk.sum())
                n += 1
                for sigma in (0.1, 0.3, 0.5, 0.7, 0.9):
                    eps = torch.randn(x0.shape, generator=g)
                    xt = (1 - sigma) * x0 + sigma * eps
                    t = torch.tensor([1000.0 * sigma])
                    for mem in (1.0, 0.0):
                        with torch.no_grad():
                            v = m.transformer(torch.cat([inp.clean, xt], 2), t, inp.labels,
                                              text, inp.readout, inp.mask,
                                              conditioning_scale=mem)[:, :, k:]
                        r = rows.setdefault((sigma, mem), [0.0, 0.0])
                        r[0] += float(((v - (eps - x0)) ** 2).mean())
                        r[1] += float(((xt - sigma * v - x0) ** 2).mean())
    print(f"{n} chunks; readout MSE on covered cells {ro_err / max(cells, 1):.3f} (latent units), "
          f"pixel-energy-weighted error / signal {ro_w / max(sig_w, 1e-12):.3f}")
    var = sq / count  # per channel (latents have zero mean over the training frames)
    print("sigma  memory  v-loss  x0-MSE  prior")
    for (sigma, mem), r in sorted(rows.items()):
        prior = float((var * sigma**2 / ((1 - sigma) ** 2 * var + sigma**2)).mean())
        print(f"{sigma:5.1f}  {'yes' if mem else 'no':>6}  {r[0] / n:6.3f}  {r[1] / n:6.3f}  "
              f"{prior:5.3f}")


if __name__ == "__main__":
    main()

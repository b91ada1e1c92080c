"""Where the model loses to its own readout: revisit error by PCA component (docs/model_card.md).

For held-out rooms 0..N-1 (``mirage eval heldout``'s rooms, paths and ground-truth depth and
masks) it rolls the model out with its latent memory and, for every target latent of the
revisit quarter (latent ``j`` with ``4 j`` in the last quarter of the clip), compares on the
cells the readout covers:

- the model's denoised latent ``z_model``,
- the readout it was given ``z_readout`` (what pasting the memory gives),
- the ground truth ``z_gt`` (the clip encoded with the same codec),

component by component of the PCA codec. The codec's basis is orthonormal, so the decoded
pixel error of a cell is exactly ``sum_c scale_c^2 (z_c - z_gt_c)^2 / (36 D)`` (pixels in
[0, 1], the packed blocks in [-3, 3]; before clipping). The script prints that error split
into component bands (coarse to fine), for the model, the readout and the ground truth's own
energy (the error of predicting the codec mean) and the model's and the readout's own
energies (a sampler that draws detail it cannot predict has the ground truth's energy and
twice its error), and the PSNR each would give if only the
first ``k`` components were kept (both truncated alike: a diagnostic, not a method).

    python scripts/diag_components.py [WEIGHTS_DIR] [--clips 16] [--steps 40]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", nargs="?", default=None, help="default: the shipped model")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args()
    if a.clips < 1 or a.steps < 1:
        ap.error("--clips and --steps must be >= 1")
    try:
        run(a.weights, a.clips, a.steps)
    except (ValueError, FileNotFoundError) as e:  # bad weights or input: one line, no trace
        ap.exit(2, f"{ap.prog}: error: {e}\n")


def run(weights: str | None, n_clips: int, steps: int) -> None:
    """The diagnostic (module docstring) on ``n_clips`` held-out rooms, printed."""
    import mirage_core.rollout.chunked as chunked
    from mirage_core.codecs import PCAVideoCodec, SpaceTimeToDepthCodec
    from mirage_core.data.synth import SYNTH_PROMPT
    from mirage_core.eval.heldout import _revisit_frames, heldout_case
    from mirage_core.generator.loading import default_weights_dir, load_models

    models = load_models(weights or str(default_weights_dir()), device="cpu")
    vae = models.vae
    if not isinstance(vae, PCAVideoCodec):
        raise SystemExit("this diagnostic needs a model with the PCA codec")
    # [C] decoded pixel energy of one latent unit: the basis is orthonormal in the packed
    # blocks' units, which map [0, 1] pixels to [-LATENT_SCALE, LATENT_SCALE]
    w2 = vae.scale.cpu().double() ** 2 / (2 * SpaceTimeToDepthCodec.LATENT_SCALE) ** 2
    D = vae.mean.numel()
    captured = []
    real = chunked.denoise_chunk

    def spy(model, clean, labels, text, readout, mask, cfg, seed, step_callback=None):
        x, t = real(model, clean, labels, text, readout, mask, cfg, seed, step_callback)
        n = x.shape[2]
        captured.append((x[0].cpu(), readout[0, :, -n:].cpu(), mask[0, -n:].cpu() > 0))
        return x, t

    chunked.denoise_chunk = spy
    err_m = torch.zeros(vae.channels, dtype=torch.float64)
    err_r = torch.zeros_like(err_m)
    energy = torch.zeros_like(err_m)
    energy_m = torch.zeros_like(err_m)
    energy_r = torch.zeros_like(err_m)
    cells = 0
    for i in range(n_clips):
        case = heldout_case(i, models.image_hw or (64, 96))
        revisit = set(_revisit_frames(len(case.trajectory)))
        gt = torch.from_numpy(case.gt).permute(3, 0, 1, 2)[None].float() / 255.0
        z_gt = vae.encode_video(gt)[0].cpu()  # [C, t, h, w]
        depth, masks = case.providers()
        rcfg = chunked.RolloutConfig.for_models(models, steps, progress=False)
        captured.clear()
        plans = []
        for ch in chunked.MirageRollout(models, depth, masks, rcfg).run(
                case.image, case.trajectory, prompt=SYNTH_PROMPT):
            plans.append(ch.plan)
        for plan, (zm, zr, vis) in zip(plans, captured, strict=True):
            for k, (j, f) in enumerate(zip(plan.latent_indices, plan.pose_frames, strict=True)):
                if f not in revisit:
                    continue
                sel = vis[k]  # [h, w]
                g = z_gt[:, j][:, sel].double()
                err_m += ((zm[:, k][:, sel].double() - g) ** 2).sum(1)
                err_r += ((zr[:, k][:, sel].double() - g) ** 2).sum(1)
                energy += (g ** 2).sum(1)
                energy_m += (zm[:, k][:, sel].double() ** 2).sum(1)
                energy_r += (zr[:, k][:, sel].double() ** 2).sum(1)
                cells += int(sel.sum())
        print(f"clip {i}: {cells} covered revisit cells so far", flush=True)
    chunked.denoise_chunk = real
    # pixel MSE per component, and each one's own energy about the codec mean
    pm, pr, pe, em, er = (w2 * e / (cells * D)
                          for e in (err_m, err_r, energy, energy_m, energy_r))

    def psnr(mse):
        return 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")

    print("\npixel MSE on covered revisit cells, by component band (x 1e-3):")
    print(f"{'components':<12} {'model':>8} {'readout':>8} {'gt energy':>10} "
          f"{'model energy':>13} {'readout energy':>15}")
    bands = [(0, 1), (1, 4), (4, 8), (8, 16), (16, 32), (32, vae.channels)]
    for lo, hi in bands:
        print(f"{f'{lo}-{hi - 1}':<12} {1e3 * float(pm[lo:hi].sum()):>8.3f} "
              f"{1e3 * float(pr[lo:hi].sum()):>8.3f} {1e3 * float(pe[lo:hi].sum()):>10.3f} "
              f"{1e3 * float(em[lo:hi].sum()):>13.3f} {1e3 * float(er[lo:hi].sum()):>15.3f}")
    print(f"{'all':<12} {1e3 * float(pm.sum()):>8.3f} {1e3 * float(pr.sum()):>8.3f}")
    print("\nPSNR (dB) keeping the first k components of both (the rest set to the codec mean):")
    print(f"{'k':>4} {'model':>7} {'readout':>8}")
    for k in (1, 4, 8, 16, 32, vae.channels):
        tail = pe[k:].sum()  # a dropped component's error is the ground truth's own energy
        print(f"{k:>4} {psnr(float(pm[:k].sum() + tail)):>7.2f} "
              f"{psnr(float(pr[:k].sum() + tail)):>8.2f}")
    np.set_printoptions(precision=3, suppress=True)
    print("\nper component, model / readout error ratio:")
    print((pm / pr).numpy())


if __name__ == "__main__":
    main()

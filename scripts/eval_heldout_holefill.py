"""An experiment, not a feature: ``mirage eval heldout`` with the latent readout hole-filled.

It wraps :meth:`LatentSpatialMemory.readout` for this process only so that every readout
(the rollout's, hence Mirage's and the pasted readout's) has each uncovered cell with covered
4-neighbours filled with their mean latent and depth, and marked visible
(``scripts/readout_holefill.py``: ``fill_holes``), then runs ``mirage eval heldout`` with the
given arguments. The model is the one trained on readouts with holes; the project's readout
(paper Eq. 5) is unchanged. Figures: docs/model_card.md.

    python scripts/eval_heldout_holefill.py --n-clips 16 --steps 40 \
        --variants mirage,readout --out OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from readout_holefill import fill_holes

from mirage_core.eval.heldout import main_heldout
from mirage_core.memory.latent_memory import LatentSpatialMemory

_readout = LatentSpatialMemory.readout


def _filled_readout(self, T_cam_world, K, image_hw):
    r = _readout(self, T_cam_world, K, image_hw)
    single = r.zhat.ndim == 3
    z, m, d = (x[None] if single else x for x in (r.zhat, r.mask, r.depth))  # [V, ...]
    zf, filled = fill_holes(z.permute(1, 0, 2, 3).float(), m.bool())  # [C, V, h, w]
    df, _ = fill_holes(d[None].float(), m.bool())  # [1, V, h, w]
    z, m, d = zf.permute(1, 0, 2, 3).to(z.dtype), m | filled, df[0].to(d.dtype)
    r.zhat, r.mask, r.depth = (x[0] for x in (z, m, d)) if single else (z, m, d)
    return r


if __name__ == "__main__":
    LatentSpatialMemory.readout = _filled_readout
    sys.exit(main_heldout(sys.argv[1:]))

"""Loss curves of a ``mirage train`` run, from its ``metrics.jsonl``.

``python -m mirage_core.train.plot RUN_DIR [RUN_DIR ...] OUT.png`` draws the flow-matching
loss per step (faint) with a moving average, split into steps that had the memory and steps
trained without it (``memory_dropped``), and the learning rate. Several run directories are
consecutive stages of one model (a run that continued another's export,
``config/train_small_more.yaml``): each is drawn after the previous one's last step, with a
line where it starts. TensorBoard logs the same values when it is installed
(``RUN_DIR/tensorboard``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["main", "plot_run", "read_metrics", "stage_records"]


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``RUN_DIR/metrics.jsonl`` (one per logged step)."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stage_records(run_dirs: Sequence[str | Path]) -> tuple[list[dict], list[int]]:
    """The records of consecutive stages on one step axis: each stage's steps shifted by the
    previous stages' last steps. Returns ``(records, the step each stage starts after)``."""
    recs: list[dict] = []
    starts: list[int] = []
    offset = 0
    for r in run_dirs:
        stage = read_metrics(r)
        starts.append(offset)
        recs += [{**rec, "step": rec["step"] + offset} for rec in stage]
        offset += max((rec["step"] for rec in stage), default=0)
    return recs, starts


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    if len(y) < n:
        return y
    k = np.ones(n) / n
    return np.convolve(y, k, mode="valid")


def _loss_series(recs: list[dict], dropped: bool) -> tuple[np.ndarray, np.ndarray]:
    """Steps and losses of the chunks trained with (``dropped=False``) or without memory: a
    batched run's lines carry both means (``loss_memory``, ``loss_no_memory``); a batch-1
    line is one chunk, whose ``memory_dropped`` says which."""
    key = "loss_no_memory" if dropped else "loss_memory"
    pts = [(r["step"], r[key]) if key in r else (r["step"], r["loss"]) for r in recs
           if key in r or ("loss_memory" not in r and "loss_no_memory" not in r
                           and bool(r.get("memory_dropped")) == dropped)]
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def plot_run(run_dir: str | Path | Sequence[str | Path], out: str | Path,
             window: int = 25) -> Path:
    """Write the loss/lr figure of a run (or of consecutive stages, a list of run
    directories) to ``out`` (PNG); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [Path(run_dir)] if isinstance(run_dir, (str, Path)) else [Path(r) for r in run_dir]
    recs, starts = stage_records(runs)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    for dropped, colour, name in ((False, "tab:blue", "with memory"),
                                  (True, "tab:orange", "memory dropped")):
        x, y = _loss_series(recs, dropped)
        if not len(x):
            continue
        ax.plot(x, y, color=colour, alpha=0.15, lw=0.8)
        ys = _smooth(y, window)
        ax.plot(x[len(x) - len(ys):], ys, color=colour, lw=1.8,
                label=f"{name} (moving average of {window})" if len(y) >= window
                else f"{name} (raw: fewer than {window} points)")
    for a in (ax, ax2):
        for x0 in starts[1:]:
            a.axvline(x0, color="grey", ls="--", lw=1)
    ax.set_ylabel("flow-matching loss")
    ax.set_title("mirage train: " + " + ".join(r.name for r in runs))
    ax.legend()
    ax.grid(alpha=0.3)
    ax2.plot([r["step"] for r in recs], [r["lr"] for r in recs], color="k", lw=1)
    ax2.set_ylabel("lr")
    ax2.set_xlabel("step")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mirage_core.train.plot",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", nargs="+", help="run directory; several: consecutive stages")
    ap.add_argument("out")
    a = ap.parse_args(argv)
    print(f"wrote {plot_run(a.run_dir, a.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

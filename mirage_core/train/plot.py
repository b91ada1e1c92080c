"""Loss curves of a ``mirage train`` run, from its ``metrics.jsonl``.

``python -m mirage_core.train.plot RUN_DIR OUT.png`` draws the flow-matching loss per step
(faint) with a moving average, split into steps that had the memory and steps trained
without it (``memory_dropped``), and the learning rate. TensorBoard logs the same values when
it is installed (``RUN_DIR/tensorboard``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

__all__ = ["main", "plot_run", "read_metrics"]


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``RUN_DIR/metrics.jsonl`` (one per logged step)."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    if len(y) < n:
        return y
    k = np.ones(n) / n
    return np.convolve(y, k, mode="valid")


def plot_run(run_dir: str | Path, out: str | Path, window: int = 25) -> Path:
    """Write the loss/lr figure of a run to ``out`` (PNG); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_metrics(run_dir)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    for dropped, colour, name in ((False, "tab:blue", "with memory"),
                                  (True, "tab:orange", "memory dropped")):
        sel = [r for r in recs if bool(r.get("memory_dropped")) == dropped]
        if not sel:
            continue
        x = np.array([r["step"] for r in sel])
        y = np.array([r["loss"] for r in sel])
        ax.plot(x, y, color=colour, alpha=0.15, lw=0.8)
        ys = _smooth(y, window)
        ax.plot(x[len(x) - len(ys):], ys, color=colour, lw=1.8,
                label=f"{name} (moving average of {min(window, len(y))})")
    ax.set_ylabel("flow-matching loss")
    ax.set_title(f"mirage train: {Path(run_dir).name}")
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
    ap.add_argument("run_dir")
    ap.add_argument("out")
    a = ap.parse_args(argv)
    print(f"wrote {plot_run(a.run_dir, a.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

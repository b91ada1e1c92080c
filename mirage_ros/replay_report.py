"""Image-quality report of a replay: generated frames against ground truth, per frame and chunk.

:func:`write_replay_report` matches frames by key (a frame index, or a stamp in ns; the chunk
ranges below use the same keys), computes PSNR and SSIM per matched frame with
:mod:`mirage_core.eval.image_metrics` (images scaled to ``[0, 1]``; SSIM 'valid', 11 x 11
Gaussian window, see there) and writes ``report.json`` and ``report.png`` into ``out_dir``.

Keys are integers (Python or numpy): a frame index, or a stamp in integer nanoseconds. Other
keys (e.g. stamps in float seconds) are refused: the report writes keys as integers, and
rounding would put several frames on one key.

Frames: numpy ``[H, W, 3]`` RGB, uint8 (divided by 255) or floating in ``[0, 1]``. Keys present
on one side only are listed in the report (``missing_generated``, ``unmatched_generated``) and
counted, never silently skipped.

Resolution: a matched pair of different sizes is an error unless ``resize`` says which side sets
the size: ``"gt"`` resizes the generated frame to the ground truth's size, ``"generated"`` the
ground truth to the generated frame's size (torch ``interpolate``: ``"area"`` when the target
is no larger in both dimensions, else ``"bilinear"`` with ``align_corners=False``; the result
stays float, it is not re-quantised).

Chunks: each ``chunk_timings`` dict is copied into the report as its ``timing`` and may give
its frame range as ``"rgb_frames": [first, last]`` (inclusive; the rollout's ``memory_stats.json``
records) or ``"first_frame"`` and ``"num_frames"`` (``mirage/msg/ChunkInfo``), and its id as
``"chunk"`` or ``"chunk_index"`` (default: its position). Chunks without a range get no
per-chunk metrics (``null``) and no boundary line.

``report.json`` schema (``"schema": "mirage.replay_report/1"``; JSON has no infinity: a PSNR of
``+inf``, identical frames, is written as ``null`` and counted in ``counts.identical``)::

    schema, resize ("gt" | "generated" | null),
    counts: {gt, generated, matched, missing_generated, unmatched_generated, identical,
             resized},
    missing_generated: [keys of ground-truth frames with no generated frame],
    unmatched_generated: [keys of generated frames with no ground-truth frame],
    summary: {psnr: {mean, median, min, max, n}, ssim: {mean, median, min, max, n}}
             (PSNR statistics over finite values only, n says how many),
    frames: [{key, psnr, ssim, chunk}]   (chunk: id of the first chunk whose range holds key),
    chunks: [{chunk, frames: [first, last] | null, matched, psnr_mean, psnr_median,
              ssim_mean, ssim_median, timing}],
    extra: the caller's ``extra`` dict.

``report.png``: PSNR (dB) and SSIM against the frame key, chunk starts as dashed lines, keys
of ground-truth frames without a generated frame as red ticks. matplotlib is imported lazily
and draws with its Agg canvas (no display, no global backend switch).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mirage_core.errors import MirageInputError, ShapeError
from mirage_core.eval.image_metrics import psnr, ssim

__all__ = ["REPORT_SCHEMA", "write_replay_report"]

REPORT_SCHEMA = "mirage.replay_report/1"
RESIZE_OPTIONS = (None, "gt", "generated")


def _to_chw(frame: np.ndarray, what: str) -> torch.Tensor:
    """``[H, W, 3]`` uint8 or float in [0, 1] -> ``[1, 3, H, W]`` float64 in [0, 1]."""
    a = np.asarray(frame)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ShapeError(f"{what} must be an [H, W, 3] RGB array, got shape {a.shape}")
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]
    if a.dtype == np.uint8:
        return t.to(torch.float64) / 255.0
    if not np.issubdtype(a.dtype, np.floating):
        raise MirageInputError(f"{what} must be uint8 or floating in [0, 1], got {a.dtype}")
    return t.to(torch.float64)


def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``[1, 3, H, W]`` -> ``[1, 3, *hw]``: area when shrinking (both dims), else bilinear."""
    shrink = hw[0] <= x.shape[-2] and hw[1] <= x.shape[-1]
    if shrink:
        y = F.interpolate(x, size=hw, mode="area")
    else:
        y = F.interpolate(x, size=hw, mode="bilinear", align_corners=False)
    return y.clamp(0.0, 1.0)


def _chunk_range(c: dict[str, Any]) -> tuple[int, int] | None:
    """Inclusive frame range of a chunk dict, or ``None`` if it gives none."""
    if "rgb_frames" in c:
        first, last = c["rgb_frames"]
        return int(first), int(last)
    if "first_frame" in c and "num_frames" in c:
        return int(c["first_frame"]), int(c["first_frame"]) + int(c["num_frames"]) - 1
    return None


def _stats(values: list[float]) -> dict[str, float | int | None]:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "median": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()),
            "max": float(v.max()), "n": int(v.size)}


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return x.tolist()
    raise MirageInputError(f"cannot write {type(x).__name__} {x!r} to report.json")


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _check_keys(frames: dict, what: str) -> None:
    """Refuse keys that are not integers (module docstring)."""
    bad = [k for k in frames
           if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer))]
    if bad:
        raise MirageInputError(
            f"{what} keys must be integers (frame indices, or stamps in integer ns); got "
            f"{bad[0]!r} ({type(bad[0]).__name__}){f' and {len(bad) - 1} more' if bad[1:] else ''}"
            ": as integers several frames could fall on one key")


def write_replay_report(out_dir: str | Path, gt: dict[int, np.ndarray],
                        generated: dict[int, np.ndarray], chunk_timings: list[dict],
                        extra: dict | None = None, *, resize: str | None = None,
                        plot: bool = True) -> dict:
    """Compare ``generated`` with ``gt`` frame by frame; write ``report.json`` (+ ``report.png``).

    Args:
        out_dir: output directory (created; an existing report is replaced).
        gt: ``{key: [H, W, 3]}`` ground-truth frames (uint8, or float in [0, 1]); keys are
            integers (frame index or stamp in ns).
        generated: ``{key: [H', W', 3]}`` generated frames, same keys as ``gt`` where matched.
        chunk_timings: per-chunk dicts (frame ranges and ids as in the module docstring).
        extra: anything JSON-serialisable to record (run config, bag path, ...).
        resize: ``None`` (sizes must agree), ``"gt"`` or ``"generated"`` (module docstring).
        plot: write ``report.png``.
    Returns:
        the report dict written to ``report.json`` (schema in the module docstring).
    Raises:
        ShapeError: a matched pair differs in size and ``resize`` is ``None`` (names the key);
            frames not ``[H, W, 3]``.
        MirageInputError: keys that are not integers, no key in common, bad ``resize``,
            values outside [0, 1] or
            non-finite, data that cannot be written as JSON.
    """
    if resize not in RESIZE_OPTIONS:
        raise MirageInputError(f"resize must be one of {RESIZE_OPTIONS}, got {resize!r}")
    _check_keys(gt, "ground-truth")
    _check_keys(generated, "generated")
    matched = sorted(set(gt) & set(generated))
    missing = sorted(set(gt) - set(generated))
    unmatched = sorted(set(generated) - set(gt))
    if not matched:
        raise MirageInputError(
            f"no frame key in common: {len(gt)} ground-truth frames (keys {sorted(gt)[:5]}...), "
            f"{len(generated)} generated (keys {sorted(generated)[:5]}...)"
        )
    chunks = [(c.get("chunk", c.get("chunk_index", i)), _chunk_range(c), c)
              for i, c in enumerate(chunk_timings)]

    frames, psnrs, ssims, resized = [], [], [], 0
    for key in matched:
        a = _to_chw(gt[key], f"gt[{key}]")
        b = _to_chw(generated[key], f"generated[{key}]")
        if a.shape != b.shape:
            if resize is None:
                n_bad = sum(np.shape(gt[k])[:2] != np.shape(generated[k])[:2] for k in matched)
                raise ShapeError(
                    f"frame {key}: ground truth is {a.shape[-2]}x{a.shape[-1]}, generated is "
                    f"{b.shape[-2]}x{b.shape[-1]} ({n_bad} of {len(matched)} matched frames "
                    "differ); pass resize='gt' or resize='generated' to compare them"
                )
            if resize == "gt":
                b = _resize(b, tuple(a.shape[-2:]))
            else:
                a = _resize(a, tuple(b.shape[-2:]))
            resized += 1
        try:
            p, s = float(psnr(a, b)[0]), float(ssim(a, b)[0])
        except MirageInputError as e:
            raise type(e)(f"frame {key}: {e}") from e
        psnrs.append(p)
        ssims.append(s)
        chunk = next((cid for cid, r, _ in chunks if r and r[0] <= key <= r[1]), None)
        frames.append({"key": int(key), "psnr": _finite_or_none(p), "ssim": s, "chunk": chunk})

    chunk_rows = []
    for cid, r, c in chunks:
        idx = [i for i, k in enumerate(matched) if r and r[0] <= k <= r[1]]
        ps, ss = _stats([psnrs[i] for i in idx]), _stats([ssims[i] for i in idx])
        chunk_rows.append({"chunk": cid, "frames": list(r) if r else None, "matched": len(idx),
                           "psnr_mean": ps["mean"], "psnr_median": ps["median"],
                           "ssim_mean": ss["mean"], "ssim_median": ss["median"], "timing": c})

    report = {
        "schema": REPORT_SCHEMA,
        "resize": resize,
        "counts": {"gt": len(gt), "generated": len(generated), "matched": len(matched),
                   "missing_generated": len(missing), "unmatched_generated": len(unmatched),
                   "identical": sum(math.isinf(p) for p in psnrs), "resized": resized},
        "missing_generated": [int(k) for k in missing],
        "unmatched_generated": [int(k) for k in unmatched],
        "summary": {"psnr": _stats(psnrs), "ssim": _stats(ssims)},
        "frames": frames,
        "chunks": chunk_rows,
        "extra": extra or {},
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, allow_nan=False, default=_json_default)
    tmp = out / "report.json.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "report.json")
    if plot:
        _plot(out / "report.png", matched, psnrs, ssims, chunks, missing)
    return json.loads(text)


def _plot(path: Path, keys: list[int], psnrs: list[float], ssims: list[float],
          chunks: list, missing: list[int]) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("report.png needs matplotlib (pip install -e '.[demo]'); or pass "
                          "plot=False") from e

    fig = Figure(figsize=(10, 6))
    FigureCanvasAgg(fig)
    ax_p, ax_s = fig.subplots(2, 1, sharex=True)
    finite = [(k, p) for k, p in zip(keys, psnrs, strict=True) if math.isfinite(p)]
    if finite:
        ax_p.plot(*zip(*finite, strict=True), ".-", label="PSNR")
    ax_s.plot(keys, ssims, ".-", color="tab:green", label="SSIM")
    ax_p.set_ylabel("PSNR (dB)")
    ax_s.set_ylabel("SSIM")
    ax_s.set_xlabel("frame")
    for ax in (ax_p, ax_s):
        for _, r, _ in chunks:
            if r:
                ax.axvline(r[0], color="grey", linestyle="--", linewidth=0.8)
        if missing:
            ax.plot(missing, [0] * len(missing), "|", color="red", markersize=12,
                    transform=ax.get_xaxis_transform(), label="no generated frame")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # none when every PSNR is +inf
            ax.legend(loc="best", fontsize=8)
    n_inf = len(keys) - len(finite)
    fig.suptitle(f"replay: {len(keys)} matched frames, mean SSIM {np.mean(ssims):.3f}"
                 + (f" ({n_inf} identical: PSNR +inf, not drawn)" if n_inf else ""))
    fig.savefig(path, dpi=100)

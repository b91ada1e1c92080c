"""``mirage bench generator``: time and memory of the rollout loop with random weights.

For each offload mode it builds the generator with random weights in memory
(:func:`~mirage_core.generator.loading.random_models`: at ``--size full`` the real
Wan2.2-TI2V-5B transformer, the 1.39B side branch and the 705M VAE; no text encoder, since
prompt embeddings are random ``[1, 512, text_dim]``). It then runs a rollout of ``--chunks``
chunks on an orbit around a fronto-parallel plane (``ConstantDepth``: geometry for the memory
only, no depth network). It prints, side by side:

* the denoising time per chunk and per step;
* the decode, depth, masks, encode, readout and update time per chunk;
* the peak CUDA memory per chunk;
* the share of the chunk time spent in memory readout + update (the paper's claim: negligible).

The figures are for random weights: compute and memory match the real model, the frames are
noise. The JSON holds every per-chunk record.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mirage_core.devices import compute_device
from mirage_core.errors import MirageInputError
from mirage_core.generator.loading import random_models
from mirage_core.generator.sampler import SamplerConfig
from mirage_core.geometry import intrinsics_from_fov
from mirage_core.rollout.chunked import MirageRollout, RolloutConfig
from mirage_core.trajectory import make_trajectory

__all__ = ["GeneratorBenchConfig", "run_generator_bench"]

_HW = {"full": (704, 1280), "tiny": (128, 224)}


@dataclass
class GeneratorBenchConfig:
    """Settings of :func:`run_generator_bench`."""

    size: str = "tiny"  # "tiny" (CPU-friendly) or "full" (Wan2.2-TI2V-5B; needs a GPU)
    device: str | None = None  # default: cuda if available, else cpu
    chunks: int = 2  # chunks per run (the first includes one-off warm-up)
    steps: int = 40  # UniPC steps per chunk
    offload: tuple[str, ...] = ("none", "model")  # offload modes to compare
    height: int | None = None  # default 704 (full) / 128 (tiny)
    width: int | None = None  # default 1280 (full) / 224 (tiny)
    json_path: str | None = "out/bench_generator.json"  # where to write every record


def _one(cfg: GeneratorBenchConfig, offload: str, dev: torch.device) -> dict:
    from mirage_core.perception import ConstantDepth

    H, W = cfg.height or _HW[cfg.size][0], cfg.width or _HW[cfg.size][1]
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    models = random_models(cfg.size, device=dev, offload=offload)
    build_s = time.perf_counter() - t0
    K = intrinsics_from_fov(W, H, 60.0)
    traj = make_trajectory("orbit_left", 1 + 32 * cfg.chunks, K=K, image_hw=(H, W))
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((3, H, W), dtype=np.float32))
    embeds = torch.randn(1, 512, models.text_dim, generator=torch.Generator().manual_seed(0))
    rollout = MirageRollout(
        models, ConstantDepth(2.0), None,
        RolloutConfig(sampler=SamplerConfig(steps=cfg.steps), num_chunks=cfg.chunks,
                      progress=True),
    )
    chunks = []
    with warnings.catch_warnings():  # ConstantDepth warns that it is a smoke-test plane: known
        warnings.simplefilter("ignore", UserWarning)
        results = list(rollout.run(image, traj, prompt_embeds=embeds))
    for ch in results:
        t = ch.timings_s
        chunks.append({
            "chunk": ch.plan.index,
            "time_s": t,
            "step_s_mean": float(np.mean(ch.step_s)),
            "step_s_median": float(np.median(ch.step_s)),
            "peak_gpu_bytes": ch.peak_gpu_bytes,
            "memory_points": ch.memory["points"],
            "memory_bytes": ch.memory["bytes"],
            "memory_share": (t["readout"] + t["update"]) / t["total"],
        })
    rec = {
        "offload": offload,
        "size": cfg.size,
        "device": str(dev),
        "dtype": str(models.transformer.dtype),
        "image_hw": [H, W],
        "parameters": models.parameter_counts(),
        "build_s": build_s,
        "chunks": chunks,
        "peak_gpu_bytes_run": (
            int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else None
        ),
    }
    del rollout, models
    return rec


#: RAM below which ``--size full`` on the CPU is refused (5B + 1.4B + 0.7B parameters in
#: float32 are ~28 GiB before activations; a 24 GiB machine was killed for memory)
FULL_CPU_RAM_BYTES = 32 * 2**30


def run_generator_bench(cfg: GeneratorBenchConfig) -> dict:
    """Run every offload mode, print a side-by-side table, write the JSON; return it.

    Raises:
        MirageInputError: ``--size full`` on the CPU of a machine with less than
            :data:`FULL_CPU_RAM_BYTES` of RAM; a bad ``device``.
    """
    dev = compute_device(cfg.device)
    if cfg.size == "full" and dev.type != "cuda":
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if ram < FULL_CPU_RAM_BYTES:
            raise MirageInputError(
                f"--size full on the CPU needs more than {FULL_CPU_RAM_BYTES / 2**30:.0f} GiB of "
                f"RAM (this machine has {ram / 2**30:.0f} GiB; measured: killed for memory at "
                "24 GiB) and hours: use a GPU host, or --size reduced")
        print("note: --size full on the CPU takes hours; use a GPU host")
    runs = [_one(cfg, off, dev) for off in (cfg.offload if dev.type == "cuda" else ("none",))]
    out = {"config": asdict(cfg), "runs": runs,
           "note": "random weights: compute and memory are real, frames are noise"}
    print(f"\ngenerator bench: size={cfg.size} device={dev} steps={cfg.steps} "
          f"chunks={cfg.chunks} (chunk 0 includes warm-up)")
    head = ("offload", "chunk", "denoise s", "step s", "decode s", "encode s", "readout ms",
            "update ms", "mem share", "peak GiB")
    print(" | ".join(head))
    for r in runs:
        for c in r["chunks"]:
            t = c["time_s"]
            peak = c["peak_gpu_bytes"] / 2**30 if c["peak_gpu_bytes"] else float("nan")
            print(" | ".join([
                r["offload"], str(c["chunk"]), f"{t['denoise']:.2f}", f"{c['step_s_mean']:.3f}",
                f"{t['decode']:.2f}", f"{t['encode']:.2f}", f"{1e3 * t['readout']:.1f}",
                f"{1e3 * t['update']:.1f}", f"{100 * c['memory_share']:.3f}%", f"{peak:.1f}",
            ]))
    if cfg.json_path:
        p = Path(cfg.json_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(out, indent=2))
        print(f"wrote {p}")
    return out

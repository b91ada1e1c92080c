"""Re-encode a lossless-codec clip store with another video codec (``mirage data reencode``).

A store made by ``mirage data synth --vae space_time_to_depth:2`` holds its frames exactly,
so it can be re-encoded with a VAE trained later (``mirage codec train``) without running the
simulator again. Everything but the latents is copied: depth, masks, ``T_world_cam``, ``K``,
prompts and keys. ``latents`` are the whole-clip video encode
(:func:`~mirage_core.data.prepare.encode_video_latents`) and, where the source has them,
``frame_latents`` the one-by-one image encodes of frames ``0, 4, 8, ...``
(:func:`~mirage_core.data.prepare.encode_frame_latents`), as ``mirage data synth`` writes
them. A ``synth_clips.jsonl`` beside the source (how each clip was made) is copied too.

    mirage data reencode --src STORE --vae DIR --out STORE
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path

from mirage_core.errors import MirageInputError

__all__ = ["clip_frames", "main_reencode", "open_lossless_store", "reencode_store"]


def open_lossless_store(path: str | Path, purpose: str):
    """A clip store encoded with the lossless ``space_time_to_depth[:S]`` codec, and that codec.

    Args:
        path: the :class:`~mirage_core.data.lmdb_store.ClipStore` directory.
        purpose: what needs the exact frames (named in the error).
    Returns:
        ``(store, codec)``.
    Raises:
        MirageInputError: the store was encoded with another (lossy) codec.
    """
    from mirage_core.codecs import codec_from_spec
    from mirage_core.data.lmdb_store import ClipStore

    store = ClipStore(path)
    meta = store.meta
    if meta is None or "space-time-to-depth" not in meta.vae_source:
        raise MirageInputError(
            f"{path}: {purpose} needs a store encoded with the lossless codec (mirage data "
            f"synth --vae space_time_to_depth:2), got {getattr(meta, 'vae_source', None)!r}"
        )
    return store, codec_from_spec(f"space_time_to_depth:{meta.spatial_stride}")


def clip_frames(codec, clip):
    """The RGB frames ``[F, 3, H, W]`` (float, ``[0, 1]``) of a clip from a lossless store."""
    z = clip.latents.permute(1, 0, 2, 3).unsqueeze(0)  # [1, C, L, h, w]
    return codec.decode_video(z)[0].permute(1, 0, 2, 3).clamp(0, 1)


def reencode_store(src: str | Path, vae, out: str | Path, progress: bool = True) -> int:
    """Write every clip of ``src`` re-encoded by ``vae`` into the store ``out``.

    Args:
        src: a :class:`~mirage_core.data.lmdb_store.ClipStore` encoded with the lossless
            ``space_time_to_depth[:S]`` codec.
        vae: the target video codec (a :class:`~mirage_core.codecs.VideoCodec`).
        out: the new store (created; clips already there are kept, so a stopped run resumes).
    Returns:
        The number of clips written.
    Raises:
        MirageInputError: ``src`` is not lossless, or ``out`` is ``src``, or ``out`` was
            started with another codec.
    """
    from tqdm import tqdm

    from mirage_core.data.lmdb_store import ClipStore
    from mirage_core.data.prepare import encode_frame_latents, encode_video_latents, meta_for

    if Path(src).resolve() == Path(out).resolve():
        raise MirageInputError(f"--out must differ from --src ({src})")
    source, lossless = open_lossless_store(src, "re-encoding (exact frames)")
    meta = source.meta
    new_meta = meta_for(vae, meta.image_hw, note=f"{meta.note}; re-encoded from {src}")
    target = ClipStore(out, readonly=False)
    have = target.meta
    if have is not None and have.vae_source != new_meta.vae_source:
        raise MirageInputError(
            f"{out} already holds clips encoded by {have.vae_source!r}, not "
            f"{new_meta.vae_source!r}; choose another --out"
        )
    target.init_meta(new_meta)
    written = 0
    for key in tqdm(source.keys(), desc="reencode", unit="clip", disable=not progress):
        if key in target:
            continue
        clip = source.get(key)
        frames = clip_frames(lossless, clip)  # [F, 3, H, W]
        fl = encode_frame_latents(vae, frames) if clip.frame_latents is not None else None
        target.put(replace(clip, latents=encode_video_latents(vae, frames), frame_latents=fl))
        written += 1
    target.close()
    side = Path(src) / "synth_clips.jsonl"
    if side.is_file():
        shutil.copyfile(side, Path(out) / side.name)
    return written


def main_reencode(argv: list[str] | None = None) -> int:
    """``mirage data reencode``: see the module docstring."""
    from mirage_core.data.prepare import load_vae

    ap = argparse.ArgumentParser(prog="mirage data reencode", description=__doc__.split("\n")[0])
    ap.add_argument("--src", required=True, help="store encoded with space_time_to_depth[:S]")
    ap.add_argument("--vae", required=True,
                    help="target codec: a VAE folder (e.g. from `mirage codec train`) or a spec "
                    "load_vae takes")
    ap.add_argument("--out", required=True, help="new store directory")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    n = reencode_store(a.src, load_vae(a.vae, device=a.device), a.out,
                       progress=not a.no_progress)
    print(f"wrote {n} clips to {a.out}")
    return 0

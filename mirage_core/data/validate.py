"""Check a clip store: every record readable and consistent with the store's meta.

Per record: sha256 checksum; a valid :class:`Clip` (shapes ``latents [L, C, h, w]``, ``depth``
and ``mask [L, H, W]``, ``T_world_cam [L, 4, 4]``, ``K [3, 3]``); ``C``, ``(H, W)`` and
``(h, w) = (H, W) / 16`` equal to the meta; finite latents and depth, depth ``>= 0``; every
pose a proper SE(3) (orthonormal rotation, det +1, last row ``0 0 0 1``:
:func:`~mirage_core.geometry.check_se3`); ``K`` valid. Warnings (not errors): the first pose
is not the identity; a clip with no positive depth.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import torch

from mirage_core.data.lmdb_store import ClipStore, ClipStoreError, decode_record
from mirage_core.errors import MirageInputError
from mirage_core.geometry import check_intrinsics, check_se3

__all__ = ["format_report", "main_validate", "validate_store"]


def _check_clip(clip, meta, key: str) -> tuple[list[str], list[str]]:
    errs: list[str] = []
    warns: list[str] = []
    if meta is not None:
        try:
            meta.check_clip(clip)
        except ClipStoreError as e:
            errs.append(str(e))
    if clip.key != key:
        errs.append(f"{key}: record says key {clip.key!r}")
    if not torch.isfinite(clip.latents).all():
        errs.append(f"{key}: latents have NaN/inf")
    if clip.frame_latents is not None and not torch.isfinite(clip.frame_latents).all():
        errs.append(f"{key}: frame_latents have NaN/inf")
    if not torch.isfinite(clip.depth).all() or (clip.depth < 0).any():
        errs.append(f"{key}: depth has NaN/inf or negative values")
    for j in range(clip.T_world_cam.shape[0]):
        try:
            check_se3(clip.T_world_cam[j], f"{key}: T_world_cam[{j}]")
        except MirageInputError as e:
            errs.append(str(e))
            break
    else:
        if not torch.allclose(clip.T_world_cam[0], torch.eye(4, dtype=torch.float64), atol=1e-6):
            warns.append(f"{key}: first pose is not the identity (E_0 should be the world)")
    try:
        check_intrinsics(clip.K, f"{key}: K")
    except MirageInputError as e:
        errs.append(str(e))
    if not (clip.depth > 0).any():
        warns.append(f"{key}: no positive depth at all")
    return errs, warns


def validate_store(path: str | os.PathLike) -> dict:
    """Check every record of the store at ``path``.

    Returns:
        ``{"path", "ok", "keys", "meta", "errors": [str], "warnings": [str],
        "depth_positive_fraction", "mask_fraction", "latent_frames": {L: count}}``;
        ``ok`` is False when there is any error (an unopenable store, no meta, a bad record).
        Fractions are over all pixels of all depth/mask maps of readable records.
    """
    rep: dict = {"path": str(path), "ok": False, "keys": 0, "meta": None, "errors": [],
                 "warnings": [], "depth_positive_fraction": None, "mask_fraction": None,
                 "latent_frames": {}}
    try:
        store = ClipStore(path, readonly=True)
    except ClipStoreError as e:
        rep["errors"].append(str(e))
        return rep
    with store:
        try:
            meta = store.meta
        except ClipStoreError as e:
            meta = None
            rep["errors"].append(str(e))
        if meta is None and not rep["errors"]:
            rep["errors"].append(f"{path}: no __meta__ record")
        rep["meta"] = None if meta is None else {
            "format_version": meta.format_version, "latent_channels": meta.latent_channels,
            "image_hw": list(meta.image_hw), "latent_hw": list(meta.latent_hw),
            "vae_source": meta.vae_source, "note": meta.note}
        keys = store.keys()
        rep["keys"] = len(keys)
        if not keys:
            rep["warnings"].append(f"{path}: the store holds no clips")
        pos = tot = msk = 0
        for key in keys:
            try:
                clip = decode_record(store.get_raw(key), key)
            except ClipStoreError as e:
                rep["errors"].append(str(e))
                continue
            errs, warns = _check_clip(clip, meta, key)
            rep["errors"] += errs
            rep["warnings"] += warns
            L = clip.num_latent_frames
            rep["latent_frames"][L] = rep["latent_frames"].get(L, 0) + 1
            pos += int((clip.depth > 0).sum())
            msk += int(clip.mask.sum())
            tot += clip.depth.numel()
        if tot:
            rep["depth_positive_fraction"] = pos / tot
            rep["mask_fraction"] = msk / tot
    rep["ok"] = not rep["errors"]
    return rep


def format_report(rep: dict) -> list[str]:
    """Human-readable lines of a :func:`validate_store` report."""
    out = [f"{rep['path']}: {'OK' if rep['ok'] else 'BROKEN'}, {rep['keys']} clips"]
    m = rep["meta"]
    if m:
        out.append(f"  meta: v{m['format_version']}, {m['latent_channels']} ch, image "
                   f"{m['image_hw'][0]}x{m['image_hw'][1]}, latent {m['latent_hw'][0]}x"
                   f"{m['latent_hw'][1]}, VAE: {m['vae_source']}")
    if rep["latent_frames"]:
        out.append("  latent frames per clip: " + ", ".join(
            f"L={k}: {v}" for k, v in sorted(rep["latent_frames"].items())))
    if rep["depth_positive_fraction"] is not None:
        out.append(f"  depth > 0: {100 * rep['depth_positive_fraction']:.1f}% of pixels; "
                   f"masked (dynamic|sky): {100 * rep['mask_fraction']:.1f}%")
    out += [f"  ERROR {e}" for e in rep["errors"]]
    out += [f"  warning {w}" for w in rep["warnings"]]
    return out


def main_validate(argv: Sequence[str] | None = None) -> int:
    """``mirage data validate STORE [--json]``: exit 0 if OK, 1 if broken."""
    ap = argparse.ArgumentParser(prog="mirage data validate", description=__doc__.split("\n")[0])
    ap.add_argument("store", help="LMDB directory")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    a = ap.parse_args(argv)
    rep = validate_store(a.store)
    if a.json:
        import json

        print(json.dumps(rep, indent=2, default=str))
    else:
        print("\n".join(format_report(rep)))
    return 0 if rep["ok"] else 1

"""An LMDB store of prepared training clips (method.md section 5: "everything in an LMDB").

Layout (one LMDB environment = one directory holding ``data.mdb`` and ``lock.mdb``):

* ``b"__meta__"`` -> UTF-8 JSON of :class:`StoreMeta` (format version, latent channels,
  image size, latent size, VAE source). Keys starting with ``"__"`` are reserved.
* ``clip.key`` (UTF-8) -> one *record*: ``MAGIC (4 bytes) | sha256(payload) (32 bytes) |
  payload``, where ``payload`` is ``safetensors.torch.save`` of the clip's tensors
  (``latents [L, C, h, w]`` float32, ``depth [L, H, W]`` float32, ``mask [L, H, W]`` bool,
  ``T_world_cam [L, 4, 4]`` float64, ``K [3, 3]`` float64, optional ``prompt_embeds
  [1, S, D]`` and ``frame_latents [L, C, h, w]`` float32) with ``key``, ``prompt`` and
  ``image_hw`` in the safetensors metadata.

Writes are atomic per clip (one write transaction per :meth:`ClipStore.put`); a clip whose
key is already present is skipped, so an interrupted preparation resumes where it stopped and
never loses what was committed. When the memory map is full the map is doubled and the
transaction retried.

LMDB environments must not be opened twice in one process, and an open environment must not
cross a ``fork``: DataLoader workers should open their own :class:`ClipStore` (lazily, in the
worker) in read-only mode.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mirage_core.data.clip import Clip
from mirage_core.errors import MirageInputError

__all__ = [
    "FORMAT_VERSION",
    "META_KEY",
    "ClipStore",
    "ClipStoreError",
    "StoreMeta",
    "decode_record",
    "encode_record",
]

FORMAT_VERSION = 1
META_KEY = b"__meta__"
MAGIC = b"MRC1"
_DIGEST = 32
_INITIAL_MAP_SIZE = 64 << 20  # 64 MiB; doubled on MapFullError
_MAX_GROW_STEPS = 24


class ClipStoreError(MirageInputError):
    """A store that cannot be opened, a corrupt record, or a clip that does not fit the meta."""


@dataclass(frozen=True)
class StoreMeta:
    """What every clip in a store shares (the ``__meta__`` record).

    Attributes:
        latent_channels: ``C`` of ``latents [L, C, h, w]`` (48 for Wan2.2).
        image_hw: ``(H, W)`` RGB size of every clip (multiples of ``spatial_stride``).
        vae_source: which VAE encoded the latents (``WanVAECodec.label``); random-weight VAEs
            say ``RANDOM`` here, so their stores are recognisable as smoke-test data.
        spatial_stride: VAE spatial stride ``s`` (``h = H / s``).
        format_version: record layout version (:data:`FORMAT_VERSION`).
        note: free text (what produced the store).
    """

    latent_channels: int
    image_hw: tuple[int, int]
    vae_source: str
    spatial_stride: int = 16
    format_version: int = FORMAT_VERSION
    note: str = ""

    @property
    def latent_hw(self) -> tuple[int, int]:
        return (self.image_hw[0] // self.spatial_stride, self.image_hw[1] // self.spatial_stride)

    def to_json(self) -> bytes:
        d = asdict(self)
        d["image_hw"] = list(self.image_hw)
        return json.dumps(d, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> StoreMeta:
        d = json.loads(raw.decode())
        d["image_hw"] = tuple(int(v) for v in d["image_hw"])
        return cls(**d)

    def check_clip(self, clip: Clip) -> None:
        """Raise :class:`ClipStoreError` if ``clip`` does not have this store's shapes."""
        C = int(clip.latents.shape[1])
        hw_lat = tuple(int(v) for v in clip.latents.shape[2:])
        if C != self.latent_channels:
            raise ClipStoreError(
                f"clip {clip.key!r}: latents have {C} channels, the store holds "
                f"{self.latent_channels}"
            )
        if tuple(clip.image_hw) != tuple(self.image_hw):
            raise ClipStoreError(
                f"clip {clip.key!r}: image_hw {tuple(clip.image_hw)}, the store holds "
                f"{tuple(self.image_hw)}"
            )
        if hw_lat != self.latent_hw:
            raise ClipStoreError(
                f"clip {clip.key!r}: latent grid {hw_lat}, expected {self.latent_hw} "
                f"(image_hw / {self.spatial_stride})"
            )


# --------------------------------------------------------------------------- records


def encode_record(clip: Clip) -> bytes:
    """Serialise ``clip`` into one record: ``MAGIC | sha256(payload) | safetensors payload``."""
    from safetensors.torch import save

    tensors = {
        "latents": clip.latents.detach().to("cpu", torch.float32).contiguous(),
        "depth": clip.depth.detach().to("cpu", torch.float32).contiguous(),
        "mask": clip.mask.detach().to("cpu", torch.bool).contiguous(),
        "T_world_cam": clip.T_world_cam.detach().to("cpu", torch.float64).contiguous(),
        "K": clip.K.detach().to("cpu", torch.float64).contiguous(),
    }
    if clip.prompt_embeds is not None:
        tensors["prompt_embeds"] = clip.prompt_embeds.detach().to("cpu").contiguous()
    if clip.frame_latents is not None:
        tensors["frame_latents"] = clip.frame_latents.detach().to("cpu", torch.float32).contiguous()
    meta = {
        "key": clip.key,
        "prompt": clip.prompt,
        "image_hw": json.dumps([int(v) for v in clip.image_hw]),
    }
    payload = save(tensors, metadata=meta)
    return MAGIC + hashlib.sha256(payload).digest() + payload


def _payload(raw: bytes, key: str) -> bytes:
    if len(raw) < len(MAGIC) + _DIGEST or raw[: len(MAGIC)] != MAGIC:
        raise ClipStoreError(f"record {key!r}: not a clip record (bad header)")
    digest, payload = raw[len(MAGIC): len(MAGIC) + _DIGEST], raw[len(MAGIC) + _DIGEST:]
    if hashlib.sha256(payload).digest() != digest:
        raise ClipStoreError(f"record {key!r}: sha256 mismatch (corrupt record)")
    return payload


def decode_record(raw: bytes, key: str = "?") -> Clip:
    """Inverse of :func:`encode_record`; verifies the checksum first.

    Raises:
        ClipStoreError: bad header, checksum mismatch, unreadable payload, or tensors that do
            not form a valid :class:`Clip` (the message names ``key``).
    """
    from safetensors.torch import load

    payload = _payload(bytes(raw), key)
    try:
        tensors = load(payload)
        # safetensors.torch.load drops the metadata; read it from the header.
        n = int.from_bytes(payload[:8], "little")
        header = json.loads(payload[8: 8 + n].decode())
        meta = header.get("__metadata__", {})
        image_hw = tuple(int(v) for v in json.loads(meta["image_hw"]))
        return Clip(
            latents=tensors["latents"],
            depth=tensors["depth"],
            mask=tensors["mask"],
            T_world_cam=tensors["T_world_cam"],
            K=tensors["K"],
            image_hw=image_hw,  # type: ignore[arg-type]
            prompt=meta.get("prompt", ""),
            prompt_embeds=tensors.get("prompt_embeds"),
            key=meta.get("key", key),
            frame_latents=tensors.get("frame_latents"),
        )
    except ClipStoreError:
        raise
    except Exception as e:  # safetensors / json / Clip shape errors
        raise ClipStoreError(f"record {key!r}: unreadable ({type(e).__name__}: {e})") from e


# --------------------------------------------------------------------------- store


class ClipStore:
    """A directory of :class:`Clip` records in LMDB.

    Args:
        path: the LMDB directory (created when ``readonly=False``).
        readonly: open for reading only (the default; several readers may share a store).
        map_size: initial memory-map size in bytes (grown automatically on writes).

    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, readonly: bool = True,
                 map_size: int = _INITIAL_MAP_SIZE) -> None:
        import lmdb

        self._lmdb = lmdb
        self._key_list: list[str] | None = None  # for [index] access (read-only use)
        self.path = Path(path)
        self.readonly = readonly
        if readonly and not (self.path / "data.mdb").is_file():
            raise ClipStoreError(f"{str(self.path)!r} is not a clip store (no data.mdb)")
        if not readonly:
            self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._env = lmdb.open(str(self.path), readonly=readonly, map_size=int(map_size),
                                  subdir=True, max_dbs=0, lock=not readonly)
        except lmdb.Error as e:
            raise ClipStoreError(f"cannot open clip store {str(self.path)!r}: {e}") from e

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> ClipStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ClipStore({str(self.path)!r}, readonly={self.readonly})"

    # ------------------------------------------------------------------ writes
    def _write(self, fn) -> object:
        """Run ``fn(txn)`` in one write transaction; on MapFullError double the map, retry."""
        if self.readonly:
            raise ClipStoreError(f"{self!r} is read-only; open it with readonly=False to write")
        for _ in range(_MAX_GROW_STEPS):
            try:
                with self._env.begin(write=True) as txn:
                    return fn(txn)
            except self._lmdb.MapFullError:
                self._env.set_mapsize(self._env.info()["map_size"] * 2)
        raise ClipStoreError(f"{self!r}: could not grow the memory map enough")

    def init_meta(self, meta: StoreMeta) -> StoreMeta:
        """Write ``meta`` if the store has none; else check it matches and return the stored one.

        Raises:
            ClipStoreError: the store's meta differs in channels, image size or stride.
        """
        def fn(txn):
            raw = txn.get(META_KEY)
            if raw is None:
                txn.put(META_KEY, meta.to_json())
                return meta
            old = StoreMeta.from_json(raw)
            if (old.latent_channels, tuple(old.image_hw), old.spatial_stride) != (
                meta.latent_channels, tuple(meta.image_hw), meta.spatial_stride
            ):
                raise ClipStoreError(
                    f"{str(self.path)!r} already holds clips with {old.latent_channels} channels "
                    f"at {tuple(old.image_hw)}; cannot add {meta.latent_channels} channels at "
                    f"{tuple(meta.image_hw)} (use another output directory)"
                )
            return old

        return self._write(fn)  # type: ignore[return-value]

    def put(self, clip: Clip, overwrite: bool = False) -> bool:
        """Store ``clip`` under ``clip.key`` in one transaction.

        Returns:
            ``True`` if written, ``False`` if the key was present and ``overwrite`` is False.
        Raises:
            ClipStoreError: empty/reserved key, or a clip that does not fit the store's meta.
        """
        if not clip.key or clip.key.startswith("__"):
            raise ClipStoreError(f"clip key must be non-empty and not start with '__', "
                                 f"got {clip.key!r}")
        meta = self.meta
        if meta is not None:
            meta.check_clip(clip)
        record = encode_record(clip)
        k = clip.key.encode()

        def fn(txn):
            if not overwrite and txn.get(k) is not None:
                return False
            txn.put(k, record)
            return True

        return bool(self._write(fn))

    # ------------------------------------------------------------------ reads
    @property
    def meta(self) -> StoreMeta | None:
        """The store's :class:`StoreMeta`, or ``None`` before :meth:`init_meta`."""
        with self._env.begin() as txn:
            raw = txn.get(META_KEY)
        if raw is None:
            return None
        try:
            return StoreMeta.from_json(bytes(raw))
        except Exception as e:
            raise ClipStoreError(f"{str(self.path)!r}: unreadable __meta__ record: {e}") from e

    def get_raw(self, key: str) -> bytes:
        """The raw record bytes of ``key`` (``KeyError`` if absent)."""
        with self._env.begin() as txn:
            raw = txn.get(key.encode())
        if raw is None:
            raise KeyError(f"no clip {key!r} in {str(self.path)!r}")
        return bytes(raw)

    def get(self, key: str) -> Clip:
        """The clip stored under ``key``, checksum verified.

        Raises:
            KeyError: no such key. ClipStoreError: corrupt record.
        """
        return decode_record(self.get_raw(key), key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        with self._env.begin() as txn:
            return txn.get(key.encode()) is not None

    def keys(self) -> list[str]:
        """Clip keys in byte order (reserved ``__*`` keys excluded)."""
        with self._env.begin() as txn:
            return [k.decode() for k in txn.cursor().iternext(keys=True, values=False)
                    if not bytes(k).startswith(b"__")]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __getitem__(self, index: int) -> Clip:
        """The ``index``-th clip in key order (what training samples; keys are listed once)."""
        if self._key_list is None:
            self._key_list = self.keys()
        return self.get(self._key_list[index])

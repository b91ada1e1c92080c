"""Training data: prepared clips (latents, depth, cameras, masks) in LMDB (issue 5).

* :mod:`.clip` -- :class:`Clip`, the record training consumes.
* :mod:`.lmdb_store` -- :class:`ClipStore` (LMDB, checksummed safetensors records).
* :mod:`.synth` -- synthetic clips with ground truth (PyBullet); ``mirage data synth``.
* :mod:`.prepare` -- clips from frames + camera files (RealEstate10K); ``mirage data prepare``.
* :mod:`.validate` -- store checks; ``mirage data validate``.
"""

from mirage_core.data.clip import Clip
from mirage_core.data.lmdb_store import ClipStore, ClipStoreError, StoreMeta

__all__ = ["Clip", "ClipStore", "ClipStoreError", "StoreMeta"]

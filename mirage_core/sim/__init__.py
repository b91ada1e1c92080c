"""Simulation helpers (optional; need ``pip install -e .[demo]``).

``PyBulletScene`` and ``SimFrame`` live in :mod:`mirage_core.sim.pybullet_scene`; importing this
package does not import PyBullet. Procedural scenes (:mod:`mirage_core.sim.procedural`, with
textures from :mod:`mirage_core.sim.textures`) and camera paths that revisit
(:mod:`mirage_core.sim.camera_paths`) are numpy only.
"""

from mirage_core.sim.pybullet_scene import DEFAULT_FAR, DEFAULT_NEAR, PyBulletScene, SimFrame

__all__ = ["DEFAULT_FAR", "DEFAULT_NEAR", "PyBulletScene", "SimFrame"]

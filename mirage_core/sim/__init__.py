"""Simulation helpers (optional; need ``pip install -e .[demo]``).

``PyBulletScene`` and ``SimFrame`` live in :mod:`mirage_core.sim.pybullet_scene`; importing this
package does not import PyBullet.
"""

from mirage_core.sim.pybullet_scene import DEFAULT_FAR, DEFAULT_NEAR, PyBulletScene, SimFrame

__all__ = ["DEFAULT_FAR", "DEFAULT_NEAR", "PyBulletScene", "SimFrame"]

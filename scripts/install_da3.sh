#!/usr/bin/env bash
# Install depth-anything-3 into a Mirage venv the safe way (idempotent).
#
#   scripts/install_da3.sh            # the project venv, .venv
#   scripts/install_da3.sh VENV       # another venv (must already hold torch and mirage)
#
# Why not `pip install depth-anything-3`: its 0.1.1 metadata pins numpy<2 and pulls torch with
# the CUDA stack, torchvision, xformers, open3d, pycolmap and ~140 more packages; on a CPU-only
# torch that torchvision cannot load its ops and then breaks every transformers/diffusers model
# import. Mirage uses only the network code (depth_anything_3.cfg/registry/model), which needs
# omegaconf, addict and einops; see docs/perception.md and
# mirage_core/perception/_da3_import.py. This script installs exactly that (~600 KB).
set -euo pipefail

VENV="${1:-.venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  echo "install_da3.sh: no python at $PY (create the venv first, e.g. 'make install')" >&2
  exit 2
fi
PIP=("$PY" -m pip --disable-pip-version-check)

DA3_VERSION=0.1.1
DEPS=(omegaconf==2.4.0 addict==2.4.0 einops==0.8.2 "opencv-python-headless>=4.8")

# The network's own dependencies, resolved normally (PyYAML for omegaconf; no torch change).
"${PIP[@]}" install -q "${DEPS[@]}"
# The package itself, without its dependency list.
"${PIP[@]}" install -q --no-deps "depth-anything-3==${DA3_VERSION}"

# Checks: the adapter's imports work, torch/numpy were not replaced, no torchvision appeared,
# and transformers/diffusers (if installed) still import their model classes.
"$PY" - <<'EOF'
import importlib.util
import sys

import numpy
import torch

from mirage_core.perception._da3_import import import_da3

m = import_da3()
assert "torchvision" not in sys.modules, "torchvision was imported by the DA3 adapter"
if importlib.util.find_spec("torchvision") is not None:
    print(
        "install_da3.sh: WARNING: torchvision is installed in this venv; on a CPU-only torch "
        "the CUDA build breaks transformers/diffusers imports (docs/perception.md)",
        file=sys.stderr,
    )
for mod in ("transformers.modeling_utils", "diffusers"):
    if importlib.util.find_spec(mod.split(".")[0]) is not None:
        importlib.import_module(mod)
print(
    f"depth-anything-3 {m.version} ready (torch {torch.__version__}, numpy {numpy.__version__}, "
    f"models: {', '.join(sorted(m.registry.MODEL_REGISTRY))})"
)
EOF

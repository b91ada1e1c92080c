"""Test options: slow tests run with MIRAGE_SLOW=1 or --runslow; gpu tests need CUDA."""

import os

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--runslow") or os.environ.get("MIRAGE_SLOW") == "1"
    skip_slow = pytest.mark.skip(reason="slow: set MIRAGE_SLOW=1 or pass --runslow")
    skip_gpu = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)

"""Shared fixtures: the repo root on sys.path, one torch thread (tiny tensors, busy 2-core machine), tiny configs."""
import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import config  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def repo_root():
    return REPO


@pytest.fixture
def tiny_cfg():
    """The `tiny` preset: 4x4x1 grid, V=32, code_dim=4, channels (8,16,16), a 1-layer d=32 GPT."""
    return config.build_config(preset="tiny")

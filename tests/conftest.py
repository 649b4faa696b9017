import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

# Test helpers (graph_fixtures.py) import as top-level modules.
sys.path.insert(0, os.path.dirname(__file__))

# Deterministic, modest CPU use: CI machines have 2 cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def load_tool(name: str) -> ModuleType:
    """The script ``tools/<name>.py`` loaded from its file, for the tests of that script: tools/
    is not a package of the project, and the tests do not put it on ``sys.path``."""
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def saved_bytes(fn) -> int:
    """Bytes of every tensor autograd saves for the backward while ``fn`` runs."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]

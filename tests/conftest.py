import os
from pathlib import Path

import pytest

# Triton kernels run on the CPU through the interpreter in tests; set before triton is imported.
if not os.environ.get("CUDA_VISIBLE_DEVICES") and not Path("/dev/nvidia0").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Prepared data and run records of the tests never touch the user's cache."""
    root = tmp_path_factory.mktemp("lra_data")
    old = os.environ.get("LRA_DATA")
    os.environ["LRA_DATA"] = str(root)
    yield root
    if old is None:
        os.environ.pop("LRA_DATA", None)
    else:
        os.environ["LRA_DATA"] = old


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

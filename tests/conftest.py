import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def recorded_bars(monkeypatch):
    """``(heights, yerr)`` of every ``Axes.bar`` call a test makes (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    calls = []
    original = Axes.bar

    def recording_bar(self, x, height, *args, **kwargs):
        calls.append((list(height), kwargs.get("yerr")))
        return original(self, x, height, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", recording_bar)
    return calls

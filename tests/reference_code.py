"""Stand-ins that let the MMRec-family reference classes run beside ours on CPU.

Used by ``tests/test_crosscheck_*.py``; nothing of the reference code is in this
repository. The reference models subclass MMRec's ``GeneralRecommender`` and read a few
attributes of it and of MMRec's dataset; :class:`ReferenceBase` and :class:`ReferenceData`
provide exactly those, from one of our built models. MMRec has no [PAD] item: its item
``i`` is our item ``i + 1`` (and with ``pad_user=False`` its user ``u`` is our ``u + 1``).
"""
import contextlib
import os
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from recbole.data.interaction import Interaction

from tests.recbole_data import build_model


class ReferenceBase(torch.nn.Module):
    """What the reference models read from ``common.abstract_recommender.GeneralRecommender``."""

    def __init__(self, config, dataset):
        super().__init__()
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.batch_size = config["train_batch_size"]
        self.device = "cpu"
        self.v_feat, self.t_feat = dataset.v_feat, dataset.t_feat


class ReferenceData:
    """Our model's training data as the reference models read it: no [PAD] item, and with
    ``pad_user=False`` no [PAD] user either (for models whose sums over users would count it)."""

    def __init__(self, ours, pad_user=True):
        self.shift = 0 if pad_user else 1
        self.n_users, self.n_items = ours.n_users - self.shift, ours.n_items - 1
        self.v_feat = ours.modality_features["image"][1:].clone()
        self.t_feat = ours.modality_features["text"][1:].clone()
        u, i = ours.inter_index.numpy()
        u, i = u - self.shift, i - 1
        self.matrix = sp.coo_matrix((np.ones(u.size, dtype=np.float32), (u, i)), shape=(self.n_users, self.n_items))
        self.history_items_per_u = {}  # SOIL's loops read the training items per user
        for user, item in zip(u.tolist(), i.tolist()):
            self.history_items_per_u.setdefault(user, set()).add(item)

    def inter_matrix(self, form="coo"):
        return self.matrix


def torch_scatter_stand_in():
    """A ``torch_scatter`` module with the one function the references call (``scatter_add``)
    and ``scatter``, which MMRec's SLMRec imports and never calls."""
    def scatter_add(src, index, dim=0, dim_size=None):
        return torch.zeros(dim_size, dtype=src.dtype).index_add(0, index, src)

    def scatter(*args, **kwargs):
        raise NotImplementedError("not called by the reference models")

    module = types.ModuleType("torch_scatter")
    module.scatter_add, module.scatter = scatter_add, scatter
    return module


REFERENCE_PACKAGES = ("common", "models", "utils", "torch_scatter")  # the references' top-level names


def _is_reference_module(name):
    return name.split(".")[0] in REFERENCE_PACKAGES


@contextlib.contextmanager
def reference_imports(src):
    """Make the reference under ``src`` importable (``models.*``, ``utils.*``) on CPU.

    Its base class and ``torch_scatter`` become the stand-ins and ``Tensor.cuda`` a no-op
    (the references hard-code it). Modules already imported under the references'
    top-level names (another reference's ``models``, ``utils``) are set aside, and
    everything is restored on exit, so two references never see each other's code."""
    base = types.ModuleType("common.abstract_recommender")
    base.GeneralRecommender = ReferenceBase
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if _is_reference_module(k)}
    sys.modules.update({"common.abstract_recommender": base, "torch_scatter": torch_scatter_stand_in()})
    sys.path.insert(0, src)
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda = cuda
        sys.path.remove(src)
        for k in [k for k in sys.modules if _is_reference_module(k)]:
            del sys.modules[k]
        sys.modules.update(saved)


def skip_unless_reference(variable, *path):
    """``pytestmark`` for a test module that needs the reference checkout named by the
    environment ``variable`` (holding the file ``path`` below it)."""
    src = os.environ.get(variable)
    return pytest.mark.skipif(not src or not os.path.isfile(os.path.join(src, *path)),
                              reason=f"set {variable} to the reference checkout holding {'/'.join(path)}")


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    """RecBole's ``Config`` parses ``sys.argv``: keep pytest's own flags out of it."""
    monkeypatch.setattr(sys, "argv", ["pytest"])


def without_pad(x, pad, columns=True):
    """``x`` of ours (dense or sparse) less our [PAD] item's row ``pad`` (0 in item graphs,
    ``n_users`` in joint user+item ones) and, with ``columns``, its column: the reference's shape."""
    x = x.to_dense() if x.is_sparse else x
    keep = torch.arange(x.size(0)) != pad
    return x[keep][:, keep] if columns else x[keep]


def build(config_file, name, overrides):
    return build_model(name, config_file, overrides=overrides)[3]


def batch(ours, n=64, pad_user=True):
    """One training batch for ours and the same rows as the reference's ``(users, pos, neg)``."""
    g = torch.Generator().manual_seed(0)
    u, i = ours.inter_index
    pick = torch.randperm(u.numel(), generator=g)[:n]
    neg = torch.randint(1, ours.n_items, (n,), generator=g)
    ours_batch = Interaction({ours.USER_ID: u[pick], ours.ITEM_ID: i[pick], ours.NEG_ITEM_ID: neg})
    return ours_batch, torch.stack([u[pick] - (0 if pad_user else 1), i[pick] - 1, neg - 1])

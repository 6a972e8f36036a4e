"""SOIL against the reference class of the authors' MMRec fork, same weights.

Runs only where a copy of the reference is given (nothing of it is in this
repository); SOIL_SRC names the folder that holds its ``models/`` and ``utils/``::

    git clone https://github.com/MrShouxingMa/SOIL /tmp/SOIL
    SOIL_SRC=/tmp/SOIL pytest tests/test_crosscheck_soil.py

Built with the stand-ins of ``tests/reference_code.py`` (a base class, ``.cuda()`` a
no-op, the reference's item ``i`` is our item ``i + 1``). The features are made
non-negative (like the reference's CNN features: a negative similarity is one of our
documented differences) and there are more users than items (the reference indexes user
degrees by item ids when it normalises its user-item attractive block, which fails
otherwise). Compared: the interest graphs, the k-NN similarity graphs, the raw attractive
weights, the normalised attractive graph and the augmented propagation graph, the
user-item block (after a one-line patch of the reference's degree bug), the final user
and item embeddings, a batch's loss and its gradients.
"""
import importlib
import os

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from recbole_models.features import write_feature_file
from recbole_models.model.multimodal import normalize_adjacency
from tests.recbole_data import build_model, write_tiny_multimodal_dataset
from tests.reference_code import ReferenceData, batch, reference_imports, skip_unless_reference, without_pad
from tests.reference_code import plain_argv  # noqa: F401  (autouse fixture)

SOIL_SRC = os.environ.get("SOIL_SRC")
pytestmark = skip_unless_reference("SOIL_SRC", "models", "soil.py")

KEYS = dict(knn_k=4, knn_i=3, knn_a=5, n_ui_layers=2, n_layers=1, cl_loss=0.1, cl_loss2=0.05, embedding_size=16)


@pytest.fixture(scope="module")
def reference_module():
    """The reference's ``models.soil`` module."""
    with reference_imports(SOIL_SRC):
        yield importlib.import_module("models.soil")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    config_file, d, _, _ = write_tiny_multimodal_dataset(str(tmp_path_factory.mktemp("soil")), n_users=70,
                                                         n_items=50, per_user=9)
    for m in ("image", "text"):  # non-negative features, like the reference's
        path = os.path.join(d, f"tinymm.{m}emb")
        with open(path) as f:
            rows = [line.rstrip("\n").split("\t") for line in f.readlines()[1:]]
        values = np.abs(np.array([[float(v) for v in r[1].split()] for r in rows]))
        write_feature_file(path, f"{m}_id", f"{m}_emb", [r[0] for r in rows], values)
    return config_file


def test_soil(reference_module, config_file, tmp_path, monkeypatch):
    ours = build_model("SOIL", config_file, overrides=KEYS)[3]
    nu = ours.n_users
    assert nu > ours.n_items - 1  # see the module docstring
    calls = {}

    def spy(name):
        original = getattr(reference_module, name)

        def wrapped(adj, *args, **kwargs):
            out = original(adj, *args, **kwargs)
            calls.setdefault(name, []).append((adj.clone(), out))
            return out
        monkeypatch.setattr(reference_module, name, wrapped)

    for name in ("build_non_zero_graph", "build_knn_normalized_graph", "build_graph_from_adj"):
        spy(name)
    config = dict(KEYS, reg_weight=0.0, train_batch_size=2048, data_path=f"{tmp_path}/", dataset="tinymm")
    os.makedirs(tmp_path / "tinymm")  # the reference caches its graphs there
    ref = reference_module.SOIL(config, ReferenceData(ours))
    with torch.no_grad():
        ref.user_embedding.weight.copy_(ours.user_embedding.weight)
        ref.item_id_embedding.weight.copy_(ours.item_id_embedding.weight[1:])
    ref.attention.load_state_dict(ours.attention.state_dict())
    for m, s in (("image", "v"), ("text", "t")):
        getattr(ref, f"{m}_trs").load_state_dict(ours.trs[m].state_dict())
        getattr(ref, f"map_{s}").load_state_dict(ours.maps[m].state_dict())

    # The item graphs: interest graph + k-NN similarity graph per modality.
    for j, m in enumerate(("image", "text")):
        knn = ours.item_item_adjacency(ours.modality_features[m], ours.knn_k, weighted=True)
        knn = normalize_adjacency(knn, "row")
        torch.testing.assert_close(without_pad(knn, 0), calls["build_knn_normalized_graph"][j][1].to_dense())
        item_adj = getattr(ours, f"item_adj_{m}")
        torch.testing.assert_close(without_pad(item_adj - knn, 0), calls["build_non_zero_graph"][j][1].to_dense())
        torch.testing.assert_close(without_pad(item_adj, 0), getattr(ref, f"{m}_interest_adj").to_dense())

    # The attractive edges: raw weights, the normalised graph, the augmented graph.
    keep = ours.inter_index[1] > 0
    users, items = ours.inter_index[0, keep], ours.inter_index[1, keep] - 1
    normed = {m: F.normalize(x[1:], dim=1) for m, x in ours.modality_features.items()}
    b = ours._attractive(normed, users, items).to_dense()[:, 1:]
    (raw_full, b_hat_ref), (raw_r, b_r_ref) = calls["build_graph_from_adj"]
    torch.testing.assert_close(b, raw_r.to_dense())
    torch.testing.assert_close(b, raw_full.to_dense()[:nu, nu:])
    a_hat = ours.user_item_adjacency()
    torch.testing.assert_close(without_pad((ours.joint_adj - a_hat) * 2, nu), b_hat_ref.to_dense())
    torch.testing.assert_close(without_pad(ours.joint_adj, nu), ref.norm_adj.to_dense())

    # The user-item block. The reference normalises its attractive block with user
    # degrees indexed by item ids (documented in soil.py); that is all it differs in:
    d = b.sum(1).pow(-0.5).nan_to_num(posinf=0.0)  # user 0 is RecBole's [PAD]
    torch.testing.assert_close(b_r_ref.to_dense(), d[:, None] * b * d[None, :b.size(1)])
    # One-line patch: the user-item block of its own augmented graph, as ours.
    ref.R = ref.norm_adj.to_dense()[:nu, nu:].to_sparse()
    torch.testing.assert_close(ours.r_adj.to_dense()[:, 1:], ref.R.to_dense())

    ours.eval()
    with torch.no_grad():
        u_o, i_o = ours.all_embeddings()
        u_r, i_r = ref.forward(ref.norm_adj)
    torch.testing.assert_close(u_o, u_r)
    torch.testing.assert_close(i_o[1:], i_r)

    ours.train()
    ours_batch, ref_batch = batch(ours)
    loss_o, loss_r = ours.calculate_loss(ours_batch), ref.calculate_loss(ref_batch)
    torch.testing.assert_close(loss_o, loss_r)
    loss_o.backward()
    loss_r.backward()
    torch.testing.assert_close(ours.item_id_embedding.weight.grad[1:], ref.item_id_embedding.weight.grad)
    torch.testing.assert_close(ours.user_embedding.weight.grad, ref.user_embedding.weight.grad)
    torch.testing.assert_close(ours.trs["text"].weight.grad, ref.text_trs.weight.grad)
    torch.testing.assert_close(ours.attention[0].weight.grad, ref.attention[0].weight.grad)


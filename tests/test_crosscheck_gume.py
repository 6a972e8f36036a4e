"""GUME against the authors' reference class (NanGongNingYi/GUME, an MMRec fork), same weights.

Runs only where a copy of that repository is given (nothing of it is in this repository;
checked against commit 44a4dce)::

    git clone https://github.com/NanGongNingYi/GUME /tmp/GUME
    GUME_SRC=/tmp/GUME/src pytest tests/test_crosscheck_gume.py

The reference is built on CPU through the stand-ins of ``tests/reference_code.py``
(its base class and dataset; ``.cuda()`` made a no-op), in a fresh folder because it
caches its graphs and ``inter.json`` under ``cwd + data_path + dataset``; MMRec has no
[PAD] item, so its item ``i`` is our item ``i + 1``. ``knn_k`` is 10: the reference pairs
the image and text neighbour lists assuming 10 per item (a documented difference), and
its batch size is the actual one (it divides its regularisers by the configured one).
Compared: the per-modality k-NN graphs, the image ∩ text edges and the normalised joint
user+item adjacency with its user-item block, the final user and item embeddings (eval
mode), the per-modality explicit vectors and their alignment term, one batch's loss (as
configured, then with every auxiliary weight 1) with the noise of the user-modality terms
seeded alike, and the gradients of that loss.
"""
import importlib
import os

import numpy as np
import pytest
import torch

from tests.recbole_data import write_tiny_multimodal_dataset
from tests.reference_code import ReferenceData, batch, build, reference_imports, skip_unless_reference, without_pad
from tests.reference_code import plain_argv  # noqa: F401  (autouse fixture)

GUME_SRC = os.environ.get("GUME_SRC")
pytestmark = skip_unless_reference("GUME_SRC", "models", "gume.py")

KNN_K = 10  # the reference's find_inter works for 10 neighbours per item only


@pytest.fixture
def reference_class(monkeypatch):
    """The reference's GUME class."""
    monkeypatch.setattr(np, "int", int, raising=False)  # its add_edge uses np.int (gone in NumPy 1.24)
    with reference_imports(GUME_SRC):
        yield importlib.import_module("models.gume").GUME


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    return write_tiny_multimodal_dataset(str(tmp_path_factory.mktemp("mm")), n_users=60, n_items=80, per_user=10)[0]


def copy_weights(ours, ref):
    with torch.no_grad():
        ref.user_embedding.weight.copy_(ours.user_embedding.weight)
        ref.item_id_embedding.weight.copy_(ours.item_id_embedding.weight[1:])
        for m in ("image", "text"):
            getattr(ref, f"extended_{m}_user").weight.copy_(ours.modality_user[m].weight)
            getattr(ref, f"{m}_embedding").weight.copy_(ours.feature_embedding[m][1:])
            reduce, (trans, _) = getattr(ref, f"{m}_space_trans")
            reduce.load_state_dict(ours.space_trans[m][0].state_dict())
            trans.load_state_dict(ours.space_trans[m][1].state_dict())
            getattr(ref, f"{m}_behavior").load_state_dict(ours.behavior[m].state_dict())
        ref.separate_coarse.load_state_dict(ours.separate_coarse.state_dict())


def test_gume(reference_class, config_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs(tmp_path / "tinymm")
    ours = build(config_file, "GUME", {"knn_k": KNN_K})
    ours_batch, ref_batch = batch(ours)
    config = dict(embedding_size=64, knn_k=KNN_K, n_ui_layers=3, n_layers=2, reg_weight_1=1e-5, reg_weight_2=0.1,
                  bm_loss=0.01, bm_temp=0.4, um_loss=0.01, um_temp=0.1, vt_loss=0.1, data_path="/", dataset="tinymm",
                  # the reference divides its regularisers by the configured batch size, ours by the actual one
                  train_batch_size=ref_batch.size(1))
    for key, value in config.items():
        assert key in ("data_path", "dataset", "train_batch_size") or ours._config[key] == value, key
    ref = reference_class(config, ReferenceData(ours), local_time="now")
    copy_weights(ours, ref)

    for m in ("image", "text"):
        torch.testing.assert_close(getattr(ours, f"item_adj_{m}").to_dense()[1:, 1:],
                                   getattr(ref, f"{m}_original_adj").to_dense())
    nu = ours.n_users
    joint = without_pad(ours.joint_adj, nu)
    shared = (joint[nu:, nu:] != 0).float()
    assert shared.sum() > 0
    torch.testing.assert_close(shared, torch.from_numpy(ref.ii_adj.toarray()).float())
    torch.testing.assert_close(joint, ref.norm_adj.to_dense())
    torch.testing.assert_close(ours.r_hat.to_dense()[:, 1:], ref.R.to_dense())

    ours.eval()
    ref.eval()
    with torch.no_grad():
        u_o, i_o = ours.all_embeddings()
        u_r, i_r = torch.split(ref.forward(ref.norm_adj), [ref.n_users, ref.n_items])
    torch.testing.assert_close(u_o, u_r)
    torch.testing.assert_close(i_o[1:], i_r)

    ours.train()
    ref.train()
    explicit = ours._forward()[4]
    explicit_r = ref.forward(ref.norm_adj, train=True)[2]
    for m, x in zip(("image", "text"), explicit_r):
        torch.testing.assert_close(without_pad(explicit[m], nu, columns=False), x)
    # The alignment term is ~1e-4, under the default atol: compared relative to the reference's,
    # which sees our [PAD] user as a user without items (its row 0, zero): ours leaves that row
    # out, as it leaves out the [PAD] item (counting both shrank the statistics: 0.7% off here).
    ratio = ours.alignment(explicit) / ref.align_vt(*(x[1:] for x in explicit_r))
    torch.testing.assert_close(ratio, torch.ones(()))
    for weights in ({}, dict.fromkeys(("bm_loss", "um_loss", "vt_loss", "reg_weight_1", "reg_weight_2"), 1.0)):
        for model in (ours, ref):  # weights 1: every term counts in the comparison, not only BPR
            for key, value in weights.items():
                setattr(model, key, value)
        torch.manual_seed(0)  # the noise of the two perturbed InfoNCE terms, drawn in the same order
        loss_o = ours.calculate_loss(ours_batch)
        torch.manual_seed(0)
        loss_r = ref.calculate_loss(ref_batch)
        torch.testing.assert_close(loss_o, loss_r)
    loss_o.backward()  # the last pair: every weight 1
    loss_r.backward()
    pairs = [(ours.user_embedding.weight.grad, ref.user_embedding.weight.grad),
             (ours.item_id_embedding.weight.grad[1:], ref.item_id_embedding.weight.grad),
             (ours.separate_coarse[0].weight.grad, ref.separate_coarse[0].weight.grad)]
    for m in ("image", "text"):
        pairs += [(ours.modality_user[m].weight.grad, getattr(ref, f"extended_{m}_user").weight.grad),
                  (ours.feature_embedding[m].grad[1:], getattr(ref, f"{m}_embedding").weight.grad),
                  (ours.space_trans[m][0].weight.grad, getattr(ref, f"{m}_reduce_dim").weight.grad),
                  (ours.behavior[m][0].weight.grad, getattr(ref, f"{m}_behavior")[0].weight.grad)]
    for grad_o, grad_r in pairs:
        torch.testing.assert_close(grad_o, grad_r)

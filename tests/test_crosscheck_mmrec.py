"""FREEDOM, SMORE and LATTICE against the reference classes of MMRec, same weights.

Runs only where a checkout of github.com/enoche/MMRec is given (nothing of it is in
this repository)::

    git clone https://github.com/enoche/MMRec /tmp/MMRec
    MMREC_SRC=/tmp/MMRec/src pytest tests/test_crosscheck_mmrec.py

The reference models are built on CPU through a stand-in for their base class
(``n_users``, ``n_items``, the features, ``batch_size``) and MMRec's ``.cuda()``
calls made no-ops; MMRec has no [PAD] item, so its item ``i`` is our item ``i + 1``.
Compared: the item graphs, the final user and item embeddings, a batch's loss and
(LATTICE) the gradients through its learned graph.
"""
import os
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from recbole.data.interaction import Interaction

from tests.recbole_data import build_model, write_tiny_multimodal_dataset

MMREC_SRC = os.environ.get("MMREC_SRC")
pytestmark = pytest.mark.skipif(not MMREC_SRC or not os.path.isdir(os.path.join(MMREC_SRC or "", "models")),
                                reason="set MMREC_SRC to the src/ folder of an MMRec checkout")


class ReferenceBase(torch.nn.Module):
    """What MMRec's models read from ``common.abstract_recommender.GeneralRecommender``."""

    def __init__(self, config, dataset):
        super().__init__()
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.batch_size = config["train_batch_size"]
        self.device = "cpu"
        self.v_feat, self.t_feat = dataset.v_feat, dataset.t_feat


def scatter_add(src, index, dim=0, dim_size=None):  # the one torch_scatter function MMRec's utils use
    return torch.zeros(dim_size, dtype=src.dtype).index_add(0, index, src)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = types.ModuleType("common.abstract_recommender")
    base.GeneralRecommender = ReferenceBase
    scatter = types.ModuleType("torch_scatter")
    scatter.scatter_add = scatter_add
    saved = {k: sys.modules.get(k) for k in ("common.abstract_recommender", "torch_scatter")}
    sys.modules.update({"common.abstract_recommender": base, "torch_scatter": scatter})
    sys.path.insert(0, MMREC_SRC)
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # MMRec hard-codes .cuda()
    import importlib

    try:
        yield {name: getattr(importlib.import_module(f"models.{name.lower()}"), name)
               for name in ("FREEDOM", "SMORE", "LATTICE")}, str(tmp_path_factory.mktemp("mmrec_cache"))
    finally:
        torch.Tensor.cuda = cuda
        sys.path.remove(MMREC_SRC)
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    return write_tiny_multimodal_dataset(str(tmp_path_factory.mktemp("mm")), n_users=60, n_items=80, per_user=10)[0]


def build(config_file, name, overrides):
    return build_model(name, config_file, overrides=overrides)[3]


class ReferenceData:
    """Our model's training data as MMRec's models read it (no [PAD] item)."""

    def __init__(self, ours):
        self.n_users, self.n_items = ours.n_users, ours.n_items - 1
        self.v_feat = ours.modality_features["image"][1:].clone()
        self.t_feat = ours.modality_features["text"][1:].clone()
        u, i = ours.inter_index.numpy()
        self.matrix = sp.coo_matrix((np.ones(u.size, dtype=np.float32), (u, i - 1)),
                                    shape=(self.n_users, self.n_items))

    def inter_matrix(self, form="coo"):
        return self.matrix


def reference_config(cache, batch_size, **keys):
    os.makedirs(os.path.join(cache, "tinymm"), exist_ok=True)
    return dict(keys, data_path=cache + "/", dataset="tinymm", train_batch_size=batch_size)


def batch(ours, n=64):
    g = torch.Generator().manual_seed(0)
    u, i = ours.inter_index
    pick = torch.randperm(u.numel(), generator=g)[:n]
    neg = torch.randint(1, ours.n_items, (n,), generator=g)
    ours_batch = Interaction({ours.USER_ID: u[pick], ours.ITEM_ID: i[pick], ours.NEG_ITEM_ID: neg})
    return ours_batch, torch.stack([u[pick], i[pick] - 1, neg - 1])


def copy_ids(ours, ref):
    with torch.no_grad():
        ref.user_embedding.weight.copy_(ours.user_embedding.weight)
        ref.item_id_embedding.weight.copy_(ours.item_id_embedding.weight[1:])


def assert_embeddings_equal(ours, ref, *args):
    ours.eval()
    with torch.no_grad():
        u_o, i_o = ours.all_embeddings()
        u_r, i_r = ref.forward(*args)
    torch.testing.assert_close(u_o, u_r)
    torch.testing.assert_close(i_o[1:], i_r)


def test_freedom(reference, config_file):
    classes, cache = reference
    ours = build(config_file, "FREEDOM", {"knn_k": 5, "dropout": 0.0, "reg_weight": 1e-3})
    ref = classes["FREEDOM"](reference_config(
        cache, 2048, embedding_size=64, feat_embed_dim=64, knn_k=5, lambda_coeff=0.9, cf_model="lightgcn",
        n_mm_layers=1, n_ui_layers=2, reg_weight=1e-3, mm_image_weight=0.1, dropout=0.0, degree_ratio=1.0),
        ReferenceData(ours))
    copy_ids(ours, ref)
    for m in ("image", "text"):
        getattr(ref, f"{m}_trs").load_state_dict(ours.projections[m].state_dict())
    torch.testing.assert_close(ours.sparse("mm_adj").to_dense()[1:, 1:], ref.mm_adj.to_dense())
    assert_embeddings_equal(ours, ref, ref.norm_adj)
    ours.train()
    ref.pre_epoch_processing()  # dropout 0: the full graph on both sides
    ours_batch, ref_batch = batch(ours)
    torch.testing.assert_close(ours.calculate_loss(ours_batch), ref.calculate_loss(ref_batch))


def test_smore(reference, config_file):
    classes, cache = reference
    ours = build(config_file, "SMORE", {"modality_knn_k": {"image": 6, "text": 4}, "dropout_rate": 0.0,
                                        "n_ui_layers": 3})
    ref = classes["SMORE"](reference_config(
        cache, ours.batch_size, cl_loss=0.01, n_ui_layers=3, embedding_size=64, n_layers=1, reg_weight=1e-4,
        image_knn_k=6, text_knn_k=4, dropout_rate=0.0), ReferenceData(ours))
    copy_ids(ours, ref)
    for m, s in (("image", "v"), ("text", "t")):
        getattr(ref, f"{m}_trs").load_state_dict(ours.projections[m].state_dict())
        getattr(ref, f"query_{s}").load_state_dict(ours.queries[m].state_dict())
        getattr(ref, f"gate_{s}").load_state_dict(ours.item_gates[m].state_dict())
        getattr(ref, f"gate_{m}_prefer").load_state_dict(ours.prefer_gates[m].state_dict())
    ref.gate_f.load_state_dict(ours.item_gates["fusion"].state_dict())
    ref.gate_fusion_prefer.load_state_dict(ours.prefer_gates["fusion"].state_dict())
    with torch.no_grad():
        for m in ("image", "text", "fusion"):
            getattr(ref, f"{m}_complex_weight").copy_(ours.filters[m])
    for m, adj in (("image", ref.image_original_adj), ("text", ref.text_original_adj), ("fusion", ref.fusion_adj)):
        torch.testing.assert_close(ours.sparse(f"adj_{m}").to_dense()[1:, 1:], adj.to_dense())
    ref.eval()
    assert_embeddings_equal(ours, ref, ref.norm_adj)
    ours.train()
    ref.train()
    ours_batch, ref_batch = batch(ours)
    torch.testing.assert_close(ours.calculate_loss(ours_batch), ref.calculate_loss(ref_batch))


def test_lattice(reference, config_file):
    classes, cache = reference
    ours = build(config_file, "LATTICE", {"knn_k": 5})
    ref = classes["LATTICE"](reference_config(
        cache, ours.batch_size, embedding_size=64, feat_embed_dim=64, weight_size=[64, 64], knn_k=5,
        lambda_coeff=0.9, cf_model="lightgcn", n_layers=1, reg_weight=ours.reg_weight, mess_dropout=[0.1, 0.1]),
        ReferenceData(ours))
    copy_ids(ours, ref)
    with torch.no_grad():
        for m in ("image", "text"):
            getattr(ref, f"{m}_trs").load_state_dict(ours.projections[m].state_dict())
        ours.modal_weight.copy_(torch.tensor([0.3, -0.2]))  # unequal modality weights
        ref.modal_weight.copy_(ours.modal_weight)
    torch.testing.assert_close(ours.sparse("original_image").to_dense()[1:, 1:], ref.image_original_adj)
    assert_embeddings_equal(ours, ref, ref.norm_adj, True)
    index, value = ours.item_graph()
    graph = torch.zeros(ours.n_items, ours.n_items).index_put((index[0], index[1]), value.detach(), accumulate=True)
    torch.testing.assert_close(graph[1:, 1:], ref.item_adj)

    ours.train()
    ref.pre_epoch_processing()  # the first batch of an epoch learns the graph, with gradients
    ours_batch, ref_batch = batch(ours)
    loss_o, loss_r = ours.calculate_loss(ours_batch), ref.calculate_loss(ref_batch)
    torch.testing.assert_close(loss_o, loss_r)
    loss_o.backward()
    loss_r.backward()
    torch.testing.assert_close(ours.projections["text"].weight.grad, ref.text_trs.weight.grad)
    torch.testing.assert_close(ours.modal_weight.grad, ref.modal_weight.grad)

"""LGMRec: local + hypergraph embeddings and the loss against a dense computation (two
and three modalities); no "+GR"; one modality; a training step; the runner on
image+text and text-only data."""
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from recbole_models.run import run_recbole
from tests.recbole_data import (assert_step_moves_every_parameter_reproducibly, build_model,
                                 write_tiny_multimodal_dataset)


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


def build(config_file, overrides=None, model="LGMRec"):
    return build_model(model, config_file, overrides=overrides)


def dense_graphs(dataset, n_users, n_items):
    """Binary R and D^-1/2 A D^-1/2 of the bipartite training graph, dense float64."""
    r = (dataset.inter_matrix(form="coo").toarray() > 0).astype(np.float64)
    a = np.zeros((n_users + n_items, n_users + n_items))
    a[:n_users, n_users:] = r
    a[n_users:, :n_users] = r.T
    deg = a.sum(1)
    inv = np.power(deg, -0.5, out=np.zeros_like(deg), where=deg > 0)
    return torch.from_numpy(r), torch.from_numpy(inv[:, None] * a * inv[None, :])


def dense_forward(model, r, a_hat, seed):
    """Z_U, Z_I and {m: (G_U, G_I)} by the paper's formulas with dense matrices
    (eval mode: no dropout). The Gumbel draws replay torch's generator from ``seed``
    in the model's order (per modality: items, then users)."""
    U, I = model.n_users, model.n_items
    torch.manual_seed(seed)
    assign = {}
    for m in model.modalities:
        x = model.modality_features[m]
        logits = x @ model.hyper[m].detach()
        h_i = F.gumbel_softmax(logits, tau=model.tau, dim=1).double()
        h_u = F.gumbel_softmax((r.float() @ logits), tau=model.tau, dim=1).double()
        h_i[0] = 0.0  # [PAD] joins no hyperedge
        assign[m] = (h_i, h_u)
    e = torch.cat([model.user_embedding, model.item_embedding]).detach().double()
    layers = [e]
    for _ in range(model.n_ui_layers):
        layers.append(a_hat @ layers[-1])
    cge = torch.stack(layers).mean(0)
    local = cge.clone()
    deg = r.sum(1, keepdim=True)
    for m in model.modalities:
        items = model.modality_features[m].double() @ model.projection[m].detach().double()
        users = torch.where(deg > 0, (r @ items) / deg.clamp(min=1), torch.zeros_like(r @ items))
        h = torch.cat([users, items])
        for _ in range(model.n_mm_layers):
            h = a_hat @ h
        local = local + F.normalize(h, dim=1)
    hyper, total = {}, 0
    for m in model.modalities:
        h_i, h_u = assign[m]
        g_i = cge[U:]
        for _ in range(model.n_hyper_layer):
            lam = h_i.t() @ g_i
            g_i, g_u = h_i @ lam, h_u @ lam
        hyper[m] = (g_u, g_i)
        total = total + torch.cat([g_u, g_i])
    z = local + model.alpha * F.normalize(total, dim=1)
    return z[:U], z[U:], hyper


def dense_contrast(a, b, b_all, tau):
    a, b, b_all = F.normalize(a, dim=1), F.normalize(b, dim=1), F.normalize(b_all, dim=1)
    pos = torch.exp((a * b).sum(1) / tau)
    total = torch.exp(a @ b_all.t() / tau).sum(1)
    return -torch.log(pos / total).sum()


@pytest.mark.parametrize("modalities", [("image", "text"), ("image", "text", "audio")],
                         ids=["two", "three"])
def test_embeddings_and_loss_match_a_dense_computation(tmp_path, modalities):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path), modalities=modalities)
    config, ds, train, model = build(config_file, {"n_hyper_layer": 2, "cl_weight": 1.0,
                                                   "reg_weight": 0.1, "hyper_num": 3})
    assert sorted(model.modalities) == sorted(modalities)
    modalities = model.modalities  # the dataset key's order (the YAML writer sorts it)
    r, a_hat = dense_graphs(train._dataset, model.n_users, model.n_items)
    model.eval()  # dropout off; the Gumbel draws stay

    torch.manual_seed(7)
    z_u, z_i, hyper = model.forward()
    d_u, d_i, d_hyper = dense_forward(model, r, a_hat, seed=7)
    for m in modalities:  # the hypergraph term on its own, then the sum
        torch.testing.assert_close(hyper[m][0].double(), d_hyper[m][0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(hyper[m][1].double(), d_hyper[m][1], rtol=1e-4, atol=1e-5)
    assert d_hyper[modalities[0]][1].abs().max() > 1e-3  # the global part is not vanishing
    torch.testing.assert_close(z_u.double(), d_u, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(z_i.double(), d_i, rtol=1e-4, atol=1e-5)

    batch = next(iter(train))
    u, i, j = batch[model.USER_ID], batch[model.ITEM_ID], batch[model.NEG_ITEM_ID]
    torch.manual_seed(11)
    loss = model.calculate_loss(batch)
    d_u, d_i, d_hyper = dense_forward(model, r, a_hat, seed=11)
    bpr = -torch.log(torch.sigmoid((d_u[u] * d_i[i]).sum(1) - (d_u[u] * d_i[j]).sum(1))).mean()
    hcl = 0
    for a in range(len(modalities)):
        for b in range(a + 1, len(modalities)):
            (ua, ia), (ub, ib) = d_hyper[modalities[a]], d_hyper[modalities[b]]
            hcl = hcl + dense_contrast(ua[u], ub[u], ub[1:], model.tau)
            hcl = hcl + dense_contrast(ia[i], ib[i], ib[1:], model.tau)
    reg = (d_u[u].norm() + d_i[i].norm() + d_i[j].norm()) / u.numel()
    expected = bpr + 1.0 * hcl + 0.1 * reg
    assert hcl > 0.1 * bpr  # each term matters at these weights
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-4)


def test_eval_scores_one_draw_per_evaluation(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    config, ds, train, model = build(config_file)
    model.eval()
    users = torch.arange(1, 6)
    with torch.no_grad():
        torch.manual_seed(1)
        first = model.full_sort_predict({model.USER_ID: users}).view(5, -1)
        again = model.full_sort_predict({model.USER_ID: users[2:]}).view(3, -1)
        torch.manual_seed(1)
        z_u, z_i = model.all_embeddings()
        redrawn, _ = model.all_embeddings()
    torch.testing.assert_close(again, first[2:])  # one draw for every batch of the evaluation
    torch.testing.assert_close(first, z_u[users] @ z_i.t())
    assert not torch.allclose(redrawn, z_u)  # ... while each computation draws anew
    with torch.no_grad():
        model.item_embedding.mul_(1.5)  # new weights (as an optimiser step writes them): recomputed
        assert not torch.allclose(model.full_sort_predict({model.USER_ID: users}).view(5, -1), first)


def test_one_modality_has_no_contrast_and_bad_keys(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path), modalities=("text",))
    config, ds, train, model = build(config_file, {"cl_weight": 1.0})
    model.eval()
    _, _, hyper = model.forward()
    user = torch.tensor([1, 2])
    assert model.hypergraph_contrast(hyper, user, user).item() == 0.0
    with pytest.raises(ValueError, match="graph_refinement"):
        build(config_file, {"graph_refinement": True})
    with pytest.raises(ValueError, match="feat_embed_dim"):
        build(config_file, {"feat_embed_dim": 32})
    with pytest.raises(ValueError, match="n_hyper_layer"):
        build(config_file, {"n_hyper_layer": 0})


def test_training_step_changes_every_parameter_reproducibly(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    assert_step_moves_every_parameter_reproducibly(build, config_file, before_loss=lambda: torch.manual_seed(3))


@pytest.mark.parametrize("modalities", [("image", "text"), ("text",)], ids=["image+text", "text"])
def test_runs_through_the_runner(tmp_path, modalities):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path), modalities=modalities)
    result = run_recbole("LGMRec", "tinymm", [config_file], {"epochs": 1}, saved=True)
    assert 0.0 <= result["test_result"]["recall@20"] <= 1.0
    assert result["best_epoch"] == 0


@pytest.mark.cuda
def test_cuda_matches_cpu(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    config, ds, train, model = build(config_file)
    batch = next(iter(train))
    model.eval()
    with torch.no_grad():
        cpu_cge = model.collaborative()
        cpu_mge = {m: model.modality_graph(m) for m in model.modalities}
        model.to("cuda")
        # The Gumbel draws come from CUDA's generator: compare the parts that draw nothing.
        torch.testing.assert_close(model.collaborative().cpu(), cpu_cge, rtol=1e-4, atol=1e-5)
        for m in model.modalities:
            torch.testing.assert_close(model.modality_graph(m).cpu(), cpu_mge[m], rtol=1e-4, atol=1e-5)
        assert torch.isfinite(model.calculate_loss(batch.to("cuda")))
        scores = model.full_sort_predict({model.USER_ID: torch.tensor([1, 2], device="cuda")})
    assert scores.is_cuda and torch.isfinite(scores).all()

"""SLMRec: its propagation, fusion, in-batch InfoNCE and FAC terms against a dense
computation; no "+GR"; a training step; the runner on image+text and text-only data."""
import sys

import numpy as np
import pytest
import torch

from recbole_models.run import run_recbole
from tests.recbole_data import (assert_step_moves_every_parameter_reproducibly, build_model,
                                 write_tiny_multimodal_dataset)


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


def build(config_file, overrides=None, model="SLMRec"):
    return build_model(model, config_file, overrides=overrides)


def dense_normalized_graph(dataset, n_users, n_items):
    """D^-1/2 A D^-1/2 of the bipartite training graph, dense float64, from scipy's matrix."""
    r = dataset.inter_matrix(form="coo").toarray().astype(np.float64)
    r = (r > 0).astype(np.float64)
    a = np.zeros((n_users + n_items, n_users + n_items))
    a[:n_users, n_users:] = r
    a[n_users:, :n_users] = r.T
    deg = a.sum(1)
    inv = np.power(deg, -0.5, out=np.zeros_like(deg), where=deg > 0)
    return torch.from_numpy(inv[:, None] * a * inv[None, :])


def linear(layer, x):
    return x @ layer.weight.double().t() + layer.bias.double()


def infonce(a, b, t):
    s = a @ b.t() / t
    return (-(s.diag() - torch.logsumexp(s, dim=1))).mean()


def test_loss_and_scores_match_a_dense_computation(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    config, ds, train, model = build(config_file, {"n_layers": 2})
    assert model.modalities == ["image", "text"]
    U, I = model.n_users, model.n_items
    a_hat = dense_normalized_graph(train._dataset, U, I)
    E_u = model.user_embedding.weight.double()
    views = []
    for items in [model.item_embedding.weight.double()] + [
            linear(model.dense[m], torch.nn.functional.normalize(model.modality_features[m].double(), dim=1))
            for m in ("image", "text")]:
        x = torch.cat([E_u, items])
        layers = [x]
        for _ in range(2):
            layers.append(a_hat @ layers[-1])
        z = torch.stack(layers).mean(0)
        views.append((z[:U], z[U:]))
    e_u = linear(model.user_fusion, torch.cat([v[0] for v in views], 1))
    e_i = linear(model.item_fusion, torch.cat([v[1] for v in views], 1))

    batch = next(iter(train))
    u, i = batch[model.USER_ID], batch[model.ITEM_ID]
    cos = torch.nn.functional.normalize
    main = infonce(cos(e_u[u], dim=1), cos(e_i[i], dim=1), model.temp)
    # FAC: ID -> image space (d), then -> text space (d/2).
    a1 = linear(model.fac_anchor[0], views[0][1][i])
    t1 = linear(model.fac_target[0], views[1][1][i])
    a2 = linear(model.fac_anchor[1], a1)
    t2 = linear(model.fac_target[1], views[2][1][i])
    assert a2.shape[1] == t2.shape[1] == model.embedding_size // 2
    ssl = infonce(a1, t1, model.ssl_temp) + infonce(a2, t2, model.ssl_temp)
    expected = main + model.ssl_alpha * ssl
    assert model.ssl_alpha > 0 and ssl.item() > 1.0  # the SSL term is not negligible here
    torch.testing.assert_close(model.calculate_loss(batch).double(), expected, rtol=1e-5, atol=1e-5)

    model.eval()
    users = torch.tensor([1, 4, 7])
    with torch.no_grad():
        scores = model.full_sort_predict({model.USER_ID: users}).view(3, -1)
    torch.testing.assert_close(scores.double(), (e_u[users] @ e_i.t()).detach(), rtol=1e-5, atol=1e-5)


def test_one_modality_has_one_fac_space_of_full_size_and_mean_fusion(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path), modalities=("text",))
    config, ds, train, model = build(config_file, {"mm_fusion_mode": "mean"})
    assert len(model.fac_anchor) == 1
    assert model.fac_anchor[0].out_features == model.embedding_size
    assert model.user_fusion.in_features == model.embedding_size
    loss = model.calculate_loss(next(iter(train)))
    assert torch.isfinite(loss)


def test_bad_keys_and_no_graph_refinement(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="graph_refinement"):
        build(config_file, {"graph_refinement": True})
    with pytest.raises(ValueError, match="ssl_task"):
        build(config_file, {"ssl_task": "FD"})
    with pytest.raises(ValueError, match="mm_fusion_mode"):
        build(config_file, {"mm_fusion_mode": "max"})


def test_training_step_changes_every_parameter_reproducibly(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    assert_step_moves_every_parameter_reproducibly(build, config_file)


@pytest.mark.parametrize("modalities", [("image", "text"), ("text",)], ids=["image+text", "text"])
def test_runs_through_the_runner(tmp_path, modalities):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path), modalities=modalities)
    result = run_recbole("SLMRec", "tinymm", [config_file], {"epochs": 1}, saved=True)
    assert 0.0 <= result["test_result"]["recall@20"] <= 1.0
    assert result["best_epoch"] == 0


@pytest.mark.cuda
def test_cuda_matches_cpu(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    config, ds, train, model = build(config_file)
    batch = next(iter(train))
    model.eval()
    with torch.no_grad():
        cpu_loss = model.calculate_loss(batch)
        cpu_scores = model.full_sort_predict({model.USER_ID: torch.tensor([1, 2])})
        model.to("cuda")
        gpu_loss = model.calculate_loss(batch.to("cuda"))
        gpu_scores = model.full_sort_predict({model.USER_ID: torch.tensor([1, 2], device="cuda")})
    torch.testing.assert_close(gpu_loss.cpu(), cpu_loss, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gpu_scores.cpu(), cpu_scores, rtol=1e-4, atol=1e-4)

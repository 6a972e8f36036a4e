"""GUME: the image ∩ text neighbour edges in the joint user-item graph against a dense
computation; +GR swaps the modality graphs; runs through the runner."""
import sys

import numpy as np
import pytest
import torch

from mllmrec_pyg.transforms import jaccard_cooccurrence_graph, normalize_graph, threshold_knn_graph
from recbole_models.model.gume import info_nce
from recbole_models.run import run_recbole
from tests.recbole_data import build_model, write_tiny_multimodal_dataset


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


def build(config_file, overrides=None, model="GUME"):
    config, _, train, m = build_model(model, config_file, overrides=dict({"knn_k": 4}, **(overrides or {})))
    return config, train, m


def dense_topk_sets(x, k):
    xn = torch.nn.functional.normalize(x, dim=1)
    sim = xn @ xn.t()
    order = torch.argsort(-sim, dim=1, stable=True)[:, :k]
    return [set(row.tolist()) for row in order]


def test_joint_graph_has_the_shared_neighbour_edges(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    config, train, model = build(config_file)
    nu, ni = model.n_users, model.n_items
    img = dense_topk_sets(model.modality_features["image"][1:], 4)
    txt = dense_topk_sets(model.modality_features["text"][1:], 4)
    a = torch.zeros(nu + ni, nu + ni, dtype=torch.float64)
    inter = train._dataset.inter_matrix(form="coo")
    for u, i in zip(inter.row, inter.col):
        a[u, nu + i] = a[nu + i, u] = 1.0
    n_shared = 0
    for i in range(ni - 1):
        for j in (img[i] & txt[i]) - {i}:
            a[nu + 1 + i, nu + 1 + j] = 1.0
            n_shared += 1
    assert n_shared > 0
    d = a.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0
    expected = d[:, None] * a * d[None, :]
    torch.testing.assert_close(model.joint_adj.to_dense().double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.r_hat.to_dense().double(), expected[:nu, nu:], rtol=1e-5, atol=1e-6)


def test_modality_graph_is_weighted_knn_or_refined(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    _, train, model = build(config_file)
    x = model.modality_features["text"][1:]
    n = model.n_items
    # Off: cosine-weighted top-4 (self included), D^-1/2 A D^-1/2 with row sums.
    xn = torch.nn.functional.normalize(x, dim=1)
    sim = xn @ xn.t()
    a = torch.zeros(n, n)
    for i, row in enumerate(torch.argsort(-sim, dim=1, stable=True)[:, :4]):
        a[i + 1, row + 1] = sim[i, row]
    d = a.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0
    torch.testing.assert_close(model.item_adj_text.to_dense(), d[:, None] * a * d[None, :])

    # On (+GR): exactly the transforms' refined graph, normalised the same way.
    _, train, gr = build(config_file, {"graph_refinement": True, "knn_threshold": 0.1, "cooc_k": 3})
    ei, ew = threshold_knn_graph(x, 4, threshold=0.1)
    inter = train._dataset.inter_matrix(form="coo")
    keep = inter.col > 0
    ui = torch.from_numpy(np.vstack([inter.row[keep], inter.col[keep] - 1]).astype(np.int64))
    ci, cw = jaccard_cooccurrence_graph(ui, gr.n_users, n - 1, 3)
    ref = torch.zeros(n - 1, n - 1)
    ref[ei[1], ei[0]] += ew
    ref[ci[1], ci[0]] += cw
    r, c = ref.nonzero(as_tuple=True)
    ni, nw = normalize_graph(torch.stack([c, r]), ref[r, c], n - 1, "row")
    expected = torch.zeros(n, n)
    expected[ni[1] + 1, ni[0] + 1] = nw
    torch.testing.assert_close(gr.item_adj_text.to_dense(), expected)
    assert not torch.allclose(gr.item_adj_text.to_dense(), model.item_adj_text.to_dense())


def test_info_nce_against_its_definition():
    torch.manual_seed(0)
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    an, bn = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    expected = -torch.log(torch.exp((an * bn).sum(1) / 0.2) / torch.exp(an @ bn.t() / 0.2).sum(1)).mean()
    torch.testing.assert_close(info_nce(a, b, 0.2), expected)


def test_training_step_changes_parameters(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    _, train, model = build(config_file)
    batch = next(iter(train))
    before = [p.detach().clone() for p in model.parameters()]
    loss = model.calculate_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    torch.optim.Adam(model.parameters(), lr=1e-2).step()
    assert sum(not torch.equal(a, p) for a, p in zip(before, model.parameters())) >= 5


@pytest.mark.parametrize("modalities", [("image", "text"), ("text",)], ids=["image+text", "text"])
def test_runs_through_the_runner(tmp_path, modalities):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path), modalities=modalities)
    result = run_recbole("GUME", "tinymm", [config_file], {"epochs": 1, "knn_k": 4}, saved=True)
    assert 0.0 <= result["test_result"]["recall@20"] <= 1.0


def test_alignment_leaves_out_the_pad_rows(tmp_path):
    # The mean/variance alignment runs over the real users and items: RecBole's [PAD] user
    # and item (rows 0 and n_users of the stacked vectors, zero) would shrink both statistics.
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    _, _, model = build(config_file)
    g = torch.Generator().manual_seed(0)
    n = model.n_users + model.n_items
    explicit = {"image": torch.randn(n, 8, generator=g) + 1.0, "text": 2.0 * torch.randn(n, 8, generator=g)}
    keep = torch.ones(n, dtype=torch.bool)
    keep[[0, model.n_users]] = False
    for x in explicit.values():
        x[~keep] = 0.0
    a, b = explicit["image"][keep], explicit["text"][keep]
    expected = (a.var() - b.var()).abs() + (a.mean() - b.mean()).abs()
    torch.testing.assert_close(model.alignment(explicit), expected)

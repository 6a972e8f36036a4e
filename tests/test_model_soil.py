"""SOIL: interest graph and attractive user-item edges against a dense re-computation of
the reference's per-user loops; +GR; runs through the runner."""
import sys

import pytest
import torch
from torch.nn import functional as F

from recbole_models.run import run_recbole
from tests.recbole_data import build_model, write_tiny_multimodal_dataset


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


OVERRIDES = {"knn_k": 4, "knn_i": 3, "knn_a": 2}


def build(config_file, overrides=None):
    _, _, train, m = build_model("SOIL", config_file, overrides=dict(OVERRIDES, **(overrides or {})))
    return train, m


def sym_norm(a):
    d = a.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0
    return d[:, None] * a * d[None, :]


def dense_reference(model, train):
    """The reference's dense loops over users, on items 1.. (row 0 = [PAD])."""
    feats = {m: F.normalize(x[1:], dim=1) for m, x in model.modality_features.items()}
    sims = {m: x @ x.t() for m, x in feats.items()}
    n = next(iter(sims.values())).size(0)
    inter = train._dataset.inter_matrix(form="coo")
    history = {}
    for u, i in zip(inter.row, inter.col):
        history.setdefault(int(u), []).append(int(i) - 1)
    interest = {m: torch.zeros(n, n) for m in sims}
    for u, its in history.items():
        its = torch.tensor(its)
        cols = torch.cat([torch.topk(s[its].sum(0), 3).indices for s in sims.values()]).unique()
        for m, s in sims.items():
            interest[m][its[:, None], cols] += s[its[:, None], cols]
    p = torch.ones(n, n)
    for s in sims.values():
        p = p * s
    b = torch.zeros(model.n_users, n)
    for u, its in history.items():
        its = torch.tensor(its)
        k = 2 + its.numel()
        val, idx = torch.topk(p[its], k, dim=1)
        v, pos = torch.topk(val.flatten(), k)
        for value, col in zip(v, idx.flatten()[pos]):
            b[u, col] += value
    return interest, b


def test_interest_and_attractive_graphs_match_the_reference_loops(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    train, model = build(config_file)
    interest, b = dense_reference(model, train)
    n = model.n_items
    for m in model.modalities:
        g = interest[m].clamp(min=0)       # negative similarities are left out (docstring)
        expected = torch.zeros(n, n)
        expected[1:, 1:] = sym_norm(g)
        x = F.normalize(model.modality_features[m][1:], dim=1)
        sim = x @ x.t()
        knn = torch.zeros(n, n)
        for i, row in enumerate(torch.argsort(-sim, dim=1, stable=True)[:, :4]):
            knn[i + 1, row + 1] = sim[i, row]
        expected += sym_norm(knn)
        torch.testing.assert_close(getattr(model, f"item_adj_{m}").to_dense(), expected, rtol=1e-4, atol=1e-6)

    nu = model.n_users
    big = torch.zeros(nu + n, nu + n)
    b = b.clamp(min=0)
    big[:nu, nu + 1:] = b
    big[nu + 1:, :nu] = b.t()
    a = torch.zeros(nu + n, nu + n)
    inter = train._dataset.inter_matrix(form="coo")
    for u, i in zip(inter.row, inter.col):
        a[u, nu + i] = a[nu + i, u] = 1.0
    expected = sym_norm(a) + sym_norm(big) / 2
    torch.testing.assert_close(model.joint_adj.to_dense(), expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.r_adj.to_dense(), expected[:nu, nu:], rtol=1e-4, atol=1e-6)
    # Every user is attracted to more items than it has.
    assert (b > 0).sum() > len(inter.row)


def test_graph_refinement_replaces_only_the_similarity_graph(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    _, plain = build(config_file)
    _, gr = build(config_file, {"graph_refinement": True, "knn_threshold": 0.1, "cooc_k": 3})
    from recbole_models.model.multimodal import normalize_adjacency

    x = gr.modality_features["image"]
    delta_plain = plain.item_adj_image.to_dense() - normalize_adjacency(
        plain.item_item_adjacency(x, 4, weighted=True), "row").to_dense()
    delta_gr = gr.item_adj_image.to_dense() - normalize_adjacency(
        gr.item_item_adjacency(x, 4), "row").to_dense()
    torch.testing.assert_close(delta_plain, delta_gr)   # the same interest graph in both
    assert not torch.allclose(plain.item_adj_image.to_dense(), gr.item_adj_image.to_dense())


def test_training_step_changes_parameters(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    train, model = build(config_file)
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
    result = run_recbole("SOIL", "tinymm", [config_file], dict(OVERRIDES, epochs=1), saved=True)
    assert 0.0 <= result["test_result"]["recall@20"] <= 1.0


def test_interest_graph_in_chunks_equals_one_pass(monkeypatch):
    """The pair similarities are gathered in chunks (one pass needs ~40 GB at Baby size)."""
    from recbole_models.model import soil

    torch.manual_seed(0)
    x = F.normalize(torch.rand(30, 8), dim=1)
    users = torch.randint(0, 6, (40,))
    items = torch.randint(0, 30, (40,))
    cols = torch.randint(-1, 30, (6, 5))
    whole = soil.interest_graph(x, users, items, cols).to_dense()
    monkeypatch.setattr(soil, "BLOCK_ELEMENTS", 8 * 7)   # 7 pairs per chunk
    torch.testing.assert_close(soil.interest_graph(x, users, items, cols).to_dense(), whole)
    dense = torch.zeros(30, 30)
    for u, i in zip(users.tolist(), items.tolist()):
        for c in cols[u].tolist():
            if c >= 0 and float(x[i] @ x[c]) > 0:
                dense[i, c] += float(x[i] @ x[c])
    torch.testing.assert_close(whole, dense)


@pytest.mark.parametrize("modalities", [("image", "text"), ("text",)], ids=["image+text", "text"])
def test_side_view_is_the_mean_of_specific_and_common_parts(tmp_path, modalities):
    """Two modalities: the reference's (h_v + h_t - c) / 3. One: h / 2, not 0 (the
    reference's formula read literally drops a lone modality's view)."""
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path), modalities=modalities)
    _, model = build(config_file)
    captured = {}
    original = model.attention.forward

    def spy(x):
        out = original(x)
        captured.setdefault("h", x.detach().clone())
        return out

    model.attention.forward = spy
    with torch.no_grad():
        final, side, content = model._forward()
    h = captured["h"]
    torch.testing.assert_close(final, content + side)
    if len(modalities) == 2:
        alpha = torch.softmax(model.attention(h).squeeze(-1), dim=0)
        common = alpha[0, :, None] * h[0] + alpha[1, :, None] * h[1]
        torch.testing.assert_close(side, (h[0] + h[1] - common) / 3)
    else:
        torch.testing.assert_close(side, h[0] / 2)
        assert side.abs().sum() > 0

"""SMORE: max-pooled modality graphs and spectral fusion against dense computations,
"+GR", runs through RecBole on two modalities and on text only."""
import math
import sys

import pytest
import torch

from mllmrec_pyg.transforms import jaccard_cooccurrence_graph, normalize_graph, threshold_knn_graph
from recbole_models.compare import load_variants, resolve
from recbole_models.model.smore import info_nce, max_pool_graphs
from recbole_models.run import run_recbole
from tests.recbole_data import assert_gradients_bitwise_reproducible, build_model, write_tiny_multimodal_dataset


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


def build(config_file, overrides=None, model="SMORE"):
    config, _, train, m = build_model(model, config_file, overrides=overrides)
    return config, train, m


@pytest.fixture(scope="module")
def two_modalities(tmp_path_factory):
    return write_tiny_multimodal_dataset(str(tmp_path_factory.mktemp("mm")))[0]


def dense_weighted_knn_sym(x, k):
    """Cosine top-k (self included) holding the similarities, non-positive ones dropped,
    D^-1/2 K D^-1/2 with row sums; [n, n] with [PAD] row 0; NaN marks no edge."""
    x = x[1:]
    xn = x / x.norm(dim=1, keepdim=True)
    sim = xn @ xn.t()
    top = sim.topk(k, dim=1)
    a = torch.zeros_like(sim).scatter_(1, top.indices, top.values).clamp(min=0)
    d = a.sum(1).pow(-0.5)
    out = torch.full((x.size(0) + 1, x.size(0) + 1), float("nan"))
    norm = d[:, None] * a * d[None, :]
    out[1:, 1:] = torch.where(a > 0, norm, torch.full_like(norm, float("nan")))
    return out


def as_dense(adj):
    """Sparse -> dense with NaN where no entry is stored."""
    out = torch.full(adj.shape, float("nan"))
    i = adj.coalesce().indices()
    out[i[0], i[1]] = adj.coalesce().values()
    return out


def test_max_pool_keeps_the_larger_value_over_the_union():
    a = torch.sparse_coo_tensor([[0, 0, 1], [0, 1, 2]], [0.5, -0.5, 0.2], (3, 3))
    b = torch.sparse_coo_tensor([[0, 1, 2], [0, 2, 1]], [0.7, 0.1, -0.3], (3, 3))
    expected = torch.tensor([[0.7, -0.5, float("nan")], [float("nan"), float("nan"), 0.2],
                             [float("nan"), -0.3, float("nan")]])
    # Absent entries are -inf, not 0: (0, 1) keeps -0.5, (2, 1) keeps -0.3.
    torch.testing.assert_close(as_dense(max_pool_graphs([a, b])), expected, equal_nan=True)


def test_modality_graphs_and_max_fusion_match_dense(two_modalities):
    config, train, model = build(two_modalities, {"modality_knn_k": {"image": 4, "text": 7}})
    f = model.modality_features
    image, text = dense_weighted_knn_sym(f["image"], 4), dense_weighted_knn_sym(f["text"], 7)
    torch.testing.assert_close(as_dense(model.sparse("adj_image")), image, equal_nan=True)
    torch.testing.assert_close(as_dense(model.sparse("adj_text")), text, equal_nan=True)
    fused = torch.fmax(image, text)  # NaN (no edge) loses to any value
    torch.testing.assert_close(as_dense(model.sparse("adj_fusion")), fused, equal_nan=True)
    # The fusion differs from either graph and from their sum.
    assert not torch.allclose(fused.nan_to_num(), image.nan_to_num())
    assert not torch.allclose(fused.nan_to_num(), (image.nan_to_num() + text.nan_to_num()))


def test_spectral_fusion_is_a_filtered_circular_convolution(two_modalities):
    config, train, model = build(two_modalities, {"embedding_size": 8})
    d = 8
    torch.manual_seed(0)
    a, b = torch.randn(5, d), torch.randn(5, d)
    with torch.no_grad():
        for v in ("image", "text", "fusion"):
            model.filters[v].zero_()
            model.filters[v][..., 0] = 1.0  # w = 1 + 0j: no filtering
        out = model.spectral({"image": a, "text": b})
    torch.testing.assert_close(out["image"], a)
    torch.testing.assert_close(out["text"], b)
    circular = torch.stack([sum(a[:, j] * b[:, (t - j) % d] for j in range(d)) for t in range(d)], 1)
    torch.testing.assert_close(out["fusion"], circular / math.sqrt(d))
    # A filter scales each frequency: the zero frequency alone gives the mean of the row.
    with torch.no_grad():
        model.filters["image"].zero_()
        model.filters["image"][0, 0, 0] = 1.0
        out = model.spectral({"image": a, "text": b})
    torch.testing.assert_close(out["image"], a.mean(1, keepdim=True).expand(-1, d))


def test_info_nce_matches_its_formula():
    torch.manual_seed(0)
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    s = torch.exp(an @ bn.t() / 0.2)
    expected = -torch.log(s.diag() / s.sum(1)).mean()
    torch.testing.assert_close(info_nce(a, b, 0.2), expected)


def refined_sym(x, k, threshold, cooc_k, inter_index, n_users):
    """MLLMRec's refined graph of the transforms (k-NN + Jaccard, "row"-normalised), NaN = no edge."""
    x = x[1:]
    keep = inter_index[1] > 0
    ui = torch.stack([inter_index[0, keep], inter_index[1, keep] - 1])
    ei, ew = threshold_knn_graph(x, k, threshold=threshold)
    ci, cw = jaccard_cooccurrence_graph(ui, n_users, x.size(0), cooc_k)
    ei, ew = normalize_graph(torch.cat([ei, ci], 1), torch.cat([ew, cw]), x.size(0), "row")
    out = torch.zeros(x.size(0) + 1, x.size(0) + 1)
    out[1:, 1:].index_put_((ei[1], ei[0]), ew, accumulate=True)
    present = torch.zeros_like(out, dtype=torch.bool)
    present[1:, 1:][ei[1], ei[0]] = True
    return torch.where(present, out, torch.full_like(out, float("nan")))


def test_graph_refinement_switch(two_modalities):
    keys = {"modality_knn_k": {"image": 5, "text": 5}, "knn_threshold": 0.1, "cooc_k": 3}
    _, _, off = build(two_modalities, dict(keys, graph_refinement=False))
    model_name, overrides = resolve("SMORE+GR", load_variants())  # the named variant of compare
    assert (model_name, overrides) == ("SMORE", {"graph_refinement": True})
    _, _, on = build(two_modalities, dict(keys, **overrides))
    f = on.modality_features
    ref = {m: refined_sym(f[m], 5, 0.1, 3, on.inter_index, on.n_users) for m in ("image", "text")}
    for m in ("image", "text"):
        torch.testing.assert_close(as_dense(on.sparse(f"adj_{m}")), ref[m], equal_nan=True)
        torch.testing.assert_close(as_dense(off.sparse(f"adj_{m}")), dense_weighted_knn_sym(f[m], 5),
                                   equal_nan=True)
    torch.testing.assert_close(as_dense(on.sparse("adj_fusion")), torch.fmax(ref["image"], ref["text"]),
                               equal_nan=True)


def test_training_step_changes_parameters(two_modalities):
    config, train, model = build(two_modalities, {"modality_knn_k": {"image": 5, "text": 5}})
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    model.train()
    loss = model.calculate_loss(next(iter(train)))
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = dict(model.named_parameters())
    for name in ("user_embedding.weight", "item_id_embedding.weight", "features.image", "filters.fusion",
                 "queries.text.0.weight", "prefer_gates.fusion.0.weight", "item_gates.image.0.weight"):
        assert not torch.equal(before[name], after[name]), name


def test_gradients_are_bitwise_reproducible(tmp_path):
    # Batches big enough for CPU kernels to split work across threads (advanced indexing's
    # backward then sums repeated ids in a varying order; index_select's does not).
    config_file = write_tiny_multimodal_dataset(str(tmp_path), n_users=600, n_items=200, per_user=10)[0]
    _, train, model = build(config_file, {"train_batch_size": 2048, "n_ui_layers": 1})
    # Each pass reseeds, so that it draws the same dropout masks.
    assert_gradients_bitwise_reproducible(model, next(iter(train)), before_each=lambda: torch.manual_seed(0))


@pytest.mark.parametrize("modalities", [("image", "text"), ("text",)])
def test_run_through_recbole(tmp_path, modalities):
    config_file = write_tiny_multimodal_dataset(str(tmp_path), modalities=modalities)[0]
    result = run_recbole("SMORE", "tinymm", [config_file], {"epochs": 1})
    assert set(result["test_result"]) >= {"recall@20", "ndcg@20"}
    assert all(math.isfinite(v) for v in result["test_result"].values())


@pytest.mark.cuda
def test_cuda_matches_cpu(two_modalities):
    _, train, model = build(two_modalities, {"modality_knn_k": {"image": 5, "text": 5}})
    model.eval()
    with torch.no_grad():
        cpu = model.all_embeddings()
        gpu = model.to("cuda").all_embeddings()
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-4, atol=1e-5)
    # A training epoch's start (FREEDOM: pruning with a CUDA generator) and one step on the GPU.
    model.train()
    loss = model.calculate_loss(next(iter(train)).to("cuda"))
    assert torch.isfinite(loss)
    loss.backward()

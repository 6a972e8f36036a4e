"""LATTICE: the learned/original graph mix (values and gradients) against the dense
computation of the reference, its per-epoch relearning, "+GR", runs through RecBole
on two modalities and on text only."""
import math
import sys

import pytest
import torch
from torch.nn import functional as F

from mllmrec_pyg.transforms import jaccard_cooccurrence_graph, normalize_graph, threshold_knn_graph
from recbole_models.compare import load_variants, resolve
from recbole_models.model.lattice import propagate
from recbole_models.run import run_recbole
from tests.recbole_data import assert_gradients_bitwise_reproducible, build_model, write_tiny_multimodal_dataset


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


def build(config_file, overrides=None, model="LATTICE"):
    config, _, train, m = build_model(model, config_file, overrides=overrides)
    return config, train, m


@pytest.fixture(scope="module")
def two_modalities(tmp_path_factory):
    return write_tiny_multimodal_dataset(str(tmp_path_factory.mktemp("mm")))[0]


def padded(a):
    out = torch.zeros(a.size(0) + 1, a.size(0) + 1)
    out[1:, 1:] = a
    return out


def dense_knn(y, k):
    """The reference's build_sim + build_knn_neighbourhood (weighted, self included) over
    items 1.., non-positive similarities dropped."""
    yn = y / y.norm(dim=1, keepdim=True)
    sim = yn @ yn.t()
    top = sim.topk(k, dim=1)
    a = torch.zeros_like(sim).scatter(1, top.indices, top.values)
    return a * (a > 0)


def dense_sym(a):
    d = a.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    return inv[:, None] * a * inv[None, :]


def dense_item_graph(model, k, lam, originals=None):
    w = torch.softmax(model.modal_weight, 0)
    mods = model.modalities
    learned = sum(w[j] * dense_knn(model.projections[m](model.features[m])[1:], k) for j, m in enumerate(mods))
    if originals is None:
        originals = {m: dense_sym(dense_knn(model.modality_features[m][1:], k)) for m in mods}
    original = sum(w[j] * originals[m] for j, m in enumerate(mods))
    return padded((1 - lam) * dense_sym(learned) + lam * original)


def sparse_to_dense(index, value, n):
    return torch.zeros(n, n).index_put((index[0], index[1]), value, accumulate=True)


def test_learned_original_mix_matches_dense_values_and_gradients(two_modalities):
    config, train, model = build(two_modalities, {"knn_k": 5, "lambda_coeff": 0.7})
    with torch.no_grad():
        model.modal_weight.copy_(torch.tensor([0.2, -0.4]))  # unequal modality weights
    e = torch.randn(model.n_items, 3, generator=torch.Generator().manual_seed(0))
    params = [model.projections["image"].weight, model.projections["text"].weight, model.modal_weight,
              model.features["text"]]

    dense = dense_item_graph(model, 5, 0.7)
    expected = torch.autograd.grad((dense @ e).pow(2).sum(), params)

    index, value = model.item_graph()
    torch.testing.assert_close(sparse_to_dense(index, value.detach(), model.n_items), dense.detach())
    # Anomaly mode (RecBole's SINE module switches it on globally when imported) rejects
    # any NaN in the backward pass, even one that reaches no parameter.
    with torch.autograd.set_detect_anomaly(True):
        got = torch.autograd.grad(propagate(index, value, e).pow(2).sum(), params)
    for g, x in zip(got, expected):
        assert x.abs().sum() > 0
        torch.testing.assert_close(g, x)

    # lambda weighs the original against the learned graph.
    _, _, only_original = build(two_modalities, {"knn_k": 5, "lambda_coeff": 1.0})
    index, value = only_original.item_graph()
    w = torch.softmax(only_original.modal_weight, 0).detach()
    f = only_original.modality_features
    original = padded(w[0] * dense_sym(dense_knn(f["image"][1:], 5)) + w[1] * dense_sym(dense_knn(f["text"][1:], 5)))
    torch.testing.assert_close(sparse_to_dense(index, value.detach(), model.n_items), original)


def test_scores_follow_the_mixed_graph(two_modalities):
    config, train, model = build(two_modalities, {"knn_k": 5})
    s = dense_item_graph(model, 5, 0.9).detach()
    u, i = model.inter_index
    n = model.n_users + model.n_items
    a = torch.eye(n)
    a[u, i + model.n_users] = 1.0
    a[i + model.n_users, u] = 1.0
    a = a / a.sum(1, keepdim=True)
    ego = torch.cat([model.user_embedding.weight, model.item_id_embedding.weight]).detach()
    z = (ego + a @ ego + a @ a @ ego) / 3
    h = F.normalize(s @ model.item_id_embedding.weight.detach(), dim=1)
    model.eval()
    with torch.no_grad():
        users, items = model.all_embeddings()
    torch.testing.assert_close(users, z[:model.n_users])
    torch.testing.assert_close(items, z[model.n_users:] + h)


def test_graph_is_relearned_at_the_first_batch_of_each_epoch(two_modalities):
    config, train, model = build(two_modalities, {"knn_k": 5})
    batch = next(iter(train))
    proj = model.projections["text"].weight

    def grad_after_step():
        model.zero_grad()
        model.calculate_loss(batch).backward()
        return proj.grad

    model.train()  # RecBole's trainer: once per epoch
    first = grad_after_step()
    assert first is not None and first.abs().sum() > 0
    second = grad_after_step()  # same epoch: the detached graph of the first batch
    assert second is None or second.abs().sum() == 0
    model.eval()
    model.train()
    assert grad_after_step().abs().sum() > 0


def refined_sym(x, k, threshold, cooc_k, inter_index, n_users):
    x = x[1:]
    keep = inter_index[1] > 0
    ui = torch.stack([inter_index[0, keep], inter_index[1, keep] - 1])
    ei, ew = threshold_knn_graph(x, k, threshold=threshold)
    ci, cw = jaccard_cooccurrence_graph(ui, n_users, x.size(0), cooc_k)
    ei, ew = normalize_graph(torch.cat([ei, ci], 1), torch.cat([ew, cw]), x.size(0), "row")
    return torch.zeros(x.size(0), x.size(0)).index_put((ei[1], ei[0]), ew, accumulate=True)


def test_graph_refinement_switch(two_modalities):
    keys = {"knn_k": 5, "knn_threshold": 0.1, "cooc_k": 3, "lambda_coeff": 0.9}
    _, _, off = build(two_modalities, dict(keys, graph_refinement=False))
    model_name, overrides = resolve("LATTICE+GR", load_variants())  # the named variant of compare
    assert (model_name, overrides) == ("LATTICE", {"graph_refinement": True})
    _, _, on = build(two_modalities, dict(keys, **overrides))
    f = on.modality_features
    refined = {m: refined_sym(f[m], 5, 0.1, 3, on.inter_index, on.n_users) for m in on.modalities}
    for m in on.modalities:
        torch.testing.assert_close(on.sparse(f"original_{m}").to_dense(), padded(refined[m]))
        torch.testing.assert_close(off.sparse(f"original_{m}").to_dense(),
                                   padded(dense_sym(dense_knn(f[m][1:], 5))))
    # The graph propagated over: the learned part unchanged, the original part refined.
    index, value = on.item_graph()
    torch.testing.assert_close(sparse_to_dense(index, value.detach(), on.n_items),
                               dense_item_graph(on, 5, 0.9, originals=refined).detach())


def test_training_step_changes_parameters(two_modalities):
    config, train, model = build(two_modalities, {"knn_k": 5})
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    model.train()
    loss = model.calculate_loss(next(iter(train)))
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = dict(model.named_parameters())
    for name in ("user_embedding.weight", "item_id_embedding.weight", "features.image", "projections.text.weight",
                 "modal_weight"):
        assert not torch.equal(before[name], after[name]), name


def test_gradients_are_bitwise_reproducible(tmp_path):
    # Batches big enough for CPU kernels to split work across threads (advanced indexing's
    # backward then sums repeated ids in a varying order; index_select's does not).
    config_file = write_tiny_multimodal_dataset(str(tmp_path), n_users=600, n_items=200, per_user=10)[0]
    _, train, model = build(config_file, {"train_batch_size": 4096})
    # Each pass redoes the graph-learning batch of the epoch start.
    assert_gradients_bitwise_reproducible(model, next(iter(train)),
                                          before_each=lambda: model.pre_epoch_processing(0))


@pytest.mark.parametrize("modalities", [("image", "text"), ("text",)])
def test_run_through_recbole(tmp_path, modalities):
    config_file = write_tiny_multimodal_dataset(str(tmp_path), modalities=modalities)[0]
    result = run_recbole("LATTICE", "tinymm", [config_file], {"epochs": 1})
    assert set(result["test_result"]) >= {"recall@20", "ndcg@20"}
    assert all(math.isfinite(v) for v in result["test_result"].values())


@pytest.mark.cuda
def test_cuda_matches_cpu(two_modalities):
    _, train, model = build(two_modalities, {"knn_k": 5})
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

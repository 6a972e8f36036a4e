"""FREEDOM: the frozen mixed item graph and the degree-sensitive pruning against
dense computations, "+GR", runs through RecBole on two modalities and on text only."""
import math
import sys

import numpy as np
import pytest
import torch
from scipy import stats

from mllmrec_pyg.transforms import jaccard_cooccurrence_graph, normalize_graph, threshold_knn_graph
from recbole_models import get_model
from recbole_models.compare import load_variants, resolve
from recbole_models.model.freedom import FREEDOM, modality_weights
from recbole_models.run import make_config, run_recbole
from tests.recbole_data import assert_gradients_bitwise_reproducible, build_model, write_tiny_multimodal_dataset


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


def build(config_file, overrides=None, model="FREEDOM"):
    config, _, train, m = build_model(model, config_file, overrides=overrides)
    return config, train, m


@pytest.fixture(scope="module")
def two_modalities(tmp_path_factory):
    return write_tiny_multimodal_dataset(str(tmp_path_factory.mktemp("mm")))[0]


def dense_knn_sym(x, k):
    """Binary cosine top-k (self included) over items 1.., D^-1/2 A D^-1/2, as [n, n] with [PAD] row 0."""
    x = x[1:]
    xn = x / x.norm(dim=1, keepdim=True)
    sim = xn @ xn.t()
    a = torch.zeros_like(sim)
    a.scatter_(1, sim.topk(k, dim=1).indices, 1.0)
    d = a.sum(1).pow(-0.5)
    out = torch.zeros(x.size(0) + 1, x.size(0) + 1)
    out[1:, 1:] = d[:, None] * a * d[None, :]
    return out


def dense_sym(a):
    d = a.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    return inv[:, None] * a * inv[None, :]


def test_modality_weights():
    assert modality_weights(["text"], 0.1) == {"text": 1.0}
    assert modality_weights(["image", "text"], 0.1) == {"image": 0.1, "text": pytest.approx(0.9)}
    w = modality_weights(["image", "text", "image_text"], 0.1)
    assert w["image"] == 0.1 and w["text"] == pytest.approx(0.45) and w["image_text"] == pytest.approx(0.45)
    assert modality_weights(["a", "b"], 0.1) == {"a": 0.5, "b": 0.5}


def test_mixed_graph_and_forward_match_dense(two_modalities):
    config, train, model = build(two_modalities, {"knn_k": 4, "n_ui_layers": 2, "n_mm_layers": 2})
    feats = model.modality_features
    expected = 0.1 * dense_knn_sym(feats["image"], 4) + 0.9 * dense_knn_sym(feats["text"], 4)
    torch.testing.assert_close(model.sparse("mm_adj").to_dense(), expected)

    # Scores: LightGCN layer mean on the full training graph, items plus S^2 E_I.
    u, i = model.inter_index
    n = model.n_users + model.n_items
    a = torch.zeros(n, n)
    a[u, i + model.n_users] = 1.0
    a[i + model.n_users, u] = 1.0
    a_hat = dense_sym(a)
    ego = torch.cat([model.user_embedding.weight, model.item_id_embedding.weight]).detach()
    z = (ego + a_hat @ ego + a_hat @ a_hat @ ego) / 3
    h = expected @ expected @ model.item_id_embedding.weight.detach()
    model.eval()
    with torch.no_grad():
        users, items = model.all_embeddings()
    torch.testing.assert_close(users, z[:model.n_users])
    torch.testing.assert_close(items, z[model.n_users:] + h)


def test_pruning_draws_edges_in_proportion_to_inverse_sqrt_degrees(two_modalities):
    config, train, model = build(two_modalities)
    u, i = model.inter_index
    deg_u = torch.bincount(u).float()
    deg_i = torch.bincount(i).float()
    p = 1.0 / torch.sqrt(deg_u[u] * deg_i[i])
    p = p.double().numpy()
    p = p / p.sum()

    # One edge per draw: its law is exactly p. 4000 draws from 4000 epoch seeds.
    draws = 4000
    counts = np.bincount(np.array([int(model.sample_edges(e, 1)) for e in range(draws)]), minlength=p.size)
    assert stats.chisquare(counts, p * draws).pvalue > 1e-3
    # Per item the law is sqrt(d_i)-proportional; uniform edge sampling would be d_i-proportional.
    item_counts = np.bincount(i.numpy(), weights=counts, minlength=model.n_items)[1:]
    seen = deg_i[1:] > 0
    uniform = deg_i[1:].double().numpy() / deg_i.sum().item()
    assert stats.chisquare(item_counts[seen.numpy()], uniform[seen.numpy()] * draws).pvalue < 1e-6


def test_pruned_graph_is_renormalised_and_seeded_per_epoch(two_modalities):
    config, train, model = build(two_modalities, {"dropout": 0.8})
    nnz = model.inter_index.size(1)
    keep = model.sample_edges(0)
    assert keep.numel() == int(nnz * (1.0 - 0.8)) and keep.unique().numel() == keep.numel()
    assert torch.equal(keep, model.sample_edges(0))
    assert not torch.equal(keep.sort().values, model.sample_edges(1).sort().values)

    # RecBole's trainer calls model.train() once per epoch: epochs 0 and 1 are pruned in turn.
    model.train()
    u, i = model.inter_index[:, keep]
    n = model.n_users + model.n_items
    a = torch.zeros(n, n)
    a[u, i + model.n_users] = 1.0
    a[i + model.n_users, u] = 1.0
    torch.testing.assert_close(model.sparse("masked_adj").to_dense(), dense_sym(a))
    model.eval()
    model.train()
    expected = model.pruned_adjacency(model.sample_edges(1)).to_dense()
    torch.testing.assert_close(model.sparse("masked_adj").to_dense(), expected)


def test_recbole_trainer_prunes_once_per_epoch(two_modalities, monkeypatch):
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_models.features import create_dataset
    from recbole_models.trainer import get_trainer

    config = make_config("FREEDOM", "tinymm", [two_modalities], {"epochs": 3, "eval_step": 1})
    init_seed(config["seed"], config["reproducibility"])
    train, valid, test = data_preparation(config, create_dataset(config))
    model = get_model("FREEDOM")(config, train._dataset)
    seen, graphs = [], []
    prune = FREEDOM.pre_epoch_processing

    def spy(self, epoch):
        prune(self, epoch)
        seen.append(epoch)
        graphs.append(self.masked_adj_indices.clone())

    monkeypatch.setattr(FREEDOM, "pre_epoch_processing", spy)
    get_trainer(config["MODEL_TYPE"], config["model"])(config, model).fit(train, valid, saved=False)
    assert seen == [0, 1, 2]  # once per epoch, validations in between do not count
    assert all(torch.equal(g, model.pruned_adjacency(model.sample_edges(e)).indices()) for e, g in enumerate(graphs))
    assert not torch.equal(graphs[0], graphs[1])


def test_resumed_run_goes_on_with_the_next_epochs_pruning(two_modalities, monkeypatch):
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_models.features import create_dataset
    from recbole_models.trainer import get_trainer

    def trainer_for(epochs):
        config = make_config("FREEDOM", "tinymm", [two_modalities], {"epochs": epochs, "eval_step": 1})
        init_seed(config["seed"], config["reproducibility"])
        train, valid, _ = data_preparation(config, create_dataset(config))
        model = get_model("FREEDOM")(config, train._dataset)
        return get_trainer(config["MODEL_TYPE"], config["model"])(config, model), train, valid

    seen = []
    prune = FREEDOM.pre_epoch_processing
    monkeypatch.setattr(FREEDOM, "pre_epoch_processing", lambda self, epoch: (seen.append(epoch), prune(self, epoch)))
    first, train, valid = trainer_for(1)
    first.fit(train, valid, saved=True)
    assert seen == [0]
    resumed, train, valid = trainer_for(3)
    resumed.resume_checkpoint(first.saved_model_file)
    resumed.fit(train, valid, saved=False)
    assert seen == [0, 1, 2]  # not [0, 0, 1]: the epoch count came back with the checkpoint


def refined(x, k, threshold, cooc_k, inter_index, n_users):
    """MLLMRec's refined graph of the transforms (k-NN + Jaccard, summed, "row"-normalised), dense."""
    x = x[1:]
    keep = inter_index[1] > 0
    ui = torch.stack([inter_index[0, keep], inter_index[1, keep] - 1])
    ei, ew = threshold_knn_graph(x, k, threshold=threshold)
    ci, cw = jaccard_cooccurrence_graph(ui, n_users, x.size(0), cooc_k)
    ei, ew = normalize_graph(torch.cat([ei, ci], 1), torch.cat([ew, cw]), x.size(0), "row")
    out = torch.zeros(x.size(0) + 1, x.size(0) + 1)
    out[1:, 1:].index_put_((ei[1], ei[0]), ew, accumulate=True)
    return out


def test_graph_refinement_switch(two_modalities):
    keys = {"knn_k": 5, "knn_threshold": 0.1, "cooc_k": 3}
    _, _, off = build(two_modalities, dict(keys, graph_refinement=False))
    model_name, overrides = resolve("FREEDOM+GR", load_variants())  # the named variant of compare
    assert (model_name, overrides) == ("FREEDOM", {"graph_refinement": True})
    _, _, on = build(two_modalities, dict(keys, **overrides))
    f = on.modality_features
    expected = sum(w * refined(f[m], 5, 0.1, 3, on.inter_index, on.n_users)
                   for m, w in (("image", 0.1), ("text", 0.9)))
    torch.testing.assert_close(on.sparse("mm_adj").to_dense(), expected)
    plain = 0.1 * dense_knn_sym(f["image"], 5) + 0.9 * dense_knn_sym(f["text"], 5)
    torch.testing.assert_close(off.sparse("mm_adj").to_dense(), plain)
    assert not torch.allclose(expected, plain)


def test_training_step_changes_parameters(two_modalities):
    config, train, model = build(two_modalities)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    model.train()
    batch = next(iter(train))
    loss = model.calculate_loss(batch)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    for name in ("user_embedding.weight", "item_id_embedding.weight", "features.image",
                 "features.text", "projections.text.weight"):
        assert not torch.equal(before[name], dict(model.named_parameters())[name]), name


def test_gradients_are_bitwise_reproducible(tmp_path):
    # Batches big enough for CPU kernels to split work across threads (advanced indexing's
    # backward then sums repeated ids in a varying order; index_select's does not).
    config_file = write_tiny_multimodal_dataset(str(tmp_path), n_users=600, n_items=200, per_user=10)[0]
    _, train, model = build(config_file, {"train_batch_size": 4096})
    assert_gradients_bitwise_reproducible(model, next(iter(train)))


@pytest.mark.parametrize("modalities", [("image", "text"), ("text",)])
def test_run_through_recbole(tmp_path, modalities):
    config_file = write_tiny_multimodal_dataset(str(tmp_path), modalities=modalities)[0]
    result = run_recbole("FREEDOM", "tinymm", [config_file], {"epochs": 1})
    assert set(result["test_result"]) >= {"recall@20", "ndcg@20"}
    assert all(math.isfinite(v) for v in result["test_result"].values())


@pytest.mark.cuda
def test_cuda_matches_cpu(two_modalities):
    _, train, model = build(two_modalities)
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

"""The figure commands: edge-similarity histogram (Fig. 1b) against a direct numpy
computation, and t-SNE / alignment / uniformity from real checkpoints of MLLMRec,
BPR and LightGCN trained on the tiny dataset."""
import json
import os
import sys

import numpy as np
import pytest
import torch

from mllmrec_pyg.datasets.mmrec import read_feature_file
from recbole_models.figures.__main__ import main as figures_main
from recbole_models.figures.edge_hist import edge_histogram
from recbole_models.checkpoint import load_model
from recbole_models.figures.representations import alignment, representations, uniformity
from recbole_models.run import run_recbole
from tests.recbole_data import write_tiny_dataset


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fig"))
    config_file, d, users, items = write_tiny_dataset(root)
    saved = sys.argv
    sys.argv = ["pytest"]
    try:
        ckpts = {m: run_recbole(m, "tiny", [config_file], {"epochs": 2})["saved_model_file"]
                 for m in ("MLLMRec", "BPR", "LightGCN")}
    finally:
        sys.argv = saved
    return config_file, d, ckpts


def test_edge_histogram_shares_match_numpy(tmp_path):
    _, d, _, _ = write_tiny_dataset(str(tmp_path))
    features = os.path.join(d, "tiny.itememb")
    _, x = read_feature_file(features)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    k, eps = 5, 0.2
    plain = []
    for i in range(len(x)):
        top = np.argsort(-sim[i])[:k]
        plain += [sim[i, j] for j in top if j != i]
    plain = np.array(plain)
    stats = edge_histogram(features, k, eps, str(tmp_path / "h.png"))
    assert stats["plain"]["edges"] == len(x) * (k - 1)
    assert stats["plain"]["share_below"] == pytest.approx((plain < 0.5).mean())
    assert stats["plain"]["mean"] == pytest.approx(plain.mean(), abs=1e-6)
    assert stats["thresholded"]["edges"] == int((plain >= eps).sum())
    assert stats["thresholded"]["share_below"] == pytest.approx((plain[plain >= eps] < 0.5).mean())
    assert 0 < stats["removed_by_threshold"] < 1
    assert os.path.getsize(tmp_path / "h.png") > 10_000
    with_self = edge_histogram(features, k, eps, str(tmp_path / "h2.png"), include_self=True)
    assert with_self["plain"]["edges"] == len(x) * k


def test_edge_hist_cli(tmp_path, capsys):
    _, d, _, _ = write_tiny_dataset(str(tmp_path))
    out = str(tmp_path / "e.png")
    assert figures_main(["edge-hist", "--dataset-dir", d, "--k", "4", "--threshold", "0.3", "--out", out]) == 0
    text = capsys.readouterr().out
    assert "plain k-NN (k=4)" in text and "edges removed by the threshold" in text and os.path.isfile(out)
    assert figures_main(["edge-hist", "--dataset-dir", str(tmp_path / "nope"), "--out", out]) == 2
    assert "no such feature file" in capsys.readouterr().err


def load_checkpoint(path, config_files=None):
    """What ``figures tsne`` does with each checkpoint."""
    loaded = load_model(path, config_files=config_files, device="cpu")
    return loaded.model, loaded.config, loaded.splits


@pytest.mark.parametrize("name", ["MLLMRec", "BPR", "LightGCN"])
def test_representations_are_what_the_model_scores_with(trained, name):
    config_file, d, ckpts = trained
    model, config, splits = load_checkpoint(ckpts[name], [config_file])
    state = torch.load(ckpts[name], weights_only=True)
    for key, value in state["state_dict"].items():  # the checkpoint's weights are loaded
        torch.testing.assert_close(model.state_dict()[key], value)
    users, items = representations(model)
    assert users.shape[0] == model.n_users - 1 and items.shape[0] == model.n_items - 1
    from recbole.data.interaction import Interaction

    batch = Interaction({model.USER_ID: torch.arange(1, model.n_users)})
    with torch.no_grad():
        scores = model.full_sort_predict(batch).view(model.n_users - 1, model.n_items)[:, 1:]
    torch.testing.assert_close(users @ items.t(), scores, rtol=1e-4, atol=1e-5)


def test_loader_drops_stored_strings(trained, tmp_path):
    config_file, d, ckpts = trained
    state = torch.load(ckpts["MLLMRec"], weights_only=True)
    marker = tmp_path / "EVALED"
    state["config"]["knn_threshold"] = f"open({str(marker)!r}, 'w')"
    path = str(tmp_path / "edited.pth")
    torch.save(state, path)
    model, config, _ = load_checkpoint(path, [config_file])
    assert not marker.exists() and config["knn_threshold"] == 0.0  # the dataset YAML's value
    with pytest.raises(FileNotFoundError):
        load_checkpoint(str(tmp_path / "none.pth"))


def test_alignment_and_uniformity_formulas():
    u = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    i = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    pairs = (torch.tensor([0, 1]), torch.tensor([0, 1]))
    # (0) identical directions: 0; (1) 90° vs 45°: |(0,1) - (1,1)/sqrt2|^2 = 2 - sqrt2.
    assert alignment(u, i, pairs) == pytest.approx((0 + 2 - np.sqrt(2)) / 2)
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    d2 = np.array([4.0, 2.0, 2.0])
    assert uniformity(x) == pytest.approx(np.log(np.exp(-2 * d2).mean()))


def test_tsne_cli_on_three_checkpoints(trained, tmp_path, capsys):
    config_file, d, ckpts = trained
    out = str(tmp_path / "t.png")
    assert figures_main(["tsne", "--config_files", config_file, "--checkpoint", ckpts["MLLMRec"], ckpts["BPR"],
                         ckpts["LightGCN"], "--users", "20", "--out", out]) == 0
    lines = capsys.readouterr().out.splitlines()
    results = json.loads(lines[-2])
    assert [r["model"] for r in results] == ["MLLMRec", "BPR", "LightGCN"] and all(r["users"] == 20 for r in results)
    assert os.path.getsize(out) > 20_000
    # align is over the TEST split's pairs: recompute it from the test file's tokens.
    model, config, splits = load_checkpoint(ckpts["BPR"], [config_file])
    users, items = representations(model)
    ds = splits["train"]
    test = [line.split("\t")[:2] for line in open(os.path.join(d, "tiny.test.inter")).read().splitlines()[1:]]
    uu = torch.tensor([ds.field2token_id[ds.uid_field][u] - 1 for u, _ in test])
    ii = torch.tensor([ds.field2token_id[ds.iid_field][i] - 1 for _, i in test])
    assert results[1]["align"] == pytest.approx(alignment(users, items, (uu, ii)))
    assert results[1]["uniform_users"] == pytest.approx(uniformity(users))

"""VBPR: its score splits into an ID part and a content part; it runs through the
runner on a two-modality and a text-only dataset."""
import sys

import pytest
import torch

from recbole_models.run import run_recbole
from tests.recbole_data import build_model, write_tiny_multimodal_dataset


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


def build(config_file, dataset="tinymm", overrides=None, model="VBPR"):
    return build_model(model, config_file, dataset, overrides)


def test_score_is_id_part_plus_content_part(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    config, ds, train, model = build(config_file)
    model.eval()
    d = model.embedding_size
    # Independent dense computation: f_i = [image ; text] in the dataset's order.
    f = torch.cat([model.modality_features["image"], model.modality_features["text"]], 1)
    assert f.shape[1] == 32 + 16
    gamma_u, theta_u = model.user_embedding[:, :d], model.user_embedding[:, d:]
    content = f @ model.item_linear.weight.t() + model.item_linear.bias
    expected = gamma_u @ model.item_embedding.t() + theta_u @ content.t()
    users = torch.tensor([1, 5, 9])
    with torch.no_grad():
        scores = model.full_sort_predict({model.USER_ID: users}).view(3, -1)
    torch.testing.assert_close(scores, expected[users].detach())

    # Loss = BPR + lambda * (||U|| + ||I+|| + ||I-||) / B.
    batch = next(iter(train))
    u, i, j = batch[model.USER_ID], batch[model.ITEM_ID], batch[model.NEG_ITEM_ID]
    e_i = torch.cat([model.item_embedding, content], 1)
    e_u = model.user_embedding
    pos = (e_u[u] * e_i[i]).sum(1)
    neg = (e_u[u] * e_i[j]).sum(1)
    bpr = -torch.log(1e-10 + torch.sigmoid(pos - neg)).mean()
    reg = (e_u[u].norm() + e_i[i].norm() + e_i[j].norm()) / u.numel()
    torch.testing.assert_close(model.calculate_loss(batch).reshape(()), bpr + model.reg_weight * reg)


def test_refuses_graph_refinement(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="graph_refinement"):
        build(config_file, overrides={"graph_refinement": True})


def test_missing_modality_is_named(tmp_path):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path), modalities=("text",))
    with pytest.raises(ValueError, match="image"):
        build(config_file, overrides={"use_modalities": ["image"]})


@pytest.mark.parametrize("modalities", [("image", "text"), ("text",)], ids=["image+text", "text"])
def test_runs_through_the_runner(tmp_path, modalities):
    config_file, *_ = write_tiny_multimodal_dataset(str(tmp_path), modalities=modalities)
    result = run_recbole("VBPR", "tinymm", [config_file], {"epochs": 2}, saved=True)
    assert 0.0 <= result["test_result"]["recall@20"] <= 1.0
    assert result["best_epoch"] >= 0

"""The full-sort cache never serves outputs of weights the model no longer has
(issue: MLLMRec's test scores mixed the best epoch's user tower with the last
validation epoch's item tower)."""
import sys

import pytest
import torch

from recbole_models import get_model
from recbole_models.model.eval_cache import WeightKeyedCache
from recbole_models.run import make_config, run_recbole
from recbole_models.trainer import get_trainer
from tests.recbole_data import write_tiny_dataset


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


def _data(config_file, overrides, model="MLLMRec"):
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_models.features import create_dataset

    config = make_config(model, "tiny", [config_file], overrides)
    init_seed(config["seed"], config["reproducibility"])
    train, valid, test = data_preparation(config, create_dataset(config))
    return config, train, valid, test


def test_cache_follows_every_weight_change():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    cache = WeightKeyedCache()
    calls = []

    def compute():
        calls.append(1)
        return net.weight.detach().clone()

    net.eval()
    with torch.no_grad():
        first = cache.get(net, compute)
        assert cache.get(net, compute) is first and len(calls) == 1  # reused within one evaluation
    net.weight.grad = torch.ones_like(net.weight)
    net.bias.grad = torch.ones_like(net.bias)
    torch.optim.Adam(net.parameters(), lr=0.1).step()  # no train() call in between
    with torch.no_grad():
        after_step = cache.get(net, compute)
    assert len(calls) == 2 and torch.equal(after_step, net.weight)
    net.load_state_dict(torch.nn.Linear(4, 3).state_dict())
    with torch.no_grad():
        after_load = cache.get(net, compute)
    assert len(calls) == 3 and torch.equal(after_load, net.weight)
    # Training mode or autograd on: always recomputed, never stored.
    net.train()
    with torch.no_grad():
        cache.get(net, compute)
    net.eval()
    cache.get(net, compute)
    assert len(calls) == 5


@pytest.mark.parametrize("overrides", [{}, {"n_ui_layers": 1}], ids=["towers", "ui-gcn"])
def test_test_scores_come_from_the_best_checkpoint(tmp_path, overrides):
    # A high learning rate and no early stop: training goes on past the best epoch,
    # so the last validation's cache and the best weights differ.
    config_file, *_ = write_tiny_dataset(str(tmp_path), n_users=60, n_items=50, per_user=10)
    overrides = dict(overrides, epochs=8, stopping_step=100, learning_rate=0.05,
                     train_batch_size=32, knn_threshold=0.0)
    result = run_recbole("MLLMRec", "tiny", [config_file], overrides, saved=True)
    assert result["best_epoch"] < 7, "the run must train past its best epoch to test anything"

    # A fresh model that never evaluated anything, loaded from the best checkpoint.
    config, train, valid, test = _data(config_file, overrides)
    fresh = get_model("MLLMRec")(config, train._dataset)
    state = torch.load(result["saved_model_file"], weights_only=True)
    fresh.load_state_dict(state["state_dict"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, fresh)
    expected = trainer.evaluate(test, load_best_model=False)
    assert dict(result["test_result"]) == dict(expected)

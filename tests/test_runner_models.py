"""Every RecBole general recommender runs through our runner, and checkpoints with
non-tensor ``other_parameter`` (SciPy, NumPy) load with ``weights_only=True`` (issue 8 §2)."""
import importlib.util
import inspect
import math
import os
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import recbole.model.general_recommender as general
from recbole.model.abstract_recommender import GeneralRecommender
from recbole_models import get_model
from recbole_models.run import make_config, run_recbole
from recbole_models.trainer import decode_other_parameter, encode_other_parameter, load_checkpoint
from tests.recbole_data import write_tiny_dataset

GENERAL = sorted(name for name, cls in vars(general).items()
                 if inspect.isclass(cls) and issubclass(cls, GeneralRecommender) and cls is not GeneralRecommender)
# Small but valid sizes: ConvNCF's CNN needs 64-d embeddings (4x4 kernels, stride 2);
# RaCT runs its first stage (actor pre-training), saved after one epoch.
SETTINGS = {"embedding_size": 64, "pretrain_epochs": 1, "save_step": 1, "state": "ERROR"}
SKIP = {"NCL": ("faiss", "RecBole's NCL imports faiss (k-means), which is not installed here")}


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_dataset(str(tmp_path_factory.mktemp("general")))


def test_list_of_general_recommenders_is_complete():
    assert len(GENERAL) >= 30 and {"ItemKNN", "EASE", "BPR", "LightGCN", "RaCT"} <= set(GENERAL)


@pytest.mark.parametrize("name", GENERAL)
def test_every_general_recommender_runs_one_epoch(tiny, name):
    if name in SKIP and importlib.util.find_spec(SKIP[name][0]) is None:
        pytest.skip(SKIP[name][1])
    config_file, *_ = tiny
    result = run_recbole(name, "tiny", [config_file], SETTINGS)
    assert set(result["test_result"]) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
    assert all(math.isfinite(v) for v in result["test_result"].values())
    checkpoint = torch.load(result["saved_model_file"], weights_only=True)
    assert checkpoint["config"]["model"] == name


def _trained_parts(config_file, name):
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    config = make_config(name, "tiny", [config_file], SETTINGS)
    init_seed(config["seed"], config["reproducibility"])
    train, valid, test = data_preparation(config, create_dataset(config))
    return config, train, test


@pytest.mark.parametrize("name", ["ItemKNN", "EASE", "SLIMElastic", "AsymKNN", "Pop", "ADMMSLIM"])
def test_other_parameter_round_trips_weights_only(tiny, tmp_path, name):
    config_file, *_ = tiny
    config, train, test = _trained_parts(config_file, name)
    model = get_model(name)(config, train._dataset)
    if name == "Pop":
        model.calculate_loss(next(iter(train)))  # counts the items
    other = model.other_parameter()
    path = tmp_path / "other.pth"
    torch.save({"other_parameter": encode_other_parameter(other)}, path)
    back = decode_other_parameter(torch.load(path, weights_only=True)["other_parameter"])
    assert set(back) == set(other)
    for key, value in other.items():
        got = back[key]
        assert type(got) is type(value), key
        if sp.issparse(value):
            assert got.format == value.format and got.shape == value.shape and (got != value).nnz == 0
        elif isinstance(value, np.ndarray):
            assert got.dtype == value.dtype and np.array_equal(got, value)
        elif isinstance(value, torch.Tensor):
            assert torch.equal(got, value)
        else:
            assert got == value


@pytest.mark.parametrize("name", ["ItemKNN", "EASE"])
def test_checkpoint_loads_into_a_fresh_model_with_the_same_scores(tiny, name):
    config_file, *_ = tiny
    result = run_recbole(name, "tiny", [config_file], SETTINGS)
    config, train, test = _trained_parts(config_file, name)
    batch = next(iter(test))[0]
    trained = get_model(name)(config, train._dataset)  # what the run trained (deterministic)
    fresh = get_model(name)(config, train._dataset)
    for attr in fresh.other_parameter_name:  # nothing left from its own construction
        setattr(fresh, attr, None)
    load_checkpoint(fresh, result["saved_model_file"])
    torch.testing.assert_close(fresh.full_sort_predict(batch), trained.full_sort_predict(batch))

r"""Loading a trained checkpoint back: its config, dataset splits and model.

::

    from recbole_models.checkpoint import load_model

    loaded = load_model("saved/MLLMRec-Nov-26-2026_18-00-00-1a2b3c4d.pth")
    loaded.model, loaded.dataset, loaded.config    # the model is in eval mode
    loaded.splits["train"]                         # the training split (the model's graph)
    loaded.loaders["test"]                         # for RecBole's Trainer.evaluate

A checkpoint written by :mod:`recbole_models.run` (see
:mod:`recbole_models.trainer`) holds the model's ``state_dict``, its
``other_parameter`` and the run's final config as plain data. Loading it:

1. ``torch.load(path, weights_only=True)``; the safety switch is never turned off;
2. the RecBole ``Config`` is rebuilt from the stored values, typed as they were
   stored (:class:`CheckpointConfig`): no stored string reaches RecBole's
   ``eval``, and ``sys.argv`` is not read;
3. the dataset is rebuilt with :func:`recbole_models.features.create_dataset`
   and RecBole's ``data_preparation`` after seeding with the stored ``seed``, as
   :func:`recbole_models.run.run_recbole` does, so the splits are the training
   run's. The training split defines the model (MLLMRec's item graph,
   LightGCN's adjacency) and what top-k masks. RecBole's cache pickles
   (``<checkpoint_dir>/<dataset>-for-<model>-dataloader.pth``,
   ``<checkpoint_dir>/<dataset>-Dataset.pth``), which RecBole unpickles whenever
   they exist, are never read;
4. the model is built by :func:`recbole_models.get_model` on the training split
   and the weights are loaded strictly (``load_state_dict``, then
   ``load_other_parameter``, as RecBole's ``Trainer.evaluate`` does).

Only general and traditional recommenders (``ModelType.GENERAL`` /
``TRADITIONAL``) are supported: they score a user against every item from the
user id alone, which is what top-k and embedding export need. Sequential,
context-aware and knowledge-based checkpoints are refused with a message.
"""
import os
import pickle
import re
import shutil
import tempfile
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import torch
import yaml
from recbole.config import Config
from recbole.utils import ModelType, init_seed

from recbole_models import get_model
from recbole_models.config import TypedLoader
from recbole_models.trainer import decode_other_parameter

__all__ = ["CheckpointConfig", "LoadedModel", "read_checkpoint", "load_model", "DERIVED_KEYS"]

# Keys of a stored config that RecBole's Config derives itself; given back to it as
# input they would be wrong. `local_rank` is why `make_config(config_dict=stored)`
# fails with KeyError: 'nproc': Config sets `local_rank = 0` on every one-process
# run, but takes a `local_rank` it is GIVEN for a distributed rank, whose set-up then
# reads `nproc` (which only `run --nproc` passes). The enums (`MODEL_TYPE`, ...) were
# stored as their `str`; they come back from the model class, `device` from `gpu_id`
# and the machine that loads, `data_path` as described in `CheckpointConfig`.
DERIVED_KEYS = frozenset({
    "model", "dataset", "data_path", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type",
    "valid_metric_bigger", "valid_neg_sample_args", "test_neg_sample_args",
    "device", "single_spec", "local_rank",
    # the arguments of a multi-process run (recbole_models.run.run): loading is one process
    "nproc", "world_size", "ip", "port", "offset",
})

SUPPORTED_TYPES = (ModelType.GENERAL, ModelType.TRADITIONAL)




class CheckpointConfig(Config):
    r"""RecBole's ``Config`` rebuilt from a checkpoint's stored values.

    The external values are, from lowest to highest priority: the stored config
    less :data:`DERIVED_KEYS`, then ``config_files`` (read with a safe YAML
    loader), then ``overrides``. All of them stay typed as given: RecBole's
    ``Config`` passes the strings of its ``config_dict`` and of ``sys.argv``
    through ``eval``; here neither path is taken (no ``config_dict``, the command
    line is not read). The stored config already holds every default that was in
    force (RecBole's, our model YAML's), so no default file is read again beyond
    RecBole's own properties, which the stored values override.

    ``data_path`` is the dataset's folder, as RecBole stores it
    (``<root>/<dataset>``). A ``data_path`` in ``config_files`` or ``overrides``
    is a root, as in any YAML: the folder becomes ``<root>/<dataset>``.

    Args:
        model_class: The model's class.
        dataset (str): The dataset's name.
        stored (dict): The checkpoint's ``config``.
        config_files (list of str, optional): YAML files.
        overrides (dict, optional): Typed values.
    """

    def __init__(self, model_class, dataset: str, stored: Mapping,
                 config_files: Optional[Sequence[str]] = None, overrides: Optional[Mapping] = None):
        self._stored = {k: v for k, v in stored.items() if k not in DERIVED_KEYS}
        self._overrides = dict(overrides or {})
        super().__init__(model=model_class, dataset=dataset,
                         config_file_list=list(config_files or []) or None, config_dict=None)
        root = self._overrides.get("data_path", self.file_config_dict.get("data_path"))
        if root is not None:
            self.final_config_dict["data_path"] = os.path.join(str(root), dataset)
        else:
            self.final_config_dict["data_path"] = stored["data_path"]

    def _load_config_files(self, file_list):
        values = {}
        for path in file_list or []:
            with open(path, encoding="utf-8") as f:
                try:
                    loaded = yaml.load(f, Loader=TypedLoader)
                except yaml.YAMLError as err:
                    raise ValueError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
            if loaded is None:
                continue
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
            values.update(loaded)
        return values

    def _load_cmd_line(self):
        return {}

    def _init_device(self):
        # RecBole sets CUDA_VISIBLE_DEVICES to the stored `gpu_id`; loading a model must
        # not change which GPUs the rest of the caller's process sees.
        before = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            super()._init_device()
        finally:
            if before is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = before

    def _merge_external_config_dict(self):
        external = dict(self._stored)
        external.update(self.file_config_dict)
        external.update(self._overrides)
        self.external_config_dict = external


def read_checkpoint(path: str) -> dict:
    """The checkpoint at ``path``, loaded with ``torch.load(weights_only=True)`` and checked.

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: The file is not a checkpoint written by :mod:`recbole_models.trainer`
            (not loadable weights-only, or without ``config`` / ``state_dict``).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        raise ValueError(f"{path}: not a torch checkpoint (torch.save writes a zip archive)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f"it pickles {found.group(1)}" if found else "it holds more than tensors and plain data"
        raise ValueError(
            f"{path}: not a weights-only checkpoint ({what}); checkpoints of recbole_models.run load "
            f"with torch.load(weights_only=True), RecBole's own (which pickle its Config) are not read"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {first})") from None
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict) \
            or not isinstance(state.get("state_dict"), Mapping):
        raise ValueError(f"{path}: not a checkpoint of recbole_models.run "
                         f"(expected a dict with `config` and `state_dict`)")
    config = state["config"]
    for key in ("model", "dataset", "data_path"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise ValueError(f"{path}: the stored config has no `{key}` string")
    return state


@contextmanager
def _without_cache_pickles(config):
    """RecBole's ``create_dataset`` and ``data_preparation`` unpickle
    ``<checkpoint_dir>/<dataset>-Dataset.pth`` and ``...-dataloader.pth`` (or the
    ``*_save_path`` files) whenever they exist. Inside this block they look in a
    fresh, private, empty folder instead, and write nothing."""
    saved = {k: config[k] for k in ("checkpoint_dir", "save_dataset", "save_dataloaders",
                                    "dataset_save_path", "dataloaders_save_path")}
    empty = tempfile.mkdtemp(prefix="recbole-no-cache-")
    try:
        config["checkpoint_dir"] = empty
        config["save_dataset"] = config["save_dataloaders"] = False
        config["dataset_save_path"] = config["dataloaders_save_path"] = None
        yield
    finally:
        for key, value in saved.items():
            config[key] = value
        shutil.rmtree(empty, ignore_errors=True)


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {name!r}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA device is available here")
    return device


def _to_device(value, device):
    """``value`` with every tensor inside (dicts, lists, tuples) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


@dataclass
class LoadedModel:
    """A trained model with its config and data, as :func:`load_model` returns it.

    Attributes:
        model: The RecBole model with the checkpoint's weights, in eval mode.
        dataset: The whole dataset (every split), for token <-> id mapping.
        config: The rebuilt RecBole ``Config``.
        loaders: ``{"train", "valid", "test"}`` -> RecBole's data loader of that split, as
            ``data_preparation`` made it for training (``loaders["test"]`` goes to
            ``Trainer.evaluate`` to reproduce the test scores).
        path: The checkpoint file.
        epoch: The epoch the checkpoint was saved at (the best validation epoch).
        best_valid_score: The validation score of that epoch.
    """

    model: torch.nn.Module
    dataset: object
    config: Config
    loaders: Dict[str, object]
    path: str
    epoch: int
    best_valid_score: float

    @property
    def splits(self) -> Dict[str, object]:
        """``{"train", "valid", "test"}`` -> the split's RecBole ``Dataset`` (``None`` if absent)."""
        return {name: (loader._dataset if loader else None) for name, loader in self.loaders.items()}

    @property
    def device(self) -> torch.device:
        return torch.device(self.config["device"])

    def user_ids(self, tokens: Sequence[str]) -> torch.Tensor:
        """Internal ids of user ``tokens``; ``KeyError`` naming the first unknown token."""
        mapping = self.dataset.field2token_id[self.dataset.uid_field]
        ids = []
        for token in tokens:
            token = str(token)
            if token not in mapping or mapping[token] == 0:  # 0 is RecBole's [PAD]
                raise KeyError(f"user {token!r} is not in dataset `{self.config['dataset']}` "
                               f"(field `{self.dataset.uid_field}`, {self.dataset.user_num - 1} users)")
            ids.append(mapping[token])
        return torch.tensor(ids, dtype=torch.long)

    def user_tokens(self) -> List[str]:
        """Every user token, in internal id order (id 1 first; [PAD] left out)."""
        return [str(t) for t in self.dataset.field2id_token[self.dataset.uid_field][1:]]

    def item_tokens(self) -> List[str]:
        """Every item token, in internal id order (id 1 first; [PAD] left out)."""
        return [str(t) for t in self.dataset.field2id_token[self.dataset.iid_field][1:]]


def load_model(checkpoint_path: str, *, config_files: Optional[Sequence[str]] = None,
               device: Optional[str] = None, **overrides) -> LoadedModel:
    r"""Loads a checkpoint of :mod:`recbole_models.run` with its dataset.

    Args:
        checkpoint_path (str): A ``saved/<model>-<time>-<id>.pth`` file.
        config_files (list of str, optional): YAML files whose keys replace the
            stored ones, e.g. a new ``data_path`` root when the data moved.
        device (str, optional): ``"cpu"``, ``"cuda"``, ``"cuda:1"``; default: CUDA when
            available and the stored ``gpu_id`` is not empty, else CPU (RecBole's rule).
            ``CUDA_VISIBLE_DEVICES`` is left as it was (RecBole's ``Config`` sets it).
        **overrides: Typed config values that replace the stored ones and the
            files' (``data_path="/new/root"``, ``eval_batch_size=4096``). Keys that
            change the model's shape make the strict weight load fail.

    Returns:
        LoadedModel: the model (eval mode), the dataset, the config, the split loaders.

    Raises:
        FileNotFoundError: No checkpoint file, or the dataset's files are missing.
        ValueError: Not a checkpoint of ours, an unsupported model type, weights
            that do not fit the rebuilt model, or bad feature files.
    """
    state = read_checkpoint(checkpoint_path)
    stored = state["config"]
    try:
        model_class = get_model(stored["model"])
    except ValueError as err:
        raise ValueError(f"{checkpoint_path}: {err}") from None
    with warnings.catch_warnings():
        # RecBole 1.2.1's pandas calls (chained fillna) warn on every dataset build.
        warnings.simplefilter("ignore", FutureWarning)
        config = CheckpointConfig(model_class, stored["dataset"], stored, config_files, overrides)
        if config["MODEL_TYPE"] not in SUPPORTED_TYPES:
            raise ValueError(
                f"{checkpoint_path}: model {stored['model']} is a {config['MODEL_TYPE'].name.lower()} "
                f"recommender; loading supports general and traditional recommenders only")
        if device is not None:
            config["device"] = _device(device)
        if not os.path.isdir(config["data_path"]):
            raise FileNotFoundError(
                f"{config['data_path']}: dataset folder of the checkpoint not found; pass the "
                f"folder that holds `{stored['dataset']}/` as data_path (--data_path)")

        from recbole.data import data_preparation

        from recbole_models.features import create_dataset

        init_seed(config["seed"], config["reproducibility"])
        with _without_cache_pickles(config):
            dataset = create_dataset(config)
            train, valid, test = data_preparation(config, dataset)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = model_class(config, train._dataset).to(config["device"])
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{checkpoint_path}: the stored weights do not fit {stored['model']} "
                         f"built from the stored config: {str(err).splitlines()[0]}") from None
    model.load_other_parameter(decode_other_parameter(_to_device(state.get("other_parameter"),
                                                                  config["device"])))
    model.eval()
    return LoadedModel(model=model, dataset=dataset, config=config,
                       loaders={"train": train, "valid": valid, "test": test},
                       path=checkpoint_path, epoch=int(state.get("epoch", -1)),
                       best_valid_score=float(state.get("best_valid_score", float("nan"))))

"""RecBole's dataset and dataloader creation without its pickle caches.

RecBole 1.2.1's ``create_dataset`` unpickles ``<checkpoint_dir>/<dataset>-<Class>.pth``
(or ``dataset_save_path``) whenever that file exists, and ``data_preparation`` does
the same with ``<dataset>-for-<model>-dataloader.pth`` through
``load_split_dataloaders`` — whatever ``save_dataset``/``save_dataloaders`` say. A
pickle placed there runs code. :func:`apply` (called on import of
:mod:`recbole_models`) replaces both entry points, where RecBole looks them up, by
versions that build the data from the atomic files every time and only log that a
cache file was ignored. Writing the caches is refused in the config
(:func:`recbole_models.config.check_no_pickles`).
"""
import importlib
import os
from logging import getLogger


def _dataset_class(config):
    # The class RecBole's create_dataset would pick (recbole/data/utils.py).
    from recbole.utils import ModelType

    module = importlib.import_module("recbole.data.dataset")
    if hasattr(module, config["model"] + "Dataset"):
        return getattr(module, config["model"] + "Dataset")
    return getattr(module, {
        ModelType.GENERAL: "Dataset", ModelType.SEQUENTIAL: "SequentialDataset",
        ModelType.CONTEXT: "Dataset", ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
        ModelType.TRADITIONAL: "Dataset", ModelType.DECISIONTREE: "Dataset",
    }[config["MODEL_TYPE"]])


def _ignored(path):
    if path and os.path.exists(path):
        getLogger().warning(f"ignoring {path}: RecBole cache pickles are never loaded")


def create_dataset(config):
    """``recbole.data.create_dataset`` without loading (or saving) a pickled dataset."""
    cls = _dataset_class(config)
    _ignored(config["dataset_save_path"]
             or os.path.join(config["checkpoint_dir"], f'{config["dataset"]}-{cls.__name__}.pth'))
    return cls(config)


def load_split_dataloaders(config):
    """Stands in for RecBole's: never unpickles saved dataloaders (``None``: build them)."""
    _ignored(config["dataloaders_save_path"]
             or os.path.join(config["checkpoint_dir"], f'{config["dataset"]}-for-{config["model"]}-dataloader.pth'))
    return None


def apply() -> None:
    import recbole.data
    import recbole.data.utils

    recbole.data.utils.load_split_dataloaders = load_split_dataloaders
    recbole.data.utils.create_dataset = create_dataset
    recbole.data.create_dataset = create_dataset
    recbole.data.load_split_dataloaders = load_split_dataloaders

"""Train and test one model under RecBole's protocol, like ``run_recbole``.

::

    python -m recbole_models.run --model MLLMRec --dataset ml-100k \\
        --config_files data/ml-100k.yaml [--key=value ...]

Our models (:data:`recbole_models.MODELS`) and RecBole's own run through the same
code: ``Config`` → ``create_dataset`` (with checked feature files) →
``data_preparation`` → model → trainer. It does not import
``recbole.quick_start`` (which imports ``ray``). ``--key=value`` overrides are
read by RecBole's ``Config`` from the command line, as in RecBole. Multi-process
training takes RecBole's ``nproc``, ``world_size``, ``ip``, ``port`` and
``group_offset`` arguments, passed on as in ``recbole.quick_start.run``.
"""
import argparse
import logging
import os
import sys
import time
from collections.abc import MutableMapping
from logging import getLogger
from typing import Dict, List, Optional

import torch
from recbole.config import Config
from recbole.data import data_preparation
from recbole.utils import init_logger, init_seed, set_color

from recbole_models import get_model, model_yaml
from recbole_models.features import create_dataset
from recbole_models.trainer import get_trainer


def make_config(model: str, dataset: str, config_file_list: Optional[List[str]] = None,
                config_dict: Optional[dict] = None) -> Config:
    """RecBole ``Config`` for ``model``; our models' default YAML comes before the user's files."""
    model_class = get_model(model)
    files = list(config_file_list or [])
    defaults = model_yaml(model)
    if defaults:
        files.insert(0, defaults)
    config = Config(model=model_class, dataset=dataset, config_file_list=files or None,
                    config_dict=config_dict)
    # RecBole 1.2.1 points the dataset named "ml-100k" at its bundled example whatever
    # `data_path` says; an explicit `data_path` (our pre-split copy) wins here.
    user_path = config.external_config_dict.get("data_path")
    if dataset == "ml-100k" and user_path:
        config["data_path"] = os.path.join(user_path, dataset)
    return config


def run_recbole(model: str, dataset: str, config_file_list=None, config_dict=None,
                saved: bool = True, queue=None) -> Dict:
    """One training and test run in this process; returns RecBole's result dict plus
    ``best_epoch`` and ``train_time`` (seconds of ``Trainer.fit``)."""
    config = make_config(model, dataset, config_file_list, config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(config)

    data = create_dataset(config)
    logger.info(data)
    train_data, valid_data, test_data = data_preparation(config, data)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    net = get_model(model)(config, train_data._dataset).to(config["device"])
    logger.info(net)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)

    start = time.perf_counter()
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"])
    train_time = time.perf_counter() - start
    test_result = trainer.evaluate(test_data, load_best_model=saved,
                                   show_progress=config["show_progress"])
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    result = {
        "model": model,
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": dict(best_valid_result or {}),
        "test_result": dict(test_result or {}),
        "best_epoch": trainer.best_epoch,
        "train_time": train_time,
        "saved_model_file": trainer.saved_model_file if saved else None,
    }
    if not config["single_spec"]:
        torch.distributed.destroy_process_group()
    if config["local_rank"] == 0 and queue is not None:
        queue.put(result)
    return result


def _run_rank(rank, *args):
    kwargs = args[-1]
    if not isinstance(kwargs, MutableMapping):
        raise ValueError(f"expected a dict of keyword arguments, got {type(kwargs)}")
    kwargs["config_dict"] = dict(kwargs.get("config_dict") or {}, local_rank=rank)
    run_recbole(*args[:3], **kwargs)


def run(model: str, dataset: str, config_file_list=None, config_dict=None, saved: bool = True,
        nproc: int = 1, world_size: int = -1, ip: str = "localhost", port: str = "5678",
        group_offset: int = 0) -> Optional[Dict]:
    """Runs ``model`` on ``dataset``; with ``nproc > 1`` or ``world_size > 0`` one process
    per rank is spawned as RecBole does, and rank 0's result is returned."""
    if nproc == 1 and world_size <= 0:
        return run_recbole(model, dataset, config_file_list, config_dict, saved)
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {})
    config_dict.update({"world_size": nproc if world_size == -1 else world_size, "ip": ip,
                        "port": port, "nproc": nproc, "offset": group_offset})
    mp.spawn(_run_rank, args=(model, dataset, config_file_list,
                              {"config_dict": config_dict, "queue": queue, "saved": saved}),
             nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name")
    parser.add_argument("--config_files", nargs="*", default=None,
                        help="YAML config files, later ones override earlier ones")
    parser.add_argument("--nproc", type=int, default=1, help="processes (GPUs) per node")
    parser.add_argument("--world_size", type=int, default=-1, help="total processes")
    parser.add_argument("--ip", default="localhost", help="address of the rank-0 node")
    parser.add_argument("--port", default="5678", help="port of the rank-0 node")
    parser.add_argument("--group_offset", type=int, default=0, help="global rank offset of this node")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbole_models.run", description=__doc__.split("\n")[0],
                                     epilog="Other --key=value arguments override config keys, as in RecBole.")
    parser.add_argument("--model", "-m", default="MLLMRec", help="our model or any RecBole model")
    add_common_arguments(parser)
    args, _ = parser.parse_known_args(argv)
    result = run(args.model, args.dataset, args.config_files, saved=True, nproc=args.nproc,
                 world_size=args.world_size, ip=args.ip, port=args.port, group_offset=args.group_offset)
    if result is not None:
        print(f"best valid: {result['best_valid_result']}")
        print(f"test result: {result['test_result']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

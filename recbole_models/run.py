"""Train and test one model under RecBole's protocol, like ``run_recbole``.

::

    python -m recbole_models.run --model MLLMRec --dataset ml-100k \\
        --config_files data/ml-100k.yaml [--key=value ...]

Our models (:data:`recbole_models.MODELS`) and RecBole's own run through the same
code: ``Config`` → ``create_dataset`` (with checked feature files) →
``data_preparation`` → model → trainer. It does not import
``recbole.quick_start`` (which imports ``ray``). ``--key=value`` overrides are
parsed here as YAML values and handed to RecBole typed; RecBole's ``Config`` never
reads the command line or ``eval``s (:mod:`recbole_models.config`). Multi-process
training takes RecBole's ``nproc``, ``world_size``, ``ip``, ``port`` and
``group_offset`` arguments, passed on as in ``recbole.quick_start.run``; without
CUDA the processes use the ``gloo`` backend on the CPU.

Every error ends as one ``error: ...`` line on stderr with exit status 2
(``--debug`` or ``RECBOLE_MODELS_DEBUG=1`` for the traceback).
"""
import argparse
import contextlib
import gc
import os
import sys
import time
import traceback
import warnings
from collections.abc import MutableMapping
from logging import getLogger
from typing import Callable, Dict, List, Optional

import torch
from recbole.config import Config
from recbole.data import data_preparation
from recbole.utils import init_logger, init_seed, set_color

from recbole_models import get_model, model_yaml
from recbole_models.config import (ConfigError, SafeConfig, check_evaluated_strings, check_keys,
                                   check_no_pickles, check_valid_metric, load_yaml, parse_overrides,
                                   split_config_files)
from recbole_models.features import create_dataset
from recbole_models.trainer import get_trainer

DEBUG_ENV = "RECBOLE_MODELS_DEBUG"


def make_config(model: str, dataset: str, config_file_list: Optional[List[str]] = None,
                config_dict: Optional[dict] = None) -> Config:
    """RecBole ``Config`` for ``model`` from typed values only (:mod:`recbole_models.config`).

    Our models' default YAML comes first, then ``config_file_list`` (each entry may hold
    several space-separated names, as RecBole's ``--config_files``), then ``config_dict``.
    Keys in the files are checked (an unknown key is an error naming it and the closest
    known key); ``config_dict`` is taken as given (its values are never ``eval``-ed).
    Settings that would read or write RecBole's pickle caches are refused, and
    ``valid_metric`` must be among the computed metrics.
    """
    model_class = get_model(model)
    if not isinstance(dataset, str) or not dataset or dataset in (".", "..") or "/" in dataset \
            or os.sep in dataset:
        raise ConfigError(f"dataset name {dataset!r} must be a plain name (data_path gives the directory)")
    files = split_config_files(config_file_list)
    for path in files:
        values = load_yaml(path)
        check_keys(values, path)
        check_no_pickles(values, path)
    defaults = model_yaml(model)
    if defaults:
        files.insert(0, defaults)
    config_dict = dict(config_dict or {})
    check_no_pickles(config_dict, "config")
    config = SafeConfig(model=model_class, dataset=dataset, config_file_list=files or None,
                        config_dict=config_dict)
    config["save_dataset"] = False
    config["save_dataloaders"] = False
    # RecBole 1.2.1 points the dataset named "ml-100k" at its bundled example whatever
    # `data_path` says; an explicit `data_path` (our pre-split copy) wins here.
    user_path = config.external_config_dict.get("data_path")
    if dataset == "ml-100k" and user_path:
        config["data_path"] = os.path.join(user_path, dataset)
    check_valid_metric(config)
    check_evaluated_strings(config)
    return config


def run_recbole(model: str, dataset: str, config_file_list=None, config_dict=None,
                saved: bool = True, queue=None) -> Dict:
    """One training and test run in this process; returns RecBole's result dict plus
    ``best_epoch`` and ``train_time`` (seconds of ``Trainer.fit``)."""
    config = make_config(model, dataset, config_file_list, config_dict)
    init_seed(config["seed"], config["reproducibility"])
    # RecBole's init_logger creates ./log/<model> with exists-then-makedirs: ranks of a
    # distributed run (or parallel runs) race on it.
    os.makedirs(os.path.join("log", config["model"]), exist_ok=True)
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
    if not config["single_spec"]:
        # Every rank tests rank 0's best checkpoint: wait until rank 0 has written it.
        torch.distributed.barrier()
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
    if config["local_rank"] == 0 and queue is not None:
        queue.put(result)
    if not config["single_spec"]:
        # The DDP wrapper must go before its process group: freed afterwards (when this
        # frame ends) its reducer waits on the destroyed gloo group for ever.
        del trainer
        gc.collect()
        torch.distributed.destroy_process_group()
    return result


def _run_rank(rank, *args):
    kwargs = args[-1]
    if not isinstance(kwargs, MutableMapping):
        raise ValueError(f"expected a dict of keyword arguments, got {type(kwargs)}")
    kwargs["config_dict"] = dict(kwargs.get("config_dict") or {}, local_rank=rank)
    with quiet_recbole_warnings():
        run_recbole(*args[:3], **kwargs)


@contextlib.contextmanager
def quiet_recbole_warnings():
    """Silences the pandas ``FutureWarning``s RecBole 1.2.1 triggers (chained
    ``fillna(inplace=True)``) and its deprecated ``torch.cuda.amp`` call, in our entry
    points only: a run's output stays readable, other code keeps its warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole(\.|$)")
        yield


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


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors raise :class:`ConfigError`, so that :func:`cli`
    reports them as one ``error:`` line like every other error."""

    def error(self, message):
        raise ConfigError(f"{self.prog}: {message}")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name")
    parser.add_argument("--config_files", nargs="*", default=None,
                        help="YAML config files, later ones override earlier ones; "
                             "one quoted argument may hold several, space-separated, as in RecBole")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (or set {DEBUG_ENV}=1)")


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nproc", type=int, default=1, help="processes (GPUs) per node")
    parser.add_argument("--world_size", type=int, default=-1, help="total processes")
    parser.add_argument("--ip", default="localhost", help="address of the rank-0 node")
    parser.add_argument("--port", default="5678", help="port of the rank-0 node")
    parser.add_argument("--group_offset", type=int, default=0, help="global rank offset of this node")


def parse_args(parser: argparse.ArgumentParser, argv):
    """``(args, overrides)``: our arguments, and the other ``--key=value`` arguments as
    typed, checked config values (:func:`recbole_models.config.parse_overrides`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `--key=value` for a config key goes to the overrides before argparse sees it:
    # argparse would take a value with a space for an argument of the option before.
    ours = {opt for opt in parser._option_string_actions}
    is_override = [a.startswith("--") and "=" in a and a.split("=", 1)[0] not in ours for a in argv]
    args, rest = parser.parse_known_args([a for a, o in zip(argv, is_override) if not o])
    overrides = parse_overrides([a for a, o in zip(argv, is_override) if o] + rest)
    check_keys(overrides, "command line")
    check_no_pickles(overrides, "command line")
    return args, overrides


def one_line(err: BaseException) -> str:
    """The error as one line: its message (with the type for unexpected errors)."""
    text = str(err)
    if type(err).__name__ == "ProcessRaisedException":
        # torch.multiprocessing: the child's traceback; its last line is the error.
        lines = [line for line in text.splitlines() if line.strip()]
        text = lines[-1] if lines else text
    elif isinstance(err, KeyError):
        text = f"missing key {text}"
    text = " ".join(text.split()) or type(err).__name__
    if isinstance(err, (ConfigError, FileNotFoundError)) or type(err).__name__ == "ProcessRaisedException":
        return text
    return f"{type(err).__name__}: {text}"


def cli(main: Callable[[Optional[List[str]]], int], argv=None) -> int:
    """Runs an entry point: an error ends as one ``error: ...`` line on stderr and exit
    status 2; ``--debug`` or the environment variable ``RECBOLE_MODELS_DEBUG=1`` shows the
    traceback instead. RecBole's pandas ``FutureWarning``s are silenced here only."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    with quiet_recbole_warnings():
        try:
            return main(argv)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
        except Exception as err:  # noqa: BLE001 - the one place that turns errors into a line
            if debug:
                traceback.print_exc()
            print(f"error: {one_line(err)}", file=sys.stderr)
            return 2


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m recbole_models.run", description=__doc__.split("\n")[0],
                                     epilog="Other --key=value arguments override config keys, as in "
                                            "RecBole; the value is read as YAML (1e-3, ~, [10, 20]).")
    parser.add_argument("--model", "-m", default="MLLMRec", help="our model or any RecBole model")
    add_common_arguments(parser)
    add_distributed_arguments(parser)
    args, overrides = parse_args(parser, argv)
    result = run(args.model, args.dataset, args.config_files, overrides, saved=True, nproc=args.nproc,
                 world_size=args.world_size, ip=args.ip, port=args.port, group_offset=args.group_offset)
    if result is not None:
        print(f"best valid: {result['best_valid_result']}")
        print(f"test result: {result['test_result']}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))

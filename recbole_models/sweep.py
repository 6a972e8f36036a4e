r"""Many RecBole runs of (model, overrides, seed) points, each stored as it finishes.

The building block of the hyper-parameter grid (:mod:`recbole_models.grid`) and
the leakage audit (:mod:`recbole_models.leakage`). A *point* is one training and
test run of :func:`recbole_models.run.run_recbole`: a model, typed config
overrides and a seed. Its record is one JSON file in the store directory,

.. math::
    \text{file} = \text{store}/\,\mathrm{sha256}(\text{model}, \text{dataset},
    \text{config files' contents}, \text{overrides}, \text{seed})_{[:20]}\text{.json}

written atomically (temporary file + ``os.replace``) by the process that trained
it, the moment it finished. A killed sweep, rerun with the same arguments, finds
the finished points' files and trains only the others. The key hashes the
CONTENTS of the config files, so editing a YAML retrains; it does not hash the
data or feature files: after re-encoding features use a new store directory.

Config values are passed to RecBole as ``config_dict``, typed (numbers, booleans,
``None``, lists, mappings). A string at the top level of ``config_dict`` is
refused: RecBole 1.2.1's ``Config`` would ``eval`` it. Command-line values are
read by :func:`parse_value` (a YAML scalar or list), never by RecBole, and
RecBole's own reading of ``sys.argv`` is switched off while a point runs.
"""
import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

import yaml

from recbole_models.config import TypedLoader
from recbole_models.workers import worker_pool

__all__ = ["Point", "ResultStore", "parse_value", "check_typed", "point_key", "run_points", "mean_std",
           "no_command_line", "load_yaml_file"]




def parse_value(text: str, where: str):
    """One typed value from command-line text: a YAML scalar, list or mapping
    (``0.7`` → float, ``10`` → int, ``~``/``null`` → ``None``, ``true`` → bool,
    ``[a, b]`` → list). ``where`` names the argument in error messages."""
    try:
        value = yaml.load(text, Loader=TypedLoader)
    except yaml.YAMLError as err:
        raise ValueError(f"{where}: {text!r} is not a YAML value ({str(err).splitlines()[0]})") from None
    return value


def check_typed(overrides: Dict, where: str) -> Dict:
    """Returns ``overrides`` if no top-level value is a string (RecBole 1.2.1 ``eval``s
    those); raises ``ValueError`` naming the key and ``where`` otherwise."""
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{where}: config keys must be non-empty strings, got {key!r}")
        if isinstance(value, str):
            raise ValueError(
                f"{where}: `{key}` = {value!r} is a string; RecBole's Config would eval it. "
                f"Give numbers, booleans, null, lists or mappings here; put string settings "
                f"in a YAML config file")
    return overrides


class Point(dict):
    """One run: ``name`` (label), ``model`` (class name), ``overrides`` (typed config
    values) and ``seed``. A ``dict`` so it pickles into worker processes as is."""

    def __init__(self, name: str, model: str, overrides: Dict, seed: int):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        super().__init__(name=name, model=model, overrides=dict(overrides), seed=int(seed))


def _file_digest(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as err:
        raise ValueError(f"config file {path}: {err.strerror}") from None


def point_key(point: Point, dataset: str, config_files: Sequence[str]) -> str:
    """The store key of ``point``: a hash of the model, dataset, the config files'
    contents, the overrides and the seed (JSON with sorted keys)."""
    payload = {"model": point["model"], "dataset": dataset,
               "config_files": [_file_digest(p) for p in config_files or []],
               "overrides": point["overrides"], "seed": point["seed"]}
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


class ResultStore:
    """A directory of finished points, one ``<key>.json`` record each.

    Args:
        directory: created if missing.
    """

    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    def path(self, key: str) -> str:
        return os.path.join(self.directory, f"{key}.json")

    def get(self, key: str) -> Optional[Dict]:
        """The record of ``key``, or ``None`` when it is not there. A file that is not a
        record (only possible if edited by hand: writes are atomic) is reported and
        treated as missing; it is overwritten when the point is trained again."""
        path = self.path(key)
        if not os.path.isfile(path):
            return None
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError) as err:
            print(f"warning: {path}: unreadable record ({err}); the point is trained again", file=sys.stderr)
            return None
        if not isinstance(record, dict) or record.get("key") != key or "test_result" not in record:
            print(f"warning: {path}: not a record of this point; the point is trained again", file=sys.stderr)
            return None
        return record

    def put(self, key: str, record: Dict) -> str:
        """Writes ``record`` atomically; returns its path."""
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".point-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, sort_keys=True, default=float)
            f.write("\n")
        os.replace(tmp, self.path(key))
        return self.path(key)

    def keys(self) -> List[str]:
        return sorted(n[:-5] for n in os.listdir(self.directory) if n.endswith(".json"))


def load_yaml_file(path: str):
    """Typed data from a YAML file (safe loader, ``1e-3`` is a float); errors name the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=TypedLoader)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    except OSError as err:
        raise ValueError(f"{path}: {err.strerror}") from None


@contextlib.contextmanager
def no_command_line():
    """While inside, ``sys.argv`` holds only the program name: RecBole's ``Config`` reads
    ``--key=value`` from ``sys.argv`` on its own and ``eval``s the values, and a
    command's own arguments (e.g. ``--out=DIR``) must not reach it."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def _train(task) -> Dict:
    """Trains one point and stores its record; runs in this process or a worker."""
    key, point, dataset, config_files, store_dir, keep_checkpoints, threads = task
    if threads:
        import torch

        torch.set_num_threads(threads)
    from recbole_models.run import run_recbole

    config_dict = dict(point["overrides"], seed=point["seed"])
    try:
        with no_command_line():
            result = run_recbole(point["model"], dataset, list(config_files or []) or None, config_dict,
                                 saved=True)
    except Exception as err:
        raise RuntimeError(f"point {point['name']!r} seed {point['seed']} ({point['model']}) failed: "
                           f"{type(err).__name__}: {err}") from err
    checkpoint = result.get("saved_model_file")
    if checkpoint and not keep_checkpoints and os.path.isfile(checkpoint):
        os.remove(checkpoint)
        checkpoint = None
    record = {
        "key": key, "name": point["name"], "model": point["model"], "dataset": dataset,
        "overrides": point["overrides"], "seed": point["seed"], "config_files": list(config_files or []),
        "best_valid_score": float(result["best_valid_score"]),
        "valid_score_bigger": bool(result["valid_score_bigger"]),
        "best_valid_result": {k: float(v) for k, v in result["best_valid_result"].items()},
        "test_result": {k: float(v) for k, v in result["test_result"].items()},
        "best_epoch": int(result["best_epoch"]), "train_time": float(result["train_time"]),
        "checkpoint": checkpoint, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    ResultStore(store_dir).put(key, record)
    return record


def run_points(points: Sequence[Point], dataset: str, config_files: Optional[Sequence[str]], store_dir: str,
               jobs: int = 0, keep_checkpoints: bool = False,
               on_record: Optional[Callable[[Dict, bool], None]] = None) -> List[Dict]:
    """Trains every point that the store does not hold yet; returns all records in the
    order of ``points``.

    Args:
        points: the runs (:class:`Point`); two with the same key are trained once.
        dataset: RecBole dataset name.
        config_files: YAML files of every run (the dataset's protocol).
        store_dir: the result store (:class:`ResultStore`).
        jobs: ``0`` trains one point after another in this process; ``K >= 1`` trains
            each in a fresh spawned process, ``K`` at a time, one torch thread each.
        keep_checkpoints: keep each run's best checkpoint (its path is recorded);
            by default it is deleted once the run has been tested on it.
        on_record: called with ``(record, trained_now)`` for every point, stored or new.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise ValueError(f"jobs must be an integer >= 0, got {jobs!r}")
    store = ResultStore(store_dir)
    config_files = list(config_files or [])
    keys = [point_key(p, dataset, config_files) for p in points]
    records: Dict[str, Dict] = {}
    todo = []
    for key, point in zip(keys, points):
        if key in records or any(t[0] == key for t in todo):
            continue
        record = store.get(key)
        if record is not None:
            records[key] = record
            if on_record:
                on_record(record, False)
        else:
            todo.append((key, point, dataset, config_files, store_dir, keep_checkpoints, 1 if jobs else 0))
    if jobs == 0:
        for task in todo:
            record = _train(task)
            records[task[0]] = record
            if on_record:
                on_record(record, True)
    elif todo:
        # The argv the spawned children inherit is cleared (RecBole's Config reads it).
        with no_command_line(), worker_pool(jobs) as pool:
            for record in pool.imap_unordered(_train, todo):
                records[record["key"]] = record
                if on_record:
                    on_record(record, True)
    return [records[k] for k in keys]


def mean_std(values: Sequence[float]):
    """``(mean, sample standard deviation)``; the deviation is ``nan`` for one value."""
    values = [float(v) for v in values]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))

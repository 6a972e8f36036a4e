"""Writing a pre-split RecBole dataset directory, all or nothing.

Layout written into ``<out>/`` (``<name>`` = base name of ``<out>``, because RecBole
reads ``<data_path>/<name>/<name>.<suffix>``)::

    <name>.inter            all interactions   user_id:token item_id:token rating:float timestamp:float
    <name>.train.inter      the split, for RecBole's ``benchmark_filename: [train, valid, test]``
    <name>.valid.inter
    <name>.test.inter
    <name>.item             item_id:token asin:token title:token_seq ... (never in ``load_col``)
    <name>.yaml             RecBole config: data_path, benchmark files, full ranking, metrics
    dataset.json            counts, options and sources (also marks the directory as ours)

Everything is written into a temporary directory next to ``<out>`` and renamed into
place at the end, so an error or a crash leaves no half-written dataset. An output
directory that exists and is not empty is refused, unless ``overwrite=True`` and it
holds an earlier output of ours (``dataset.json``); a directory with other data is
never replaced, and neither is one that is (or contains) an input of the command.
Files and directories get the permissions of the user's umask, like any file the
user creates (``tempfile`` alone would make them private: 0600 / 0700).
"""
import contextlib
import json
import os
import shutil
import tempfile
from typing import Dict, Iterable, Iterator, Mapping, Optional

import numpy as np
import pandas as pd
import yaml

from mllmrec_pyg.staging import claim_output

__all__ = [
    "OutputExistsError", "dataset_name", "check_output_dir", "with_umask", "staged_directory",
    "write_inter", "write_table", "write_yaml", "recbole_config", "write_dataset",
    "INTER_HEADER", "MARKER", "SPLITS",
]

INTER_HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
MARKER = "dataset.json"
SPLITS = ("train", "valid", "test")


class OutputExistsError(FileExistsError, ValueError):
    """The output directory already holds data (a ``ValueError`` too, so the ``mllmrec``
    command reports it as bad input)."""


def dataset_name(out_dir: str, name: Optional[str] = None) -> str:
    """The dataset name: ``name`` or the base name of ``out_dir``; they must agree."""
    base = os.path.basename(os.path.normpath(out_dir))
    if not base or base in (".", ".."):
        raise ValueError(f"{out_dir!r}: the output must be a named directory (e.g. data/baby)")
    name = name or base
    if name != base:
        raise ValueError(f"dataset name {name!r} differs from the output directory's name {base!r}: "
                         f"RecBole reads <data_path>/<name>/<name>.inter")
    if any(c in name for c in "\t\n/\\") or name.startswith("."):
        raise ValueError(f"dataset name {name!r}: no tabs, newlines, slashes or leading dot")
    return name


def with_umask(path: str) -> str:
    """Gives ``path`` (made by ``tempfile``, so 0600 / 0700) the mode an ordinary
    ``open`` / ``mkdir`` would: 0666 / 0777 less the process umask. Returns ``path``."""
    mask = os.umask(0)  # the umask can only be read by setting it
    os.umask(mask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~mask)
    return path


def _refuse_inputs_inside(out_dir: str, inputs: Iterable[Optional[str]]) -> None:
    out = os.path.realpath(out_dir)
    for path in inputs:
        if path is None:
            continue
        real = os.path.realpath(path)
        if real == out or real.startswith(out.rstrip(os.sep) + os.sep):
            what = "is" if real == out else "contains"
            raise OutputExistsError(f"{out_dir}: the output directory {what} the input {path}; writing "
                                    f"there would delete it, so choose another output directory")


def check_output_dir(out_dir: str, overwrite: bool = False, inputs: Iterable[Optional[str]] = ()) -> None:
    """Raises :class:`OutputExistsError` when ``out_dir`` may not be (re)written: it is or
    contains one of ``inputs`` (files or directories the command reads), it holds other
    data, or it holds our earlier output and ``overwrite`` is off."""
    _refuse_inputs_inside(out_dir, inputs)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputExistsError(f"{out_dir}: exists and is not a directory")
    if not os.path.isdir(out_dir) or not os.listdir(out_dir):
        return
    if not os.path.isfile(os.path.join(out_dir, MARKER)):
        raise OutputExistsError(f"{out_dir}: the output directory already holds other data "
                                f"({len(os.listdir(out_dir))} entries, no {MARKER}); choose a new or "
                                f"empty directory")
    if not overwrite:
        raise OutputExistsError(f"{out_dir}: already holds a prepared dataset ({MARKER}); pass "
                                f"overwrite (--overwrite) to replace it")


@contextlib.contextmanager
def staged_directory(out_dir: str, overwrite: bool = False,
                     inputs: Iterable[Optional[str]] = ()) -> Iterator[str]:
    """Yields a fresh temporary directory next to ``out_dir``; when the block ends without
    error it replaces ``out_dir`` (renames), otherwise it is deleted. ``inputs``: see
    :func:`check_output_dir`."""
    inputs = list(inputs)
    check_output_dir(out_dir, overwrite, inputs)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    lock = claim_output(out_dir)  # one writer at a time; removes what killed runs left (mllmrec_pyg.staging)
    base = os.path.basename(os.path.normpath(out_dir))
    stage = with_umask(tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent))
    try:
        yield stage
        check_output_dir(out_dir, overwrite, inputs)  # it may have changed meanwhile
        old = None
        if os.path.isdir(out_dir):
            if os.listdir(out_dir):
                old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
                os.rmdir(old)
                os.rename(out_dir, old)
            else:
                os.rmdir(out_dir)
        os.rename(stage, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.isdir(stage):
            shutil.rmtree(stage, ignore_errors=True)
        lock.release()


def write_inter(path: str, frame: pd.DataFrame) -> int:
    """Writes interactions (columns ``user``, ``item``, ``rating``, ``timestamp``) as a RecBole
    ``.inter`` file; timestamps stay integers (RecBole keeps floats as float32, the file
    keeps the exact value). Returns the number of rows."""
    out = pd.DataFrame({
        INTER_HEADER[0]: frame["user"].astype(str).to_numpy(),
        INTER_HEADER[1]: frame["item"].astype(str).to_numpy(),
        INTER_HEADER[2]: np.asarray(frame["rating"], dtype=np.float64),
        INTER_HEADER[3]: np.asarray(frame["timestamp"], dtype=np.int64),
    })
    out.to_csv(path, sep="\t", index=False, lineterminator="\n")
    return len(out)


def write_table(path: str, frame: pd.DataFrame, types: Optional[Mapping[str, str]] = None) -> None:
    """Writes a tab-separated table; with ``types`` the header is ``column:type`` (RecBole).
    Values must not contain tabs or newlines (checked)."""
    text = frame.astype(str)
    for column in text.columns:
        bad = text[column].str.contains(r"[\t\n\r]", regex=True)
        if bad.any():
            raise ValueError(f"{path}: column {column!r} has a tab or newline in row "
                             f"{int(np.flatnonzero(bad.to_numpy())[0]) + 1}")
    header = [f"{c}:{types[c]}" if types else str(c) for c in frame.columns]
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(header) + "\n")
        for row in text.itertuples(index=False, name=None):
            f.write("\t".join(row) + "\n")


def write_yaml(path: str, config: dict, comment: str = "") -> None:
    with open(path, "w", encoding="utf-8") as f:
        for line in comment.strip("\n").splitlines():
            f.write(f"# {line}".rstrip() + "\n")
        # Block style: one key per line, so a key appended by hand or by a tool stays valid YAML.
        yaml.safe_dump(config, f, sort_keys=False, default_flow_style=False)


def _data_path(out_dir: str) -> str:
    """The parent of ``out_dir`` as RecBole's ``data_path``: relative (to the working
    directory, where RecBole is run too) when ``out_dir`` was given relative, else absolute."""
    parent = os.path.dirname(os.path.normpath(out_dir))
    if os.path.isabs(out_dir):
        return parent
    return (parent or ".") + "/"


def recbole_config(out_dir: str, seed: int = 2024, features: Optional[Dict[str, tuple]] = None) -> dict:
    """The dataset YAML as a dict: pre-split files, full-sort ranking, Recall/NDCG@10,20.

    Args:
        out_dir: the dataset directory (its parent is ``data_path``).
        seed: RecBole ``seed``.
        features: ``{suffix: (id_field, value_field, kind)}`` with kind ``"item"`` or
            ``"user"``: feature files (docs/recbole.md) to wire in.
    """
    load_col = {"inter": ["user_id", "item_id", "rating", "timestamp"]}
    config = {
        "data_path": _data_path(out_dir),
        "benchmark_filename": list(SPLITS),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
        "RATING_FIELD": "rating", "TIME_FIELD": "timestamp",
        "load_col": load_col,
        "normalize_all": False,
    }
    if features:
        config["additional_feat_suffix"] = list(features)
        items = [f for f, (_, _, kind) in features.items() if kind == "item"]
        users = [f for f, (_, _, kind) in features.items() if kind == "user"]
        for suffix, (id_field, value_field, _) in features.items():
            load_col[suffix] = [id_field, value_field]
        if items:
            config["alias_of_item_id"] = [features[s][0] for s in items]
            config["item_feature_field"] = features[items[0]][0]
        if users:
            config["alias_of_user_id"] = [features[s][0] for s in users]
            config["user_feature_field"] = features[users[0]][0]
        config["preload_weight"] = {id_field: value_field for id_field, value_field, _ in features.values()}
    config.update({
        # Ignored with benchmark_filename (the files hold the split) but RecBole needs it.
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"},
        "metrics": ["Recall", "NDCG"], "topk": [10, 20], "valid_metric": "Recall@20",
        "seed": int(seed), "reproducibility": True,
    })
    return config


def write_dataset(out_dir: str, name: str, frame: pd.DataFrame, items: pd.DataFrame, summary: dict,
                  overwrite: bool = False, extra_tables: Optional[Mapping[str, pd.DataFrame]] = None,
                  features: Optional[Dict[str, tuple]] = None, write_features=None,
                  extra_yaml: Optional[Mapping[str, tuple]] = None,
                  inputs: Iterable[Optional[str]] = ()) -> str:
    """Writes the dataset directory atomically; returns ``out_dir``.

    Args:
        out_dir: the dataset directory (created; see :func:`check_output_dir`).
        name: dataset name (:func:`dataset_name`).
        frame: interactions with columns ``user``, ``item``, ``rating``, ``timestamp`` and
            ``label`` (0 train, 1 valid, 2 test).
        items: the ``.item`` table; column ``item_id`` first, types from
            :data:`mllmrec_pyg.datasets.amazon.ITEM_COLUMNS` (unknown columns: ``token``).
        summary: JSON-able description, saved as ``dataset.json``.
        overwrite: replace an earlier output of ours.
        extra_tables: ``{file name: frame}`` written as plain tab-separated tables.
        features: feature files the ``write_features`` callback writes, wired into the YAML.
        write_features: ``callable(stage_dir)`` writing the feature files.
        extra_yaml: ``{file name: (comment, config dict)}`` more YAML files.
        inputs: the files and directories read; an ``out_dir`` that is or contains one is
            refused (:func:`check_output_dir`).
    """
    from mllmrec_pyg.datasets.amazon import ITEM_COLUMNS

    labels = np.asarray(frame["label"])
    if not np.isin(labels, (0, 1, 2)).all():
        raise ValueError("split labels must be 0 (train), 1 (valid) or 2 (test)")
    seed = int(summary.get("split", {}).get("seed", 2024) or 2024)
    with staged_directory(out_dir, overwrite, inputs) as stage:
        write_inter(os.path.join(stage, f"{name}.inter"), frame)
        for label, split in enumerate(SPLITS):
            write_inter(os.path.join(stage, f"{name}.{split}.inter"), frame[labels == label])
        write_table(os.path.join(stage, f"{name}.item"), items,
                    {c: ITEM_COLUMNS.get(c, "token") for c in items.columns})
        for fname, table in (extra_tables or {}).items():
            write_table(os.path.join(stage, fname), table)
        if write_features is not None:
            write_features(stage)
        write_yaml(os.path.join(stage, f"{name}.yaml"), recbole_config(out_dir, seed, features),
                   comment=f"RecBole config of the pre-split dataset `{name}` (written by mllmrec).\n"
                           f"python -m recbole_models.run --model BPR --dataset {name} "
                           f"--config_files {os.path.join(out_dir, name + '.yaml')}\n"
                           f"`data_path` is the directory holding `{name}/`; relative paths are "
                           f"relative to where you run.\nThe `.item` file is deliberately not in "
                           f"`load_col` (free text is for the LLM/encoder stages).")
        for fname, (comment, config) in (extra_yaml or {}).items():
            write_yaml(os.path.join(stage, fname), config, comment)
        with open(os.path.join(stage, MARKER), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
    return out_dir

r"""Item and user feature files, loaded the RecBole way and checked.

Feature files are RecBole *additional atomic feature files* (format in
``docs/recbole.md``)::

    <dataset>.itememb          iid:token <TAB> item_emb:float_seq
    <dataset>.useremb          uid:token <TAB> user_emb:float_seq

wired with plain RecBole keys: ``additional_feat_suffix``, ``load_col``,
``alias_of_item_id`` / ``alias_of_user_id`` (so the id column shares the
remapping of ``item_id`` / ``user_id``) and ``preload_weight`` (so
``dataset.get_preload_weight('iid')`` is an ``[n_items, d]`` matrix whose row
``i`` belongs to internal item id ``i``; row 0 is ``[PAD]`` and stays zero).

RecBole itself checks none of what matters here: a missing token becomes a zero
row, an extra token becomes a new item without interactions, a short row is
zero-padded, ``nan`` passes through. :class:`FeatureCheckedDataset` checks the
raw files right after RecBole reads them (before remapping), and raises a
``ValueError`` naming the file and line for each of these.
"""
import os
from typing import Dict, Iterable, Optional

import numpy as np
from recbole.data.dataset import Dataset
from recbole.utils import FeatureType

from mllmrec_pyg.feature_file import write_feature_file  # noqa: F401 (the format's one home)

__all__ = [
    "FeatureCheckedDataset",
    "create_dataset",
    "feature_suffixes",
    "feature_matrix",
    "write_feature_file",
]


def _line_of(path: str, token: str, column: int = 0, sep: str = "\t") -> Optional[int]:
    """1-based line number of the first data line whose ``column`` equals ``token``."""
    with open(path, encoding="utf-8") as f:
        next(f, None)  # header
        for number, line in enumerate(f, start=2):
            parts = line.rstrip("\n").split(sep)
            if len(parts) > column and parts[column] == token:
                return number
    return None


def _where(path: str, token: str) -> str:
    line = _line_of(path, token)
    return f"{path}, line {line}" if line is not None else path


def _examples(values: Iterable, n: int = 5) -> str:
    values = sorted(map(str, values))
    more = f" (and {len(values) - n} more)" if len(values) > n else ""
    return ", ".join(values[:n]) + more


def feature_suffixes(config) -> Dict[str, tuple]:
    """The additional feature files that feed ``preload_weight``.

    Returns ``{suffix: (id_field, value_field, kind)}`` with ``kind`` ``"item"`` or
    ``"user"`` (which id space the id field is an alias of).
    """
    suffixes = config["additional_feat_suffix"] or []
    preload = config["preload_weight"] or {}
    load_col = config["load_col"] or {}
    item_alias = set(config["alias_of_item_id"] or [])
    user_alias = set(config["alias_of_user_id"] or [])
    out = {}
    for suf in suffixes:
        cols = load_col.get(suf) if isinstance(load_col, dict) else None
        if not cols or cols == "*":
            continue
        for id_field, value_field in preload.items():
            if id_field in cols and value_field in cols:
                if id_field in item_alias:
                    kind = "item"
                elif id_field in user_alias:
                    kind = "user"
                else:
                    raise ValueError(
                        f"feature file `.{suf}`: its id field `{id_field}` must be listed in "
                        f"`alias_of_item_id` or `alias_of_user_id`, otherwise RecBole remaps its "
                        f"tokens on their own and row i would not belong to item/user i")
                out[suf] = (id_field, value_field, kind)
    return out


class FeatureCheckedDataset(Dataset):
    r"""RecBole's :class:`~recbole.data.dataset.Dataset` plus strict checks of the
    feature files named by :func:`feature_suffixes`.

    For each such file, with :math:`T` the dataset's tokens of that kind (the
    union over the ``.inter`` files, all splits, and the ``.item``/``.user`` file
    when loaded) and :math:`F` the file's tokens, it requires :math:`F = T`, no
    duplicate token, every row of the same length :math:`d`, and finite values.
    """

    def _load_data(self, token, dataset_path):
        self._feature_paths = {}
        try:
            super()._load_data(token, dataset_path)
        except ValueError as err:
            # RecBole's float parsing fails without naming the file: find it.
            for suf in feature_suffixes(self.config):
                path = os.path.join(dataset_path, f"{token}.{suf}")
                if os.path.isfile(path) and not hasattr(self, f"{suf}_feat"):
                    raise ValueError(f"{path}: cannot parse the feature file ({err})") from err
            raise
        for suf, (id_field, value_field, kind) in feature_suffixes(self.config).items():
            path = os.path.join(dataset_path, f"{token}.{suf}")
            self._check_feature_file(path, suf, id_field, value_field, kind)

    def _known_tokens(self, kind: str) -> np.ndarray:
        field = self.iid_field if kind == "item" else self.uid_field
        side = self.item_feat if kind == "item" else self.user_feat
        parts = []
        if self.inter_feat is not None and field in self.inter_feat:
            parts.append(self.inter_feat[field].astype(str).values)
        if side is not None and field in side:
            parts.append(side[field].astype(str).values)
        return np.unique(np.concatenate(parts)) if parts else np.array([], dtype=str)

    def _check_feature_file(self, path, suf, id_field, value_field, kind):
        feat = getattr(self, f"{suf}_feat", None)
        if feat is None or id_field not in feat or value_field not in feat:
            raise ValueError(f"{path}: expected columns `{id_field}:token` and "
                             f"`{value_field}:float_seq` in its header line")
        if self.field2type.get(id_field) != FeatureType.TOKEN:
            raise ValueError(f"{path}: column `{id_field}` must have type `token`")
        if self.field2type.get(value_field) != FeatureType.FLOAT_SEQ:
            raise ValueError(f"{path}: column `{value_field}` must have type `float_seq`")
        tokens = feat[id_field].astype(str).values

        dup = feat[id_field].duplicated(keep="first").values
        if dup.any():
            first = str(tokens[dup][0])
            raise ValueError(f"{path}: {kind} id {first!r} appears more than once "
                             f"({int(dup.sum())} duplicate row(s)); second at line "
                             f"{int(np.flatnonzero(dup)[0]) + 2}")

        known = self._known_tokens(kind)
        extra = np.setdiff1d(tokens, known)
        if extra.size:
            raise ValueError(
                f"{_where(path, str(extra[0]))}: {extra.size} {kind} id(s) that the dataset "
                f"`{self.dataset_name}` does not have: {_examples(extra)}")
        missing = np.setdiff1d(known, tokens)
        if missing.size:
            raise ValueError(
                f"{path}: no row for {missing.size} of the dataset's {known.size} {kind} ids: "
                f"{_examples(missing)}")

        lengths = np.fromiter((len(v) for v in feat[value_field].values), dtype=np.int64,
                              count=len(feat))
        dim = int(np.bincount(lengths).argmax()) if lengths.size else 0
        if dim == 0:
            raise ValueError(f"{path}: the feature rows are empty (column `{value_field}`)")
        bad = np.flatnonzero(lengths != dim)
        if bad.size:
            token = str(tokens[bad[0]])
            raise ValueError(
                f"{_where(path, token)}: {kind} id {token!r} has {int(lengths[bad[0]])} values, "
                f"the file's other rows have {dim} ({bad.size} row(s) differ)")
        values = np.stack(feat[value_field].values)
        nonfinite = ~np.isfinite(values).all(axis=1)
        if nonfinite.any():
            token = str(tokens[np.flatnonzero(nonfinite)[0]])
            raise ValueError(f"{_where(path, token)}: {kind} id {token!r} has NaN or inf values "
                             f"({int(nonfinite.sum())} row(s) affected)")
        self._feature_paths[suf] = path


def create_dataset(config):
    """Like :func:`recbole.data.create_dataset`, but a general dataset with feature
    files is a :class:`FeatureCheckedDataset`. Other cases go to RecBole unchanged."""
    from recbole.data import create_dataset as recbole_create_dataset
    from recbole.utils import ModelType

    if config["MODEL_TYPE"] in (ModelType.GENERAL, ModelType.TRADITIONAL) and feature_suffixes(config):
        return FeatureCheckedDataset(config)
    return recbole_create_dataset(config)


def feature_matrix(dataset, id_field: str, expected_rows: int, what: str) -> np.ndarray:
    """``dataset.get_preload_weight(id_field)`` as float32 ``[expected_rows, d]``,
    with a clear error when the config does not provide it."""
    try:
        matrix = dataset.get_preload_weight(id_field)
    except ValueError:
        raise ValueError(
            f"{what} features: `{id_field}` is not in `preload_weight`; wire a feature file "
            f"as described in docs/recbole.md (additional_feat_suffix, load_col, "
            f"alias_of_*_id, preload_weight)") from None
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != expected_rows:
        raise ValueError(f"{what} features `{id_field}` have shape {matrix.shape}, "
                         f"expected [{expected_rows}, d] (one row per internal id)")
    return matrix

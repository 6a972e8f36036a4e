"""The MMRec data layout (the paper's framework, NOTES §3) in and out.

MMRec directory ``<src>/``::

    <name>.inter                  userID itemID rating timestamp x_label   (tab-separated, header;
                                  ids 0-based ints, x_label 0 train / 1 valid / 2 test)
    text_feat.npy                 [n_items, d] item text features, row r = itemID r
    image_feat.npy                [n_items, d] item image features
    image_text_feat.npy           [n_items, d] MLLMRec: the fused item description encoded
    user_preferences_feat.npy     [n_users, d] MLLMRec: the encoded user preference text
    i_id_mapping.csv, u_id_mapping.csv   (optional) original ids: asin/itemID, user_id/userID

Our directory: the atomic files of :mod:`~mllmrec_pyg.datasets.atomic` with the MMRec
integer ids as tokens (so row r of an ``.npy`` is token ``"r"``), and one RecBole
feature file (docs/recbole.md) per ``.npy`` (:data:`FEATURES`). The dataset YAML wires
ONE item file (``item_features``; default ``image_text_feat.npy``, MLLMRec's item input,
else ``text_feat.npy``, else ``image_feat.npy``) and the user file; the others are
written too, for a switch by hand (``load_col``, ``alias_of_item_id``,
``preload_weight``, ``item_feature_field``).
"""
import json
import logging
import os
import tempfile
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import pandas as pd

from mllmrec_pyg.datasets.atomic import (MARKER, SPLITS, check_output_dir, dataset_name, staged_directory,
                                         with_umask, write_dataset, write_table, write_yaml)
from mllmrec_pyg.feature_file import read_feature_file, write_feature_file  # noqa: F401 (re-exported)
from mllmrec_pyg.text.decode import read_table

log = logging.getLogger(__name__)

__all__ = ["FEATURES", "import_mmrec", "export_mmrec", "read_mmrec_inter", "read_feature_file"]

# MMRec .npy file -> (our suffix, id field, value field, kind).
FEATURES = {
    "image_text_feat.npy": ("imagetextemb", "imgtext_iid", "imgtext_emb", "item"),
    "text_feat.npy": ("textemb", "text_iid", "text_emb", "item"),
    "image_feat.npy": ("imageemb", "image_iid", "image_emb", "item"),
    "user_preferences_feat.npy": ("useremb", "uid", "user_emb", "user"),
}
ITEM_PREFERENCE = ("image_text_feat.npy", "text_feat.npy", "image_feat.npy")
INTER_COLUMNS = ("userID", "itemID", "rating", "timestamp", "x_label")
# Our suffix -> MMRec file on export; `itememb` (written by `mllmrec encode`: the fused
# description, image text included) is MLLMRec's image_text_feat.npy.
EXPORT_FILES = {"imagetextemb": "image_text_feat.npy", "itememb": "image_text_feat.npy",
                "textemb": "text_feat.npy", "imageemb": "image_feat.npy",
                "useremb": "user_preferences_feat.npy"}


_INT64_MAX = np.iinfo(np.int64).max


def _int_column(path: str, frame: pd.DataFrame, column: str) -> np.ndarray:
    """The column as int64; a value that is not a non-negative integer (``"7"``, ``"7.0"``)
    or does not fit int64 is an error naming the file and line. Parsed from the text, not
    through float64, which would round ids above 2**53 and wrap ids above 2**63."""
    text = frame[column].str.strip()
    match = text.str.fullmatch(r"\+?(\d+)(?:\.0*)?")
    digits = text.str.extract(r"^\+?(\d+)", expand=False)
    bad = np.flatnonzero(~match.to_numpy(dtype=bool))
    if bad.size:
        row = int(bad[0])
        raise ValueError(f"{path}, line {row + 2}: column {column!r} must be a non-negative integer, "
                         f"got {frame[column].iloc[row]!r}")
    # 19 digits or more may exceed int64; only those are compared as Python ints.
    for row in np.flatnonzero(digits.str.lstrip("0").str.len().to_numpy() >= 19):
        if int(digits.iloc[row]) > _INT64_MAX:
            raise ValueError(f"{path}, line {row + 2}: column {column!r} value {frame[column].iloc[row]!r} "
                             f"is larger than the largest 64-bit id ({_INT64_MAX})")
    return digits.astype(np.int64).to_numpy()


def read_mmrec_inter(path: str) -> pd.DataFrame:
    """Reads an MMRec ``.inter`` file into columns ``user``, ``item`` (ints), ``rating``,
    ``timestamp``, ``label``.

    Raises:
        ValueError: unknown or missing columns, a non-integer id, an ``x_label`` outside
            0/1/2, or no rows, naming the file (and line).
    """
    frame = read_table(path)
    unknown = [c for c in frame.columns if c not in INTER_COLUMNS]
    if unknown:
        raise ValueError(f"{path}: unknown column(s) {unknown}; an MMRec .inter file has the header "
                         f"{' '.join(INTER_COLUMNS)} (tab-separated)")
    missing = [c for c in ("userID", "itemID", "x_label") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (header: {list(frame.columns)})")
    if frame.empty:
        raise ValueError(f"{path}: no interactions")
    label = _int_column(path, frame, "x_label")
    if not np.isin(label, (0, 1, 2)).all():
        row = int(np.flatnonzero(~np.isin(label, (0, 1, 2)))[0])
        raise ValueError(f"{path}, line {row + 2}: x_label must be 0, 1 or 2, got {label[row]}")
    out = pd.DataFrame({"user": _int_column(path, frame, "userID"),
                        "item": _int_column(path, frame, "itemID"), "label": label})
    for column, default in (("rating", 1.0), ("timestamp", 0)):
        if column in frame.columns:
            values = pd.to_numeric(frame[column], errors="coerce")
            if values.isna().any() or not np.isfinite(values.to_numpy(dtype=float)).all():
                row = int(np.flatnonzero(~np.isfinite(values.to_numpy(dtype=float)))[0])
                raise ValueError(f"{path}, line {row + 2}: column {column!r} must be a number, "
                                 f"got {frame[column].iloc[row]!r}")
            out[column] = values.to_numpy(dtype=np.float64)
        else:
            out[column] = default
    out["timestamp"] = out["timestamp"].astype(np.int64)
    if not (out["label"] == 0).any():
        raise ValueError(f"{path}: no training rows (x_label 0)")
    dup = out.duplicated(["user", "item"])
    if dup.any():
        log.warning("%s: %d repeated (userID, itemID) pair(s), kept as they are (first at line %d)",
                    path, int(dup.sum()), int(np.flatnonzero(dup.to_numpy())[0]) + 2)
    return out[["user", "item", "rating", "timestamp", "label"]]


def _find_inter(src: str, name: str, inter_file: Optional[str]) -> str:
    if inter_file:
        return inter_file if os.path.isabs(inter_file) or os.path.isfile(inter_file) \
            else os.path.join(src, inter_file)
    for candidate in (name, os.path.basename(os.path.normpath(src))):
        path = os.path.join(src, f"{candidate}.inter")
        if os.path.isfile(path):
            return path
    found = sorted(f for f in os.listdir(src) if f.endswith(".inter"))
    if len(found) == 1:
        return os.path.join(src, found[0])
    raise FileNotFoundError(f"{src}: cannot tell the MMRec .inter file (found {found or 'none'}); "
                            f"name it with --inter-file")


def _load_npy(path: str, ids: np.ndarray, what: str) -> np.ndarray:
    """Rows ``ids`` of the ``.npy`` matrix at ``path`` (row r = id r)."""
    from mllmrec_pyg.npy import read_npy_header

    read_npy_header(path)  # checks the declared shape against the file size before np.load allocates it
    try:
        matrix = np.load(path, allow_pickle=False)  # never unpickle a downloaded file
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not a numeric .npy array ({err})") from None
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise ValueError(f"{path}: expected a 2-d numeric array [n_{what}s, d], got shape {matrix.shape} "
                         f"dtype {matrix.dtype}")
    need = int(ids.max()) + 1
    if matrix.shape[0] < need:
        raise ValueError(f"{path}: {matrix.shape[0]} rows, but the .inter file has {what}ID {need - 1} "
                         f"(row r must be {what}ID r)")
    if matrix.shape[0] > need or len(ids) < need:
        log.warning("%s: %d row(s) belong to no %s of the .inter file and are left out",
                    path, matrix.shape[0] - len(ids), what)
    rows = matrix[ids]
    if not np.isfinite(rows).all():
        bad = int(ids[np.flatnonzero(~np.isfinite(rows).all(axis=1))[0]])
        raise ValueError(f"{path}: row {bad} ({what}ID {bad}) has NaN or inf values")
    return rows


def import_mmrec(src: str, out_dir: str, name: Optional[str] = None, inter_file: Optional[str] = None,
                 item_features: Optional[str] = None, overwrite: bool = False) -> Dict:
    """Converts an MMRec dataset directory into our pre-split RecBole dataset.

    Args:
        src: MMRec directory (``.inter`` and ``*_feat.npy`` files).
        out_dir: dataset directory to create (base name = dataset name).
        name: dataset name (default: the base name of ``out_dir``).
        inter_file: the ``.inter`` file (default ``<src>/<name>.inter``, then
            ``<src>/<basename(src)>.inter``, then the only ``.inter`` in ``src``).
        item_features: the ``.npy`` wired as the model's item features (default: the first
            present of ``image_text_feat.npy``, ``text_feat.npy``, ``image_feat.npy``).
        overwrite: replace an earlier output of ours.

    Returns:
        the summary saved as ``<out_dir>/dataset.json``.
    """

    if not os.path.isdir(src):
        raise FileNotFoundError(f"{src}: no such MMRec directory")
    name = dataset_name(out_dir, name)
    inter_path = _find_inter(src, name, inter_file)
    frame = read_mmrec_inter(inter_path)
    users = np.unique(frame["user"].to_numpy())
    items = np.unique(frame["item"].to_numpy())
    present = [f for f in FEATURES if os.path.isfile(os.path.join(src, f))]
    if item_features is not None:
        if item_features not in FEATURES or FEATURES[item_features][3] != "item":
            raise ValueError(f"item_features must be one of {list(ITEM_PREFERENCE)}, got {item_features!r}")
        if item_features not in present:
            raise FileNotFoundError(f"{os.path.join(src, item_features)}: no such file")
    else:
        item_features = next((f for f in ITEM_PREFERENCE if f in present), None)
    matrices = {}
    for fname in present:
        kind = FEATURES[fname][3]
        matrices[fname] = _load_npy(os.path.join(src, fname), users if kind == "user" else items, kind)

    def write_features(stage):
        for fname, values in matrices.items():
            suffix, id_field, value_field, kind = FEATURES[fname]
            ids = users if kind == "user" else items
            write_feature_file(os.path.join(stage, f"{name}.{suffix}"), id_field, value_field,
                               [str(i) for i in ids], values)

    wired = {}
    if item_features:
        wired[FEATURES[item_features][0]] = FEATURES[item_features][1:]
    if "user_preferences_feat.npy" in matrices:
        wired["useremb"] = FEATURES["user_preferences_feat.npy"][1:]

    tables = {}
    item_frame = pd.DataFrame({"item_id": [str(i) for i in items]})
    for fname in ("u_id_mapping.csv", "i_id_mapping.csv"):
        path = os.path.join(src, fname)
        if os.path.isfile(path):
            tables[fname] = read_table(path)
    mapping = tables.get("i_id_mapping.csv")
    if mapping is not None and {"asin", "itemID"} <= set(mapping.columns):
        item_frame["asin"] = item_frame["item_id"].map(dict(zip(mapping["itemID"], mapping["asin"]))).fillna("")

    labels = frame["label"].to_numpy()
    summary = {
        "dataset": name, "source": {"mmrec": os.path.abspath(src), "inter": os.path.abspath(inter_path)},
        "users": int(len(users)), "items": int(len(items)), "interactions": int(len(frame)),
        "density": len(frame) / (len(users) * len(items)),
        "split": {"method": "mmrec x_label", "seed": None, "train": int((labels == 0).sum()),
                  "valid": int((labels == 1).sum()), "test": int((labels == 2).sum())},
        "features": {f: {"suffix": FEATURES[f][0], "shape": list(m.shape), "wired": FEATURES[f][0] in wired}
                     for f, m in matrices.items()},
    }
    write_dataset(out_dir, name, frame, item_frame, summary, overwrite=overwrite, extra_tables=tables,
                  inputs=(src, inter_path),
                  features=wired or None, write_features=write_features)
    return summary


def _number_column(frame: pd.DataFrame, column: str, default: float) -> np.ndarray:
    """``frame[column]`` as finite float64 (``default`` when absent); the split files are
    concatenated, so an error names the file and line kept in ``_file`` / ``_line``."""
    if column not in frame.columns:
        return np.full(len(frame), default, dtype=np.float64)
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = frame.iloc[int(bad[0])]
        raise ValueError(f"{row['_file']}, line {row['_line']}: {column} must be a finite number, "
                         f"got {row[column]!r}")
    return values


def _read_split(path: str) -> pd.DataFrame:
    frame = read_table(path)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    for column in ("user_id", "item_id"):
        if column not in frame.columns:
            raise ValueError(f"{path}: no {column!r} column (has {list(frame.columns)})")
    frame["_file"] = path
    frame["_line"] = np.arange(2, len(frame) + 2)
    return frame


def _id_map(tokens: pd.Series) -> Tuple[Dict[str, int], bool]:
    """Token -> MMRec id: the token itself when the tokens are exactly ``0..n-1``, else the
    order of first appearance. Returns ``(map, kept)``."""
    uniq = list(dict.fromkeys(tokens))
    if all(t.isdigit() and (t == "0" or not t.startswith("0")) for t in uniq):
        ints = sorted(int(t) for t in uniq)
        if ints == list(range(len(ints))):
            return {t: int(t) for t in uniq}, True
    return {t: i for i, t in enumerate(uniq)}, False


def _save_npy(path: str, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".npy-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(with_umask(tmp), path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_mmrec(dataset_dir: str, out_dir: str, name: Optional[str] = None,
                 files: Optional[Mapping[str, str]] = None, overwrite: bool = False) -> Dict:
    """Writes our pre-split dataset in MMRec's layout (see the module docstring).

    Args:
        dataset_dir: our dataset directory (``<name>.{train,valid,test}.inter``, feature files).
        out_dir: MMRec directory to create; it gets ``<name>.inter`` (MMRec's
            ``inter_file_name``), the ``.npy`` files and ``mmrec_dataset.yaml``.
        name: dataset name (default: the base name of ``dataset_dir``).
        files: ``{our suffix: MMRec .npy name}`` (default :data:`EXPORT_FILES` for the
            suffixes present; ``itememb`` only when ``imagetextemb`` is absent).
        overwrite: replace an earlier output of ours.

    Returns:
        the summary saved as ``<out_dir>/dataset.json``.
    """
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"{dataset_dir}: no such dataset directory")
    check_output_dir(out_dir, overwrite, inputs=(dataset_dir,))  # before any reading
    name = name or os.path.basename(os.path.normpath(dataset_dir))
    parts = []
    for label, split in enumerate(SPLITS):
        path = os.path.join(dataset_dir, f"{name}.{split}.inter")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file (export needs a pre-split dataset)")
        part = _read_split(path)
        part["x_label"] = label
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    user_map, users_kept = _id_map(frame["user_id"])
    item_map, items_kept = _id_map(frame["item_id"])
    out = pd.DataFrame({
        "userID": frame["user_id"].map(user_map).astype(np.int64),
        "itemID": frame["item_id"].map(item_map).astype(np.int64),
        "rating": _number_column(frame, "rating", 1.0),
        "timestamp": _number_column(frame, "timestamp", 0).astype(np.int64),
        "x_label": frame["x_label"].astype(np.int64),
    }).sort_values(["userID", "x_label"], kind="stable")

    if files is None:
        files = {}
        for suffix, target in EXPORT_FILES.items():
            if os.path.isfile(os.path.join(dataset_dir, f"{name}.{suffix}")) and target not in files.values():
                files[suffix] = target
    targets = list(files.values())
    if len(set(targets)) != len(targets):
        raise ValueError(f"two feature files would become the same .npy: {dict(files)}")
    arrays = {}
    for suffix, target in files.items():
        path = os.path.join(dataset_dir, f"{name}.{suffix}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such feature file")
        kind_map = user_map if target == "user_preferences_feat.npy" else item_map
        kind = "user" if kind_map is user_map else "item"
        tokens, values = read_feature_file(path)
        extra = [t for t in tokens if t not in kind_map]
        if extra:
            raise ValueError(f"{path}: {len(extra)} {kind} id(s) that the dataset does not have, e.g. {extra[0]!r}")
        missing = set(kind_map) - set(tokens)
        if missing:
            raise ValueError(f"{path}: no row for {len(missing)} {kind}(s), e.g. {sorted(missing)[0]!r}; "
                             f"MMRec needs row r for every {kind}ID r")
        bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
        if bad.size:
            # MMRec would train on NaN, and `mmrec import` refuses such a file: never write one.
            raise ValueError(f"{path}, line {int(bad[0]) + 2}: {kind} {tokens[int(bad[0])]!r} has NaN or inf "
                             f"values ({bad.size} such row(s)); {target} would be unusable")
        matrix = np.zeros((len(kind_map), values.shape[1]), dtype=np.float32)
        matrix[[kind_map[t] for t in tokens]] = values
        arrays[target] = matrix

    tables = {}
    if not users_kept:
        tables["u_id_mapping.csv"] = pd.DataFrame({"user_id": list(user_map), "userID": list(user_map.values())})
    if not items_kept:
        tables["i_id_mapping.csv"] = pd.DataFrame({"asin": list(item_map), "itemID": list(item_map.values())})
    for fname in ("u_id_mapping.csv", "i_id_mapping.csv"):
        path = os.path.join(dataset_dir, fname)
        if fname not in tables and os.path.isfile(path):
            tables[fname] = read_table(path)

    # MMRec's GeneralRecommender joins data_path with BOTH feature keys (a missing key is
    # `join() argument must be str ... not 'NoneType'`) and loads whichever file exists.
    # Without a text_feat.npy, the fused description (image_text_feat.npy) is the text feature.
    text_file = "text_feat.npy" if "text_feat.npy" in arrays else (
        "image_text_feat.npy" if "image_text_feat.npy" in arrays else "text_feat.npy")
    mmrec_cfg = {"USER_ID_FIELD": "userID", "ITEM_ID_FIELD": "itemID", "TIME_FIELD": "timestamp",
                 "filter_out_cod_start_users": True, "inter_file_name": f"{name}.inter",
                 "vision_feature_file": "image_feat.npy", "text_feature_file": text_file,
                 "user_graph_dict_file": "user_graph_dict.npy", "field_separator": "\t"}
    if not any(f in arrays for f in ("image_feat.npy", text_file)):
        log.warning("%s: no item feature file exported; MMRec's multimodal models need image_feat.npy "
                    "or %s", out_dir, text_file)
    summary = {"dataset": name, "source": os.path.abspath(dataset_dir), "users": len(user_map),
               "items": len(item_map), "interactions": int(len(out)),
               "ids": {"users": "kept" if users_kept else "re-indexed (u_id_mapping.csv)",
                       "items": "kept" if items_kept else "re-indexed (i_id_mapping.csv)"},
               "features": {t: list(a.shape) for t, a in arrays.items()},
               "files": dict(files)}
    with staged_directory(out_dir, overwrite, inputs=(dataset_dir,)) as stage:
        out.to_csv(os.path.join(stage, f"{name}.inter"), sep="\t", index=False, lineterminator="\n")
        for target, matrix in arrays.items():
            _save_npy(os.path.join(stage, target), matrix)
        for fname, table in tables.items():
            write_table(os.path.join(stage, fname), table)
        write_yaml(os.path.join(stage, "mmrec_dataset.yaml"), mmrec_cfg,
                   comment=f"MMRec dataset config: copy to MMRec's src/configs/dataset/{name}.yaml and put\n"
                           f"this directory at MMRec's data/{name}/.")
        with open(os.path.join(stage, MARKER), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
    return summary
